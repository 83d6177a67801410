//! Building the rebased manifest and config from the image's top part and the new base.
//! Pure logic: JSON in, JSON and bytes out.

use crate::image;
use crate::image::merge::{self, Ancestor, Report};
use crate::image::split::{Parts, Split};
use crate::oci::digest::Digest;
use crate::oci::media::Family;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The new base as the result records it: its normalised reference and manifest digest.
pub struct BaseInfo<'a> {
    pub name: &'a str,
    pub digest: &'a Digest,
}

/// The rebased image.
pub struct Spliced {
    pub manifest: Value,
    pub config: Value,
    pub report: Report,
    pub notes: Vec<String>,
}

/// The new manifest and config: new base's layers, diff_ids and history, then the
/// image's own; the runtime config three-way merged against `ancestor`. The image's other
/// manifest and config fields are kept; layer media types are converted to the image's
/// family so Docker and OCI types never mix. OCI results carry the new base in the
/// `org.opencontainers.image.base.*` annotations.
pub fn splice(
    image: Parts,
    image_media_type: &str,
    new_base: Parts,
    split: &Split,
    ancestor: Ancestor,
    base: BaseInfo,
) -> Result<Spliced> {
    let family = Family::of_manifest(image_media_type).context("the image")?;
    image::check_consistent("the new base", new_base.manifest, new_base.config)?;
    check_fits(image, split)?;
    let mut notes = Vec::new();
    let manifest = spliced_manifest(image, new_base, split, family, &base, &mut notes)?;
    let (config, report) = spliced_config(image, new_base, split, ancestor)?;
    if !report.unattributed.is_empty() {
        notes.push(format!(
            "the image's history does not say who set {}; the image's values were kept",
            report.unattributed.join(", ")
        ));
    }
    Ok(Spliced {
        manifest,
        config,
        report,
        notes,
    })
}

/// Checks that the split fits the image: no more base layers or history entries than it
/// has, and a top part whose history entries that made a layer match its layers.
fn check_fits(image: Parts, split: &Split) -> Result<()> {
    let layers = image::layers(image.manifest)?.len();
    if split.base_layers > layers || split.base_layers > image::diff_ids(image.config)?.len() {
        bail!(
            "the split says the base has {} layers but the image has only {layers}",
            split.base_layers,
        );
    }
    let Some(h) = image::history(image.config) else {
        return Ok(());
    };
    if split.base_history > h.len() {
        bail!(
            "the split says the base has {} history entries but the image has only {}",
            split.base_history,
            h.len()
        );
    }
    let top_non_empty = image::non_empty_count(&h[split.base_history..]);
    if top_non_empty != layers - split.base_layers {
        return Err(crate::error::NotBased(format!(
            "the split does not divide the image consistently: its top part has {} layers but {} \
             history entries that created a layer, so the history does not line up with the layers it \
             keeps; split it with --old-base or --layers",
            layers - split.base_layers,
            top_non_empty
        ))
        .into());
    }
    Ok(())
}

/// The image's manifest with the new base's layers under its own (media types of the
/// image's family), recording the new base where the format can (OCI annotations).
fn spliced_manifest(
    image: Parts,
    new_base: Parts,
    split: &Split,
    family: Family,
    base: &BaseInfo,
    notes: &mut Vec<String>,
) -> Result<Value> {
    let image_layers = image::layers(image.manifest)?;
    let mut layers = Vec::new();
    for layer in image::layers(new_base.manifest)?
        .iter()
        .chain(&image_layers[split.base_layers..])
    {
        layers.push(convert_descriptor(layer, family)?);
    }
    let mut manifest = image.manifest.clone();
    manifest["layers"] = Value::Array(layers);
    manifest["config"]["mediaType"] = json!(family.config_type());
    match family {
        Family::Oci => {
            let annotations = image::object_mut(&mut manifest, "annotations")?;
            annotations.insert(crate::image::detect::BASE_NAME.into(), json!(base.name));
            annotations.insert(crate::image::detect::BASE_DIGEST.into(), json!(base.digest));
        }
        Family::Docker => notes.push(
            "Docker schema 2 manifests have no annotations: the new base is not recorded in the image \
             (a FROM label, if the image has one, still names its base)"
                .to_string(),
        ),
    }
    Ok(manifest)
}

