//! Platforms (`os/architecture[/variant]`): parsing `--platform`, reading them from index
//! descriptors and configs, and matching them the way container runtimes do
//! (`aarch64` is `arm64`, arm64's default variant is v8, arm's is v7). Pure logic.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

impl Platform {
    /// Parses `os/architecture[/variant]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            bail!(
                "invalid platform {s:?}: expected os/architecture[/variant], e.g. linux/arm64 or linux/arm/v7"
            );
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
            ..Platform::default()
        })
    }

    /// Parses a list of `--platform` values, each possibly comma-separated.
    pub fn parse_list(values: &[String]) -> Result<Vec<Platform>> {
        values
            .iter()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.trim().is_empty())
            .map(Platform::parse)
            .collect()
    }

    /// The platform of an index descriptor (`platform` field), if it has one.
    pub fn of_descriptor(descriptor: &Value) -> Option<Platform> {
        let v = descriptor.get("platform")?;
        let mut p: Platform = serde_json::from_value(v.clone()).ok()?;
        p.extra = crate::json::unknown::<Platform>(v, &[]);
        Some(p)
    }

    /// The platform an image config declares.
    pub fn of_config(config: &Value) -> Option<Platform> {
        let s = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Platform {
            os: s("os")?,
            architecture: s("architecture")?,
            variant: s("variant"),
            os_version: s("os.version"),
            extra: Map::new(),
        })
    }

    fn normalised(&self) -> (String, String, String) {
        let arch = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            "armhf" | "armel" => "arm",
            "i386" => "386",
            a => a,
        }
        .to_string();
        let variant = match (arch.as_str(), self.variant.as_deref()) {
            ("arm64", None | Some("v8") | Some("8")) => "v8".to_string(),
            ("arm", None) => "v7".to_string(),
            (_, Some(v)) if v.starts_with(|c: char| c.is_ascii_digit()) => format!("v{v}"),
            (_, v) => v.unwrap_or_default().to_string(),
        };
        (self.os.clone(), arch, variant)
    }

    /// Whether two platforms name the same one (os.version compared when both have it).
    pub fn matches(&self, other: &Platform) -> bool {
        self.normalised() == other.normalised()
            && match (&self.os_version, &other.os_version) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Whether an index entry is an attestation or other non-image entry: platform
/// `unknown/unknown`, or the annotation `vnd.docker.reference.type`.
pub fn is_attestation(descriptor: &Value) -> bool {
    let annotated = descriptor
        .get("annotations")
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some();
    let unknown = Platform::of_descriptor(descriptor)
        .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
    annotated || unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn matching_like_runtimes() {
        let yes = [
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/amd64", "linux/x86_64"),
            ("linux/arm/7", "linux/arm/v7"),
        ];
        for (a, b) in yes {
            assert!(p(a).matches(&p(b)), "{a} ~ {b}");
        }
        let no = [
            ("linux/arm/v6", "linux/arm/v7"),
            ("linux/amd64", "linux/arm64"),
            ("windows/amd64", "linux/amd64"),
        ];
        for (a, b) in no {
            assert!(!p(a).matches(&p(b)), "{a} !~ {b}");
        }
        let mut w1 = p("windows/amd64");
        w1.os_version = Some("10.0.17763.1".into());
        let mut w2 = w1.clone();
        w2.os_version = Some("10.0.20348.1".into());
        assert!(!w1.matches(&w2));
    }

    #[test]
    fn parses_lists_and_rejects_garbage() {
        let l = Platform::parse_list(&["linux/amd64,linux/arm/v7".into(), "linux/arm64".into()])
            .unwrap();
        assert_eq!(
            l.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm/v7", "linux/arm64"]
        );
        for bad in ["linux", "linux/", "a/b/c/d", "/amd64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_config_declares_its_platform() {
        let c = json!({"os": "linux", "architecture": "arm", "variant": "v7", "os.version": "1"});
        let p = Platform::of_config(&c).unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert_eq!(p.os_version.as_deref(), Some("1"));
        assert!(Platform::of_config(&json!({"os": "linux"})).is_none());
    }

    #[test]
    fn attestations() {
        assert!(is_attestation(
            &json!({"platform": {"os": "unknown", "architecture": "unknown"}})
        ));
        assert!(is_attestation(
            &json!({"annotations": {"vnd.docker.reference.type": "attestation-manifest"}})
        ));
        assert!(!is_attestation(
            &json!({"platform": {"os": "linux", "architecture": "amd64"}})
        ));
        // Both parts unknown, not either.
        assert!(!is_attestation(
            &json!({"platform": {"os": "unknown", "architecture": "amd64"}})
        ));
        assert!(!is_attestation(
            &json!({"platform": {"os": "linux", "architecture": "unknown"}})
        ));
    }
}
