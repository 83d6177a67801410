use crate::cli::PushArgs;
use crate::digest::Digest;
use crate::doc::{Document, IndexSection, PlatformUnit, Pushed, ResultSection, Role, Target, Unit};
use crate::image;
use crate::media::Family;
use crate::platform::is_attestation;
use crate::reference::{Reference, check_tag};
use crate::registry::{Client, MAX_JSON_BYTES, Mount, RegistryError};
use crate::splice::{Finalized, finalize};
use anyhow::{Context, Result, bail};
use serde_json::{Map, json};

/// Pushes the result: every layer is made present in the target repository by a
/// cross-repository mount (no layer data moves), the config is uploaded, and the manifest
/// is put last so that a failure part-way never moves the tag. A target tag that already
/// holds this manifest is left alone; one that holds an unrelated image is refused unless
/// `--force`. An up-to-date result writes nothing, or only the tag when it differs. For a
/// multi-platform image each platform's manifest is pushed by digest, then the new index
/// under the tag. Returns notes for the user.
pub fn step(client: &Client, doc: &mut Document, args: &PushArgs) -> Result<Vec<String>> {
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
    let mut target = unit
        .result
        .as_ref()
        .context("the document has no \"result\" section: run image-rebase splice first")?
        .target
        .clone();
    if let Some(t) = &args.tag {
        target.tag = Some(t.clone());
    }
    let pushed = push_unit(client, unit, &target, args)?;
    doc.unit.pushed = Some(pushed);
    Ok(vec![])
}

/// Pushes one single-platform result to `target`.
fn push_unit(client: &Client, unit: &Unit, target: &Target, args: &PushArgs) -> Result<Pushed> {
    let result = unit
        .result
        .as_ref()
        .context("the document has no \"result\" section: run image-rebase splice first")?;
    // A dry run only reads: it asks for no push right.
    if !args.dry_run {
        declare_scopes(client, unit, target)?;
    }
    if result.up_to_date {
        retag(client, unit, target, args)
    } else {
        push(client, unit, result, target, args)
    }
}

fn index_step(client: &Client, doc: &mut Document, args: &PushArgs) -> Result<Vec<String>> {
    let ix = doc.index.clone().expect("an index document");
    if args.single {
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
        let mut target = only
            .unit
            .result
            .as_ref()
            .context("no \"result\": run image-rebase splice first")?
            .target
            .clone();
        target.tag = args.tag.clone().or(ix.tag.clone());
        let pushed = push_unit(client, &only.unit, &target, args)
            .with_context(|| format!("platform {}", only.platform))?;
        only.unit.pushed = Some(pushed);
        return Ok(vec![]);
    }
    // Each platform by digest: the index refers to them.
    let by_digest = PushArgs {
        tag: None,
        force: false,
        ..args.clone()
    };
    for p in doc.platforms.iter_mut() {
        let mut target = p
            .unit
            .result
            .as_ref()
            .context("no \"result\": run image-rebase splice first")?
            .target
            .clone();
        target.tag = None;
        let pushed = push_unit(client, &p.unit, &target, &by_digest)
            .with_context(|| format!("platform {}", p.platform))?;
        p.unit.pushed = Some(pushed);
    }
    let (manifest, changed, notes) = build_index(&ix, &doc.platforms, args.keep_attestations)?;
    let target = Target {
        registry: ix.registry.clone(),
        repository: ix.repository.clone(),
        tag: args.tag.clone().or(ix.tag.clone()),
        extra: Map::new(),
    };
    let name = format!("{}/{}", target.registry, target.repository);
    let bytes = if changed {
        serde_json::to_vec(&manifest)?
    } else {
        Vec::new()
    };
    let digest = if changed {
        Digest::of(&bytes)
    } else {
        ix.digest.clone()
    };
    let mut pushed = new_pushed(
        &target,
        &digest,
        &ix.media_type,
        if changed { bytes.len() as u64 } else { ix.size },
        &digest,
    );
    pushed.dry_run = args.dry_run;
    let same_place =
        target.repository == ix.repository && (target.tag.is_none() || target.tag == ix.tag);
    if (!changed && same_place) || check_index_target(client, doc, &target, &digest, args.force)? {
        pushed.unchanged = true;
    } else if !args.dry_run {
        let bytes = if changed {
            bytes
        } else {
            let pinned = Reference {
                registry: ix.registry.clone(),
                repository: ix.repository.clone(),
                tag: None,
                digest: Some(ix.digest.clone()),
            };
            client
                .fetch_manifest(&pinned)
                .with_context(|| format!("fetching manifest {pinned}"))?
                .bytes
        };
        put(client, &target, &digest, &ix.media_type, &bytes)
            .with_context(|| format!("putting the index into {name}"))?;
    }
    doc.index.as_mut().expect("an index document").pushed = Some(pushed);
    Ok(notes)
}

