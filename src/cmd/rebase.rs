use crate::cli::{Global, RebaseArgs};
use crate::cmd::{
    fetch_config, fetch_manifest, parse_reference, put_manifest, splice, split_history,
};
use crate::detect;
use crate::doc::{Document, Role};
use crate::reference::check_tag;
use crate::registry::Client;
use anyhow::Result;
use std::io::Write;

/// The porcelain: the plumbing steps in one process, then `repo@digest` on `out` (or,
/// with --dry-run, the plan).
///
/// Precedence: --old-base/--new-base given explicitly; else --layers for the split;
/// else the OCI base annotations on the image's manifest; else the label (FROM).
pub fn run(
    client: &Client,
    g: &Global,
    args: &RebaseArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    // Every argument is checked before the first request.
    let image = parse_reference(g, &args.image)?;
    let old_base = args
        .old_base
        .as_deref()
        .map(|r| parse_reference(g, r))
        .transpose()?;
    let new_base = args
        .new_base
        .as_deref()
        .map(|r| parse_reference(g, r))
        .transpose()?;
    if let Some(tag) = &args.push.tag {
        check_tag(tag)?;
    }

    let mut doc = Document::default();
    fetch_manifest::step(
        client,
        &mut doc,
        Role::Image,
        Some(&image),
        &args.split.label,
    )?;
    let old_base = match old_base {
        Some(r) => Some((r, "argument")),
        None if args.split.layers.is_some() => None,
        None => detect::old_base(doc.require(Role::Image)?)?.map(|r| (r, "annotation")),
    };
    if let Some((r, how)) = old_base {
        fetch_manifest::step(client, &mut doc, Role::OldBase, Some(&r), &args.split.label)?;
        doc.old_base.as_mut().expect("just fetched").found_by = Some(how.to_string());
    }
    fetch_manifest::step(
        client,
        &mut doc,
        Role::NewBase,
        new_base.as_ref(),
        &args.split.label,
    )?;
    fetch_config::step(client, &mut doc)?;
    split_history::step(&mut doc, &args.split)?;
    splice::step(&mut doc)?;
    let result = doc
        .result
        .as_ref()
        .expect("splice fills the result section");
    for note in &result.notes {
        writeln!(err, "image-rebase: note: {note}")?;
    }
    put_manifest::step(client, &mut doc, &args.push)?;
    if args.push.dry_run {
        return plan(&doc, out);
    }
    let pushed = doc
        .pushed
        .as_ref()
        .expect("put-manifest fills the pushed section");
    writeln!(out, "{}", pushed.reference)?;
    Ok(())
}

/// What a dry run prints: the plan, one fact a line.
fn plan(doc: &Document, out: &mut impl Write) -> Result<()> {
    let image = doc.require(Role::Image)?;
    let new = doc.require(Role::NewBase)?;
    let split = doc.split.as_ref().expect("split-history ran");
    let result = doc.result.as_ref().expect("splice ran");
    let pushed = doc.pushed.as_ref().expect("put-manifest ran");
    let found =
        |s: &crate::doc::ImageSection| s.found_by.clone().unwrap_or_else(|| "argument".into());
    writeln!(out, "image:      {} ({})", image.reference, image.digest)?;
    match &doc.old_base {
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
    let digests = |v: &[crate::digest::Digest]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    writeln!(out, "mount:      {}", list(&digests(&pushed.mounted)))?;
    writeln!(out, "present:    {}", list(&digests(&pushed.present)))?;
    writeln!(out, "upload:     {}", list(&digests(&pushed.uploaded)))?;
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
