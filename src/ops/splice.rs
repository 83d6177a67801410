//! splice: the rebased manifest and config of each unit, from its image, its new base and
//! its split (the pure work is `image::splice`), and the target it is written to.

use crate::document::{Document, ImageSection, ResultSection, Role, Split, Target, Unit};
use crate::image;
use crate::image::merge::Ancestor;
use crate::image::splice::{BaseInfo, Spliced};
use crate::image::split::{self, Parts};
use anyhow::{Context, Result};
use serde_json::{Map, Value};

/// Builds the rebased manifest and config from the image, the new base and the split.
/// The config is merged against the old base's config when the split was made at the
/// old base, else against what the image's own history entries say they changed.
pub fn step(doc: &mut Document) -> Result<()> {
    doc.invalidate_index_push();
    doc.for_each_unit(unit_step)
}

fn unit_step(doc: &mut Unit) -> Result<()> {
    let image = doc.require(Role::Image)?;
    let new = doc.require(Role::NewBase)?;
    let split = doc
        .split
        .as_ref()
        .context("the document has no \"split\" section: run image-rebase split-history first")?;
    let ip = Parts {
        manifest: &image.manifest,
        config: image.config(Role::Image)?,
    };
    let np = Parts {
        manifest: &new.manifest,
        config: new.config(Role::NewBase)?,
    };
    let result = if split.up_to_date || split::already_on(ip, np, Some(split)).is_some() {
        ResultSection {
            manifest: image.manifest.clone(),
            config: ip.config.clone(),
            up_to_date: true,
            notes: vec![format!(
                "{} is already on {}: nothing to rebase",
                image.reference, new.reference
            )],
            ..result_for(image)
        }
    } else {
        let spliced = splice_unit(doc, ip, np, split)
            .with_context(|| format!("splicing {} onto {}", image.reference, new.reference))?;
        ResultSection {
            manifest: spliced.manifest,
            config: spliced.config,
            from_new_base: spliced.report.from_new_base,
            unattributed: spliced.report.unattributed,
            notes: spliced.notes,
            ..result_for(image)
        }
    };
    doc.set_result(result);
    Ok(())
}

/// An empty result for `image`, to be written back to its own place.
fn result_for(image: &ImageSection) -> ResultSection {
    ResultSection {
        target: Target {
            registry: image.registry.clone(),
            repository: image.repository.clone(),
            tag: image.tag.clone(),
            extra: Map::new(),
        },
        media_type: image.media_type.clone(),
        manifest: Value::Null,
        config: Value::Null,
        up_to_date: false,
        from_new_base: vec![],
        unattributed: vec![],
        notes: vec![],
        extra: Map::new(),
    }
}

/// The pure splice of one unit: merged against the old base's config when the split was
/// made at the old base, else against what the history says.
fn splice_unit(doc: &Unit, ip: Parts, np: Parts, split: &Split) -> Result<Spliced> {
    let (image, new) = (doc.require(Role::Image)?, doc.require(Role::NewBase)?);
    let history = image::history_slice(ip.config);
    let (base_history, top_history) = history.split_at(split.base_history.min(history.len()));
    let ancestor = match (&doc.old_base, split.method) {
        (Some(old), split::Method::OldBase) => Ancestor::Config(old.config(Role::OldBase)?),
        _ => Ancestor::History {
            base: base_history,
            top: top_history,
        },
    };
    let mut name = crate::oci::reference::Reference::parse(&new.reference)?;
    if name.tag.is_some() {
        name.digest = None;
    }
    let name = name.to_string();
    crate::image::splice::splice(
        ip,
        &image.media_type,
        np,
        split,
        ancestor,
        BaseInfo {
            name: &name,
            // A base picked from an index is recorded by the index's digest (as crane
            // does), so the next rebase finds every platform's base from it.
            digest: new.index_digest.as_ref().unwrap_or(&new.digest),
        },
    )
}
