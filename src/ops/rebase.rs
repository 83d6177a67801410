use crate::cli::args::{Global, PushArgs, RebaseArgs, SplitArgs};
use crate::document::{Document, ImageSection, Pushed, Role, Unit};
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_tag};
use crate::ops::{
    fetch_config, fetch_manifest, note_skipped, notes_of, parse_reference, print_notes,
    put_manifest, splice, split_history,
};
use crate::registry::Client;
use anyhow::Result;
use std::io::Write;

/// One image to rebase, with its options parsed.
pub struct Spec {
    pub image: Reference,
    pub old_base: Option<Reference>,
    pub new_base: Option<Reference>,
    pub platforms: Vec<Platform>,
    pub split: SplitArgs,
    pub push: PushArgs,
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

/// The porcelain: the plumbing steps in one process, then `repo@digest` on `out` (or,
/// with --dry-run, the plan).
pub fn run(
    client: &Client,
    g: &Global,
    args: &RebaseArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    // Every argument is checked before the first request.
    let image = args
        .image
        .as_deref()
        .expect("clap requires an image without --from-file");
    let spec = Spec {
        image: parse_reference(g, image)?,
        old_base: args
            .old_base
            .as_deref()
            .map(|r| parse_reference(g, r))
            .transpose()?,
        new_base: args
            .new_base
            .as_deref()
            .map(|r| parse_reference(g, r))
            .transpose()?,
        platforms: Platform::parse_list(&args.platform)?,
        split: args.split.clone(),
        push: args.push.clone(),
    };
    client.limit_explicit_credentials(spec.named_hosts());
    let doc = rebase(client, &spec, err)?;
    if args.push.dry_run {
        return plan(&doc, out);
    }
    writeln!(out, "{}", final_pushed(&doc).reference)?;
    Ok(())
}

/// Rebases one image: every step, notes on `err`; the whole document back.
///
/// Precedence: --old-base/--new-base given explicitly; else --layers for the split;
/// else the OCI base annotations on the image's manifest (or index); else the label.
pub fn rebase(client: &Client, spec: &Spec, err: &mut impl Write) -> Result<Document> {
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
    note_skipped(&doc, err)?;
    let mut notes = Vec::new();
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
    print_notes(err, &notes)?;
    fetch_config::step(client, &mut doc)?;
    split_history::step(&mut doc, &spec.split)?;
    splice::step(&mut doc)?;
    print_notes(err, &notes_of(&doc))?;
    let push = PushArgs {
        image_is_current: true,
        ..spec.push.clone()
    };
    let notes = put_manifest::step(client, &mut doc, &push)?;
    print_notes(err, &notes)?;
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

/// What a dry run prints: the plan, one fact a line (a block per platform).
fn plan(doc: &Document, out: &mut impl Write) -> Result<()> {
    if let Some(ix) = &doc.index {
        writeln!(
            out,
            "index:      {} ({}, platforms to rebase: {})",
            ix.reference,
            ix.digest,
            doc.platforms.len()
        )?;
        for s in &ix.skipped {
            writeln!(
                out,
                "skip:       {} ({}): {}",
                s.platform.as_deref().unwrap_or("entry"),
                s.digest,
                s.reason
            )?;
        }
        for p in &doc.platforms {
            writeln!(out, "platform:   {}", p.platform)?;
            plan_unit(&p.unit, out)?;
        }
        return plan_target(final_pushed(doc), out);
    }
    plan_unit(&doc.unit, out)?;
    plan_target(doc.unit.pushed.as_ref().expect("put-manifest ran"), out)
}

fn plan_unit(unit: &Unit, out: &mut impl Write) -> Result<()> {
    let image = unit.require(Role::Image)?;
    let new = unit.require(Role::NewBase)?;
    let split = unit.split.as_ref().expect("split-history ran");
    let result = unit.result.as_ref().expect("splice ran");
    let found = |s: &ImageSection| s.found_by.clone().unwrap_or_else(|| "argument".into());
    writeln!(out, "image:      {} ({})", image.reference, image.digest)?;
    match &unit.old_base {
        Some(old) => writeln!(
            out,
            "old base:   {} ({}, from {})",
            old.reference,
            old.digest,
            found(old)
        )?,
        None => writeln!(out, "old base:   none (split by {})", split.method)?,
    }
    writeln!(
        out,
        "new base:   {} ({}, from {})",
        new.reference,
        new.digest,
        found(new)
    )?;
    writeln!(
        out,
        "split:      by {}: replace {} layers / {} history entries, keep {} layers / {} history entries",
        split.method, split.base_layers, split.base_history, split.top_layers, split.top_history
    )?;
    if result.up_to_date {
        writeln!(
            out,
            "result:     already on the new base, nothing to rebase"
        )?;
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    writeln!(
        out,
        "config:     from the new base: {}",
        list(&result.from_new_base)
    )?;
    if !result.unattributed.is_empty() {
        writeln!(
            out,
            "config:     kept, origin unknown: {}",
            list(&result.unattributed)
        )?;
    }
    if let Some(pushed) = &unit.pushed {
        let digests =
            |v: &[crate::oci::digest::Digest]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        writeln!(out, "mount:      {}", list(&digests(&pushed.mounted)))?;
        writeln!(out, "present:    {}", list(&digests(&pushed.present)))?;
        writeln!(out, "upload:     {}", list(&digests(&pushed.uploaded)))?;
    }
    Ok(())
}

fn plan_target(pushed: &Pushed, out: &mut impl Write) -> Result<()> {
    let tag = pushed
        .tag
        .as_deref()
        .map(|t| format!(":{t}"))
        .unwrap_or_default();
    let what = if pushed.unchanged {
        "already there, nothing to write"
    } else {
        "would be written"
    };
    writeln!(
        out,
        "target:     {}/{}{tag} -> {} ({what})",
        pushed.registry, pushed.repository, pushed.reference
    )?;
    Ok(())
}
