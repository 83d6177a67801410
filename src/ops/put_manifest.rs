//! put-manifest: where and whether to write (the tag, `--single`, `--force`, whether the
//! tag may move: one rule for images and indexes), then the registry's push engine writes.

use crate::document::{
    Document, ImageSection, IndexSection, Pushed, ResultSection, Role, Target, Unit,
};
use crate::image;
use crate::image::index::{self, Child, NewIndex};
use crate::image::splice::finalize;
use crate::oci::digest::Digest;
use crate::oci::media::Family;
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_tag};
use crate::ops::PushOptions;
use crate::registry::{Ahead, Blob, Client, MAX_JSON_BYTES, Placed, Push, PushReport, Why};
use anyhow::{Context, Result, bail};
use serde_json::Map;

/// Pushes the result: every layer is made present in the target repository by a
/// cross-repository mount where one can do (no layer data moves), else copied from the
/// registry that has it (a note says how much and why; `--no-copy` refuses instead), the
/// config is uploaded, and the manifest is put last so that a failure part-way never
/// moves the tag. A target tag that already
/// holds this manifest is left alone; one that holds an unrelated image is refused unless
/// `--force`. An up-to-date result writes nothing, or only the tag when it differs. For a
/// multi-platform image each platform's manifest is pushed by digest, then the new index
/// under the tag. Returns notes for the user.
pub fn step(client: &Client, doc: &mut Document, args: &PushOptions) -> Result<Vec<String>> {
    let done = write(client, doc, args);
    if let Some(ahead) = &args.ahead {
        client.cancel_ahead(ahead);
    }
    done
}

fn write(client: &Client, doc: &mut Document, args: &PushOptions) -> Result<Vec<String>> {
    if let Some(t) = &args.tag {
        check_tag(t)?;
    }
    if doc.is_index() {
        return index_step(client, doc, args);
    }
    if args.single {
        bail!("--single is for multi-platform images; this one is a single image");
    }
    let unit = &doc.unit;
    let mut target = result_target(unit, args)?;
    if let Some(t) = &args.tag {
        target.tag = Some(t.clone());
    }
    let mut notes = Vec::new();
    let pushed = push_unit(client, unit, &target, args, &mut notes)?;
    doc.unit.pushed = Some(pushed);
    Ok(notes)
}

/// Pushes one single-platform result to `target`; notes on layer data copied.
fn push_unit(
    client: &Client,
    unit: &Unit,
    target: &Target,
    args: &PushOptions,
    notes: &mut Vec<String>,
) -> Result<Pushed> {
    let result = require_result(unit)?;
    // A dry run only reads: it asks for no push right.
    if !args.dry_run {
        declare_scopes(client, unit, target)?;
    }
    if result.up_to_date {
        retag(client, unit, target, args, notes)
    } else {
        push(client, unit, result, target, args, notes)
    }
}

fn index_step(client: &Client, doc: &mut Document, args: &PushOptions) -> Result<Vec<String>> {
    let ix = doc.index.clone().expect("an index document");
    if args.single {
        return single_platform(client, doc, &ix, args);
    }
    // Each platform by digest (the target's tag is dropped below): the index refers to
    // them. A digest holds that manifest or nothing, so --force has nothing to overwrite.
    let by_digest = PushOptions {
        force: false,
        ..args.clone()
    };
    let mut notes = Vec::new();
    for p in doc.platforms.iter_mut() {
        let mut target = result_target(&p.unit, args)?;
        target.tag = None;
        let pushed = push_unit(client, &p.unit, &target, &by_digest, &mut notes)
            .with_context(|| format!("platform {}", p.platform))?;
        p.unit.pushed = Some(pushed);
    }
    let (new, pushed) = put_index(client, doc, &ix, args)?;
    doc.index.as_mut().expect("an index document").pushed = Some(pushed);
    notes.extend(new.notes);
    Ok(notes)
}

/// A unit's result, or an error naming the step that makes it.
fn require_result(unit: &Unit) -> Result<&ResultSection> {
    unit.result
        .as_ref()
        .context("the document has no \"result\" section: run image-rebase splice first")
}

/// The target a unit's result names, in the repository `--tag` names if it names one.
fn result_target(unit: &Unit, args: &PushOptions) -> Result<Target> {
    let mut target = require_result(unit)?.target.clone();
    if let Some((registry, repository)) = &args.to {
        target.registry = registry.clone();
        target.repository = repository.clone();
    }
    Ok(target)
}

/// `--single`: the one platform left is pushed under the tag, without an index.
fn single_platform(
    client: &Client,
    doc: &mut Document,
    ix: &IndexSection,
    args: &PushOptions,
) -> Result<Vec<String>> {
    let [only] = doc.platforms.as_mut_slice() else {
        let left: Vec<String> = doc
            .platforms
            .iter()
            .map(|p| p.platform.to_string())
            .collect();
        bail!(
            "--single pushes one platform's manifest, but {} platforms are left ({}): choose one with --platform \
             (of rebase or fetch-manifest)",
            left.len(),
            left.join(", ")
        );
    };
    let mut target = result_target(&only.unit, args)?;
    target.tag = args.tag.clone().or(ix.tag.clone());
    let mut notes = Vec::new();
    let pushed = push_unit(client, &only.unit, &target, args, &mut notes)
        .with_context(|| format!("platform {}", only.platform))?;
    only.unit.pushed = Some(pushed);
    Ok(notes)
}

/// The new index from the pushed platforms, written under the tag when the tag rules
/// allow it (an index equal to the original is not written to its own tag).
fn put_index(
    client: &Client,
    doc: &Document,
    ix: &IndexSection,
    args: &PushOptions,
) -> Result<(NewIndex, Pushed)> {
    let new = new_index(doc, ix, args)?;
    let target = index_target(ix, args);
    let (bytes, digest, size) = if new.changed {
        let bytes = serde_json::to_vec(&new.manifest)?;
        let (digest, size) = (Digest::of(&bytes), bytes.len() as u64);
        (bytes, digest, size)
    } else {
        (Vec::new(), ix.digest.clone(), ix.size)
    };
    let mut pushed = new_pushed(&target, &digest, &ix.media_type, size, &digest);
    pushed.dry_run = args.dry_run;
    let same_place = target.registry == ix.registry
        && target.repository == ix.repository
        && (target.tag.is_none() || target.tag == ix.tag);
    let source = Source {
        digest: &ix.digest,
        reference: &ix.reference,
    };
    let holds = if !new.changed && same_place {
        pushed.previous = target.tag.is_some().then(|| ix.digest.clone());
        true
    } else {
        let checked = check_target(
            client,
            &target,
            &digest,
            args.force,
            asked_ahead(client, &target, args),
            source,
            |current| index_is_rebase_of(client, doc, &target, current),
        )?;
        pushed.previous = checked.previous;
        checked.holds
    };
    if holds {
        pushed.unchanged = true;
    } else if !args.dry_run {
        let bytes = if new.changed {
            bytes
        } else {
            original_bytes(client, ix)?
        };
        write_index(client, &target, &ix.media_type, &bytes, args.no_copy)?;
    }
    Ok((new, pushed))
}

