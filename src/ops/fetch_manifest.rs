//! fetch-manifest: an image's manifest (or index) into the document, in the role it plays;
//! without a reference the old or new base is found in the image (annotations, label).

use crate::document::{
    Document, FoundBy, ImageSection, IndexSection, PlatformUnit, Role, SkipReason, Skipped, Unit,
};
use crate::error::NotBased;
use crate::image::detect;
use crate::image::split::{self, Parts};
use crate::oci::media::{self, Family};
use crate::oci::platform::{Platform, is_attestation};
use crate::oci::reference::Reference;
use crate::ops::fetch_config;
use crate::registry::Client;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

/// What fetch-manifest is told besides the reference.
pub struct Options<'a> {
    /// The label that names the new base when no reference is given.
    pub label: &'a str,
    /// For a multi-platform image: the platforms to rebase (all when empty).
    pub platforms: &'a [Platform],
    /// Why the old base the annotations name cannot be used, when that is already
    /// known: then the new base is found by label without trying it again.
    pub annotation_failed: Option<&'a str>,
}

/// Fetches the manifest of `reference` into the section for `role`. An index as the image
/// gives one platform entry per platform (attestations and platforms left out by
/// `--platform` are listed as skipped); an index as a base gives each platform the
/// base's manifest for that platform. Without a reference the old or new base is found
/// in the image: its base annotations, else its label (also when the old base the
/// annotations name cannot be fetched or is not a prefix of the image). Sections
/// derived from the old contents (split, result, pushed) are dropped. Returns notes
/// for the user.
pub fn step(
    client: &Client,
    doc: &mut Document,
    role: Role,
    reference: Option<&Reference>,
    opts: &Options,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    match (role, reference) {
        (Role::Image, Some(r)) => {
            fetch_image(client, doc, r, opts).with_context(|| format!("fetching manifest {r}"))?
        }
        (Role::Image, None) => bail!("fetch-manifest needs the image's reference"),
        (_, Some(r)) => fetch_base(client, doc, role, r, FoundBy::Argument)
            .with_context(|| format!("fetching manifest {r}"))?,
        (Role::OldBase, None) => find_old_base(client, doc, opts, &mut notes)?,
        (Role::NewBase, None) => {
            let (r, found_by) = find_new_base(client, doc, opts, &mut notes)?;
            fetch_base(client, doc, role, &r, found_by)
                .with_context(|| format!("fetching manifest {r}"))?
        }
    }
    Ok(notes)
}

/// A manifest as fetched: a single image, or an index.
enum Fetched {
    Single(Box<ImageSection>),
    Index(Box<IndexSection>),
}

fn fetch_any(client: &Client, r: &Reference, base: bool) -> Result<Fetched> {
    let fetched = if base {
        client.fetch_base_manifest(r)?
    } else {
        client.fetch_manifest(r)?
    };
    let manifest: Value =
        serde_json::from_slice(&fetched.bytes).context("the manifest is not valid JSON")?;
    if matches!(
        fetched.media_type.as_str(),
        media::OCI_INDEX | media::DOCKER_LIST
    ) {
        if !manifest.get("manifests").is_some_and(Value::is_array) {
            bail!("the index has no \"manifests\" array");
        }
        return Ok(Fetched::Index(Box::new(IndexSection {
            reference: r.to_string(),
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            tag: r.tag.clone(),
            digest: fetched.digest,
            media_type: fetched.media_type,
            size: fetched.bytes.len() as u64,
            manifest,
            skipped: vec![],
            pushed: None,
            extra: Map::new(),
        })));
    }
    Family::of_manifest(&fetched.media_type)?;
    Ok(Fetched::Single(Box::new(ImageSection {
        reference: r.to_string(),
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        tag: r.tag.clone(),
        digest: fetched.digest,
        media_type: fetched.media_type,
        size: fetched.bytes.len() as u64,
        manifest,
        config: None,
        found_by: None,
        index_digest: None,
        extra: Map::new(),
    })))
}

