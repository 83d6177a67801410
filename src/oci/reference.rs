//! Image references, parsed and normalised the way Docker does it:
//! `[registry[:port]/]repository[:tag][@sha256:...]`, `docker.io` and `library/` by
//! default, `latest` when neither tag nor digest is given.

use crate::oci::digest::Digest;
use anyhow::{Context, Result, bail};
use std::fmt;

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry as users write it (`docker.io`, `127.0.0.1:5000`, `[::1]:5000`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `input`; a name without a registry host gets `default_registry`
    /// (Docker Hub when `None`).
    pub fn parse_with_default(input: &str, default_registry: Option<&str>) -> Result<Reference> {
        parse(input, default_registry)
            .with_context(|| format!("invalid image reference {:?}", redact(input)))
    }

    pub fn parse(input: &str) -> Result<Reference> {
        Reference::parse_with_default(input, None)
    }

    /// The tag or digest to put in `/v2/<repo>/manifests/<this>`; a digest wins.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository` with neither tag nor digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits `user:password@` (credentials, as in a URL) off a reference: what precedes the
/// last `@` that is not the digest's.
fn split_credentials(input: &str) -> Option<(&str, &str)> {
    let (before, after) = input.rsplit_once('@')?;
    if looks_like_digest(after) {
        before.rsplit_once('@')
    } else {
        Some((before, after))
    }
}

/// `algorithm:encoded` as the OCI digest grammar has it, with a known algorithm or an
/// encoded part long enough for a real hash (so `host:5000/app` or `ubuntu:latest` is not
/// one, and a short `sha256:abc` is a bad digest rather than credentials).
fn looks_like_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(algorithm, encoded)| {
        ["sha256", "sha384", "sha512"].contains(&algorithm)
            || !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && encoded.len() >= 32
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    })
}

/// The input with any credentials in it replaced, for messages and output.
pub fn redact(input: &str) -> String {
    match split_credentials(input) {
        Some((_, rest)) => format!("<credentials>@{rest}"),
        None => input.to_string(),
    }
}

