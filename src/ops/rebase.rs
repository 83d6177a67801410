//! The porcelain `rebase`: the plumbing steps in one process, on one document, with the
//! same functions the plumbing commands call.

use crate::document::{Document, Pushed, Role};
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_tag};
use crate::ops::{
    PushOptions, SplitOptions, contract, fetch_config, fetch_manifest, put_manifest, splice,
    split_history,
};
use crate::registry::Client;
use anyhow::{Result, bail};

/// One image to rebase, with its options parsed.
pub struct Spec {
    pub image: Reference,
    pub old_base: Option<Reference>,
    pub new_base: Option<Reference>,
    pub platforms: Vec<Platform>,
    pub split: SplitOptions,
    pub push: PushOptions,
    /// `--require-same-label`: labels that must be the same on the old and the new base.
    pub same_labels: Vec<String>,
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
        .collect()
    }
}

/// Rebases one image: every step; the whole document back. Notes for the user are added
/// to `notes` as they come, so that those before an error are not lost.
///
/// Precedence: --old-base/--new-base given explicitly; else --layers for the split;
/// else the OCI base annotations on the image's manifest (or index); else the label.
pub fn rebase(client: &Client, spec: &Spec, notes: &mut Vec<String>) -> Result<Document> {
    if let Some(template) = &spec.push.tag {
        check_template(template)?;
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
    let tag = target_tag(spec, &doc)?;
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
    contract::check(&doc, &spec.same_labels, spec.push.force)?;
    let push = PushOptions {
        image_is_current: true,
        tag,
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

/// `--tag` with its template filled in for the image the document read.
fn target_tag(spec: &Spec, doc: &Document) -> Result<Option<String>> {
    let Some(template) = &spec.push.tag else {
        return Ok(None);
    };
    let (own, digest) = source_of(doc).expect("fetch-manifest filled the image");
    expand_tag(template, own.as_deref(), &digest).map(Some)
}

/// The image the document read: its own tag and the digest of its manifest (or index).
pub fn source_of(doc: &Document) -> Option<(Option<String>, Digest)> {
    match (&doc.index, &doc.unit.image) {
        (Some(ix), _) => Some((ix.tag.clone(), ix.digest.clone())),
        (None, Some(image)) => Some((image.tag.clone(), image.digest.clone())),
        (None, None) => None,
    }
}

/// `--tag` as a template: `{tag}` is the image's own tag, `{digest}` the first 12 hex
/// digits of its manifest's (or index's) digest. A tag without braces is itself.
pub fn expand_tag(template: &str, own: Option<&str>, digest: &Digest) -> Result<String> {
    let hex = digest.as_str().split_once(':').map_or("", |(_, h)| h);
    let short = &hex[..hex.len().min(12)];
    let tag = if template.contains("{tag}") {
        let Some(own) = own else {
            bail!(
                "--tag {template:?} uses {{tag}}, but the image was named by digest and has no tag: \
                 name it by tag, or use {{digest}} instead"
            );
        };
        template.replace("{tag}", own)
    } else {
        template.to_string()
    };
    let tag = tag.replace("{digest}", short);
    check_tag(&tag).map_err(|e| anyhow::anyhow!("--tag {template:?} gives {tag:?}: {e:#}"))?;
    Ok(tag)
}

/// Checks a `--tag` template before any request: only `{tag}` and `{digest}` between
/// braces, and a valid tag when they are filled in.
pub fn check_template(template: &str) -> Result<()> {
    let rest = template.replace("{tag}", "").replace("{digest}", "");
    if rest.contains(['{', '}']) {
        bail!(
            "invalid --tag {template:?}: a template knows only {{tag}} (the image's own tag) \
             and {{digest}} (the first 12 hex digits of its digest)"
        );
    }
    expand_tag(template, Some("tag"), &Digest::of(b"")).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_templates() {
        let d = Digest::of(b"x");
        let short = &d.as_str()[7..19];
        assert_eq!(
            expand_tag("{tag}-rebased", Some("1.2"), &d).unwrap(),
            "1.2-rebased"
        );
        assert_eq!(
            expand_tag("{tag}-{digest}", Some("v1"), &d).unwrap(),
            format!("v1-{short}")
        );
        assert_eq!(expand_tag("fixed", None, &d).unwrap(), "fixed");
        assert!(expand_tag("{tag}-x", None, &d).is_err(), "no own tag");
        for bad in ["{tga}", "{tag", "-{tag}", "a b"] {
            assert!(check_template(bad).is_err(), "{bad}");
        }
        check_template("{tag}-rebased").unwrap();
    }
}
