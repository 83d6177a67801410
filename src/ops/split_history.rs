//! split-history: where each image divides into its old base and its own part (at the old
//! base, by `--layers`, or at the entry that set the label), or that it is up to date.

use crate::document::{Document, Role, Unit};
use crate::error::NotBased;
use crate::image::split::{self, Parts};
use crate::ops::SplitOptions;
use anyhow::{Context, Result};

/// Finds the split: at the old base when the document has one, else `--layers`, else at
/// the history entry that set the label. When the document has the new base and
/// the image is already on it, the split is marked up to date.
pub fn step(doc: &mut Document, args: &SplitOptions) -> Result<()> {
    doc.invalidate_index_push();
    doc.for_each_unit(|unit| unit_step(unit, args))
}

fn unit_step(doc: &mut Unit, args: &SplitOptions) -> Result<()> {
    let image = doc.require(Role::Image)?;
    let ip = Parts {
        manifest: &image.manifest,
        config: image.config(Role::Image)?,
    };
    let found = if let Some(old) = &doc.old_base {
        let op = Parts {
            manifest: &old.manifest,
            config: old.config(Role::OldBase)?,
        };
        split::by_old_base(ip, op).with_context(|| {
            format!(
                "checking that {} is based on {}",
                image.reference, old.reference
            )
        })
    } else if let Some(n) = args.layers {
        split::by_layers(ip, n)
            .with_context(|| format!("splitting {} at --layers {n}", image.reference))
    } else {
        split::by_label(ip, &args.label)
            .with_context(|| format!("finding the base of {}", image.reference))
    };
    let new = match &doc.new_base {
        Some(n) => Some(Parts {
            manifest: &n.manifest,
            config: n.config(Role::NewBase)?,
        }),
        None => None,
    };
    let split = match (found, new) {
        (Ok(s), Some(np)) => split::already_on(ip, np, Some(&s)).unwrap_or(s),
        (Err(e), Some(np)) if e.chain().any(|c| c.is::<NotBased>()) => {
            split::already_on(ip, np, None).ok_or(e)?
        }
        (found, _) => found?,
    };
    doc.set_split(split);
    Ok(())
}
