use crate::digest::Digest;
use crate::doc::{Document, ImageSection, Role};
use crate::image;
use crate::registry::{Client, MAX_JSON_BYTES};
use anyhow::{Context, Result};

/// Fetches the config blob of every image section that has none yet.
pub fn step(client: &Client, doc: &mut Document) -> Result<()> {
    doc.require(Role::Image)?;
    for role in [Role::Image, Role::OldBase, Role::NewBase] {
        if let Some(section) = doc.section_mut(role).as_mut()
            && section.config.is_none()
        {
            let config = fetch(client, section)
                .with_context(|| format!("fetching config of {}", section.reference))?;
            section.config = Some(config);
        }
    }
    Ok(())
}

fn fetch(client: &Client, section: &ImageSection) -> Result<serde_json::Value> {
    let (digest, _) = image::config_descriptor(&section.manifest)?;
    let digest: Digest = digest.parse()?;
    let bytes = client.fetch_blob(
        &section.registry,
        &section.repository,
        &digest,
        MAX_JSON_BYTES,
    )?;
    serde_json::from_slice(&bytes).context("the config is not valid JSON")
}