fn parse(input: &str, default_registry: Option<&str>) -> Result<Reference> {
    if input.is_empty() {
        bail!("empty reference");
    }
    if split_credentials(input).is_some() {
        bail!(
            "a reference cannot carry credentials (user:password@): give --username with \
             --password-stdin (or IMAGE_REBASE_PASSWORD), or log in with docker login"
        );
    }
    if input.contains("://") {
        bail!("a reference has no scheme: write host/repository:tag, not a URL");
    }
    let (rest, digest) = match input.split_once('@') {
        Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
        None => (input, None),
    };
    // The first component is a registry host when it looks like one.
    let (registry, remainder) = match rest.split_once('/') {
        Some((first, remainder))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (first.to_string(), remainder)
        }
        _ => (default_registry.unwrap_or(DOCKER_HUB).to_string(), rest),
    };
    check_registry(&registry)?;
    let registry = normalise_registry(&registry);
    let (repository, tag) = match remainder.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
        _ => (remainder, None),
    };
    let mut repository = repository.to_string();
    if registry == DOCKER_HUB && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    check_repository(&repository)?;
    if let Some(t) = &tag {
        check_tag(t)?;
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Checks a registry host (`host`, `host:port`, `[v6]:port`): nothing that would change a
/// URL's meaning.
pub fn check_registry(registry: &str) -> Result<()> {
    if registry.is_empty() {
        bail!("empty registry host");
    }
    if registry
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/@?#\\%".contains(c))
    {
        bail!("invalid registry host {registry:?}");
    }
    if registry.starts_with('[') && !registry.contains(']') {
        bail!("invalid registry host {registry:?}: unclosed '[' around an IPv6 address");
    }
    Ok(())
}

fn normalise_registry(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// Checks a repository name: lowercase components of letters, digits and `._-` separators.
pub fn check_repository(repository: &str) -> Result<()> {
    if repository.is_empty() {
        bail!("empty repository name");
    }
    for component in repository.split('/') {
        let ok = !component.is_empty()
            && component
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && component
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && component
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            bail!(
                "invalid repository name {repository:?}: components are lowercase letters, digits \
                 and . _ - separators, starting and ending with a letter or digit"
            );
        }
    }
    if repository.len() > 255 {
        bail!("repository name is longer than 255 characters");
    }
    Ok(())
}

/// Checks a tag (`--tag`, a document's, a reference's).
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        bail!("invalid tag {tag:?}: up to 128 letters, digits, _ . -, not starting with . or -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn registry_hosts_with_url_characters_are_refused() {
        for bad in [
            "a b", "a\\b", "a?b", "a#b", "a@b", "a/b", "a%2fb", "[::1", "", "a\tb",
        ] {
            assert!(check_registry(bad).is_err(), "{bad:?}");
        }
        for good in ["docker.io", "127.0.0.1:5000", "[::1]:5000", "localhost"] {
            check_registry(good).unwrap();
        }
    }

    #[test]
    fn manifest_paths_and_names() {
        let r = Reference::parse(&format!("reg.example/team/app:1@{D}")).unwrap();
        assert_eq!(r.manifest_ref(), D, "a digest wins");
        assert_eq!(r.name(), "reg.example/team/app");
        let r = Reference::parse("reg.example/app:1.0").unwrap();
        assert_eq!(r.manifest_ref(), "1.0");
        let mut r = r;
        r.tag = None;
        assert_eq!(r.manifest_ref(), "latest");
    }

    #[test]
    fn digests_of_other_algorithms_are_digests_not_credentials() {
        let err = format!(
            "{:#}",
            Reference::parse(&format!("reg.example/app@blake3:{}", "a".repeat(64))).unwrap_err()
        );
        assert!(err.contains("unsupported digest algorithm"), "{err}");
    }

    #[test]
    fn repository_names_with_digits_and_separators() {
        for good in ["a1/b-c_d.e", "0app", "x__y"] {
            check_repository(good).unwrap();
        }
        let err = format!("{:#}", Reference::parse("reg.example/a:b/c").unwrap_err());
        assert!(err.contains("invalid repository name"), "{err}");
    }

    #[test]
    fn repository_names_up_to_255_characters() {
        let name = |n: usize| format!("reg.example/{}", "a".repeat(n));
        assert!(Reference::parse(&name(255)).is_ok());
        let err = format!("{:#}", Reference::parse(&name(256)).unwrap_err());
        assert!(err.contains("longer than 255"), "{err}");
    }

    #[test]
    fn credentials_in_a_reference_are_refused_and_never_echoed() {
        for input in [
            "user:s3cret@127.0.0.1:5000/app:1",
            "user:s3cret@ubuntu",
            "user:s3cret@ubuntu:latest",
            "user:s3/cret@host/app",
            &format!("user:p@s3cret@127.0.0.1:5000/app@{D}"),
        ] {
            let err = format!("{:#}", Reference::parse(input).unwrap_err());
            assert!(err.contains("cannot carry credentials"), "{input}: {err}");
            assert!(!err.contains("s3cret"), "{input}: {err}");
            assert!(!redact(input).contains("s3cret"), "{input}");
        }
        let pinned = format!("127.0.0.1:5000/app@{D}");
        assert_eq!(redact(&pinned), pinned);
        assert!(Reference::parse(&pinned).is_ok());
        assert_eq!(redact("app:1"), "app:1");
        let short = format!("{:#}", Reference::parse("app@sha256:abc").unwrap_err());
        assert!(short.contains("invalid digest"), "{short}");
    }

    #[test]
    fn normalises_like_docker() {
        let d = D;
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            // input, registry, repository, tag, has digest
            (
                "ubuntu",
                "docker.io",
                "library/ubuntu",
                Some("latest"),
                false,
            ),
            (
                "ubuntu:22.04",
                "docker.io",
                "library/ubuntu",
                Some("22.04"),
                false,
            ),
            (
                "bitnami/nginx",
                "docker.io",
                "bitnami/nginx",
                Some("latest"),
                false,
            ),
            (
                "docker.io/ubuntu",
                "docker.io",
                "library/ubuntu",
                Some("latest"),
                false,
            ),
            (
                "index.docker.io/library/ubuntu:1",
                "docker.io",
                "library/ubuntu",
                Some("1"),
                false,
            ),
            (
                "127.0.0.1:5000/app:1",
                "127.0.0.1:5000",
                "app",
                Some("1"),
                false,
            ),
            ("localhost/app", "localhost", "app", Some("latest"), false),
            (
                "localhost:5000/a/b/c:v-1.2_3",
                "localhost:5000",
                "a/b/c",
                Some("v-1.2_3"),
                false,
            ),
            ("[::1]:5000/app:2", "[::1]:5000", "app", Some("2"), false),
            ("[::1]/app", "[::1]", "app", Some("latest"), false),
            (
                "reg.example/app",
                "reg.example",
                "app",
                Some("latest"),
                false,
            ),
            (
                "reg.example:443/team/app@D",
                "reg.example:443",
                "team/app",
                None,
                true,
            ),
            ("reg.example/app:1@D", "reg.example", "app", Some("1"), true),
            ("app@D", "docker.io", "library/app", None, true),
        ];
        for (input, registry, repository, tag, has_digest) in cases {
            let input = input.replace('D', d);
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e:#}"));
            assert_eq!(r.registry, *registry, "{input}");
            assert_eq!(r.repository, *repository, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(r.digest.is_some(), *has_digest, "{input}");
        }
    }

    #[test]
    fn default_registry_applies_to_names_without_host() {
        let r = Reference::parse_with_default("myimage:tag", Some("localhost:5000")).unwrap();
        assert_eq!(r.to_string(), "localhost:5000/myimage:tag");
        let r = Reference::parse_with_default("other.example/x", Some("localhost:5000")).unwrap();
        assert_eq!(r.registry, "other.example");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "app:",
            "app:-x",
            "app@sha256:123",
            "app@md5:abc",
            "https://reg.example/app",
            "reg.example/",
            "reg.example//app",
            "a/-b",
            "[::1:5000/app",
            "127.0.0.1:5000@evil.example/app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "127.0.0.1:5000/app:1",
            "docker.io/library/ubuntu:latest",
            &format!("[::1]:5000/a/b@{D}"),
        ] {
            assert_eq!(Reference::parse(s).unwrap().to_string(), *s);
        }
    }

    #[test]
    fn loopback_hosts() {
        for (host, want) in [
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("localhost:80", true),
            ("[::1]:5000", true),
            ("reg.example", false),
            ("10.0.0.1:5000", false),
            ("localhost.example", false),
        ] {
            assert_eq!(is_loopback_host(host), want, "{host}");
        }
    }
}
