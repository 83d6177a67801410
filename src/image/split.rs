//! Finding where an image divides into its base part and its own part. Pure logic.

use crate::error::NotBased;
use crate::image;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a split was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// At an old base that is an exact prefix of the image.
    OldBase,
    /// At the history entry that set the label.
    Label,
    /// By a number of history entries on top.
    Layers,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::OldBase => "old-base",
            Method::Label => "label",
            Method::Layers => "layers",
        })
    }
}

/// Where the image divides into the base part (bottom) and its own part (top).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// How the split was found.
    pub method: Method,
    /// Layers (and diff_ids) of the image that belong to the old base.
    pub base_layers: usize,
    /// History entries of the image that belong to the old base.
    pub base_history: usize,
    /// Layers of the image's own part.
    pub top_layers: usize,
    /// History entries of the image's own part.
    pub top_history: usize,
    /// The image is already on the new base: there is nothing to rebase.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub up_to_date: bool,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

/// An image's manifest and config, borrowed.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    pub manifest: &'a Value,
    pub config: &'a Value,
}

fn not_based(msg: String) -> anyhow::Error {
    NotBased(msg).into()
}

/// Checks that the old base's `base` items (layers, diff_ids or history entries, named by
/// `what`, singular and plural) are the first of the image's.
fn is_prefix<T: PartialEq + std::fmt::Display>(
    what: (&str, &str),
    base: &[T],
    image: &[T],
) -> Result<()> {
    if base.len() > image.len() {
        return Err(not_based(format!(
            "the image is not based on the old base: the old base has {} {}, the image only {}",
            base.len(),
            what.1,
            image.len()
        )));
    }
    if let Some(i) = (0..base.len()).find(|&i| base[i] != image[i]) {
        return Err(not_based(format!(
            "the image is not based on the old base: {} {} differs (image {}, old base {})",
            what.0,
            i + 1,
            image[i],
            base[i]
        )));
    }
    Ok(())
}

/// How `find` tells an image built on a base by layers alone: the base's layers (by
/// digest, at least one) are the first of the image's. `Some(n)`: the image has `n`
/// layers of its own (0: the same layers, which only the history can tell apart from
/// the base itself).
pub fn own_layers(image: &[&str], base: &[&str]) -> Option<usize> {
    (!base.is_empty() && image.starts_with(base)).then(|| image.len() - base.len())
}

/// Whether an image with exactly the base's layers has something of its own: more
/// history entries than the base (e.g. an ENV or a LABEL on top).
pub fn own_history(image_config: &Value, base_config: &Value) -> bool {
    image::history_slice(image_config).len() > image::history_slice(base_config).len()
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
    is_prefix(("layer", "layers"), &base_layers, &image_layers)?;
    let diff_ids = (
        image::diff_ids(image.config)?,
        image::diff_ids(base.config)?,
    );
    is_prefix(("diff_id", "diff_ids"), diff_ids.1, diff_ids.0)?;
    let image_history = image::history_slice(image.config);
    let base_history = match image::history(base.config) {
        Some(h) => {
            is_prefix(("history entry", "history entries"), h, image_history)?;
            h.len()
        }
        // A base without history: its part of the image's history is the entries up to
        // and including the one of its last layer.
        None => image::history_covering(image_history, base_layers.len()),
    };

    Ok(Split {
        method: Method::OldBase,
        base_layers: base_layers.len(),
        base_history,
        top_layers: image_layers.len() - base_layers.len(),
        top_history: image_history.len() - base_history,
        up_to_date: false,
        extra: Map::new(),
    })
}

/// The split of an image on top of which `top` history entries (as `docker history`
/// counts them, empty ones included) are its own.
pub fn by_layers(image: Parts, top: usize) -> Result<Split> {
    image::check_consistent("the image", image.manifest, image.config)
        .map_err(|e| not_based(format!("{e:#}")))?;
    let history = image::history(image.config)
        .context("the image's config has no history, so --layers (a count of history entries) cannot be applied")?;
    if top > history.len() {
        return Err(not_based(format!(
            "--layers {top} is more than the image's {} history entries",
            history.len()
        )));
    }
    let base_history = history.len() - top;
    at_history(image, Method::Layers, base_history)
}

