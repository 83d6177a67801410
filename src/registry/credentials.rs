//! Finding credentials for a registry the way docker, crane and podman do: explicit ones
//! first, then podman's `$REGISTRY_AUTH_FILE`, then docker's `config.json`
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): `credHelpers.<host>`,
//! `credsStore`, then `auths.<host>` (`auth`, `username`/`password`, `identitytoken`).

use super::secret::Secret;
use crate::oci::reference::DOCKER_HUB;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Docker Hub's key in config files.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, Debug)]
pub enum Credential {
    /// User name and password (or a personal access token used as one).
    Basic { username: String, password: Secret },
    /// An OAuth2 refresh token, exchanged at the token realm.
    IdentityToken(Secret),
}

/// A credential and where it was found (for messages; never the secret itself).
#[derive(Clone, Debug)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

impl Found {
    pub fn describe(&self) -> String {
        match &self.credential {
            Credential::Basic { username, .. } => format!("user {username:?} from {}", self.source),
            Credential::IdentityToken(_) => format!("identity token from {}", self.source),
        }
    }
}

/// Where credentials come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Given on the command line or in the environment; used for `explicit_hosts` only.
    pub explicit: Option<Found>,
    /// The registries the user named (the image's, bases given by reference, targets):
    /// the only ones the explicit credential goes to, never one that a label or an
    /// annotation inside an image points at. None when empty.
    pub explicit_hosts: std::collections::BTreeSet<String>,
    /// Config files to look in, in order.
    pub files: Vec<PathBuf>,
}

impl Sources {
    /// The files the environment points at: `$REGISTRY_AUTH_FILE`, then
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn from_env(
        explicit: Option<Found>,
        explicit_hosts: impl IntoIterator<Item = String>,
    ) -> Sources {
        let mut files = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
            files.push(PathBuf::from(f));
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            files.push(Path::new(&d).join("config.json"));
        } else if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            files.push(Path::new(&home).join(".docker/config.json"));
        }
        Sources {
            explicit,
            explicit_hosts: explicit_hosts.into_iter().collect(),
            files,
        }
    }

    /// The credential for `registry`, if any source has one. The explicit credential is
    /// used only for the registries the user named.
    pub fn lookup(&self, registry: &str) -> Result<Option<Found>> {
        let named = self.explicit_hosts.contains(registry);
        if let Some(e) = self.explicit.as_ref().filter(|_| named) {
            return Ok(Some(e.clone()));
        }
        for file in &self.files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            };
            let config: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            if let Some(found) = lookup_in(&config, registry, &file.display().to_string())? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Where `lookup` looks, for messages.
    pub fn describe(&self) -> String {
        let mut places: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        places.insert(0, "--username/IMAGE_REBASE_USERNAME".to_string());
        places.join(", ")
    }
}

/// The keys a registry may have in a config file's `auths` or `credHelpers`.
fn host_matches(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    if registry == DOCKER_HUB {
        matches!(
            host,
            "index.docker.io" | "docker.io" | "registry-1.docker.io"
        )
    } else {
        host == registry
    }
}

fn lookup_in(config: &Value, registry: &str, file: &str) -> Result<Option<Found>> {
    let server_url = if registry == DOCKER_HUB {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    };
    if let Some(helpers) = config.get("credHelpers").and_then(Value::as_object)
        && let Some((_, helper)) = helpers.iter().find(|(k, _)| host_matches(k, registry))
    {
        let helper = helper
            .as_str()
            .context("a credHelpers entry is not a string")?;
        return run_helper(helper, &server_url);
    }
    if let Some(store) = config
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        && let Some(found) = run_helper(store, &server_url)?
    {
        return Ok(Some(found));
    }
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    // An exact key first, then any key for the same host.
    let entry = auths.get(registry).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| host_matches(k, registry))
            .map(|(_, v)| v)
    });
    match entry {
        Some(entry) => from_auths_entry(entry, registry, file),
        None => Ok(None),
    }
}

