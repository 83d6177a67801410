//! Contract labels: labels the platform team puts on its bases (an ABI level, a distro
//! release) that must not change under an image, and the buildpacks label by which an
//! image says it must not be rebased. Checked after the splice, before anything is
//! written; a refusal is `Refused` (exit status 1, `skipped` in a fleet).

use crate::document::{Document, Role, Unit};
use crate::error::Refused;
use anyhow::Result;
use serde_json::Value;

/// The label by which a buildpacks-built image says whether it may be rebased.
pub const REBASABLE: &str = "io.buildpacks.rebasable";

/// Refuses the rebase when a `same_labels` label differs between the old and the new
/// base, or the image is labelled `io.buildpacks.rebasable=false` (unless `force`).
/// Without an old base (split by label or by layers), the image's own value stands for
/// the old base's: an image inherits its base's labels. Platforms (or an image) already
/// on the new base are not looked at: nothing is rebased there.
pub fn check(doc: &Document, same_labels: &[String], force: bool) -> Result<()> {
    let units: Vec<(Option<String>, &Unit)> = if doc.is_index() {
        doc.platforms
            .iter()
            .map(|p| (Some(p.platform.to_string()), &p.unit))
            .collect()
    } else {
        vec![(None, &doc.unit)]
    };
    for (platform, unit) in units {
        if unit.result.as_ref().is_none_or(|r| r.up_to_date) {
            continue;
        }
        if let Err(why) = check_unit(unit, same_labels, force) {
            let why = match platform {
                Some(p) => format!("platform {p}: {why}"),
                None => why,
            };
            return Err(Refused(why).into());
        }
    }
    Ok(())
}

fn check_unit(unit: &Unit, same_labels: &[String], force: bool) -> Result<(), String> {
    let image = label_of(unit, Role::Image);
    if !force && image(REBASABLE).as_deref() == Some("false") {
        return Err(format!(
            "the image is labelled {REBASABLE}=false: its builder says a rebase may break it; \
             give --force to rebase it anyway"
        ));
    }
    let old = if unit.old_base.is_some() {
        label_of(unit, Role::OldBase)
    } else {
        label_of(unit, Role::Image)
    };
    let new = label_of(unit, Role::NewBase);
    for key in same_labels {
        let (was, now) = (old(key), new(key));
        if was != now {
            let show = |v: Option<String>| v.map_or("absent".to_string(), |v| format!("{v:?}"));
            return Err(format!(
                "the label {key} is {} on the old base and {} on the new one, and \
                 --require-same-label {key} wants it unchanged: the image is left as it is",
                show(was),
                show(now)
            ));
        }
    }
    Ok(())
}

/// The labels of a section's config, as a lookup (absent section or label: None).
fn label_of(unit: &Unit, role: Role) -> impl Fn(&str) -> Option<String> + '_ {
    move |key| {
        let config = unit.section(role)?.config.as_ref()?;
        let value: &Value = config.pointer("/config/Labels")?.get(key)?;
        value.as_str().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{ImageSection, ResultSection, Target};
    use crate::oci::digest::Digest;
    use serde_json::json;

    fn section(labels: Value) -> ImageSection {
        serde_json::from_value(json!({
            "reference": "r/x:1", "registry": "r", "repository": "x",
            "digest": Digest::of(b""), "media_type": "m", "size": 0, "manifest": {},
            "config": {"config": {"Labels": labels}},
        }))
        .unwrap()
    }

    fn doc(image: Value, old: Option<Value>, new: Value) -> Document {
        let mut doc = Document::default();
        doc.unit.image = Some(section(image));
        doc.unit.old_base = old.map(section);
        doc.unit.new_base = Some(section(new));
        doc.unit.result = Some(
            serde_json::from_value::<ResultSection>(json!({
                "target": serde_json::to_value(Target {
                    registry: "r".into(), repository: "x".into(), tag: None, extra: Default::default(),
                }).unwrap(),
                "media_type": "m", "manifest": {}, "config": {}, "up_to_date": false,
            }))
            .unwrap(),
        );
        doc
    }

    #[test]
    fn contracts() {
        let keys = ["abi".to_string()];
        let same = doc(json!({}), Some(json!({"abi": "1"})), json!({"abi": "1"}));
        check(&same, &keys, false).unwrap();
        let differs = doc(json!({}), Some(json!({"abi": "1"})), json!({"abi": "2"}));
        let err = check(&differs, &keys, false).unwrap_err();
        assert!(err.is::<Refused>(), "{err}");
        check(&differs, &[], false).unwrap();
        // Without an old base the image's (inherited) value stands for it.
        let by_label = doc(json!({"abi": "1"}), None, json!({}));
        assert!(check(&by_label, &keys, false).is_err());
        let pinned = doc(json!({REBASABLE: "false"}), None, json!({}));
        assert!(check(&pinned, &[], false).is_err());
        check(&pinned, &[], true).unwrap();
    }
}