/// The merged config with the new base's diff_ids and history under the image's own.
fn spliced_config(
    image: Parts,
    new_base: Parts,
    split: &Split,
    ancestor: Ancestor,
) -> Result<(Value, Report)> {
    let mut diff_ids = image::diff_ids(new_base.config)?.clone();
    diff_ids.extend(
        image::diff_ids(image.config)?[split.base_layers..]
            .iter()
            .cloned(),
    );
    let (mut config, report) = merge::merge(image.config, new_base.config, ancestor);
    image::object_mut(&mut config, "rootfs")?.insert("diff_ids".into(), Value::Array(diff_ids));
    if let Some(h) = image::history(image.config) {
        let mut history = match image::history(new_base.config) {
            Some(base_history) => base_history.clone(),
            // Keep the invariant: one non-empty entry for each of the base's layers.
            None => (0..image::layers(new_base.manifest)?.len())
                .map(|_| json!({"comment": "layer of the new base (which has no history)"}))
                .collect(),
        };
        history.extend(h[split.base_history..].iter().cloned());
        config["history"] = Value::Array(history);
    }
    Ok((config, report))
}

/// A layer descriptor with its media type in `family`; annotations dropped for Docker.
fn convert_descriptor(layer: &Value, family: Family) -> Result<Value> {
    let mut layer = layer.clone();
    let media_type = layer
        .get("mediaType")
        .and_then(Value::as_str)
        .context("a layer descriptor has no mediaType")?;
    let converted = family.layer_type(media_type)?;
    let changed = converted != media_type;
    let obj = layer
        .as_object_mut()
        .context("a layer descriptor is not a JSON object")?;
    if changed && family == Family::Docker {
        obj.remove("annotations");
    }
    obj.insert("mediaType".into(), json!(converted));
    Ok(layer)
}

/// The bytes to push: the config serialised, the manifest's config descriptor pointed at
/// it, and the manifest serialised. Deterministic: the same JSON gives the same bytes.
pub struct Finalized {
    pub config_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
}

