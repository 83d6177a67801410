//! The plan `rebase --dry-run` prints: one fact a line, a block per platform.

use crate::document::{Document, FoundBy, ImageSection, Pushed, Role, Unit};
use crate::oci::digest::Digest;
use crate::ops::rebase::final_pushed;
use anyhow::Result;
use std::io::Write;

/// What a dry run prints: the plan, one fact a line (a block per platform).
pub fn plan(doc: &Document, out: &mut impl Write) -> Result<()> {
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
    let found = |s: &ImageSection| s.found_by.unwrap_or(FoundBy::Argument);
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
        plan_blobs(pushed, out)?;
    }
    Ok(())
}

/// What the push does (or would do) with each blob.
fn plan_blobs(pushed: &Pushed, out: &mut impl Write) -> Result<()> {
    let digests = |v: &[Digest]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    writeln!(out, "mount:      {}", list(&digests(&pushed.mounted)))?;
    writeln!(out, "present:    {}", list(&digests(&pushed.present)))?;
    writeln!(out, "upload:     {}", list(&digests(&pushed.uploaded)))?;
    if !pushed.copied.is_empty() {
        writeln!(
            out,
            "copy:       {} ({} blobs, {} bytes)",
            list(&digests(&pushed.copied)),
            pushed.copied.len(),
            pushed.copied_bytes
        )?;
    }
    Ok(())
}

/// Items joined by commas, or "none".
fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
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
