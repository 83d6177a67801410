//! Reading the parts of a manifest and a config that a rebase works on, and the checks
//! every valid image passes. Pure functions on JSON values; no I/O.

pub mod detect;
pub mod history;
pub mod index;
pub mod merge;
pub mod splice;
pub mod split;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// The layer descriptors of a manifest.
pub fn layers(manifest: &Value) -> Result<&Vec<Value>> {
    manifest
        .get("layers")
        .and_then(Value::as_array)
        .context("the manifest has no \"layers\" array")
}

/// The digest of each layer descriptor, in order.
pub fn layer_digests(manifest: &Value) -> Result<Vec<&str>> {
    layers(manifest)?
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.get("digest")
                .and_then(Value::as_str)
                .with_context(|| format!("layer {i} has no digest"))
        })
        .collect()
}

/// The config descriptor's digest and size.
pub fn config_descriptor(manifest: &Value) -> Result<(&str, u64)> {
    let config = manifest
        .get("config")
        .context("the manifest has no \"config\" descriptor")?;
    let digest = config
        .get("digest")
        .and_then(Value::as_str)
        .context("the config descriptor has no digest")?;
    let size = config
        .get("size")
        .and_then(Value::as_u64)
        .context("the config descriptor has no size")?;
    Ok((digest, size))
}

/// `rootfs.diff_ids` of a config.
pub fn diff_ids(config: &Value) -> Result<&Vec<Value>> {
    config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .context("the config has no rootfs.diff_ids array")
}

/// `history` of a config; `None` when the config has none.
pub fn history(config: &Value) -> Option<&Vec<Value>> {
    config.get("history").and_then(Value::as_array)
}

/// `history` of a config as a slice; empty when the config has none.
pub fn history_slice(config: &Value) -> &[Value] {
    history(config).map(Vec::as_slice).unwrap_or_default()
}

/// Whether a history entry created no layer.
pub fn is_empty_layer(entry: &Value) -> bool {
    entry
        .get("empty_layer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Number of history entries that created a layer.
pub fn non_empty_count(history: &[Value]) -> usize {
    history.iter().filter(|h| !is_empty_layer(h)).count()
}

/// Checks the invariant of every valid image: as many layers as diff_ids, and, when there
/// is a history, as many non-empty history entries as layers. `what` names the image.
pub fn check_consistent(what: &str, manifest: &Value, config: &Value) -> Result<()> {
    let layers = layers(manifest).with_context(|| what.to_string())?.len();
    let diff_ids = diff_ids(config).with_context(|| what.to_string())?.len();
    if layers != diff_ids {
        bail!(
            "{what} is inconsistent: its manifest has {layers} layers but its config has {diff_ids} diff_ids"
        );
    }
    if let Some(history) = history(config) {
        let non_empty = non_empty_count(history);
        if non_empty != layers {
            bail!(
                "{what} is inconsistent: its config history has {non_empty} entries that created a layer \
                 but the image has {layers} layers"
            );
        }
    }
    Ok(())
}

/// Number of leading history entries that cover the first `layers` layers: up to and
/// including the entry of the `layers`-th layer (0 when `layers` is 0).
pub fn history_covering(history: &[Value], layers: usize) -> usize {
    if layers == 0 {
        return 0;
    }
    let mut seen = 0;
    for (i, h) in history.iter().enumerate() {
        if !is_empty_layer(h) {
            seen += 1;
            if seen == layers {
                return i + 1;
            }
        }
    }
    history.len()
}

/// A JSON object field as a mutable map, created when missing.
pub fn object_mut<'a>(value: &'a mut Value, key: &str) -> Result<&'a mut Map<String, Value>> {
    let obj = value.as_object_mut().context("expected a JSON object")?;
    obj.entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .with_context(|| format!("\"{key}\" is not a JSON object"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_descriptor_gives_digest_and_size() {
        let m = json!({"config": {"digest": "sha256:c", "size": 42}});
        assert_eq!(config_descriptor(&m).unwrap(), ("sha256:c", 42));
        for bad in [
            json!({}),
            json!({"config": {"size": 42}}),
            json!({"config": {"digest": "sha256:c"}}),
        ] {
            assert!(config_descriptor(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn consistency_check_counts_non_empty_history() {
        let m = json!({"layers": [{"digest": "sha256:a"}, {"digest": "sha256:b"}]});
        let good =
            json!({"rootfs": {"diff_ids": ["x", "y"]}, "history": [{}, {"empty_layer": true}, {}]});
        assert!(check_consistent("img", &m, &good).is_ok());
        let no_history = json!({"rootfs": {"diff_ids": ["x", "y"]}});
        assert!(check_consistent("img", &m, &no_history).is_ok());
        let bad_diff = json!({"rootfs": {"diff_ids": ["x"]}});
        let err = check_consistent("img", &m, &bad_diff)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 layers") && err.contains("1 diff_ids"),
            "{err}"
        );
        let bad_hist =
            json!({"rootfs": {"diff_ids": ["x", "y"]}, "history": [{}, {"empty_layer": true}]});
        assert!(
            check_consistent("img", &m, &bad_hist)
                .unwrap_err()
                .to_string()
                .contains("history")
        );
    }

    #[test]
    fn history_covering_stops_at_the_nth_layer() {
        let h = vec![
            json!({}),
            json!({"empty_layer": true}),
            json!({}),
            json!({"empty_layer": true}),
        ];
        assert_eq!(history_covering(&h, 0), 0);
        assert_eq!(history_covering(&h, 1), 1);
        assert_eq!(history_covering(&h, 2), 3);
    }
}