/// Where the new index goes: the index's own repository, or `--tag`'s; its tag, or
/// `--tag`'s.
fn index_target(ix: &IndexSection, args: &PushOptions) -> Target {
    let (registry, repository) = args
        .to
        .clone()
        .unwrap_or_else(|| (ix.registry.clone(), ix.repository.clone()));
    Target {
        registry,
        repository,
        tag: args.tag.clone().or(ix.tag.clone()),
        extra: Map::new(),
    }
}

/// Puts an index under the target: every manifest it lists is there already.
fn write_index(
    client: &Client,
    target: &Target,
    media_type: &str,
    bytes: &[u8],
    no_copy: bool,
) -> Result<()> {
    client
        .push(&Push {
            registry: &target.registry,
            repository: &target.repository,
            tag: target.tag.as_deref(),
            media_type,
            manifest: bytes,
            blobs: vec![],
            upload: None,
            dry_run: false,
            no_copy,
            ahead: None,
        })
        .with_context(|| {
            format!(
                "putting the index into {}/{}",
                target.registry, target.repository
            )
        })?;
    Ok(())
}

/// The new index for the document's pushed platforms.
fn new_index(doc: &Document, ix: &IndexSection, args: &PushOptions) -> Result<NewIndex> {
    let children: Vec<Child> = doc
        .platforms
        .iter()
        .filter_map(|p| {
            Some(Child {
                was: &p.unit.image.as_ref()?.digest,
                now: p.unit.pushed.as_ref().map(|pu| index::Pushed {
                    digest: &pu.digest,
                    size: pu.size,
                    media_type: &pu.media_type,
                }),
            })
        })
        .collect();
    let base = doc
        .platforms
        .iter()
        .filter_map(|p| p.unit.result.as_ref())
        .find_map(|r| r.manifest.get("annotations"));
    let oci = ix.media_type == crate::oci::media::OCI_INDEX;
    index::build(&ix.manifest, oci, &children, args.keep_attestations, base)
}

/// The original index's bytes, as the registry has them.
fn original_bytes(client: &Client, ix: &IndexSection) -> Result<Vec<u8>> {
    let pinned = Reference {
        registry: ix.registry.clone(),
        repository: ix.repository.clone(),
        tag: None,
        digest: Some(ix.digest.clone()),
    };
    Ok(client
        .fetch_manifest(&pinned)
        .with_context(|| format!("fetching manifest {pinned}"))?
        .bytes)
}

/// Whether the index at `current` is a rebase of the document's: each of the document's
/// platforms is there, and a rebase of that platform's image.
fn index_is_rebase_of(
    client: &Client,
    doc: &Document,
    target: &Target,
    current: &Reference,
) -> Result<bool> {
    let fetched = client.fetch_manifest(current)?;
    let theirs: serde_json::Value = serde_json::from_slice(&fetched.bytes)?;
    let Some(children) = theirs.get("manifests").and_then(|m| m.as_array()) else {
        return Ok(false);
    };
    for p in &doc.platforms {
        let child = children
            .iter()
            .find(|d| Platform::of_descriptor(d).is_some_and(|q| q.matches(&p.platform)))
            .and_then(|c| c.get("digest"))
            .and_then(|d| d.as_str());
        let Some(child) = child else {
            return Ok(false);
        };
        if !is_rebase_of(client, &p.unit, &target_ref(target, Some(&child.parse()?)))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One token per registry for the whole push (see `Client::want_push`): the sources are
/// the document's sections.
fn declare_scopes(client: &Client, doc: &Unit, target: &Target) -> Result<()> {
    let sources = [Role::NewBase, Role::Image, Role::OldBase]
        .into_iter()
        .filter_map(|r| doc.section(r))
        .map(|s| (s.registry.as_str(), s.repository.as_str()));
    client.want_push(&target.registry, &target.repository, "pull,push", sources)
}

fn target_ref(target: &Target, digest: Option<&Digest>) -> Reference {
    Reference {
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        tag: target.tag.clone(),
        digest: digest.cloned(),
    }
}

fn new_pushed(
    target: &Target,
    digest: &Digest,
    media_type: &str,
    size: u64,
    config_digest: &Digest,
) -> Pushed {
    Pushed {
        reference: format!("{}/{}@{digest}", target.registry, target.repository),
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        tag: target.tag.clone(),
        digest: digest.clone(),
        media_type: media_type.to_string(),
        size,
        config_digest: config_digest.clone(),
        mounted: vec![],
        present: vec![],
        uploaded: vec![],
        copied: vec![],
        copied_bytes: 0,
        unchanged: false,
        previous: None,
        dry_run: false,
        extra: serde_json::Map::new(),
    }
}

fn push(
    client: &Client,
    doc: &Unit,
    result: &ResultSection,
    target: &Target,
    args: &PushOptions,
    notes: &mut Vec<String>,
) -> Result<Pushed> {
    let family = Family::of_manifest(&result.media_type).context("the result's media_type")?;
    image::check_consistent("the result", &result.manifest, &result.config)?;
    check_manifest_family(&result.manifest, family)?;
    let fin = finalize(&result.manifest, &result.config)?;
    let mut pushed = new_pushed(
        target,
        &fin.manifest_digest,
        &result.media_type,
        fin.manifest_bytes.len() as u64,
        &fin.config_digest,
    );
    pushed.dry_run = args.dry_run;
    // The config's upload session is opened while the target tag is checked (unless the
    // porcelain opened it ahead): neither waits for the other. Unused, it is cancelled.
    let own = Ahead::new(&target.registry, &target.repository, None);
    let ahead = match args.ahead.as_deref() {
        Some(a) if a.is_for(&target.registry, &target.repository) => a,
        _ => &own,
    };
    let blobs = result_layers(doc, result)?;
    // Only while a request checks the target: an answer known already may well say that
    // nothing is to be written (a re-run).
    let asks = known_target(client, doc.require(Role::Image)?, target, args).is_none();
    let checked = std::thread::scope(|s| {
        if asks && !args.dry_run {
            s.spawn(|| client.open_ahead(ahead));
        }
        check_image_target(client, doc, target, &fin.manifest_digest, args)
    });
    let pushed = checked.and_then(|checked| {
        pushed.previous = checked.previous;
        if checked.holds {
            pushed.unchanged = true;
            return Ok(pushed);
        }
        let report = client.push(&Push {
            registry: &target.registry,
            repository: &target.repository,
            tag: target.tag.as_deref(),
            media_type: &result.media_type,
            manifest: &fin.manifest_bytes,
            blobs,
            upload: Some((&fin.config_digest, &fin.config_bytes)),
            dry_run: args.dry_run,
            no_copy: args.no_copy,
            ahead: Some(ahead),
        })?;
        notes.extend(record(&mut pushed, report, args.dry_run));
        Ok(pushed)
    });
    client.cancel_ahead(&own);
    pushed
}

/// The result's layers to make present, each once; foreign (non-distributable) layers
/// live at their URLs, not in the registry.
fn result_layers(doc: &Unit, result: &ResultSection) -> Result<Vec<Blob>> {
    let mut blobs: Vec<Blob> = Vec::new();
    for descriptor in image::layers(&result.manifest)? {
        let layer = descriptor
            .get("digest")
            .and_then(|d| d.as_str())
            .context("a layer has no digest")?;
        let digest: Digest = layer.parse()?;
        if !is_foreign(descriptor) && !blobs.iter().any(|b| b.digest == digest) {
            blobs.push(Blob {
                size: size_of(descriptor)?,
                digest,
                what: "layer",
                sources: sources_of(doc, layer),
            });
        }
    }
    Ok(blobs)
}

/// Lists what the push did with each blob in the document's terms; a note for each
/// registry layer data was copied from, saying how much and why.
fn record(pushed: &mut Pushed, report: PushReport, dry_run: bool) -> Vec<String> {
    // (from, why) -> (layers, the config too, bytes), in the order first met.
    type Group = ((String, Why), (usize, bool, u64));
    let mut copies: Vec<Group> = Vec::new();
    for (digest, placed) in report.blobs {
        match placed {
            Placed::Present => pushed.present.push(digest),
            Placed::Mounted => pushed.mounted.push(digest),
            Placed::Uploaded => pushed.uploaded.push(digest),
            Placed::Copied(c) => {
                let config = digest == pushed.config_digest;
                pushed.copied.push(digest);
                pushed.copied_bytes += c.bytes;
                let key = (c.from, c.why);
                let i = match copies.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        copies.push((key, (0, false, 0)));
                        copies.len() - 1
                    }
                };
                let (layers, with_config, bytes) = &mut copies[i].1;
                if config {
                    *with_config = true;
                } else {
                    *layers += 1;
                }
                *bytes += c.bytes;
            }
        }
    }
    copies
        .into_iter()
        .map(|((from, why), (n, with_config, bytes))| {
            let what = match (n, with_config) {
                (0, _) => "the config".to_string(),
                (1, false) => "1 layer".to_string(),
                (n, false) => format!("{n} layers"),
                (1, true) => "1 layer and the config".to_string(),
                (n, true) => format!("{n} layers and the config"),
            };
            format!(
                "{} {what}, {}, from {from} to {}/{}: {}",
                if dry_run { "would copy" } else { "copied" },
                human_bytes(bytes),
                pushed.registry,
                pushed.repository,
                why.explain()
            )
        })
        .collect()
}