/// The split at the history entry that set label `name` (the `LABEL FROM=<base>`
/// convention): that entry is the first of the image's own part.
pub fn by_label(image: Parts, name: &str) -> Result<Split> {
    image::check_consistent("the image", image.manifest, image.config)
        .map_err(|e| not_based(format!("{e:#}")))?;
    let history = image::history_slice(image.config);
    let Some((index, _)) = crate::image::history::find_label(history, name) else {
        return Err(not_based(format!(
            "no history entry of the image sets the label {name:?}, so the split cannot be found by label; \
             name the old base with --old-base, or count the image's own history entries with --layers"
        )));
    };
    at_history(image, Method::Label, index)
}

/// The split before history entry `base_history`. A split that leaves no layer of the
/// old base to replace is refused: the image's layers hold its base and its own files
/// together (a squashed build), and putting the new base under them would keep all of
/// the old base.
fn at_history(image: Parts, method: Method, base_history: usize) -> Result<Split> {
    let history = image::history_slice(image.config);
    let layers = image::layers(image.manifest).map(Vec::len).unwrap_or(0);
    let base_layers = image::non_empty_count(&history[..base_history]);
    if base_layers == 0 && layers > 0 {
        let how = match method {
            Method::Label => {
                "the history entries before the one that set the label created no layer"
            }
            _ => "the history entries below the image's own created no layer",
        };
        return Err(not_based(format!(
            "the split by {method} leaves no layer of the old base to replace: {how}, so the image's {layers} \
             layer(s) hold its base and its own files together, as a squashed build makes (buildah --squash, \
             podman build --squash-all); rebasing it would keep all of the old base. Rebuild it on the new base, \
             or build it without squashing and rebase that"
        )));
    }
    Ok(Split {
        method,
        base_layers,
        base_history,
        top_layers: layers - base_layers,
        top_history: history.len() - base_history,
        up_to_date: false,
        extra: Map::new(),
    })
}