/// Fetches the child `descriptor` of index `ix` as a single image.
fn fetch_child(
    client: &Client,
    ix: &IndexSection,
    base: bool,
    descriptor: &Value,
    reference: String,
) -> Result<ImageSection> {
    let digest = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .context("an index entry has no digest")?;
    let r = Reference {
        registry: ix.registry.clone(),
        repository: ix.repository.clone(),
        tag: None,
        digest: Some(digest.parse()?),
    };
    match fetch_any(client, &r, base).with_context(|| format!("fetching manifest {r}"))? {
        Fetched::Single(mut s) => {
            s.reference = reference;
            s.index_digest = Some(ix.digest.clone());
            Ok(*s)
        }
        Fetched::Index(_) => {
            bail!("the index entry {digest} is itself an index; nested indexes are not supported")
        }
    }
}

fn fetch_image(client: &Client, doc: &mut Document, r: &Reference, opts: &Options) -> Result<()> {
    doc.unit = Unit::default();
    doc.index = None;
    doc.platforms.clear();
    match fetch_any(client, r, false)? {
        Fetched::Single(mut s) => {
            s.found_by = Some(FoundBy::Argument);
            doc.unit.image = Some(*s);
        }
        Fetched::Index(mut ix) => {
            doc.platforms = platform_units(client, &mut ix, r, opts)?;
            doc.index = Some(*ix);
        }
    }
    Ok(())
}

/// The platforms an index offers, for messages.
fn offered(ix: &IndexSection) -> String {
    let list: Vec<String> = ix.manifest["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| !is_attestation(d))
        .filter_map(Platform::of_descriptor)
        .map(|p| p.to_string())
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The entry of index `ix` for `platform`.
fn pick<'a>(ix: &'a IndexSection, platform: &Platform, what: &str) -> Result<&'a Value> {
    ix.manifest["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| !is_attestation(d))
        .find(|d| Platform::of_descriptor(d).is_some_and(|p| p.matches(platform)))
        .ok_or_else(|| {
            anyhow!(
                "the {what} {} has no manifest for {platform} (it has {}); leave that platform out with --platform",
                ix.reference,
                offered(ix)
            )
        })
}

fn fetch_base(
    client: &Client,
    doc: &mut Document,
    role: Role,
    r: &Reference,
    found_by: FoundBy,
) -> Result<()> {
    let fetched = fetch_any(client, r, true)?;
    let what = if role == Role::OldBase {
        "old base"
    } else {
        "new base"
    };
    let base_for = |client: &Client, unit: &mut Unit, platform: &Platform| -> Result<()> {
        let mut section = base_for_platform(client, &fetched, r, what, platform)?;
        section.found_by = Some(found_by);
        unit.set_section(role, section);
        Ok(())
    };
    if doc.is_index() {
        for p in doc.platforms.iter_mut() {
            let platform = p.platform.clone();
            base_for(client, &mut p.unit, &platform)
                .with_context(|| format!("platform {platform}"))?;
        }
        doc.invalidate_index_push();
        return Ok(());
    }
    match &fetched {
        Fetched::Single(s) => {
            let mut s = (**s).clone();
            s.found_by = Some(found_by);
            doc.unit.set_section(role, s);
        }
        Fetched::Index(_) => {
            // A single image on an index base: the base's manifest for the image's own
            // platform, from its config (never the host's).
            fetch_config::unit_step(client, &mut doc.unit)?;
            let image = doc.unit.require(Role::Image)?;
            let platform = image.config.as_ref().and_then(Platform::of_config).with_context(|| {
                format!("the config of {} names no os and architecture to pick the {what}'s platform by", image.reference)
            })?;
            base_for(client, &mut doc.unit, &platform)?;
        }
    }
    Ok(())
}

/// A base's section for one platform: its manifest for `platform` when it is an index,
/// else the single image, which must be for `platform`.
fn base_for_platform(
    client: &Client,
    fetched: &Fetched,
    r: &Reference,
    what: &str,
    platform: &Platform,
) -> Result<ImageSection> {
    Ok(match fetched {
        Fetched::Index(ix) => {
            fetch_child(client, ix, true, pick(ix, platform, what)?, r.to_string())?
        }
        Fetched::Single(s) => {
            let mut s = (**s).clone();
            s.config = Some(fetch_config::fetch(client, &s, true)?);
            let theirs = s.config.as_ref().and_then(Platform::of_config);
            if !theirs.as_ref().is_some_and(|t| t.matches(platform)) {
                bail!(
                    "the {what} {r} is a single image for {}, not for {platform}",
                    theirs
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "an unknown platform".into())
                );
            }
            s
        }
    })
}