/// The new index: the original's entries in order, each rebased platform pointing at its
/// new manifest, attestations left out unless `keep_attestations`. Returns it, whether it
/// differs from the original, and notes.
fn build_index(
    ix: &IndexSection,
    platforms: &[PlatformUnit],
    keep_attestations: bool,
) -> Result<(serde_json::Value, bool, Vec<String>)> {
    let mut manifest = ix.manifest.clone();
    let mut changed = false;
    let mut notes = Vec::new();
    // Every platform already on the new base: the index stays as it is, attestations too.
    let rebased_any = platforms.iter().any(|p| {
        let (image, pushed) = (p.unit.image.as_ref(), p.unit.pushed.as_ref());
        image
            .zip(pushed)
            .is_some_and(|(i, pu)| i.digest != pu.digest)
    });
    if !rebased_any {
        return Ok((manifest, false, notes));
    }
    let mut entries = Vec::new();
    for d in ix.manifest["manifests"].as_array().into_iter().flatten() {
        let digest = d.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
        let unit = platforms.iter().find(|p| {
            p.unit
                .image
                .as_ref()
                .is_some_and(|i| i.digest.as_str() == digest)
        });
        let mut d = d.clone();
        if let Some(p) = unit {
            if let Some(pushed) = p
                .unit
                .pushed
                .as_ref()
                .filter(|pushed| pushed.digest.as_str() != digest)
            {
                d["digest"] = json!(pushed.digest);
                d["size"] = json!(pushed.size);
                d["mediaType"] = json!(pushed.media_type);
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
            let platform = crate::platform::Platform::of_descriptor(&d)
                .map(|p| p.to_string())
                .unwrap_or_else(|| "an entry".into());
            notes.push(format!(
                "kept {platform} ({digest}) unchanged: it was not rebased"
            ));
        }
        entries.push(d);
    }
    manifest["manifests"] = serde_json::Value::Array(entries);
    // An OCI index records its new base too, as its manifests do.
    if changed && ix.media_type == crate::media::OCI_INDEX {
        let base = platforms
            .iter()
            .filter_map(|p| p.unit.result.as_ref())
            .find_map(|r| r.manifest.get("annotations").cloned());
        if let Some(base) = base {
            let annotations = crate::image::object_mut(&mut manifest, "annotations")?;
            for key in [crate::detect::BASE_NAME, crate::detect::BASE_DIGEST] {
                if let Some(v) = base.get(key) {
                    annotations.insert(key.to_string(), v.clone());
                }
            }
        }
    }
    Ok((manifest, changed, notes))
}

/// Like `check_target`, for an index: a tag holding an index whose every platform is a
/// rebase of ours may be replaced.
fn check_index_target(
    client: &Client,
    doc: &Document,
    target: &Target,
    digest: &Digest,
    force: bool,
) -> Result<bool> {
    let ix = doc.index.as_ref().expect("an index document");
    let r = target_ref(
        target,
        if target.tag.is_none() {
            Some(digest)
        } else {
            None
        },
    );
    let Some(current) = client
        .head_manifest(&r)
        .with_context(|| format!("checking {r}"))?
    else {
        return Ok(false);
    };
    if &current == digest {
        return Ok(true);
    }
    if force || current == ix.digest {
        return Ok(false);
    }
    let pinned = target_ref(target, Some(&current));
    let fetched = client.fetch_manifest(&pinned)?;
    let theirs: serde_json::Value = serde_json::from_slice(&fetched.bytes)?;
    let mut all = theirs.get("manifests").and_then(|m| m.as_array()).is_some();
    for p in &doc.platforms {
        let child = theirs["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| {
                crate::platform::Platform::of_descriptor(d).is_some_and(|q| q.matches(&p.platform))
            });
        let Some(child) = child.and_then(|c| c.get("digest")).and_then(|d| d.as_str()) else {
            all = false;
            break;
        };
        if !is_rebase_of(client, &p.unit, &target_ref(target, Some(&child.parse()?)))? {
            all = false;
            break;
        }
    }
    if !all {
        return Err(refuse_overwrite(&r, &current, &ix.reference));
    }
    Ok(false)
}