/// When the image is already on `new_base` (an exact prefix, covering at least the base
/// part of `split`), the split at the new base, marked up to date.
pub fn already_on(image: Parts, new_base: Parts, split: Option<&Split>) -> Option<Split> {
    let mut on_new = by_old_base(image, new_base).ok()?;
    if split.is_some_and(|s| on_new.base_layers < s.base_layers) {
        return None;
    }
    on_new.up_to_date = true;
    if let Some(s) = split {
        on_new.method = s.method;
    }
    Some(on_new)
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
    fn by_layers_counts_history_entries() {
        let app = img(
            &["a", "b", "x"],
            &["add a", "cmd#", "add b", "label#", "add x", "cmd#"],
        );
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        let s = by_layers(p, 3).unwrap();
        assert_eq!(
            (s.base_layers, s.base_history, s.top_layers, s.top_history),
            (2, 3, 1, 3)
        );
        let s = by_layers(p, 0).unwrap();
        assert_eq!((s.base_layers, s.top_layers), (3, 0));
        assert!(
            by_layers(p, 7)
                .unwrap_err()
                .to_string()
                .contains("more than the image's 6")
        );
    }

    #[test]
    fn by_label_splits_at_the_entry_that_set_it() {
        let mut app = img(
            &["a", "x"],
            &[
                "add a",
                "LABEL FROM=ubuntu#",
                "LABEL FROM=base:v1#",
                "add x",
            ],
        );
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        let s = by_label(p, "FROM").unwrap();
        assert_eq!(
            (s.base_layers, s.base_history, s.top_layers, s.top_history),
            (1, 2, 1, 2)
        );
        assert!(
            by_label(p, "BASE")
                .unwrap_err()
                .to_string()
                .contains("--old-base")
        );
        app.1["history"][2]["created_by"] = json!("/bin/sh -c #(nop)  LABEL FROM=base:v1");
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        assert_eq!(by_label(p, "FROM").unwrap().base_history, 2);
    }

    #[test]
    fn already_on_the_new_base() {
        let v1 = img(&["a"], &["add a"]);
        let v2 = img(&["c"], &["add c"]);
        let on_v1 = img(&["a", "x"], &["add a", "add x"]);
        let on_v2 = img(&["c", "x"], &["add c", "add x"]);
        fn p(i: &(Value, Value)) -> Parts<'_> {
            Parts {
                manifest: &i.0,
                config: &i.1,
            }
        }
        assert!(by_old_base(p(&on_v1), p(&v1)).is_ok());
        assert!(already_on(p(&on_v1), p(&v2), None).is_none());
        let s = already_on(p(&on_v2), p(&v2), None).unwrap();
        assert!(s.up_to_date && s.base_layers == 1);
        // A new base shorter than the split (a downgrade) is a rebase, not a no-op.
        let v3 = img(&["c", "x"], &["add c", "add x"]);
        let on_v3 = img(&["c", "x", "y"], &["add c", "add x", "add y"]);
        let split = by_old_base(p(&on_v3), p(&v3)).unwrap();
        assert!(already_on(p(&on_v3), p(&v2), Some(&split)).is_none());
        // A split whose base is exactly the new base's length: up to date.
        let split = by_old_base(p(&on_v2), p(&v2)).unwrap();
        let s = already_on(p(&on_v2), p(&v2), Some(&split)).unwrap();
        assert!(s.up_to_date && s.base_layers == 1);
    }

    #[test]
    fn layers_equal_to_the_whole_history_leave_no_base_to_replace() {
        let app = img(&["a", "x"], &["add a", "add x"]);
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        let err = by_layers(p, 2).unwrap_err().to_string();
        assert!(err.contains("no layer of the old base to replace"), "{err}");
        let err = by_layers(p, 3).unwrap_err().to_string();
        assert!(
            err.contains("more than the image's 2 history entries"),
            "{err}"
        );
    }

    #[test]
    fn a_squashed_image_split_by_label_says_so() {
        // One layer holding base and app; the label set after the base's (empty) steps.
        let app = img(&["s"], &["env#", "LABEL FROM=base:v1#", "add s"]);
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        let err = by_label(p, "FROM").unwrap_err();
        assert!(err.is::<NotBased>());
        let err = err.to_string();
        assert!(
            err.contains("before the one that set the label created no layer")
                && err.contains("squash"),
            "{err}"
        );
    }

    #[test]
    fn an_image_without_layers_is_not_taken_for_a_squashed_one() {
        let app = img(&[], &["LABEL FROM=base:v1#", "cmd#"]);
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        let s = by_label(p, "FROM").unwrap();
        assert_eq!((s.base_layers, s.top_layers), (0, 0));
    }

    #[test]
    fn base_without_history() {
        let mut base = img(&["a", "b"], &[]);
        base.1.as_object_mut().unwrap().remove("history");
        let app = img(&["a", "b", "x"], &["add a", "add b", "env#", "add x"]);
        let s = split(&app, &base).unwrap();
        assert_eq!((s.base_history, s.top_history), (2, 2));
    }

    #[test]
    fn refuses_a_split_with_no_base_layer_to_replace() {
        // podman build --squash-all: one layer for base and app, every entry before the
        // last empty, the base's steps (if listed) among them.
        let squashed = img(
            &["s"],
            &["add base#", "LABEL FROM=base:v1#", "COPY app#", "CMD app"],
        );
        let p = Parts {
            manifest: &squashed.0,
            config: &squashed.1,
        };
        for err in [
            by_label(p, "FROM").unwrap_err(),
            by_layers(p, 3).unwrap_err(),
        ] {
            assert!(err.is::<NotBased>(), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("no layer of the old base") && msg.contains("squash"),
                "{msg}"
            );
        }
        // An image of no layers of its own is fine.
        let app = img(&["a"], &["add a", "LABEL FROM=base:v1#", "CMD x#"]);
        let p = Parts {
            manifest: &app.0,
            config: &app.1,
        };
        let s = by_label(p, "FROM").unwrap();
        assert_eq!((s.base_layers, s.top_layers), (1, 0));
    }

    #[test]
    fn own_layers_and_history_tell_a_dependent_from_its_base() {
        assert_eq!(own_layers(&["a", "b", "c"], &["a", "b"]), Some(1));
        assert_eq!(own_layers(&["a", "b"], &["a", "b"]), Some(0));
        assert_eq!(own_layers(&["a", "c"], &["a", "b"]), None);
        assert_eq!(own_layers(&["a"], &["a", "b"]), None);
        assert_eq!(
            own_layers(&["a"], &[]),
            None,
            "a base without layers names nothing"
        );
        let h = |n: usize| serde_json::json!({"history": vec![serde_json::json!({}); n]});
        assert!(own_history(&h(3), &h(2)));
        assert!(!own_history(&h(2), &h(2)));
        assert!(!own_history(&serde_json::json!({}), &h(1)));
    }
}