/// The image as base detection sees it: the single image, or for an index the index's
/// annotations with the first platform's config (for the label).
pub fn detection_view(doc: &Document) -> Result<detect::View> {
    let (name, manifest, image) = match &doc.index {
        None => {
            let image = doc.unit.require(Role::Image)?;
            (image.reference.clone(), image.manifest.clone(), image)
        }
        Some(ix) => {
            let first = doc
                .platforms
                .first()
                .and_then(|p| p.unit.image.as_ref())
                .context("the index has no platform")?;
            (ix.reference.clone(), ix.manifest.clone(), first)
        }
    };
    Ok(detect::View {
        reference: name,
        registry: image.registry.clone(),
        manifest,
        config: image.config.clone(),
    })
}

/// Fetches the old base that the image's annotations name into the document, and checks
/// that it is an exact prefix of the image (on every platform). `None`: the image has no
/// such annotations. `Some(Err(why))`: that base cannot be used (a builder with a layer
/// cache writes the digest of a local intermediate image, which no registry has); the
/// document is left without an old base.
pub fn annotated_old_base(
    client: &Client,
    doc: &mut Document,
) -> Result<Option<std::result::Result<(), String>>> {
    let view = detection_view(doc)?;
    let r = match detect::old_base(&view) {
        Ok(None) => return Ok(None),
        Ok(Some(r)) => r,
        Err(e) => return Ok(Some(Err(format!("{e:#}")))),
    };
    let tried = fetch_base(client, doc, Role::OldBase, &r, FoundBy::Annotation)
        .with_context(|| format!("fetching manifest {r}"))
        .and_then(|()| fetch_config::step(client, doc))
        .and_then(|()| {
            doc.for_each_unit(|unit| {
                let (image, old) = (unit.require(Role::Image)?, unit.require(Role::OldBase)?);
                split::by_old_base(
                    Parts {
                        manifest: &image.manifest,
                        config: image.config(Role::Image)?,
                    },
                    Parts {
                        manifest: &old.manifest,
                        config: old.config(Role::OldBase)?,
                    },
                )
                .map(|_| ())
            })
        });
    Ok(Some(tried.map_err(|e| {
        for (_, unit) in doc.units_mut() {
            unit.old_base = None;
        }
        format!(
            "the old base that the annotations of {} name, {r}, cannot be used: {e:#}",
            view.reference
        )
    })))
}

/// The old base named by the image's annotations, fetched and checked. When it cannot be
/// used, the label method (which needs no old base) takes over, with a note; with no
/// label either, the image's base cannot be found (exit status 1).
fn find_old_base(
    client: &Client,
    doc: &mut Document,
    opts: &Options,
    notes: &mut Vec<String>,
) -> Result<()> {
    let why = match annotated_old_base(client, doc)? {
        Some(Ok(())) => return Ok(()),
        Some(Err(why)) => why,
        None => {
            let view = detection_view(doc)?;
            bail!(
                "{} has no {} and {} annotations to name its old base: give the old base's reference, \
                 or leave the old base out and split by label or --layers",
                view.reference,
                detect::BASE_NAME,
                detect::BASE_DIGEST
            )
        }
    };
    fetch_image_config(client, doc)?;
    let view = detection_view(doc)?;
    if detect::label_base(&view, opts.label)?.is_none() {
        return Err(no_method_left(&view, &why, opts.label));
    }
    notes.push(format!(
        "{why}; no old base: the split falls back to the {:?} label",
        opts.label
    ));
    Ok(())
}