/// One token for the whole push: pull,push on the target, pull on each repository of the
/// same registry that blobs may be mounted from.
fn declare_scopes(client: &Client, doc: &Unit, target: &Target) -> Result<()> {
    let mut scopes = vec![format!("repository:{}:pull,push", target.repository)];
    for s in [Role::NewBase, Role::Image, Role::OldBase]
        .into_iter()
        .filter_map(|r| doc.section(r))
    {
        if s.registry == target.registry && s.repository != target.repository {
            scopes.push(format!("repository:{}:pull", s.repository));
        }
    }
    client.want_scopes(&target.registry, &scopes)
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
        unchanged: false,
        dry_run: false,
        extra: serde_json::Map::new(),
    }
}

fn push(
    client: &Client,
    doc: &Unit,
    result: &ResultSection,
    target: &Target,
    args: &PushArgs,
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
    let name = format!("{}/{}", target.registry, target.repository);

    if check_target(client, doc, target, &fin.manifest_digest, args)? {
        pushed.unchanged = true;
        return Ok(pushed);
    }

    // Foreign (non-distributable) layers live at their URLs, not in the registry.
    let mut layers: Vec<(Digest, Vec<(String, String)>)> = Vec::new();
    for descriptor in image::layers(&result.manifest)? {
        let layer = descriptor
            .get("digest")
            .and_then(|d| d.as_str())
            .context("a layer has no digest")?;
        let digest: Digest = layer.parse()?;
        if !is_foreign(descriptor) && !layers.iter().any(|(d, _)| *d == digest) {
            layers.push((digest, sources_of(doc, layer)));
        }
    }
    for (digest, sources) in &layers {
        make_present(client, target, digest, sources, args.dry_run, &mut pushed)
            .with_context(|| format!("making layer {digest} present in {name}"))?;
    }
    upload_config(client, target, &fin, args.dry_run, &mut pushed)
        .with_context(|| format!("uploading config {} to {name}", fin.config_digest))?;
    if !args.dry_run {
        put_checked(client, target, &fin, &result.media_type, &layers)?;
    }
    Ok(pushed)
}

/// Uploads the config into the target repository, once per repository and run however
/// many images share it (tags of one image): two uploads of one blob at once can make a
/// registry lose track of it (see `put_checked`).
fn upload_config(
    client: &Client,
    target: &Target,
    fin: &Finalized,
    dry_run: bool,
    pushed: &mut Pushed,
) -> Result<()> {
    let (registry, repository) = (&target.registry, &target.repository);
    let (what, first) = client.once_per_blob(registry, repository, &fin.config_digest, || {
        if dry_run {
            let there = client.blob_exists(registry, repository, &fin.config_digest)?;
            return Ok(if there { "present" } else { "uploaded" });
        }
        // No HEAD first: the config is new, or uploading it again is cheap.
        client.upload_blob(registry, repository, &fin.config_digest, &fin.config_bytes)?;
        Ok("uploaded")
    })?;
    if first && what == "uploaded" {
        pushed.uploaded.push(fin.config_digest.clone());
    } else {
        pushed.present.push(fin.config_digest.clone());
    }
    Ok(())
}

