use crate::cli::PushArgs;
use crate::digest::Digest;
use crate::doc::{Document, Pushed, ResultSection, Role, Target};
use crate::image;
use crate::media::Family;
use crate::reference::{Reference, check_tag};
use crate::registry::{Client, MAX_JSON_BYTES, Mount};
use crate::splice::finalize;
use anyhow::{Context, Result, bail};

/// Pushes the result: every layer is made present in the target repository by a
/// cross-repository mount (no layer data moves), the config is uploaded, and the manifest
/// is put last so that a failure part-way never moves the tag. A target tag that already
/// holds this manifest is left alone; one that holds an unrelated image is refused unless
/// `--force`. An up-to-date result writes nothing, or only the tag when it differs.
pub fn step(client: &Client, doc: &mut Document, args: &PushArgs) -> Result<()> {
    let result = doc
        .result
        .as_ref()
        .context("the document has no \"result\" section: run image-rebase splice first")?;
    let mut target = result.target.clone();
    if let Some(t) = &args.tag {
        check_tag(t)?;
        target.tag = Some(t.clone());
    }
    declare_scopes(client, doc, &target)?;
    let pushed = if result.up_to_date {
        retag(client, doc, &target, args)?
    } else {
        push(client, doc, result, &target, args)?
    };
    doc.pushed = Some(pushed);
    Ok(())
}

/// One token for the whole push: pull,push on the target, pull on each repository of the
/// same registry that blobs may be mounted from.
fn declare_scopes(client: &Client, doc: &Document, target: &Target) -> Result<()> {
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
    doc: &Document,
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

    if check_target(client, doc, target, &fin.manifest_digest, args.force)? {
        pushed.unchanged = true;
        return Ok(pushed);
    }

    let mut seen = std::collections::HashSet::new();
    for layer in image::layer_digests(&result.manifest)? {
        let digest: Digest = layer.parse()?;
        if seen.insert(digest.clone()) {
            let sources = sources_of(doc, layer);
            make_present(client, target, &digest, &sources, args.dry_run, &mut pushed)
                .with_context(|| format!("making layer {digest} present in {name}"))?;
        }
    }
    if client.blob_exists(&target.registry, &target.repository, &fin.config_digest)? {
        pushed.present.push(fin.config_digest.clone());
    } else {
        if !args.dry_run {
            client
                .upload_blob(
                    &target.registry,
                    &target.repository,
                    &fin.config_digest,
                    &fin.config_bytes,
                )
                .with_context(|| format!("uploading config {} to {name}", fin.config_digest))?;
        }
        pushed.uploaded.push(fin.config_digest.clone());
    }
    if !args.dry_run {
        put(
            client,
            target,
            &fin.manifest_digest,
            &result.media_type,
            &fin.manifest_bytes,
        )?;
    }
    Ok(pushed)
}

/// The image is already on the new base: nothing to write unless the target is another
/// tag, which then gets the image's own manifest bytes.
fn retag(client: &Client, doc: &Document, target: &Target, args: &PushArgs) -> Result<Pushed> {
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
    if check_target(client, doc, target, &image.digest, args.force)? {
        pushed.unchanged = true;
        return Ok(pushed);
    }
    let name = format!("{}/{}", target.registry, target.repository);
    let mut blobs: Vec<&str> = image::layer_digests(&image.manifest)?;
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
/// a rebase of it, unless `force`.
fn check_target(
    client: &Client,
    doc: &Document,
    target: &Target,
    digest: &Digest,
    force: bool,
) -> Result<bool> {
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
    let image = doc.require(Role::Image)?;
    if force || current == image.digest {
        return Ok(false);
    }
    let pinned = target_ref(target, Some(&current));
    if !is_rebase_of(client, doc, &pinned)
        .with_context(|| format!("looking at what {r} holds now"))?
    {
        bail!(
            "the tag {r} already holds {current}, which is neither {} nor a rebase of it: \
             give --force to overwrite it, or another --tag",
            image.reference
        );
    }
    Ok(false)
}

/// Whether the manifest at `r` has the image's own part (top layers and history) on top.
fn is_rebase_of(client: &Client, doc: &Document, r: &Reference) -> Result<bool> {
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
    let my_history = image::history(image_config)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let top_history = &my_history[split.base_history.min(my_history.len())..];
    let their_history = image::history(&config)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let same_history = their_history.len() >= top_history.len()
        && their_history[their_history.len() - top_history.len()..] == *top_history;
    Ok(same_layers && same_history)
}

/// The repositories (registry, repository) of the document's images whose manifests list
/// this layer: where it can be mounted from.
fn sources_of(doc: &Document, layer: &str) -> Vec<(String, String)> {
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
    if client.blob_exists(registry, repository, digest)? {
        pushed.present.push(digest.clone());
        return Ok(());
    }
    let same_registry: Vec<&String> = sources
        .iter()
        .filter(|(r, repo)| r == registry && repo != repository)
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
    if dry_run {
        pushed.mounted.push(digest.clone());
        return Ok(());
    }
    for from in &same_registry {
        if client.mount_blob(registry, repository, digest, from)? == Mount::Mounted {
            pushed.mounted.push(digest.clone());
            return Ok(());
        }
    }
    let from: Vec<&str> = same_registry.iter().map(|s| s.as_str()).collect();
    bail!(
        "the registry did not mount it from {} (it is missing there, or the registry does not allow \
         cross-repository mounts); image-rebase does not copy layer data",
        from.join(", ")
    )
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
