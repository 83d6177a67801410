use crate::cmd::fetch_config;
use crate::detect;
use crate::doc::{Document, ImageSection, Role};
use crate::media::Family;
use crate::reference::Reference;
use crate::registry::Client;
use anyhow::{Context, Result, bail};
use serde_json::Map;

/// Fetches the manifest of `reference` into the section for `role`. Without a reference
/// the old or new base is found in the image: its base annotations, else label `label`.
/// Sections derived from the old contents (split, result, pushed) are dropped.
pub fn step(
    client: &Client,
    doc: &mut Document,
    role: Role,
    reference: Option<&Reference>,
    label: &str,
) -> Result<()> {
    let (r, found_by) = match reference {
        Some(r) => (r.clone(), "argument"),
        None => find(client, doc, role, label)?,
    };
    let mut section = fetch(client, &r).with_context(|| format!("fetching manifest {r}"))?;
    section.found_by = Some(found_by.to_string());
    *doc.section_mut(role) = Some(section);
    doc.split = None;
    doc.result = None;
    doc.pushed = None;
    Ok(())
}

fn find(
    client: &Client,
    doc: &mut Document,
    role: Role,
    label: &str,
) -> Result<(Reference, &'static str)> {
    let image = doc.require(Role::Image)?;
    match role {
        Role::Image => bail!("fetch-manifest needs the image's reference"),
        Role::OldBase => match detect::old_base(image)? {
            Some(r) => Ok((r, "annotation")),
            None => bail!(
                "{} has no {} and {} annotations to name its old base: give the old base's reference, \
                 or leave the old base out and split by label or --layers",
                image.reference,
                detect::BASE_NAME,
                detect::BASE_DIGEST
            ),
        },
        Role::NewBase => {
            if image.config.is_none() {
                fetch_config::step(client, doc)?;
            }
            detect::new_base(doc.require(Role::Image)?, label)
        }
    }
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
        found_by: None,
        extra: Map::new(),
    })
}