/// A size for people: `31.4 MiB`, `512 bytes`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A descriptor's size.
fn size_of(descriptor: &serde_json::Value) -> Result<u64> {
    descriptor
        .get("size")
        .and_then(|s| s.as_u64())
        .context("a descriptor has no valid size")
}

/// The image is already on the new base: nothing to write unless the target is another
/// tag, which then gets the image's own manifest bytes.
fn retag(
    client: &Client,
    doc: &Unit,
    target: &Target,
    args: &PushOptions,
    notes: &mut Vec<String>,
) -> Result<Pushed> {
    let image = doc.require(Role::Image)?;
    let (config_digest, _) = image::config_descriptor(&image.manifest)?;
    let config_digest: Digest = config_digest.parse()?;
    let mut pushed = new_pushed(
        target,
        &image.digest,
        &image.media_type,
        image.size,
        &config_digest,
    );
    pushed.dry_run = args.dry_run;
    let same_place = target.registry == image.registry && target.repository == image.repository;
    if same_place && (target.tag.is_none() || target.tag == image.tag) {
        pushed.unchanged = true;
        pushed.previous = target.tag.is_some().then(|| image.digest.clone());
        return Ok(pushed);
    }
    let checked = check_image_target(client, doc, target, &image.digest, args)?;
    pushed.previous = checked.previous;
    if checked.holds {
        pushed.unchanged = true;
        return Ok(pushed);
    }
    let blobs = image_blobs(image)?;
    let bytes = if args.dry_run {
        Vec::new()
    } else {
        client
            .fetch_manifest(&image.as_reference())
            .with_context(|| format!("fetching manifest {}", image.pinned()))?
            .bytes
    };
    let report = client.push(&Push {
        registry: &target.registry,
        repository: &target.repository,
        tag: target.tag.as_deref(),
        media_type: &image.media_type,
        manifest: &bytes,
        blobs,
        upload: None,
        dry_run: args.dry_run,
        no_copy: args.no_copy,
        ahead: None,
    })?;
    notes.extend(record(&mut pushed, report, args.dry_run));
    Ok(pushed)
}

/// Every blob of an image, to be placed in the target from the image's repository; but
/// foreign (non-distributable) layers, which live at their URLs, not in the registry.
fn image_blobs(image: &ImageSection) -> Result<Vec<Blob>> {
    let source = vec![(image.registry.clone(), image.repository.clone())];
    let config = image
        .manifest
        .get("config")
        .context("the image's manifest has no config")?;
    let mut blobs = Vec::new();
    for (what, descriptor) in image::layers(&image.manifest)?
        .iter()
        .filter(|l| !is_foreign(l))
        .map(|l| ("layer", l))
        .chain([("config", config)])
    {
        let digest = descriptor
            .get("digest")
            .and_then(|d| d.as_str())
            .with_context(|| format!("a {what} has no digest"))?;
        blobs.push(Blob {
            digest: digest.parse()?,
            size: size_of(descriptor)?,
            what,
            sources: source.clone(),
        });
    }
    Ok(blobs)
}

/// The image or index a push comes from.
struct Source<'a> {
    digest: &'a Digest,
    /// As the user named it, for messages.
    reference: &'a str,
}

/// What `check_target` found.
struct Checked {
    /// The target already holds the manifest: nothing to write.
    holds: bool,
    /// What the target tag holds now (None: nothing, or no tag), which the write replaces.
    previous: Option<Digest>,
}