/// The new base named by the image: the annotation `base.name` when the old base the
/// annotations name is usable (or another old base was given), else the label.
fn find_new_base(
    client: &Client,
    doc: &mut Document,
    opts: &Options,
    notes: &mut Vec<String>,
) -> Result<(Reference, FoundBy)> {
    // The label is in the config.
    fetch_image_config(client, doc)?;
    let view = detection_view(doc)?;
    if detect::annotated_new_base(&view)?.is_some() {
        let has_old_base = doc.units_mut().iter().any(|(_, u)| u.old_base.is_some());
        let why = match opts.annotation_failed {
            Some(why) => Some(why.to_string()),
            None if has_old_base => None,
            None => {
                // Try the annotated old base on a copy of the document.
                let mut probe = Document {
                    index: doc.index.clone(),
                    platforms: doc.platforms.clone(),
                    unit: doc.unit.clone(),
                    ..Document::default()
                };
                annotated_old_base(client, &mut probe)?.and_then(|r| r.err())
            }
        };
        if let Some(why) = why {
            let Some(r) = detect::label_base(&view, opts.label)? else {
                return Err(no_method_left(&view, &why, opts.label));
            };
            if opts.annotation_failed.is_none() {
                notes.push(format!(
                    "{why}; the new base is found by the {:?} label instead",
                    opts.label
                ));
            }
            return Ok((r, FoundBy::LabelAfterAnnotation));
        }
    }
    detect::new_base(&view, opts.label)
}

