//! Finding where an image divides into its base part and its own part. Pure logic.

use crate::doc::Split;
use crate::error::NotBased;
use crate::image;
use anyhow::Result;
use serde_json::{Map, Value};

/// An image's manifest and config, borrowed.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    pub manifest: &'a Value,
    pub config: &'a Value,
}

fn not_based(msg: String) -> anyhow::Error {
    NotBased(msg).into()
}

/// Checks that `base` is an exact prefix of `image` (layers by digest, diff_ids,
/// history) and returns the split. Every failed check is a `NotBased` error that says
/// which check failed.
pub fn by_old_base(image: Parts, base: Parts) -> Result<Split> {
    image::check_consistent("the image", image.manifest, image.config)
        .map_err(|e| not_based(format!("{e:#}")))?;
    image::check_consistent("the old base", base.manifest, base.config)
        .map_err(|e| not_based(format!("{e:#}")))?;

    let image_layers = image::layer_digests(image.manifest)?;
    let base_layers = image::layer_digests(base.manifest)?;
    if base_layers.len() > image_layers.len() {
        return Err(not_based(format!(
            "the image is not based on the old base: the old base has {} layers, the image only {}",
            base_layers.len(),
            image_layers.len()
        )));
    }
    if let Some(i) = (0..base_layers.len()).find(|&i| base_layers[i] != image_layers[i]) {
        return Err(not_based(format!(
            "the image is not based on the old base: layer {} differs (image {}, old base {})",
            i + 1,
            image_layers[i],
            base_layers[i]
        )));
    }

    let image_diff_ids = image::diff_ids(image.config)?;
    let base_diff_ids = image::diff_ids(base.config)?;
    if let Some(i) = (0..base_diff_ids.len()).find(|&i| base_diff_ids[i] != image_diff_ids[i]) {
        return Err(not_based(format!(
            "the image is not based on the old base: diff_id {} differs (image {}, old base {})",
            i + 1,
            image_diff_ids[i],
            base_diff_ids[i]
        )));
    }

    let image_history = image::history(image.config)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let base_history = match image::history(base.config) {
        Some(base_history) => {
            if base_history.len() > image_history.len() {
                return Err(not_based(format!(
                    "the image is not based on the old base: the old base has {} history entries, the image only {}",
                    base_history.len(),
                    image_history.len()
                )));
            }
            if let Some(i) = (0..base_history.len()).find(|&i| base_history[i] != image_history[i])
            {
                return Err(not_based(format!(
                    "the image is not based on the old base: history entry {} differs (image {}, old base {})",
                    i + 1,
                    image_history[i],
                    base_history[i]
                )));
            }
            base_history.len()
        }
        // A base without history: its part of the image's history is the entries up to
        // and including the one of its last layer.
        None => image::history_covering(image_history, base_layers.len()),
    };

    Ok(Split {
        method: "old-base".to_string(),
        base_layers: base_layers.len(),
        base_history,
        top_layers: image_layers.len() - base_layers.len(),
        top_history: image_history.len() - base_history,
        extra: Map::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::NotBased;
    use serde_json::json;

    /// A hand-built image: layers named by letters, history entries by text;
    /// an entry ending in "#" is empty.
    pub fn img(layers: &[&str], history: &[&str]) -> (Value, Value) {
        let manifest = json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c", "size": 1},
            "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{l}"), "size": 1})).collect::<Vec<_>>(),
        });
        let config = json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| format!("sha256:d{l}")).collect::<Vec<_>>()},
            "history": history.iter().map(|h| match h.strip_suffix('#') {
                Some(text) => json!({"created_by": text, "empty_layer": true}),
                None => json!({"created_by": h}),
            }).collect::<Vec<_>>(),
        });
        (manifest, config)
    }

    fn split(image: &(Value, Value), base: &(Value, Value)) -> Result<Split> {
        by_old_base(
            Parts {
                manifest: &image.0,
                config: &image.1,
            },
            Parts {
                manifest: &base.0,
                config: &base.1,
            },
        )
    }

    #[test]
    fn finds_the_prefix() {
        let base = img(&["a", "b"], &["add a", "cmd#", "add b"]);
        let app = img(
            &["a", "b", "x"],
            &["add a", "cmd#", "add b", "label#", "add x", "cmd#"],
        );
        let s = split(&app, &base).unwrap();
        assert_eq!(
            (s.base_layers, s.base_history, s.top_layers, s.top_history),
            (2, 3, 1, 3)
        );
        // The base itself: nothing on top.
        let s = split(&base, &base).unwrap();
        assert_eq!((s.top_layers, s.top_history), (0, 0));
    }

    #[test]
    fn refuses_what_is_not_a_prefix() {
        let base = img(&["a", "b"], &["add a", "add b"]);
        let cases = [
            (
                img(&["a", "c", "x"], &["add a", "add b", "add x"]),
                "layer 2 differs",
            ),
            (
                img(&["a"], &["add a"]),
                "the old base has 2 layers, the image only 1",
            ),
            (
                img(&["a", "b", "x"], &["add a", "add B", "add x"]),
                "history entry 2 differs",
            ),
        ];
        for (app, want) in cases {
            let err = split(&app, &base).unwrap_err();
            assert!(err.is::<NotBased>(), "{err}");
            assert!(err.to_string().contains(want), "{err} should say {want}");
        }
        // Same layer digests but different diff_ids.
        let mut app = img(&["a", "b", "x"], &["add a", "add b", "add x"]);
        app.1["rootfs"]["diff_ids"][1] = json!("sha256:other");
        assert!(
            split(&app, &base)
                .unwrap_err()
                .to_string()
                .contains("diff_id 2 differs")
        );
    }

    #[test]
    fn refuses_inconsistent_images() {
        let base = img(&["a"], &["add a"]);
        let mut app = img(&["a", "x"], &["add a", "add x"]);
        app.1["history"][1]["empty_layer"] = json!(true);
        let err = split(&app, &base).unwrap_err();
        assert!(err.is::<NotBased>());
        assert!(
            err.to_string().contains("the image is inconsistent"),
            "{err}"
        );
    }

    #[test]
    fn base_without_history() {
        let mut base = img(&["a", "b"], &[]);
        base.1.as_object_mut().unwrap().remove("history");
        let app = img(&["a", "b", "x"], &["add a", "add b", "env#", "add x"]);
        let s = split(&app, &base).unwrap();
        assert_eq!((s.base_history, s.top_history), (2, 2));
    }
}
