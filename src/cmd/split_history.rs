use crate::doc::{Document, Role};
use crate::split::{self, Parts};
use anyhow::{Context, Result};

/// Finds the split of the image at its old base.
pub fn step(doc: &mut Document) -> Result<()> {
    let image = doc.require(Role::Image)?;
    let old = doc.require(Role::OldBase)?;
    let split = split::by_old_base(
        Parts {
            manifest: &image.manifest,
            config: image.config(Role::Image)?,
        },
        Parts {
            manifest: &old.manifest,
            config: old.config(Role::OldBase)?,
        },
    )
    .with_context(|| {
        format!(
            "checking that {} is based on {}",
            image.reference, old.reference
        )
    })?;
    doc.split = Some(split);
    doc.result = None;
    doc.pushed = None;
    Ok(())
}
