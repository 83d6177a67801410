//! The new index of a multi-platform image: the original's entries in order, each rebased
//! platform pointing at its new manifest, attestations (which describe the old image) left
//! out unless kept, and for an OCI index the new base's annotations. Pure logic.

use crate::image::detect::{BASE_DIGEST, BASE_NAME};
use crate::oci::digest::Digest;
use crate::oci::platform::{Platform, is_attestation};
use anyhow::Result;
use serde_json::{Value, json};

/// A platform's manifest before the rebase, and the one pushed for it.
pub struct Child<'a> {
    pub was: &'a Digest,
    pub now: Option<Pushed<'a>>,
}

/// A pushed manifest's descriptor fields.
pub struct Pushed<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub media_type: &'a str,
}

/// The index to write.
#[derive(Debug)]
pub struct NewIndex {
    pub manifest: Value,
    /// Whether it differs from the original (when not, the original bytes are kept).
    pub changed: bool,
    /// What the user should know (entries left out or kept unchanged).
    pub notes: Vec<String>,
}

/// Builds the new index from the original `index` (an OCI index when `oci`), its
/// rebased `children`, and `base_annotations` (the annotations of a rebased platform's
/// manifest, which name the new base).
pub fn build(
    index: &Value,
    oci: bool,
    children: &[Child],
    keep_attestations: bool,
    base_annotations: Option<&Value>,
) -> Result<NewIndex> {
    let mut manifest = index.clone();
    let mut notes = Vec::new();
    let moved = |c: &&Child| c.now.as_ref().is_some_and(|now| now.digest != c.was);
    // Every platform already on the new base: the index stays as it is, attestations too.
    if !children.iter().any(|c| moved(&c)) {
        return Ok(NewIndex {
            manifest,
            changed: false,
            notes,
        });
    }
    let (entries, changed) = rebuilt_entries(index, children, keep_attestations, &mut notes);
    manifest["manifests"] = Value::Array(entries);
    // An OCI index records its new base too, as its manifests do.
    if changed
        && oci
        && let Some(base) = base_annotations
    {
        let annotations = crate::image::object_mut(&mut manifest, "annotations")?;
        for key in [BASE_NAME, BASE_DIGEST] {
            if let Some(v) = base.get(key) {
                annotations.insert(key.to_string(), v.clone());
            }
        }
    }
    Ok(NewIndex {
        manifest,
        changed,
        notes,
    })
}

/// The index's entries with the rebased children swapped in and attestations left out
/// (unless kept); and whether any entry changed.
fn rebuilt_entries(
    index: &Value,
    children: &[Child],
    keep_attestations: bool,
    notes: &mut Vec<String>,
) -> (Vec<Value>, bool) {
    let mut changed = false;
    let mut entries = Vec::new();
    for d in index["manifests"].as_array().into_iter().flatten() {
        let digest = d.get("digest").and_then(Value::as_str).unwrap_or_default();
        let mut d = d.clone();
        if let Some(child) = children.iter().find(|c| c.was.as_str() == digest) {
            if let Some(now) = child
                .now
                .as_ref()
                .filter(|now| now.digest.as_str() != digest)
            {
                d["digest"] = json!(now.digest);
                d["size"] = json!(now.size);
                d["mediaType"] = json!(now.media_type);
                changed = true;
            }
        } else if is_attestation(&d) {
            if !keep_attestations {
                notes.push(format!(
                    "left out {digest} from the new index: an attestation describes the old image (--keep-attestations keeps it)"
                ));
                changed = true;
                continue;
            }
        } else {
            let platform = Platform::of_descriptor(&d)
                .map(|p| p.to_string())
                .unwrap_or_else(|| "an entry".into());
            notes.push(format!(
                "kept {platform} ({digest}) unchanged: it was not rebased"
            ));
        }
        entries.push(d);
    }
    (entries, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn entry(digest: &Digest, platform: Value) -> Value {
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 100, "platform": platform})
    }

    /// amd64 and arm64 images, an attestation, and an s390x image nobody rebased.
    fn index() -> Value {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                entry(&d("amd64"), json!({"os": "linux", "architecture": "amd64"})),
                entry(&d("arm64"), json!({"os": "linux", "architecture": "arm64"})),
                entry(&d("att"), json!({"os": "unknown", "architecture": "unknown"})),
                entry(&d("s390x"), json!({"os": "linux", "architecture": "s390x"})),
            ],
            "annotations": {"org.example": "kept"},
        })
    }

    #[test]
    fn rebased_platforms_point_at_their_new_manifests() {
        let (a, b, new_a, new_b) = (d("amd64"), d("arm64"), d("new amd64"), d("new arm64"));
        let pushed = |digest| Pushed {
            digest,
            size: 7,
            media_type: "application/vnd.oci.image.manifest.v1+json",
        };
        let children = [
            Child {
                was: &a,
                now: Some(pushed(&new_a)),
            },
            Child {
                was: &b,
                now: Some(pushed(&new_b)),
            },
        ];
        let base =
            json!({BASE_NAME: "reg/base:v2", BASE_DIGEST: d("base").to_string(), "other": "x"});
        let ix = build(&index(), true, &children, false, Some(&base)).unwrap();
        assert!(ix.changed);
        let m = ix.manifest["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 3, "the attestation is left out");
        assert_eq!(m[0]["digest"], new_a.as_str());
        assert_eq!(m[0]["size"], 7);
        assert_eq!(
            m[0]["platform"]["architecture"], "amd64",
            "order and platform kept"
        );
        assert_eq!(m[1]["digest"], new_b.as_str());
        assert_eq!(m[2]["digest"], d("s390x").as_str(), "not rebased: kept");
        assert_eq!(ix.manifest["annotations"]["org.example"], "kept");
        assert_eq!(ix.manifest["annotations"][BASE_NAME], "reg/base:v2");
        assert!(ix.manifest["annotations"].get("other").is_none());
        assert_eq!(ix.notes.len(), 2, "{:?}", ix.notes);
        assert!(ix.notes[0].contains("attestation") && ix.notes[1].contains("linux/s390x"));

        // Kept attestations; a Docker list gets no annotations.
        let ix = build(&index(), false, &children, true, Some(&base)).unwrap();
        assert_eq!(ix.manifest["manifests"].as_array().unwrap().len(), 4);
        assert!(ix.manifest["annotations"].get(BASE_NAME).is_none());
    }

    #[test]
    fn an_index_whose_platforms_are_all_up_to_date_stays_as_it_is() {
        let a = d("amd64");
        let same = Pushed {
            digest: &a,
            size: 100,
            media_type: "application/vnd.oci.image.manifest.v1+json",
        };
        for now in [Some(same), None] {
            let ix = build(&index(), true, &[Child { was: &a, now }], false, None).unwrap();
            assert!(!ix.changed);
            assert_eq!(ix.manifest, index(), "attestations too");
            assert!(ix.notes.is_empty());
        }
    }
}
