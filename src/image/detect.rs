//! Finding the old and new base of an image by itself: the OCI base annotations on its
//! manifest, or the `LABEL FROM=<base>` convention in its config. Pure logic.

use crate::oci::reference::Reference;
use anyhow::{Context, Result, bail};
use serde_json::Value;

/// How an image of the document was found (its `found_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FoundBy {
    /// Named on the command line (or in a fleet list).
    #[serde(rename = "argument")]
    Argument,
    /// The OCI base annotations of the image.
    #[serde(rename = "annotation")]
    Annotation,
    /// The label convention (`LABEL FROM=<base>`).
    #[serde(rename = "label")]
    Label,
    /// The label, because the old base the annotations name cannot be used.
    #[serde(rename = "label (the annotated old base cannot be used)")]
    LabelAfterAnnotation,
    /// Picked from a multi-platform index.
    #[serde(rename = "index")]
    Index,
}

impl std::fmt::Display for FoundBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
        f.write_str(v.as_str().unwrap_or_default())
    }
}

/// The image as base detection sees it: its name, the registry a base name without a
/// host is on, the manifest (or index) that carries the annotations, and the config that
/// carries the labels (an index's first platform's).
pub struct View {
    pub reference: String,
    pub registry: String,
    pub manifest: Value,
    pub config: Option<Value>,
}

pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

fn annotation<'a>(manifest: &'a Value, key: &str) -> Option<&'a str> {
    manifest
        .get("annotations")?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Parses a base name found in the image; a name without a registry host is on the
/// image's own registry.
fn base_reference(image: &View, name: &str, what: &str) -> Result<Reference> {
    Reference::parse_with_default(name, Some(&image.registry))
        .with_context(|| format!("{what} of {} names no valid image", image.reference))
}

/// The old base from the annotations: `<base.name's repository>@<base.digest>`.
pub fn old_base(image: &View) -> Result<Option<Reference>> {
    let (Some(name), Some(digest)) = (
        annotation(&image.manifest, BASE_NAME),
        annotation(&image.manifest, BASE_DIGEST),
    ) else {
        return Ok(None);
    };
    let mut r = base_reference(image, name, &format!("the annotation {BASE_NAME}"))?;
    r.tag = None;
    r.digest = Some(
        digest
            .parse()
            .with_context(|| format!("the annotation {BASE_DIGEST} of {}", image.reference))?,
    );
    Ok(Some(r))
}

/// The new base, and how it was found: the annotation `base.name` (what it points to
/// now), else the value of label `label` in the image's config.
pub fn new_base(image: &View, label: &str) -> Result<(Reference, FoundBy)> {
    if let Some(r) = annotated_new_base(image)? {
        return Ok((r, FoundBy::Annotation));
    }
    match label_base(image, label)? {
        Some(r) => Ok((r, FoundBy::Label)),
        None => bail!(
            "cannot tell the new base of {}: its manifest has no {BASE_NAME} annotation and its config no \
             {label:?} label; give --new-base (and --old-base or --layers)",
            image.reference
        ),
    }
}

/// The new base the annotation `base.name` names (what it points to now), if any.
pub fn annotated_new_base(image: &View) -> Result<Option<Reference>> {
    let Some(name) = annotation(&image.manifest, BASE_NAME) else {
        return Ok(None);
    };
    let mut r = base_reference(image, name, &format!("the annotation {BASE_NAME}"))?;
    if r.digest.is_some() && r.tag.is_none() {
        bail!(
            "the annotation {BASE_NAME} of {} is pinned to a digest ({name}), so it cannot name a newer base: \
             give --new-base",
            image.reference
        );
    }
    r.digest = None;
    Ok(Some(r))
}

/// The base that label `label` in the image's config names, if it has the label.
pub fn label_base(image: &View, label: &str) -> Result<Option<Reference>> {
    let config = image
        .config
        .as_ref()
        .context("the image's config is needed to read its labels")?;
    match config
        .pointer("/config/Labels")
        .and_then(|l| l.get(label))
        .and_then(Value::as_str)
    {
        Some(value) if !value.is_empty() => Ok(Some(base_reference(
            image,
            value,
            &format!("the label {label}"),
        )?)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section(manifest: Value, labels: Value) -> View {
        View {
            reference: "reg.example:5000/team/app:1".into(),
            registry: "reg.example:5000".into(),
            manifest,
            config: Some(json!({"config": {"Labels": labels}})),
        }
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn label_names_resolve_against_the_image_registry() {
        let s = section(
            json!({}),
            json!({"FROM": "base:latest", "OTHER": "docker.io/library/debian:12"}),
        );
        let (r, how) = new_base(&s, "FROM").unwrap();
        assert_eq!(
            (r.to_string().as_str(), how),
            ("reg.example:5000/base:latest", FoundBy::Label)
        );
        assert_eq!(
            new_base(&s, "OTHER").unwrap().0.to_string(),
            "docker.io/library/debian:12"
        );
        let err = format!("{:#}", new_base(&s, "NOPE").unwrap_err());
        assert!(
            err.contains("--new-base") && err.contains("\"NOPE\""),
            "{err}"
        );
        assert!(old_base(&s).unwrap().is_none());
    }

    #[test]
    fn a_base_name_with_tag_and_digest_names_the_tag() {
        let s = section(
            json!({"annotations": {BASE_NAME: format!("base:v2@{D}")}}),
            json!({}),
        );
        let r = annotated_new_base(&s).unwrap().unwrap();
        assert_eq!(r.to_string(), "reg.example:5000/base:v2");
        let pinned = section(
            json!({"annotations": {BASE_NAME: format!("base@{D}")}}),
            json!({}),
        );
        let err = format!("{:#}", annotated_new_base(&pinned).unwrap_err());
        assert!(err.contains("pinned to a digest"), "{err}");
    }

    #[test]
    fn an_empty_label_names_no_base() {
        let s = section(json!({}), json!({"FROM": ""}));
        assert!(label_base(&s, "FROM").unwrap().is_none());
    }

    #[test]
    fn annotations_give_both_bases_and_win_over_the_label() {
        let m =
            json!({"annotations": {BASE_NAME: "reg.example:5000/library/base:v1", BASE_DIGEST: D}});
        let s = section(m, json!({"FROM": "other:1"}));
        assert_eq!(
            old_base(&s).unwrap().unwrap().to_string(),
            format!("reg.example:5000/library/base@{D}")
        );
        let (r, how) = new_base(&s, "FROM").unwrap();
        assert_eq!(
            (r.to_string().as_str(), how),
            ("reg.example:5000/library/base:v1", FoundBy::Annotation)
        );
        let bad = section(
            json!({"annotations": {BASE_NAME: "base:v1", BASE_DIGEST: "sha256:zz"}}),
            json!({}),
        );
        assert!(old_base(&bad).is_err());
    }
}
