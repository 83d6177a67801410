use crate::doc::{Document, ResultSection, Role, Target};
use crate::split::Parts;
use anyhow::{Context, Result};
use serde_json::Map;

/// Builds the rebased manifest and config from the image, the new base and the split.
pub fn step(doc: &mut Document) -> Result<()> {
    let image = doc.require(Role::Image)?;
    let new = doc.require(Role::NewBase)?;
    let split = doc
        .split
        .as_ref()
        .context("the document has no \"split\" section: run image-rebase split-history first")?;
    let (manifest, config) = crate::splice::splice(
        Parts {
            manifest: &image.manifest,
            config: image.config(Role::Image)?,
        },
        &image.media_type,
        Parts {
            manifest: &new.manifest,
            config: new.config(Role::NewBase)?,
        },
        split,
    )
    .with_context(|| format!("splicing {} onto {}", image.reference, new.reference))?;
    doc.result = Some(ResultSection {
        target: Target {
            registry: image.registry.clone(),
            repository: image.repository.clone(),
            tag: image.tag.clone(),
        },
        media_type: image.media_type.clone(),
        manifest,
        config,
        extra: Map::new(),
    });
    doc.pushed = None;
    Ok(())
}