/// One unit per image platform of the index that `--platform` keeps; the other entries
/// are recorded in the index's `skipped`.
fn platform_units(
    client: &Client,
    ix: &mut IndexSection,
    r: &Reference,
    opts: &Options,
) -> Result<Vec<PlatformUnit>> {
    let descriptors = ix.manifest["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut units = Vec::new();
    for d in &descriptors {
        let digest: crate::oci::digest::Digest = d
            .get("digest")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .parse()?;
        let p = match rebased_platform(d, opts.platforms) {
            Ok(p) => p,
            Err(reason) => {
                ix.skipped.push(Skipped {
                    digest,
                    platform: Platform::of_descriptor(d).map(|p| p.to_string()),
                    reason,
                });
                continue;
            }
        };
        let mut image = fetch_child(client, ix, false, d, format!("{}@{digest}", r.name()))?;
        image.found_by = Some(FoundBy::Index);
        units.push(PlatformUnit {
            platform: p,
            unit: Unit {
                image: Some(image),
                ..Unit::default()
            },
            extra: Map::new(),
        });
    }
    if units.is_empty() {
        let wanted: Vec<String> = opts.platforms.iter().map(|p| p.to_string()).collect();
        bail!(
            "no platform of the index is left to rebase (asked for: {})",
            if wanted.is_empty() {
                "all".into()
            } else {
                wanted.join(", ")
            }
        );
    }
    Ok(units)
}

/// The platform of an index entry to rebase, or why the entry is left out.
fn rebased_platform(d: &Value, wanted: &[Platform]) -> Result<Platform, SkipReason> {
    match Platform::of_descriptor(d) {
        _ if is_attestation(d) => Err(SkipReason::Attestation),
        None => Err(SkipReason::NoPlatform),
        Some(p) if !wanted.is_empty() && !wanted.iter().any(|w| w.matches(&p)) => {
            Err(SkipReason::ExcludedByPlatform)
        }
        Some(p) => Ok(p),
    }
}

/// Fetches the image's config (the first platform's, for an index): its labels.
fn fetch_image_config(client: &Client, doc: &mut Document) -> Result<()> {
    if doc.is_index() {
        if let Some(p) = doc.platforms.first_mut() {
            fetch_config::unit_step(client, &mut p.unit)?;
        }
    } else {
        doc.unit.require(Role::Image)?;
        fetch_config::unit_step(client, &mut doc.unit)?;
    }
    Ok(())
}

fn no_method_left(view: &detect::View, why: &str, label: &str) -> anyhow::Error {
    NotBased(format!(
        "cannot find the base of {}: tried its annotations ({why}) and the label {label:?} (its config has \
         none); give --old-base and --new-base, or --layers and --new-base",
        view.reference
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::Digest;
    use crate::oci::media::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
    use crate::registry::fake::Fake;
    use serde_json::json;

    const NO_OPTIONS: Options = Options {
        label: "FROM",
        platforms: &[],
        annotation_failed: None,
    };

    /// The bytes of a minimal OCI manifest for `arch` (its config need not exist).
    fn manifest(arch: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(arch.as_bytes()), "size": 1},
            "layers": [],
        }))
        .unwrap()
    }

    /// An OCI index in `app:1` of amd64, arm64 and an attestation of the amd64 image;
    /// the index's digest and the digests of its entries.
    fn index(fake: &Fake) -> (Digest, [Digest; 3]) {
        let amd64 = fake.put_manifest("app", None, OCI_MANIFEST, &manifest("amd64"));
        let arm64 = fake.put_manifest("app", None, OCI_MANIFEST, &manifest("arm64"));
        let attestation = fake.put_manifest("app", None, OCI_MANIFEST, &manifest("in-toto"));
        let entry = |d: &Digest, platform: Value| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": 1, "platform": platform});
        let mut att = entry(
            &attestation,
            json!({"os": "unknown", "architecture": "unknown"}),
        );
        att["annotations"] = json!({
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": amd64,
        });
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                entry(&amd64, json!({"os": "linux", "architecture": "amd64"})),
                entry(&arm64, json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
                att,
            ],
        }))
        .unwrap();
        let digest = fake.put_manifest("app", Some("1"), OCI_INDEX, &bytes);
        (digest, [amd64, arm64, attestation])
    }

    #[test]
    fn fetching_an_image_by_tag_fills_the_image_section() {
        let fake = Fake::start();
        let bytes = manifest("amd64");
        let digest = fake.put_manifest("app", Some("1"), OCI_MANIFEST, &bytes);
        // Sections derived from an earlier image are dropped.
        let mut doc = Document::from_json(
            r#"{"image_rebase":1,"split":{"method":"layers","base_layers":1,"base_history":1,"top_layers":0,"top_history":0}}"#,
        )
        .unwrap();
        let notes = step(
            &fake.client(),
            &mut doc,
            Role::Image,
            Some(&fake.r("app:1")),
            &NO_OPTIONS,
        )
        .unwrap();
        assert!(notes.is_empty());
        let image = doc.unit.image.as_ref().expect("an image section");
        assert_eq!(image.digest, digest);
        assert_eq!(image.media_type, OCI_MANIFEST);
        assert_eq!(image.size, bytes.len() as u64);
        assert_eq!(image.found_by, Some(FoundBy::Argument));
        assert_eq!(image.registry, fake.addr());
        assert_eq!(image.repository, "app");
        assert_eq!(image.tag.as_deref(), Some("1"));
        assert_eq!(image.reference, format!("{}/app:1", fake.addr()));
        assert_eq!(
            image.manifest,
            serde_json::from_slice::<Value>(&bytes).unwrap()
        );
        assert_eq!(image.index_digest, None);
        assert!(doc.unit.split.is_none());
        assert!(doc.index.is_none() && doc.platforms.is_empty());
        // The found_by is written as "argument".
        let out: Value = serde_json::from_str(&doc.to_json()).unwrap();
        assert_eq!(out["image"]["found_by"], "argument");
    }

    #[test]
    fn an_index_with_an_attestation_gives_one_platform_unit_per_image_platform_and_skips_the_attestation()
     {
        let fake = Fake::start();
        let (digest, [amd64, arm64, attestation]) = index(&fake);
        let mut doc = Document::default();
        step(
            &fake.client(),
            &mut doc,
            Role::Image,
            Some(&fake.r("app:1")),
            &NO_OPTIONS,
        )
        .unwrap();
        let ix = doc.index.as_ref().expect("an index section");
        assert_eq!(ix.digest, digest);
        assert_eq!(ix.media_type, OCI_INDEX);
        assert_eq!(ix.tag.as_deref(), Some("1"));
        let platforms: Vec<String> = doc
            .platforms
            .iter()
            .map(|p| p.platform.to_string())
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
        for (p, want) in doc.platforms.iter().zip([&amd64, &arm64]) {
            let image = p.unit.image.as_ref().expect("an image per platform");
            assert_eq!(&image.digest, want);
            assert_eq!(image.found_by, Some(FoundBy::Index));
            assert_eq!(image.index_digest.as_ref(), Some(&digest));
            assert_eq!(image.reference, format!("{}/app@{want}", fake.addr()));
        }
        assert_eq!(ix.skipped.len(), 1, "{:?}", ix.skipped);
        let skipped = &ix.skipped[0];
        assert_eq!(skipped.digest, attestation);
        assert_eq!(skipped.reason, SkipReason::Attestation);
        assert_eq!(skipped.platform.as_deref(), Some("unknown/unknown"));
        // The attestation's manifest is not fetched.
        let asked: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.names(&attestation))
            .collect();
        assert!(asked.is_empty(), "{asked:#?}");
        assert!(doc.unit.image.is_none());
    }

    #[test]
    fn platforms_left_out_by_platform_are_skipped_as_excluded() {
        let fake = Fake::start();
        let (_, [amd64, arm64, _]) = index(&fake);
        let wanted = [Platform::parse("linux/arm64").unwrap()];
        let opts = Options {
            platforms: &wanted,
            ..NO_OPTIONS
        };
        let mut doc = Document::default();
        step(
            &fake.client(),
            &mut doc,
            Role::Image,
            Some(&fake.r("app:1")),
            &opts,
        )
        .unwrap();
        assert_eq!(doc.platforms.len(), 1);
        assert_eq!(doc.platforms[0].unit.image.as_ref().unwrap().digest, arm64);
        let ix = doc.index.as_ref().unwrap();
        let excluded: Vec<_> = ix
            .skipped
            .iter()
            .filter(|s| s.reason == SkipReason::ExcludedByPlatform)
            .map(|s| &s.digest)
            .collect();
        assert_eq!(excluded, [&amd64]);
        assert!(
            !fake.requests().iter().any(|r| r.names(&amd64)),
            "not fetched"
        );
    }

    #[test]
    fn an_index_with_no_platform_left_is_refused() {
        let fake = Fake::start();
        index(&fake);
        let wanted = [Platform::parse("linux/s390x").unwrap()];
        let opts = Options {
            platforms: &wanted,
            ..NO_OPTIONS
        };
        let mut doc = Document::default();
        let err = step(
            &fake.client(),
            &mut doc,
            Role::Image,
            Some(&fake.r("app:1")),
            &opts,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("no platform of the index is left"), "{msg}");
        assert!(msg.contains("linux/s390x"), "{msg}");
    }

    #[test]
    fn a_missing_image_is_an_error_naming_the_reference() {
        let fake = Fake::start();
        let mut doc = Document::default();
        let r = fake.r("app:1");
        let err = step(&fake.client(), &mut doc, Role::Image, Some(&r), &NO_OPTIONS).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("fetching manifest {r}")), "{msg}");
        assert!(msg.contains("MANIFEST_UNKNOWN"), "{msg}");
        assert!(doc.unit.image.is_none());
    }

    #[test]
    fn a_base_given_as_an_argument_is_found_by_argument_and_drops_the_split() {
        let fake = Fake::start();
        let image = fake.put_manifest("app", Some("1"), OCI_MANIFEST, &manifest("amd64"));
        let base = fake.put_manifest("base", Some("v2"), OCI_MANIFEST, &manifest("base"));
        let client = fake.client();
        let mut doc = Document::default();
        step(
            &client,
            &mut doc,
            Role::Image,
            Some(&fake.r("app:1")),
            &NO_OPTIONS,
        )
        .unwrap();
        doc.unit.split = Some(
            serde_json::from_value(json!({"method": "layers", "base_layers": 0, "base_history": 0, "top_layers": 0, "top_history": 0}))
                .unwrap(),
        );
        step(
            &client,
            &mut doc,
            Role::NewBase,
            Some(&fake.r("base:v2")),
            &NO_OPTIONS,
        )
        .unwrap();
        let new_base = doc.unit.new_base.as_ref().expect("a new_base section");
        assert_eq!(new_base.digest, base);
        assert_eq!(new_base.found_by, Some(FoundBy::Argument));
        assert_eq!(doc.unit.image.as_ref().unwrap().digest, image);
        assert!(doc.unit.split.is_none());
    }
}
