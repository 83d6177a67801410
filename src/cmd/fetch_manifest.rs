use crate::doc::{Document, ImageSection, Role};
use crate::media::Family;
use crate::reference::Reference;
use crate::registry::Client;
use anyhow::{Context, Result};
use serde_json::Map;

/// Fetches the manifest of `reference` into the section for `role`. Sections derived
/// from the old contents (split, result, pushed) are dropped.
pub fn step(client: &Client, doc: &mut Document, role: Role, r: &Reference) -> Result<()> {
    let section = fetch(client, r).with_context(|| format!("fetching manifest {r}"))?;
    *doc.section_mut(role) = Some(section);
    doc.split = None;
    doc.result = None;
    doc.pushed = None;
    Ok(())
}

fn fetch(client: &Client, r: &Reference) -> Result<ImageSection> {
    let fetched = client.fetch_manifest(r)?;
    Family::of_manifest(&fetched.media_type)?;
    let manifest =
        serde_json::from_slice(&fetched.bytes).context("the manifest is not valid JSON")?;
    Ok(ImageSection {
        reference: r.to_string(),
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        tag: r.tag.clone(),
        digest: fetched.digest,
        media_type: fetched.media_type,
        size: fetched.bytes.len() as u64,
        manifest,
        config: None,
        extra: Map::new(),
    })
}