/// Whether the target may be written: one rule for images and indexes. `holds` when it
/// already holds `digest` (nothing to write); free when nothing is there, the source
/// itself, something `is_ours` accepts (a rebase of the source), or anything with
/// `force`; an error naming the tag and what it holds otherwise. `known` is what the tag
/// is known to hold without asking (the porcelain's own tag, or what it asked ahead).
fn check_target(
    client: &Client,
    target: &Target,
    digest: &Digest,
    force: bool,
    known: Option<Option<Digest>>,
    source: Source,
    is_ours: impl FnOnce(&Reference) -> Result<bool>,
) -> Result<Checked> {
    let r = target_ref(
        target,
        if target.tag.is_none() {
            Some(digest)
        } else {
            None
        },
    );
    let current = match known {
        Some(known) => known,
        None => client
            .head_manifest(&r)
            .with_context(|| format!("checking {r}"))?,
    };
    let Some(current) = current else {
        return Ok(Checked {
            holds: false,
            previous: None,
        });
    };
    let holds = &current == digest;
    let free = holds || force || &current == source.digest;
    if !free
        && !is_ours(&target_ref(target, Some(&current)))
            .with_context(|| format!("looking at what {r} holds now"))?
    {
        return Err(refuse_overwrite(&r, &current, source.reference));
    }
    Ok(Checked {
        holds,
        // A manifest put by digest replaces nothing.
        previous: target.tag.is_some().then_some(current),
    })
}

/// `check_target` for a single image: its own tag is known to hold it in the porcelain,
/// and a tag holding a rebase of it may be replaced.
fn check_image_target(
    client: &Client,
    doc: &Unit,
    target: &Target,
    digest: &Digest,
    args: &PushOptions,
) -> Result<Checked> {
    let image = doc.require(Role::Image)?;
    let source = Source {
        digest: &image.digest,
        reference: &image.reference,
    };
    let known = known_target(client, image, target, args);
    check_target(
        client,
        target,
        digest,
        args.force,
        known,
        source,
        |current| is_rebase_of(client, doc, current),
    )
}

/// What the image's own tag holds, when that is known without asking: the porcelain
/// fetched the image moments ago. A document from stdin may be stale: then None.
fn own_tag_digest(image: &ImageSection, target: &Target, args: &PushOptions) -> Option<Digest> {
    let own_tag = target.tag.is_some()
        && target.tag == image.tag
        && target.registry == image.registry
        && target.repository == image.repository;
    (own_tag && args.image_is_current).then(|| image.digest.clone())
}

/// What the target holds, when that is known without asking now: the image's own tag
/// in the porcelain, or what the porcelain asked ahead.
fn known_target(
    client: &Client,
    image: &ImageSection,
    target: &Target,
    args: &PushOptions,
) -> Option<Option<Digest>> {
    own_tag_digest(image, target, args)
        .map(Some)
        .or_else(|| asked_ahead(client, target, args))
}

/// What the target tag held when the porcelain asked ahead, with the first requests (it
/// moves only by this push's manifest PUT, and a rebase takes milliseconds); `None`:
/// ask now.
fn asked_ahead(client: &Client, target: &Target, args: &PushOptions) -> Option<Option<Digest>> {
    let ahead = args.ahead.as_deref()?;
    target.tag.as_ref()?;
    client.head_asked(ahead, &target_ref(target, None))
}

/// Whether the manifest at `r` has the image's own part (top layers and history) on top.
fn is_rebase_of(client: &Client, doc: &Unit, r: &Reference) -> Result<bool> {
    let image = doc.require(Role::Image)?;
    let Some(split) = &doc.split else {
        return Ok(false);
    };
    let fetched = client.fetch_manifest(r)?;
    if Family::of_manifest(&fetched.media_type).is_err() {
        return Ok(false);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes)?;
    let (config_digest, _) = image::config_descriptor(&manifest)?;
    let bytes = client.fetch_blob(
        &r.registry,
        &r.repository,
        &config_digest.parse()?,
        MAX_JSON_BYTES,
    )?;
    let config: serde_json::Value = serde_json::from_slice(&bytes)?;
    let image_config = image.config(Role::Image)?;
    let (mine, theirs) = (
        image::layer_digests(&image.manifest)?,
        image::layer_digests(&manifest)?,
    );
    let top = &mine[split.base_layers.min(mine.len())..];
    let same_layers = theirs.len() >= top.len() && theirs[theirs.len() - top.len()..] == *top;
    let my_history = image::history_slice(image_config);
    let top_history = &my_history[split.base_history.min(my_history.len())..];
    let their_history = image::history_slice(&config);
    let same_history = their_history.len() >= top_history.len()
        && their_history[their_history.len() - top_history.len()..] == *top_history;
    // An image with no part of its own proves nothing: anything "ends with" it.
    let has_own_part = !top.is_empty() || !top_history.is_empty();
    Ok(has_own_part && same_layers && same_history)
}

/// The repositories (registry, repository) of the document's images whose manifests list
/// this layer: where it can be mounted from.
fn sources_of(doc: &Unit, layer: &str) -> Vec<(String, String)> {
    [Role::NewBase, Role::Image, Role::OldBase]
        .into_iter()
        .filter_map(|role| doc.section(role))
        .filter(|s| image::layer_digests(&s.manifest).is_ok_and(|ls| ls.contains(&layer)))
        .map(|s| (s.registry.clone(), s.repository.clone()))
        .collect()
}