/// How many times a manifest PUT is tried when the registry says a blob this run made
/// present is missing.
const PUT_ATTEMPTS: u64 = 3;

/// Puts the manifest. distribution rewrites a repository's link to a blob in place on
/// every upload of it, so while another process uploads the same config a PUT may find
/// the blob missing (`MANIFEST_BLOB_UNKNOWN`, `DIGEST_INVALID`). Then every blob is made
/// present again where it is missing and the PUT is tried again, a bounded number of times.
fn put_checked(
    client: &Client,
    target: &Target,
    fin: &Finalized,
    media_type: &str,
    layers: &[(Digest, Vec<(String, String)>)],
) -> Result<()> {
    let mut attempt = 1;
    loop {
        let err = match put(
            client,
            target,
            &fin.manifest_digest,
            media_type,
            &fin.manifest_bytes,
        ) {
            Ok(()) => return Ok(()),
            Err(err) => err,
        };
        if attempt >= PUT_ATTEMPTS || !is_missing_blob(&err) {
            return Err(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
        replace_missing(client, target, fin, layers)
            .with_context(|| format!("{err:#}; making its blobs present again"))?;
        attempt += 1;
    }
}

/// Whether a manifest PUT was refused because a blob seemed missing.
fn is_missing_blob(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<RegistryError>())
        .any(|e| e.has_code("MANIFEST_BLOB_UNKNOWN") || e.has_code("DIGEST_INVALID"))
}

/// Mounts or uploads again, bypassing the run's record, each blob the target lacks now.
fn replace_missing(
    client: &Client,
    target: &Target,
    fin: &Finalized,
    layers: &[(Digest, Vec<(String, String)>)],
) -> Result<()> {
    let (registry, repository) = (&target.registry, &target.repository);
    if !client.blob_exists(registry, repository, &fin.config_digest)? {
        client.upload_blob(registry, repository, &fin.config_digest, &fin.config_bytes)?;
    }
    for (digest, sources) in layers {
        if client.blob_exists(registry, repository, digest)? {
            continue;
        }
        for (_, from) in sources
            .iter()
            .filter(|(r, repo)| r == registry && repo != repository)
        {
            if client.mount_blob(registry, repository, digest, from)? == Mount::Mounted {
                break;
            }
        }
    }
    Ok(())
}

/// The image is already on the new base: nothing to write unless the target is another
/// tag, which then gets the image's own manifest bytes.
fn retag(client: &Client, doc: &Unit, target: &Target, args: &PushArgs) -> Result<Pushed> {
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
        return Ok(pushed);
    }
    if check_target(client, doc, target, &image.digest, args)? {
        pushed.unchanged = true;
        return Ok(pushed);
    }
    let name = format!("{}/{}", target.registry, target.repository);
    // Foreign (non-distributable) layers live at their URLs, not in the registry.
    let mut blobs: Vec<&str> = image::layers(&image.manifest)?
        .iter()
        .filter(|l| !is_foreign(l))
        .filter_map(|l| l.get("digest").and_then(|d| d.as_str()))
        .collect();
    blobs.push(config_digest.as_str());
    let source = vec![(image.registry.clone(), image.repository.clone())];
    for blob in blobs {
        let digest: Digest = blob.parse()?;
        make_present(client, target, &digest, &source, args.dry_run, &mut pushed)
            .with_context(|| format!("making blob {digest} present in {name}"))?;
    }
    if !args.dry_run {
        let bytes = client
            .fetch_manifest(&image.as_reference())
            .with_context(|| format!("fetching manifest {}", image.pinned()))?
            .bytes;
        put(client, target, &image.digest, &image.media_type, &bytes)?;
    }
    Ok(pushed)
}

