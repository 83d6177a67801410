use crate::cli::RebaseArgs;
use crate::cmd::{fetch_config, fetch_manifest, put_manifest, splice, split_history};
use crate::doc::{Document, Role};
use crate::reference::{Reference, check_tag};
use crate::registry::Client;
use anyhow::Result;
use std::io::Write;

/// The porcelain: the plumbing steps in one process, then `repo@digest` on `out`.
pub fn run(client: &Client, args: &RebaseArgs, out: &mut impl Write) -> Result<()> {
    // Every argument is checked before the first request.
    let image = Reference::parse(&args.image)?;
    let old_base = Reference::parse(&args.old_base)?;
    let new_base = Reference::parse(&args.new_base)?;
    if let Some(tag) = &args.tag {
        check_tag(tag)?;
    }
    let mut doc = Document::default();
    fetch_manifest::step(client, &mut doc, Role::Image, &image)?;
    fetch_manifest::step(client, &mut doc, Role::OldBase, &old_base)?;
    fetch_manifest::step(client, &mut doc, Role::NewBase, &new_base)?;
    fetch_config::step(client, &mut doc)?;
    split_history::step(&mut doc)?;
    splice::step(&mut doc)?;
    put_manifest::step(client, &mut doc, args.tag.as_deref())?;
    let pushed = doc
        .pushed
        .as_ref()
        .expect("put-manifest fills the pushed section");
    writeln!(out, "{}", pushed.reference)?;
    Ok(())
}