/// Refuses a manifest whose descriptors mix Docker and OCI media types.
fn check_manifest_family(manifest: &serde_json::Value, family: Family) -> Result<()> {
    let foreign = match family {
        Family::Docker => "application/vnd.oci.",
        Family::Oci => "application/vnd.docker.",
    };
    let config_type = manifest
        .pointer("/config/mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    let layer_types = image::layers(manifest)?
        .iter()
        .filter_map(|l| l.get("mediaType").and_then(|m| m.as_str()));
    if let Some(bad) = std::iter::once(config_type)
        .chain(layer_types)
        .find(|t| t.starts_with(foreign))
    {
        bail!(
            "the result is a {} manifest but lists a descriptor of media type {bad}: Docker and OCI \
             media types cannot be mixed in one manifest",
            family.name()
        );
    }
    Ok(())
}

/// Whether a layer descriptor is foreign (non-distributable): it is not in the registry.
fn is_foreign(descriptor: &serde_json::Value) -> bool {
    let media_type = descriptor
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

/// The refusal to move a tag that holds an unrelated image.
fn refuse_overwrite(target: &Reference, current: &Digest, image: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the tag {target} already holds {current}, which is neither {image} nor a rebase of it: \
         give --force to overwrite it, or another --tag"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
    use crate::registry::fake::{Fake, Request};
    use serde_json::{Value, json};

    const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    /// A config for `arch` with one diff_id and history entry per `created_by`.
    fn config_for(arch: &str, created_by: &[&str]) -> Value {
        json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": created_by.iter().map(|c| Digest::of(c.as_bytes())).collect::<Vec<_>>()},
            "history": created_by.iter().map(|c| json!({"created_by": c})).collect::<Vec<_>>(),
        })
    }

    fn config(created_by: &[&str]) -> Value {
        config_for("amd64", created_by)
    }

    fn manifest(config: &Value, layers: &[&Digest]) -> Value {
        let config_bytes = serde_json::to_vec(config).unwrap();
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(&config_bytes), "size": config_bytes.len()},
            "layers": layers.iter().map(|d| json!({"mediaType": LAYER_TYPE, "digest": d, "size": 1})).collect::<Vec<_>>(),
        })
    }

    /// Stores an image with this config (its layers, config and manifest, under `tag`
    /// when given) in `repository`; its manifest and the digest of the manifest's bytes.
    fn store_config(
        fake: &Fake,
        repository: &str,
        tag: Option<&str>,
        config: &Value,
        created_by: &[&str],
    ) -> (Value, Digest) {
        let layers: Vec<Digest> = created_by
            .iter()
            .map(|c| fake.put_blob(repository, format!("layer of {c}").as_bytes()))
            .collect();
        fake.put_blob(repository, &serde_json::to_vec(config).unwrap());
        let manifest = manifest(config, &layers.iter().collect::<Vec<_>>());
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = fake.put_manifest(repository, tag, OCI_MANIFEST, &bytes);
        (manifest, digest)
    }

    /// `store_config` of an amd64 image under `tag`; its manifest, config and digest.
    fn store(
        fake: &Fake,
        repository: &str,
        tag: &str,
        created_by: &[&str],
    ) -> (Value, Value, Digest) {
        let config = config(created_by);
        let (manifest, digest) = store_config(fake, repository, Some(tag), &config, created_by);
        (manifest, config, digest)
    }

    fn layer(created_by: &str) -> Digest {
        Digest::of(format!("layer of {created_by}").as_bytes())
    }

    /// The sections of a rebase of the `arch` image in `app` (old base, then app) onto
    /// `base:v2`; the result (new base, then app) is to be written to `app`, under
    /// `target_tag` when given. The fake holds the image (under `image_tag` when given,
    /// else by digest only) and the new base. Also the image's digest.
    fn unit(
        fake: &Fake,
        arch: &str,
        image_tag: Option<&str>,
        target_tag: Option<&str>,
    ) -> (Value, Digest) {
        let image_config = config_for(arch, &["old base", "app"]);
        let (image, image_digest) =
            store_config(fake, "app", image_tag, &image_config, &["old base", "app"]);
        let new_base_config = config_for(arch, &["new base"]);
        let (new_base, new_base_digest) =
            store_config(fake, "base", Some("v2"), &new_base_config, &["new base"]);
        let result_config = config_for(arch, &["new base", "app"]);
        let result = manifest(&result_config, &[&layer("new base"), &layer("app")]);
        let section = |repository: &str,
                       tag: Option<&str>,
                       manifest: &Value,
                       config: &Value,
                       digest: &Digest| {
            json!({
                "reference": match tag {
                    Some(t) => format!("{}/{repository}:{t}", fake.addr()),
                    None => format!("{}/{repository}@{digest}", fake.addr()),
                },
                "registry": fake.addr(), "repository": repository, "tag": tag,
                "digest": digest, "media_type": OCI_MANIFEST,
                "size": serde_json::to_vec(manifest).unwrap().len(),
                "manifest": manifest, "config": config,
            })
        };
        let unit = json!({
            "image": section("app", image_tag, &image, &image_config, &image_digest),
            "new_base": section("base", Some("v2"), &new_base, &new_base_config, &new_base_digest),
            "split": {"method": "layers", "base_layers": 1, "base_history": 1, "top_layers": 1, "top_history": 1},
            "result": {
                "target": {"registry": fake.addr(), "repository": "app", "tag": target_tag},
                "media_type": OCI_MANIFEST,
                "manifest": result,
                "config": result_config,
            },
        });
        (unit, image_digest)
    }

    /// A document rebasing the single image `app:1` (see `unit`); the result is to be
    /// written to `app:<target_tag>`.
    fn document(fake: &Fake, target_tag: &str) -> Document {
        let (mut doc, _) = unit(fake, "amd64", Some("1"), Some(target_tag));
        doc["image_rebase"] = json!(1);
        Document::from_json(&doc.to_string()).unwrap()
    }

    /// A document rebasing the OCI index `app:1` of an amd64 and an arm64 image.
    fn index_document(fake: &Fake) -> Document {
        let platforms: Vec<(Value, Value, Digest)> = ["amd64", "arm64"]
            .into_iter()
            .map(|arch| {
                let (unit, digest) = unit(fake, arch, None, None);
                (json!({"os": "linux", "architecture": arch}), unit, digest)
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": platforms.iter().map(|(platform, unit, digest)| json!({
                "mediaType": OCI_MANIFEST, "digest": digest,
                "size": serde_json::to_vec(&unit["image"]["manifest"]).unwrap().len(),
                "platform": platform,
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        let digest = fake.put_manifest("app", Some("1"), OCI_INDEX, &bytes);
        let doc = json!({
            "image_rebase": 1,
            "index": {
                "reference": format!("{}/app:1", fake.addr()),
                "registry": fake.addr(), "repository": "app", "tag": "1",
                "digest": digest, "media_type": OCI_INDEX, "size": bytes.len(),
                "manifest": index, "skipped": [],
            },
            "platforms": platforms.into_iter().map(|(platform, mut unit, _)| {
                unit["platform"] = platform;
                unit
            }).collect::<Vec<_>>(),
        });
        Document::from_json(&doc.to_string()).unwrap()
    }

    /// The requests that changed something: upload sessions opened ahead and cancelled
    /// change nothing (none may be left open).
    fn writes(fake: &Fake) -> Vec<Request> {
        assert_eq!(fake.open_uploads(), 0, "an upload session was left open");
        let session = |r: &Request| {
            r.path.contains("/blobs/uploads/")
                && (r.method == "DELETE" || r.method == "POST" && r.param("mount").is_none())
        };
        let requests = fake.requests();
        let cancelled = requests.iter().any(|r| r.method == "DELETE");
        requests
            .into_iter()
            .filter(|r| r.writes() && !(cancelled && session(r)))
            .collect()
    }

    /// The requests sent, but for the version check.
    fn asked(fake: &Fake) -> Vec<Request> {
        fake.requests()
            .into_iter()
            .filter(|r| r.path != "/v2/")
            .collect()
    }

    fn pushed(doc: &Document) -> &Pushed {
        doc.unit.pushed.as_ref().expect("a pushed section")
    }

    #[test]
    fn the_target_tag_is_written_and_the_mounted_present_and_uploaded_blobs_are_recorded() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let p = pushed(&doc);
        let written = fake.manifest("app", "rebased").expect("the tag is written");
        assert_eq!(Digest::of(&written), p.digest);
        assert_eq!(p.size, written.len() as u64);
        assert_eq!(p.tag.as_deref(), Some("rebased"));
        assert_eq!(p.reference, format!("{}/app@{}", fake.addr(), p.digest));
        let written: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(
            image::layer_digests(&written).unwrap(),
            [layer("new base").as_str(), layer("app").as_str()]
        );
        // The new base's layer is mounted from base; the app's layer is in app already
        // (the image lists it); the new config is uploaded.
        assert_eq!(p.mounted, [layer("new base")]);
        assert_eq!(p.present, [layer("app")]);
        assert_eq!(p.uploaded, std::slice::from_ref(&p.config_digest));
        assert_eq!(written["config"]["digest"], p.config_digest.to_string());
        assert!(fake.has_blob("app", &p.config_digest));
        assert!(fake.has_blob("app", &layer("new base")));
        assert!(!p.unchanged && !p.dry_run);
    }

    #[test]
    fn the_target_tag_s_check_and_the_config_s_upload_session_go_out_together() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        fake.clear_requests();
        fake.delay(crate::registry::fake::AWAY);
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let level = |method: &str, mount: bool| {
            fake.levels()
                .into_iter()
                .find(|(r, _)| r.method == method && r.param("mount").is_some() == mount)
                .map(|(r, l)| (r.path, l))
        };
        let app = |what: &str| format!("/v2/app/{what}");
        // 1: HEAD and POST; 2: the mount and the config's PUT; 3: the manifest PUT.
        assert_eq!(level("HEAD", false), Some((app("manifests/rebased"), 1)));
        assert_eq!(level("POST", false), Some((app("blobs/uploads/"), 1)));
        assert_eq!(level("POST", true), Some((app("blobs/uploads/"), 2)));
        assert_eq!(fake.depth(), 3, "{:#?}", fake.levels());
        assert_eq!(fake.open_uploads(), 0);
    }

    #[test]
    fn a_dry_run_writes_nothing_and_records_what_it_would_do() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        let args = PushOptions {
            dry_run: true,
            ..PushOptions::default()
        };
        step(&fake.client(), &mut doc, &args).unwrap();
        let p = pushed(&doc);
        assert!(p.dry_run);
        assert_eq!(p.mounted, [layer("new base")]);
        assert_eq!(p.uploaded, std::slice::from_ref(&p.config_digest));
        assert_eq!(writes(&fake), []);
        assert_eq!(fake.manifest("app", "rebased"), None);
    }

    #[test]
    fn a_target_tag_holding_an_unrelated_image_is_refused_without_force() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        let (_, _, unrelated) = store(&fake, "app", "rebased", &["something else"]);
        fake.clear_requests();
        let err = step(&fake.client(), &mut doc, &PushOptions::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("--force"), "{msg}");
        assert!(msg.contains(unrelated.as_str()), "{msg}");
        assert_eq!(writes(&fake), []);
        assert_eq!(
            fake.manifest("app", "rebased").map(|b| Digest::of(&b)),
            Some(unrelated)
        );
        assert!(doc.unit.pushed.is_none());
    }

    #[test]
    fn with_force_a_target_tag_holding_an_unrelated_image_is_overwritten() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        let (_, _, unrelated) = store(&fake, "app", "rebased", &["something else"]);
        let args = PushOptions {
            force: true,
            ..PushOptions::default()
        };
        step(&fake.client(), &mut doc, &args).unwrap();
        let now = fake.manifest("app", "rebased").map(|b| Digest::of(&b));
        assert_eq!(now.as_ref(), Some(&pushed(&doc).digest));
        assert_ne!(now, Some(unrelated));
    }

    #[test]
    fn a_target_tag_holding_a_rebase_of_the_image_is_replaced_without_force() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        // An earlier rebase of the image onto another base: the same own part on top.
        let (m, _, _) = store(&fake, "app", "rebased", &["older base", "app"]);
        assert_eq!(m["layers"][1]["digest"], layer("app").to_string());
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let now = fake.manifest("app", "rebased").map(|b| Digest::of(&b));
        assert_eq!(now.as_ref(), Some(&pushed(&doc).digest));
    }

    #[test]
    fn a_stale_document_whose_own_tag_now_holds_another_image_is_refused() {
        let fake = Fake::start();
        // The result is to replace the image at its own tag, app:1 ...
        let mut doc = document(&fake, "1");
        // ... which someone has moved to another image since the document was made.
        let (_, _, other) = store(&fake, "app", "1", &["something else"]);
        let args = PushOptions {
            image_is_current: false,
            ..PushOptions::default()
        };
        let err = step(&fake.client(), &mut doc, &args).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("--force"), "{msg}");
        assert!(msg.contains(other.as_str()), "{msg}");
        assert_eq!(
            fake.count("HEAD", "/v2/app/manifests/1"),
            1,
            "asked what it holds"
        );
        assert_eq!(writes(&fake), []);
        assert_eq!(
            fake.manifest("app", "1").map(|b| Digest::of(&b)),
            Some(other)
        );
    }

    #[test]
    fn a_stale_document_whose_own_tag_still_holds_the_image_is_written() {
        let fake = Fake::start();
        let mut doc = document(&fake, "1");
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        assert_eq!(fake.count("HEAD", "/v2/app/manifests/1"), 1);
        let now = fake.manifest("app", "1").map(|b| Digest::of(&b));
        assert_eq!(now.as_ref(), Some(&pushed(&doc).digest));
    }

    #[test]
    fn a_current_document_writes_its_own_tag_without_asking_what_it_holds() {
        let fake = Fake::start();
        let mut doc = document(&fake, "1");
        let args = PushOptions {
            image_is_current: true,
            ..PushOptions::default()
        };
        step(&fake.client(), &mut doc, &args).unwrap();
        assert_eq!(fake.count("HEAD", "/v2/app/manifests/1"), 0);
        let now = fake.manifest("app", "1").map(|b| Digest::of(&b));
        assert_eq!(now.as_ref(), Some(&pushed(&doc).digest));
    }

    #[test]
    fn a_rerun_finds_the_tag_already_holding_the_result_and_writes_nothing() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let first = pushed(&doc).clone();
        assert!(!first.unchanged);
        fake.clear_requests();
        let mut again = document(&fake, "rebased");
        step(&fake.client(), &mut again, &PushOptions::default()).unwrap();
        let p = pushed(&again);
        assert!(p.unchanged);
        assert_eq!(p.digest, first.digest);
        assert!(p.mounted.is_empty() && p.uploaded.is_empty());
        assert_eq!(writes(&fake), []);
        assert_eq!(fake.count("HEAD", "/v2/app/manifests/rebased"), 1);
    }

    #[test]
    fn an_up_to_date_image_is_written_to_another_repository_with_its_own_bytes() {
        let fake = Fake::start();
        let mut doc = document(&fake, "1");
        {
            let result = doc.unit.result.as_mut().unwrap();
            result.up_to_date = true;
            result.target.repository = "mirror".into();
        }
        let image_bytes = fake.manifest("app", "1").unwrap();
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        assert_eq!(fake.manifest("mirror", "1"), Some(image_bytes.clone()));
        let p = pushed(&doc);
        assert_eq!(p.digest, Digest::of(&image_bytes));
        // Every blob, the config too, is mounted from the image's repository.
        assert_eq!(p.mounted.len(), 3, "{p:?}");
        assert!(p.uploaded.is_empty());
    }

    #[test]
    fn an_up_to_date_image_at_its_own_tag_writes_nothing() {
        let fake = Fake::start();
        let mut doc = document(&fake, "1");
        doc.unit.result.as_mut().unwrap().up_to_date = true;
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        assert!(pushed(&doc).unchanged);
        assert_eq!(pushed(&doc).digest, doc.unit.image.as_ref().unwrap().digest);
        // Not even a question: the tag is the image's own.
        assert_eq!(asked(&fake), []);
    }

    #[test]
    fn single_is_refused_for_a_single_image() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        let args = PushOptions {
            single: true,
            ..PushOptions::default()
        };
        let err = step(&fake.client(), &mut doc, &args).unwrap_err();
        assert!(err.to_string().contains("--single"), "{err:#}");
        assert_eq!(writes(&fake), []);
    }

    #[test]
    fn an_index_is_written_under_its_tag_after_each_platform_by_digest() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        let was = doc.index.as_ref().unwrap().digest.clone();
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let children: Vec<Digest> = doc
            .platforms
            .iter()
            .map(|p| {
                let pushed = p.unit.pushed.as_ref().expect("each platform pushed");
                assert_eq!(pushed.tag, None, "a platform is pushed by digest");
                assert!(fake.manifest("app", pushed.digest.as_str()).is_some());
                pushed.digest.clone()
            })
            .collect();
        assert_eq!(children.len(), 2);
        let ix = doc.index.as_ref().unwrap();
        let pushed = ix.pushed.as_ref().expect("the index pushed");
        assert_eq!(pushed.tag.as_deref(), Some("1"));
        assert_ne!(pushed.digest, was);
        let now = fake.manifest("app", "1").expect("the tag holds an index");
        assert_eq!(Digest::of(&now), pushed.digest);
        let now: Value = serde_json::from_slice(&now).unwrap();
        let listed: Vec<&str> = now["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [children[0].as_str(), children[1].as_str()]);
        // The index last: after every platform's manifest.
        let log = fake.requests();
        let puts: Vec<&Request> = log
            .iter()
            .filter(|r| r.method == "PUT" && r.path.starts_with("/v2/app/manifests/"))
            .collect();
        assert_eq!(puts.len(), 3, "{puts:#?}");
        assert_eq!(puts[2].path, "/v2/app/manifests/1");
    }

    #[test]
    fn an_index_tag_holding_an_unrelated_image_is_refused_before_the_index_is_written() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        let (_, _, unrelated) = store(&fake, "app", "other", &["something else"]);
        let args = PushOptions {
            tag: Some("other".into()),
            ..PushOptions::default()
        };
        let err = step(&fake.client(), &mut doc, &args).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        assert_eq!(
            fake.manifest("app", "other").map(|b| Digest::of(&b)),
            Some(unrelated)
        );
        assert_eq!(fake.count("PUT", "/v2/app/manifests/other"), 0);
    }

    /// Marks every platform of an index document as already on the new base.
    fn all_up_to_date(doc: &mut Document) {
        for p in &mut doc.platforms {
            p.unit.result.as_mut().unwrap().up_to_date = true;
        }
    }

    fn tag_digest(fake: &Fake, repository: &str, tag: &str) -> Option<Digest> {
        fake.manifest(repository, tag).map(|b| Digest::of(&b))
    }

    /// Stores, under `tag` in app, an image of these layers (by the bytes they are
    /// made of) and this history; its digest.
    fn store_parts(fake: &Fake, tag: &str, layer_bytes: &[&str], history: &[&str]) -> Digest {
        let layers: Vec<Digest> = layer_bytes
            .iter()
            .map(|b| fake.put_blob("app", b.as_bytes()))
            .collect();
        let config = config(history);
        fake.put_blob("app", &serde_json::to_vec(&config).unwrap());
        let manifest = manifest(&config, &layers.iter().collect::<Vec<_>>());
        fake.put_manifest(
            "app",
            Some(tag),
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        )
    }

    fn refused(fake: &Fake, doc: &mut Document, args: &PushOptions) -> String {
        let err = step(&fake.client(), doc, args).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("--force"), "{msg}");
        msg
    }

    fn to_tag(tag: &str) -> PushOptions {
        PushOptions {
            tag: Some(tag.into()),
            ..PushOptions::default()
        }
    }

    #[test]
    fn single_pushes_the_one_platform_left_under_the_tag_without_an_index() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        doc.platforms.truncate(1);
        let args = PushOptions {
            single: true,
            ..to_tag("amd64-only")
        };
        step(&fake.client(), &mut doc, &args).unwrap();
        let pushed = doc.platforms[0].unit.pushed.as_ref().unwrap();
        assert_eq!(pushed.tag.as_deref(), Some("amd64-only"));
        let now = fake
            .manifest("app", "amd64-only")
            .expect("the tag is written");
        assert_eq!(Digest::of(&now), pushed.digest);
        let now: Value = serde_json::from_slice(&now).unwrap();
        assert_eq!(now["mediaType"], OCI_MANIFEST, "an image, not an index");
        assert!(doc.index.as_ref().unwrap().pushed.is_none());
    }

    #[test]
    fn single_with_two_platforms_left_is_refused_naming_them() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        let args = PushOptions {
            single: true,
            ..PushOptions::default()
        };
        let err = step(&fake.client(), &mut doc, &args).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("2 platforms") && msg.contains("linux/arm64"),
            "{msg}"
        );
        assert_eq!(writes(&fake), []);
    }

    #[test]
    fn an_index_already_on_the_new_base_at_its_own_tag_asks_and_writes_nothing() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        all_up_to_date(&mut doc);
        fake.clear_requests();
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let ix = doc.index.as_ref().unwrap();
        let pushed = ix.pushed.as_ref().unwrap();
        assert!(pushed.unchanged);
        assert_eq!(pushed.digest, ix.digest);
        assert_eq!(asked(&fake), []);
    }

    #[test]
    fn an_index_already_on_the_new_base_is_tagged_with_its_original_bytes() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        all_up_to_date(&mut doc);
        step(&fake.client(), &mut doc, &to_tag("copy")).unwrap();
        assert_eq!(fake.manifest("app", "copy"), fake.manifest("app", "1"));
        let pushed = doc.index.as_ref().unwrap().pushed.as_ref().unwrap();
        assert!(!pushed.unchanged);
        assert_eq!(pushed.tag.as_deref(), Some("copy"));
    }

    #[test]
    fn an_oci_index_records_the_new_base_its_platforms_name() {
        let fake = Fake::start();
        let mut doc = index_document(&fake);
        let base = json!({
            "org.opencontainers.image.base.name": "example.test/base:v2",
            "org.opencontainers.image.base.digest": Digest::of(b"the new base").to_string(),
        });
        for p in &mut doc.platforms {
            p.unit.result.as_mut().unwrap().manifest["annotations"] = base.clone();
        }
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        let now: Value = serde_json::from_slice(&fake.manifest("app", "1").unwrap()).unwrap();
        assert_eq!(now["annotations"], base);
    }

    #[test]
    fn an_index_tag_holding_a_rebase_of_the_index_is_replaced_without_force() {
        let fake = Fake::start();
        let mut first = index_document(&fake);
        step(&fake.client(), &mut first, &to_tag("rebased")).unwrap();
        let earlier = tag_digest(&fake, "app", "rebased").unwrap();
        // Another rebase of the same index: its platforms have the same own part.
        let mut doc = index_document(&fake);
        for p in &mut doc.platforms {
            p.unit.result.as_mut().unwrap().config["config"] = json!({"Labels": {"again": "1"}});
        }
        step(&fake.client(), &mut doc, &to_tag("rebased")).unwrap();
        let now = tag_digest(&fake, "app", "rebased").unwrap();
        assert_ne!(now, earlier);
        assert_eq!(
            now,
            doc.index.as_ref().unwrap().pushed.as_ref().unwrap().digest
        );
    }

    #[test]
    fn a_tag_holding_a_rebuild_with_the_same_history_but_other_layers_is_refused() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebuilt");
        let rebuilt = store_parts(
            &fake,
            "rebuilt",
            &["layer of new base", "the app built again"],
            &["new base", "app"],
        );
        refused(&fake, &mut doc, &PushOptions::default());
        assert_eq!(tag_digest(&fake, "app", "rebuilt"), Some(rebuilt));
    }

    #[test]
    fn a_tag_holding_the_image_s_layers_but_a_shorter_history_is_refused() {
        let fake = Fake::start();
        let mut doc = document(&fake, "other");
        store_parts(&fake, "other", &["layer of new base", "layer of app"], &[]);
        refused(&fake, &mut doc, &PushOptions::default());
    }

    #[test]
    fn a_tag_holding_the_image_s_history_but_fewer_layers_is_refused() {
        let fake = Fake::start();
        let mut doc = document(&fake, "other");
        store_parts(&fake, "other", &[], &["new base", "app"]);
        refused(&fake, &mut doc, &PushOptions::default());
    }

    #[test]
    fn an_image_whose_own_part_is_config_only_replaces_a_rebase_of_it() {
        let fake = Fake::start();
        let mut first = document(&fake, "rebased");
        step(&fake.client(), &mut first, &PushOptions::default()).unwrap();
        // The same image seen as one whose own part is only its history entry "app".
        let mut doc = document(&fake, "rebased");
        doc.unit.split.as_mut().unwrap().base_layers = 2;
        doc.unit.result.as_mut().unwrap().config["config"] = json!({"Env": ["AGAIN=1"]});
        step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
        assert_eq!(
            tag_digest(&fake, "app", "rebased").as_ref(),
            Some(&pushed(&doc).digest)
        );
    }

    #[test]
    fn an_image_with_no_own_part_never_replaces_an_unrelated_tag() {
        let fake = Fake::start();
        let mut doc = document(&fake, "other");
        let split = doc.unit.split.as_mut().unwrap();
        (split.base_layers, split.base_history) = (2, 2);
        store_parts(&fake, "other", &["anything"], &["anything"]);
        refused(&fake, &mut doc, &PushOptions::default());
    }

    #[test]
    fn the_porcelain_asks_what_any_tag_but_the_image_s_own_holds() {
        let fake = Fake::start();
        let args = PushOptions {
            image_is_current: true,
            ..PushOptions::default()
        };
        // Another tag of the image's repository.
        let mut doc = document(&fake, "other");
        store(&fake, "app", "other", &["something else"]);
        refused(&fake, &mut doc, &args);
        // The image's own tag, in another repository.
        let mut doc = document(&fake, "1");
        doc.unit.result.as_mut().unwrap().target.repository = "mirror".into();
        store(&fake, "mirror", "1", &["something else"]);
        refused(&fake, &mut doc, &args);
    }

    #[test]
    fn a_result_that_mixes_docker_and_oci_media_types_is_refused() {
        let fake = Fake::start();
        let mut doc = document(&fake, "rebased");
        let result = doc.unit.result.as_mut().unwrap();
        result.manifest["layers"][0]["mediaType"] =
            json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
        let err = step(&fake.client(), &mut doc, &PushOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("cannot be mixed"), "{err:#}");
        assert_eq!(writes(&fake), []);
    }

    #[test]
    fn foreign_layers_are_not_made_present_and_a_layer_listed_twice_once() {
        for foreign in [
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ] {
            let fake = Fake::start();
            let mut doc = document(&fake, "rebased");
            let result = doc.unit.result.as_mut().unwrap();
            let app = result.manifest["layers"][1].clone();
            let elsewhere = json!({"mediaType": foreign, "digest": Digest::of(b"elsewhere"),
                "size": 9, "urls": ["https://example.test/layer"]});
            result.manifest["layers"] = json!([result.manifest["layers"][0], elsewhere, app, app]);
            result.config = config(&["new base", "elsewhere", "app", "app again"]);
            if foreign.contains("docker") {
                result.media_type = crate::oci::media::DOCKER_MANIFEST.into();
                result.manifest["mediaType"] = json!(crate::oci::media::DOCKER_MANIFEST);
                result.manifest["config"]["mediaType"] =
                    json!("application/vnd.docker.container.image.v1+json");
                for l in result.manifest["layers"].as_array_mut().unwrap() {
                    if l["mediaType"] == LAYER_TYPE {
                        l["mediaType"] = json!("application/vnd.docker.image.rootfs.diff.tar.gzip");
                    }
                }
            }
            step(&fake.client(), &mut doc, &PushOptions::default()).unwrap();
            let p = pushed(&doc);
            assert_eq!(p.mounted, [layer("new base")], "{foreign}");
            assert_eq!(p.present, [layer("app")], "{foreign}");
            assert!(tag_digest(&fake, "app", "rebased").is_some());
        }
    }
}