fn put(
    client: &Client,
    target: &Target,
    digest: &Digest,
    media_type: &str,
    bytes: &[u8],
) -> Result<()> {
    let reference = target.tag.clone().unwrap_or_else(|| digest.to_string());
    client
        .put_manifest(
            &target.registry,
            &target.repository,
            &reference,
            media_type,
            bytes,
        )
        .with_context(|| format!("putting manifest {}", target_ref(target, None)))?;
    Ok(())
}

/// Looks at what the target holds now. True when it already holds `digest` (nothing to
/// do). An error when the target tag holds an image that is neither the source image nor
/// a rebase of it, unless `--force`. The image's own tag is asked about too unless the
/// image was fetched by this process (a document may be stale: the tag may have moved).
fn check_target(
    client: &Client,
    doc: &Unit,
    target: &Target,
    digest: &Digest,
    args: &PushArgs,
) -> Result<bool> {
    let r = target_ref(
        target,
        if target.tag.is_none() {
            Some(digest)
        } else {
            None
        },
    );
    let image = doc.require(Role::Image)?;
    let own_tag = target.tag.is_some()
        && target.tag == image.tag
        && target.registry == image.registry
        && target.repository == image.repository;
    let current = if own_tag && args.image_is_current {
        Some(image.digest.clone())
    } else {
        client
            .head_manifest(&r)
            .with_context(|| format!("checking {r}"))?
    };
    let Some(current) = current else {
        return Ok(false);
    };
    if &current == digest {
        return Ok(true);
    }
    if args.force || current == image.digest {
        return Ok(false);
    }
    let pinned = target_ref(target, Some(&current));
    if !is_rebase_of(client, doc, &pinned)
        .with_context(|| format!("looking at what {r} holds now"))?
    {
        return Err(refuse_overwrite(&r, &current, &image.reference));
    }
    Ok(false)
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

fn make_present(
    client: &Client,
    target: &Target,
    digest: &Digest,
    sources: &[(String, String)],
    dry_run: bool,
    pushed: &mut Pushed,
) -> Result<()> {
    let (registry, repository) = (&target.registry, &target.repository);
    // A manifest in the target repository lists it: a registry keeps the blobs of its
    // manifests, so it is there without asking.
    if sources
        .iter()
        .any(|(r, repo)| r == registry && repo == repository)
    {
        pushed.present.push(digest.clone());
        return Ok(());
    }
    let same_registry: Vec<&String> = sources
        .iter()
        .filter(|(r, _)| r == registry)
        .map(|(_, repo)| repo)
        .collect();
    if same_registry.is_empty() {
        if let Some((r, repo)) = sources.iter().find(|(r, _)| r != registry) {
            bail!(
                "it is only in {r}/{repo}, on another registry; a blob cannot be mounted across registries \
                 and image-rebase does not copy layer data: copy the new base into {registry} first \
                 (e.g. with skopeo copy) and name that copy as the new base"
            );
        }
        bail!(
            "it is in none of the document's other repositories, so there is nowhere to mount it from"
        );
    }
    // Once per repository and run, however many images need it.
    let (what, first) = client.once_per_blob(registry, repository, digest, || {
        if dry_run {
            // Reads only: what would be mounted.
            return Ok(if client.blob_exists(registry, repository, digest)? { "present" } else { "mounted" });
        }
        // A mount of a blob the repository has already succeeds too: no HEAD first.
        for from in &same_registry {
            if client.mount_blob(registry, repository, digest, from)? == Mount::Mounted {
                return Ok("mounted");
            }
        }
        if client.blob_exists(registry, repository, digest)? {
            return Ok("present");
        }
        let from: Vec<&str> = same_registry.iter().map(|s| s.as_str()).collect();
        bail!(
            "the registry did not mount it from {} (it is missing there, or the registry does not allow \
             cross-repository mounts); image-rebase does not copy layer data",
            from.join(", ")
        )
    })?;
    if first && what == "mounted" {
        pushed.mounted.push(digest.clone());
    } else {
        pushed.present.push(digest.clone());
    }
    Ok(())
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
