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

/// Runs the command line, writing results to `out`.
pub fn run(cli: Cli, out: &mut impl Write) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::FetchManifest(args) => {
            let reference = Reference::parse(&args.reference)?;
            let mut doc = read_document("fetch-manifest", true)?;
            fetch_manifest::step(&client(g)?, &mut doc, args.role, &reference)?;
            write_document(&doc, out)
        }
        Command::FetchConfig => {
            let mut doc = read_document("fetch-config", false)?;
            fetch_config::step(&client(g)?, &mut doc)?;
            write_document(&doc, out)
        }
        Command::SplitHistory => {
            let mut doc = read_document("split-history", false)?;
            split_history::step(&mut doc)?;
            write_document(&doc, out)
        }
        Command::Splice => {
            let mut doc = read_document("splice", false)?;
            splice::step(&mut doc)?;
            write_document(&doc, out)
        }
        Command::PutManifest(args) => {
            let mut doc = read_document("put-manifest", false)?;
            put_manifest::step(&client(g)?, &mut doc, args.tag.as_deref())?;
            write_document(&doc, out)
        }
        Command::Rebase(args) => rebase::run(&client(g)?, &args, out),
    }
}
