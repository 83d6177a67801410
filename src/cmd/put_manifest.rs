use crate::digest::Digest;
use crate::doc::{Document, Pushed, Role};
use crate::image;
use crate::media::Family;
use crate::reference::check_tag;
use crate::registry::{Client, Mount};
use crate::splice::finalize;
use anyhow::{Context, Result, bail};

/// Pushes the result: every layer is made present in the target repository by a
/// cross-repository mount (no layer data moves), the config is uploaded, and the manifest
/// is put last so that a failure part-way never moves the tag.
pub fn step(client: &Client, doc: &mut Document, tag: Option<&str>) -> Result<()> {
    let result = doc
        .result
        .as_ref()
        .context("the document has no \"result\" section: run image-rebase splice first")?;
    let mut target = result.target.clone();
    if let Some(t) = tag {
        check_tag(t)?;
        target.tag = Some(t.to_string());
    }
    let target_name = format!("{}/{}", target.registry, target.repository);
    let what = match &target.tag {
        Some(t) => format!("{target_name}:{t}"),
        None => target_name.clone(),
    };

    let family = Family::of_manifest(&result.media_type).context("the result's media_type")?;
    image::check_consistent("the result", &result.manifest, &result.config)?;
    let fin = finalize(&result.manifest, &result.config)?;
    check_manifest_family(&result.manifest, family)?;

    let mut pushed = Pushed {
        reference: format!("{target_name}@{}", fin.manifest_digest),
        registry: target.registry.clone(),
        repository: target.repository.clone(),
        tag: target.tag.clone(),
        digest: fin.manifest_digest.clone(),
        media_type: result.media_type.clone(),
        size: fin.manifest_bytes.len() as u64,
        config_digest: fin.config_digest.clone(),
        mounted: vec![],
        present: vec![],
        uploaded: vec![],
    };

    let mut seen = std::collections::HashSet::new();
    for layer in image::layer_digests(&result.manifest)? {
        let digest: Digest = layer.parse()?;
        if !seen.insert(digest.clone()) {
            continue;
        }
        let sources = sources_of(doc, layer);
        make_present(
            client,
            &target.registry,
            &target.repository,
            &digest,
            &sources,
            &mut pushed,
        )
        .with_context(|| format!("making layer {digest} present in {target_name}"))?;
    }

    if client.blob_exists(&target.registry, &target.repository, &fin.config_digest)? {
        pushed.present.push(fin.config_digest.clone());
    } else {
        client
            .upload_blob(
                &target.registry,
                &target.repository,
                &fin.config_digest,
                &fin.config_bytes,
            )
            .with_context(|| format!("uploading config {} to {target_name}", fin.config_digest))?;
        pushed.uploaded.push(fin.config_digest.clone());
    }

    let reference = target
        .tag
        .clone()
        .unwrap_or_else(|| fin.manifest_digest.to_string());
    client
        .put_manifest(
            &target.registry,
            &target.repository,
            &reference,
            &result.media_type,
            &fin.manifest_bytes,
        )
        .with_context(|| format!("putting manifest {what}"))?;
    doc.pushed = Some(pushed);
    Ok(())
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
    registry: &str,
    repository: &str,
    digest: &Digest,
    sources: &[(String, String)],
    pushed: &mut Pushed,
) -> Result<()> {
    if client.blob_exists(registry, repository, digest)? {
        pushed.present.push(digest.clone());
        return Ok(());
    }
    let same_registry: Vec<&String> = sources
        .iter()
        .filter(|(r, _)| r == registry)
        .map(|(_, repo)| repo)
        .collect();
    if same_registry.is_empty() {
        if let Some((r, repo)) = sources.first() {
            bail!(
                "it is only in {r}/{repo}, on another registry; a blob cannot be mounted across registries \
                 and image-rebase does not copy layer data: copy the new base into {registry} first \
                 (e.g. with skopeo copy) and name that copy as the new base"
            );
        }
        bail!("it is in none of the document's images, so there is no repository to mount it from");
    }
    for from in &same_registry {
        if from.as_str() == repository {
            continue;
        }
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