pub fn finalize(manifest: &Value, config: &Value) -> Result<Finalized> {
    let config_bytes = serde_json::to_vec(config)?;
    let config_digest = Digest::of(&config_bytes);
    let mut manifest = manifest.clone();
    let descriptor = image::object_mut(&mut manifest, "config").context("the result manifest")?;
    descriptor.insert("digest".into(), json!(config_digest));
    descriptor.insert("size".into(), json!(config_bytes.len()));
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = Digest::of(&manifest_bytes);
    Ok(Finalized {
        config_bytes,
        config_digest,
        manifest_bytes,
        manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::split::{by_old_base, tests::img};
    use crate::oci::media::{DOCKER_MANIFEST, OCI_MANIFEST};

    fn splice(
        image: Parts,
        media_type: &str,
        new_base: Parts,
        split: &Split,
    ) -> Result<(Value, Value)> {
        let digest = Digest::of(b"new base");
        let s = super::splice(
            image,
            media_type,
            new_base,
            split,
            Ancestor::History {
                base: &[],
                top: &[],
            },
            BaseInfo {
                name: "reg/base:v2",
                digest: &digest,
            },
        )?;
        Ok((s.manifest, s.config))
    }

    fn parts(i: &(Value, Value)) -> Parts<'_> {
        Parts {
            manifest: &i.0,
            config: &i.1,
        }
    }

    #[test]
    fn result_equals_the_app_built_on_the_new_base() {
        let v1 = img(&["a", "b"], &["add a", "cmd#", "add b"]);
        let v2 = img(&["c"], &["add c", "cmd2#"]);
        let app_on_v1 = img(
            &["a", "b", "x", "y"],
            &["add a", "cmd#", "add b", "label#", "add x", "add y"],
        );
        let app_on_v2 = img(
            &["c", "x", "y"],
            &["add c", "cmd2#", "label#", "add x", "add y"],
        );
        let split = by_old_base(parts(&app_on_v1), parts(&v1)).unwrap();
        let (manifest, config) =
            splice(parts(&app_on_v1), OCI_MANIFEST, parts(&v2), &split).unwrap();
        assert_eq!(manifest["layers"], app_on_v2.0["layers"]);
        assert_eq!(config["rootfs"], app_on_v2.1["rootfs"]);
        assert_eq!(config["history"], app_on_v2.1["history"]);
        // Other fields kept.
        assert_eq!(config["config"], app_on_v1.1["config"]);
        assert_eq!(config["architecture"], app_on_v1.1["architecture"]);
        image::check_consistent("result", &manifest, &config).unwrap();
    }

    #[test]
    fn unknown_fields_survive() {
        let v1 = img(&["a"], &["add a"]);
        let v2 = img(&["c"], &["add c"]);
        let mut app = img(&["a", "x"], &["add a", "add x"]);
        app.0["annotations"] = json!({"k": "v"});
        app.0["x-unknown"] = json!(1);
        app.1["x-unknown"] = json!({"z": 2});
        app.1["created"] = json!("2020-01-01T00:00:00Z");
        let split = by_old_base(parts(&app), parts(&v1)).unwrap();
        let (m, c) = splice(parts(&app), OCI_MANIFEST, parts(&v2), &split).unwrap();
        assert_eq!(m["annotations"]["k"], "v");
        assert_eq!(
            m["annotations"]["org.opencontainers.image.base.name"],
            "reg/base:v2"
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.base.digest"],
            Digest::of(b"new base").as_str()
        );
        assert_eq!(m["x-unknown"], 1);
        assert_eq!(c["x-unknown"]["z"], 2);
        assert_eq!(c["created"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn docker_image_on_oci_base_gets_docker_types_only() {
        let v1 = img(&["a"], &["add a"]);
        let v2 = img(&["c"], &["add c"]);
        let mut app = img(&["a", "x"], &["add a", "add x"]);
        for l in app.0["layers"].as_array_mut().unwrap() {
            l["mediaType"] = json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
        }
        let split = by_old_base(parts(&app), parts(&v1)).unwrap();
        let (m, _) = splice(parts(&app), DOCKER_MANIFEST, parts(&v2), &split).unwrap();
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(
                l["mediaType"],
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            );
        }
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
    }

    #[test]
    fn an_image_whose_own_part_adds_no_layer_is_rebased() {
        // A config-only app: labels and a CMD on top of the base.
        let v1 = img(&["a"], &["add a"]);
        let v2 = img(&["c"], &["add c"]);
        let app = img(&["a"], &["add a", "label#", "cmd#"]);
        let split = by_old_base(parts(&app), parts(&v1)).unwrap();
        assert_eq!((split.base_layers, split.top_layers), (1, 0));
        let (m, c) = splice(parts(&app), OCI_MANIFEST, parts(&v2), &split).unwrap();
        assert_eq!(m["layers"], v2.0["layers"]);
        assert_eq!(c["history"].as_array().unwrap().len(), 3);
        image::check_consistent("result", &m, &c).unwrap();
    }

    #[test]
    fn a_split_with_more_base_layers_than_the_image_has_is_refused() {
        let v2 = img(&["c"], &["add c"]);
        let app = img(&["a", "x"], &["add a", "add x"]);
        let mut split = by_old_base(parts(&app), parts(&img(&["a"], &["add a"]))).unwrap();
        split.base_layers = 3;
        let err = splice(parts(&app), OCI_MANIFEST, parts(&v2), &split).unwrap_err();
        assert!(
            err.to_string()
                .contains("the split says the base has 3 layers"),
            "{err}"
        );
    }

    #[test]
    fn an_image_with_no_part_of_its_own_becomes_the_new_base() {
        let (v1, v2) = (img(&["a"], &["add a", "cmd#"]), img(&["c"], &["add c"]));
        let split = by_old_base(parts(&v1), parts(&v1)).unwrap();
        let (m, c) = splice(parts(&v1), OCI_MANIFEST, parts(&v2), &split).unwrap();
        assert_eq!(m["layers"], v2.0["layers"]);
        assert_eq!(c["history"], v2.1["history"]);
    }

    #[test]
    fn an_image_with_fewer_diff_ids_than_layers_is_refused_not_a_panic() {
        let v2 = img(&["c"], &["add c"]);
        let mut app = img(&["a", "x"], &["add a", "add x"]);
        app.1["rootfs"]["diff_ids"] = json!(["sha256:da"]);
        // split-history refuses such an image; splice, given a split anyway, must too.
        let split = Split {
            method: crate::image::split::Method::Layers,
            base_layers: 2,
            base_history: 2,
            top_layers: 0,
            top_history: 0,
            up_to_date: false,
            extra: serde_json::Map::new(),
        };
        assert!(splice(parts(&app), OCI_MANIFEST, parts(&v2), &split).is_err());
    }

    #[test]
    fn what_the_history_cannot_attribute_is_said_in_a_note() {
        let v1 = img(&["a"], &["add a"]);
        let v2 = img(&["c"], &["add c"]);
        let mut app = img(&["a", "x"], &["add a", "add x"]);
        let split = by_old_base(parts(&app), parts(&v1)).unwrap();
        let with = |app: &(Value, Value), top: &[Value]| {
            let digest = Digest::of(b"new base");
            super::splice(
                parts(app),
                OCI_MANIFEST,
                parts(&v2),
                &split,
                Ancestor::History { base: &[], top },
                BaseInfo {
                    name: "reg/base:v2",
                    digest: &digest,
                },
            )
            .unwrap()
        };
        assert!(with(&app, &[]).notes.is_empty(), "nothing to say");
        app.1["config"]["Env"] = json!(["PATH=/bin", "SET_BY=nobody"]);
        let unknown = [json!({"created_by": "umoci config", "empty_layer": true})];
        let notes = with(&app, &unknown).notes;
        assert!(
            notes.len() == 1 && notes[0].contains("does not say who set config.Env.SET_BY"),
            "{notes:?}"
        );
    }

    #[test]
    fn layer_annotations_go_only_where_the_type_changes_to_docker() {
        let annotated = |media: &str| json!({"mediaType": media, "digest": "sha256:a", "size": 1, "annotations": {"k": "v"}});
        let oci = annotated("application/vnd.oci.image.layer.v1.tar+gzip");
        let docker = annotated("application/vnd.docker.image.rootfs.diff.tar.gzip");
        let to_docker = convert_descriptor(&oci, Family::Docker).unwrap();
        assert!(to_docker.get("annotations").is_none(), "{to_docker}");
        assert_eq!(
            to_docker["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        let kept = convert_descriptor(&docker, Family::Docker).unwrap();
        assert_eq!(kept["annotations"]["k"], "v", "unchanged: kept as it was");
        let to_oci = convert_descriptor(&docker, Family::Oci).unwrap();
        assert_eq!(
            to_oci["annotations"]["k"], "v",
            "OCI descriptors carry annotations"
        );
    }

    #[test]
    fn refuses_a_split_that_does_not_fit() {
        let v2 = img(&["c"], &["add c"]);
        let app = img(&["a", "x"], &["add a", "add x"]);
        let mut split = by_old_base(parts(&app), parts(&img(&["a"], &["add a"]))).unwrap();
        split.base_history = 0;
        let err = splice(parts(&app), OCI_MANIFEST, parts(&v2), &split).unwrap_err();
        assert!(err.is::<crate::error::NotBased>(), "{err}");
        split.base_layers = 5;
        assert!(splice(parts(&app), OCI_MANIFEST, parts(&v2), &split).is_err());
    }

    #[test]
    fn finalize_points_the_manifest_at_the_config() {
        let app = img(&["a"], &["add a"]);
        let f = finalize(&app.0, &app.1).unwrap();
        let m: Value = serde_json::from_slice(&f.manifest_bytes).unwrap();
        assert_eq!(m["config"]["digest"], f.config_digest.as_str());
        assert_eq!(m["config"]["size"], f.config_bytes.len());
        assert_eq!(f.manifest_digest, Digest::of(&f.manifest_bytes));
        // Deterministic.
        assert_eq!(
            finalize(&app.0, &app.1).unwrap().manifest_digest,
            f.manifest_digest
        );
    }
}