/// The credential in an `auths` entry: `identitytoken`, else `auth` (base64 of
/// `user:password`), else `username` and `password`.
fn from_auths_entry(entry: &Value, registry: &str, file: &str) -> Result<Option<Found>> {
    let source = format!("{file} (auths.{registry})");
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    if let Some(token) = field("identitytoken") {
        return Ok(Some(Found {
            credential: Credential::IdentityToken(Secret::new(token)),
            source,
        }));
    }
    let basic = |username: &str, password: &str| {
        Some(Found {
            credential: Credential::Basic {
                username: username.to_string(),
                password: Secret::new(password),
            },
            source: source.clone(),
        })
    };
    if let Some(auth) = field("auth") {
        let not_base64 =
            || anyhow!("the auth field for {registry} in {file} is not base64 of user:password");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(not_base64)?;
        let (username, password) = decoded.split_once(':').ok_or_else(not_base64)?;
        return Ok(basic(username, password));
    }
    let plain = |k: &str| entry.get(k).and_then(Value::as_str);
    Ok(plain("username")
        .zip(plain("password"))
        .and_then(|(u, p)| basic(u, p)))
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
fn run_helper(helper: &str, server_url: &str) -> Result<Option<Found>> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running the credential helper {program} (is it on PATH?)"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(server_url.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if said.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // What a helper prints on failure is its own message, not a secret.
        bail!(
            "the credential helper {program} failed for {server_url}: {}",
            said.trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the credential helper {program} did not print JSON"))?;
    let username = v.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    let source = format!("the credential helper {program}");
    let credential = if username == "<token>" {
        Credential::IdentityToken(Secret::new(secret))
    } else {
        Credential::Basic {
            username: username.to_string(),
            password: Secret::new(secret),
        }
    };
    Ok(Some(Found { credential, source }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn basic(f: Option<Found>) -> (String, String) {
        match f.unwrap().credential {
            Credential::Basic { username, password } => (username, password.expose().to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn auths_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let config = json!({"auths": {
            "reg.example:5000": {"auth": auth},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            "http://other.example/v2/": {"identitytoken": "refresh"},
            "bad.example": {"auth": "!!!"},
        }});
        assert_eq!(
            basic(lookup_in(&config, "reg.example:5000", "f").unwrap()),
            ("alice".into(), "s3cret:with:colons".into())
        );
        assert_eq!(
            basic(lookup_in(&config, "docker.io", "f").unwrap()),
            ("bob".into(), "pw".into())
        );
        assert!(matches!(
            lookup_in(&config, "other.example", "f")
                .unwrap()
                .unwrap()
                .credential,
            Credential::IdentityToken(_)
        ));
        assert!(lookup_in(&config, "none.example", "f").unwrap().is_none());
        let err = lookup_in(&config, "bad.example", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not base64") && !err.contains("!!!"), "{err}");
    }

    #[test]
    fn explicit_credentials_only_where_allowed() {
        let explicit = Found {
            credential: Credential::Basic {
                username: "ci".into(),
                password: Secret::new("pw"),
            },
            source: "the command line".into(),
        };
        let sources = Sources {
            explicit: Some(explicit.clone()),
            explicit_hosts: ["reg.example".to_string()].into(),
            files: vec![],
        };
        assert!(sources.lookup("reg.example").unwrap().is_some());
        assert!(
            sources.lookup("attacker.example").unwrap().is_none(),
            "not to a host the user did not name"
        );
        let closed = Sources {
            explicit: Some(explicit),
            ..Sources::default()
        };
        assert!(
            closed.lookup("reg.example").unwrap().is_none(),
            "no named host: nowhere"
        );
    }

    #[test]
    fn found_describes_without_the_secret() {
        let f = Found {
            credential: Credential::Basic {
                username: "alice".into(),
                password: Secret::new("pw-123"),
            },
            source: "x".into(),
        };
        assert!(!format!("{f:?} {}", f.describe()).contains("pw-123"));
    }
}
