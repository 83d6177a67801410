//! Content digests (`sha256:<hex>`): parsing, display and hashing of exact bytes.

use anyhow::{Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// The digest of exactly these bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks that `bytes` hash to this digest; `what` names the content in the error.
    pub fn verify(&self, bytes: &[u8], what: &str) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != self {
            bail!("{what}: content does not match its digest: expected {self}, got {actual}");
        }
        Ok(())
    }
}

/// A digest computed over bytes that arrive in pieces (a blob streamed through).
#[derive(Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of every byte given so far.
    pub fn finish(&self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.0.clone().finalize())))
    }
}

impl FromStr for Digest {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Digest> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            bail!("invalid digest {s:?}: expected sha256:<64 hex digits>");
        };
        if algorithm != "sha256" {
            bail!("unsupported digest algorithm {algorithm:?} in {s:?}: only sha256 is supported");
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!("invalid digest {s:?}: expected sha256:<64 lowercase hex digits>");
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_exact_bytes() {
        // sha256 of the empty string
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(Digest::of(b"{}"), Digest::of(b"{}\n"));
    }

    #[test]
    fn a_hasher_fed_in_pieces_gives_the_digest_of_the_whole() {
        let mut h = Hasher::default();
        h.update(b"some ");
        h.update(b"");
        h.update(b"bytes");
        assert_eq!(h.finish(), Digest::of(b"some bytes"));
    }

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"x");
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        for bad in ["sha256:abc", "md5:00", "sha256", &d.as_str().to_uppercase()] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn verify_names_the_content() {
        let d = Digest::of(b"a");
        assert!(d.verify(b"a", "blob").is_ok());
        let err = d.verify(b"b", "blob x").unwrap_err().to_string();
        assert!(err.contains("blob x") && err.contains(d.as_str()), "{err}");
    }
}
