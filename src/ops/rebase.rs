//! The porcelain `rebase`: the plumbing steps in one process, on one document, with the
//! same functions the plumbing commands call.

use crate::document::{Document, Pushed, Role};
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_tag};
use crate::ops::{
    PushOptions, SplitOptions, fetch_config, fetch_manifest, put_manifest, splice, split_history,
};
use crate::registry::Client;
use anyhow::Result;

/// One image to rebase, with its options parsed.
pub struct Spec {
    pub image: Reference,
    pub old_base: Option<Reference>,
    pub new_base: Option<Reference>,
    pub platforms: Vec<Platform>,
    pub split: SplitOptions,
    pub push: PushOptions,
}

impl Spec {
    /// The registries this spec names (where --username credentials may go).
    pub fn named_hosts(&self) -> Vec<String> {
        [
            Some(&self.image),
            self.old_base.as_ref(),
            self.new_base.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|r| r.registry.clone())
        .chain(self.push.to.iter().map(|(registry, _)| registry.clone()))
        .collect()
    }
}

/// Rebases one image: every step; the whole document back. Notes for the user are added
/// to `notes` as they come, so that those before an error are not lost.
///
/// Precedence: --old-base/--new-base given explicitly; else --layers for the split;
/// else the OCI base annotations on the image's manifest (or index); else the label.
pub fn rebase(client: &Client, spec: &Spec, notes: &mut Vec<String>) -> Result<Document> {
    if let Some(tag) = &spec.push.tag {
        check_tag(tag)?;
    }
    let opts = fetch_manifest::Options {
        label: &spec.split.label,
        platforms: &spec.platforms,
        annotation_failed: None,
    };
    let mut annotation_failed = None;
    let mut doc = Document::default();
    fetch_manifest::step(client, &mut doc, Role::Image, Some(&spec.image), &opts)?;
    notes.extend(doc.skipped_notes());
    match &spec.old_base {
        Some(r) => notes.extend(fetch_manifest::step(
            client,
            &mut doc,
            Role::OldBase,
            Some(r),
            &opts,
        )?),
        None if spec.split.layers.is_some() => {}
        // The annotations' old base, when it is there and a prefix of the image; else the
        // label takes over.
        None => {
            if let Some(Err(why)) = fetch_manifest::annotated_old_base(client, &mut doc)? {
                notes.push(format!(
                    "{why}; falling back to the {:?} label",
                    spec.split.label
                ));
                annotation_failed = Some(why);
            }
        }
    }
    let opts = fetch_manifest::Options {
        annotation_failed: annotation_failed.as_deref(),
        ..opts
    };
    notes.extend(fetch_manifest::step(
        client,
        &mut doc,
        Role::NewBase,
        spec.new_base.as_ref(),
        &opts,
    )?);
    fetch_config::step(client, &mut doc)?;
    split_history::step(&mut doc, &spec.split)?;
    splice::step(&mut doc)?;
    notes.extend(doc.result_notes());
    let push = PushOptions {
        image_is_current: true,
        ..spec.push.clone()
    };
    notes.extend(put_manifest::step(client, &mut doc, &push)?);
    Ok(doc)
}

/// What was written last: the index, or the single image (or platform with --single).
pub fn final_pushed(doc: &Document) -> &Pushed {
    if let Some(p) = doc.index.as_ref().and_then(|ix| ix.pushed.as_ref()) {
        return p;
    }
    doc.platforms
        .iter()
        .find_map(|p| p.unit.pushed.as_ref())
        .or(doc.unit.pushed.as_ref())
        .expect("put-manifest fills the pushed section")
}
