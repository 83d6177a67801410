//! fetch-config: the config blob of every image section that has none yet.

use crate::document::{Document, ImageSection, Role, Unit};
use crate::image;
use crate::oci::digest::Digest;
use crate::registry::{Client, MAX_JSON_BYTES};
use anyhow::{Context, Result};

/// Fetches the config blob of every image section that has none yet (of every platform
/// of an index).
pub fn step(client: &Client, doc: &mut Document) -> Result<()> {
    doc.for_each_unit(|unit| unit_step(client, unit))
}

pub fn unit_step(client: &Client, unit: &mut Unit) -> Result<()> {
    for role in [Role::Image, Role::OldBase, Role::NewBase] {
        if let Some(section) = unit.section_mut(role).as_mut()
            && section.config.is_none()
        {
            // Bases are shared by many images: their configs are fetched once per run.
            section.config = Some(
                fetch(client, section, role != Role::Image)
                    .with_context(|| format!("fetching config of {}", section.reference))?,
            );
        }
    }
    Ok(())
}

pub fn fetch(client: &Client, section: &ImageSection, shared: bool) -> Result<serde_json::Value> {
    let (digest, _) = image::config_descriptor(&section.manifest)?;
    let digest: Digest = digest.parse()?;
    let (registry, repository) = (&section.registry, &section.repository);
    let bytes = if shared {
        client.fetch_base_blob(registry, repository, &digest, MAX_JSON_BYTES)?
    } else {
        client.fetch_blob(registry, repository, &digest, MAX_JSON_BYTES)?
    };
    serde_json::from_slice(&bytes).context("the config is not valid JSON")
}
