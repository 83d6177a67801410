//! One module per subcommand. Each plumbing command reads the document, runs its step
//! (a function on the document that the `rebase` porcelain calls too) and writes the
//! document back.

pub mod fetch_config;
pub mod fetch_manifest;
pub mod put_manifest;
pub mod rebase;
pub mod splice;
pub mod split_history;

use crate::cli::{Cli, Command, Global};
use crate::io::{read_document, write_document};
use crate::reference::Reference;
use crate::registry::{Client, Options};
use anyhow::Result;
use std::io::Write;

pub fn client(global: &Global) -> Result<Client> {
    Client::new(Options {
        insecure: global.insecure,
        verbose: global.verbose,
    })
}

/// Parses a reference given on the command line, with `--registry` as the default host.
pub fn parse_reference(global: &Global, s: &str) -> Result<Reference> {
    Reference::parse_with_default(s, global.registry.as_deref())
}

/// Runs the command line, writing results to `out` and notes to `err`.
pub fn run(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> Result<()> {
    let g = &cli.global;
    if let Some(registry) = &g.registry {
        Reference::parse_with_default("x", Some(registry)).map_err(|_| {
            anyhow::anyhow!("invalid --registry {registry:?}: expected HOST or HOST:PORT")
        })?;
    }
    match cli.command {
        Command::FetchManifest(args) => {
            let reference = args
                .reference
                .as_deref()
                .map(|r| parse_reference(g, r))
                .transpose()?;
            let mut doc = read_document("fetch-manifest", true)?;
            fetch_manifest::step(
                &client(g)?,
                &mut doc,
                args.role,
                reference.as_ref(),
                &args.label,
            )?;
            write_document(&doc, out)
        }
        Command::FetchConfig => {
            let mut doc = read_document("fetch-config", false)?;
            fetch_config::step(&client(g)?, &mut doc)?;
            write_document(&doc, out)
        }
        Command::SplitHistory(args) => {
            let mut doc = read_document("split-history", false)?;
            split_history::step(&mut doc, &args)?;
            write_document(&doc, out)
        }
        Command::Splice => {
            let mut doc = read_document("splice", false)?;
            splice::step(&mut doc)?;
            for note in doc.result.iter().flat_map(|r| &r.notes) {
                writeln!(err, "image-rebase: note: {note}")?;
            }
            write_document(&doc, out)
        }
        Command::PutManifest(args) => {
            let mut doc = read_document("put-manifest", false)?;
            put_manifest::step(&client(g)?, &mut doc, &args.push)?;
            write_document(&doc, out)
        }
        Command::Rebase(args) => rebase::run(&client(g)?, g, &args, out, err),
    }
}
