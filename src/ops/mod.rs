//! One module per subcommand. Each plumbing command reads the document, runs its step
//! (a function on the document that the `rebase` porcelain calls too) and writes the
//! document back.

pub mod fetch_config;
pub mod fetch_manifest;
pub mod fleet;
pub mod put_manifest;
pub mod rebase;
pub mod splice;
pub mod split_history;

use crate::cli::args::{Cli, Command, Global};
use crate::cli::document_io::{read_document, write_document};
use crate::document::Document;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::registry::credentials::{Credential, Found, Sources};
use crate::registry::secret::Secret;
use crate::registry::{Client, Options};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, Write};

/// The environment variable that holds the password for --username.
pub const PASSWORD_ENV: &str = "IMAGE_REBASE_PASSWORD";

/// A registry client for the global options. `stdin_is_free`: the command does not read
/// a document on stdin, so --password-stdin may take it.
pub fn client(global: &Global, stdin_is_free: bool) -> Result<Client> {
    client_with(global, stdin_is_free, false)
}

/// `client`, caching bases fetched by tag for the whole run when `cache_tags`.
pub fn client_with(global: &Global, stdin_is_free: bool, cache_tags: bool) -> Result<Client> {
    if global.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let password = if global.password_stdin {
        if !stdin_is_free {
            bail!(
                "--password-stdin cannot be used here: stdin carries this command's input (a document or a list); set {PASSWORD_ENV} instead"
            );
        }
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            bail!("--password-stdin: stdin held no password");
        }
        Some(Secret::new(line))
    } else {
        std::env::var(PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .map(Secret::new)
    };
    let explicit = match (&global.username, password) {
        (Some(username), Some(password)) => Some(Found {
            credential: Credential::Basic {
                username: username.clone(),
                password,
            },
            source: "the command line".to_string(),
        }),
        (Some(_), None) => {
            bail!("--username needs a password: give --password-stdin or set {PASSWORD_ENV}")
        }
        (None, Some(_)) if global.password_stdin => bail!("--password-stdin needs --username"),
        (None, _) => None,
    };
    Client::new(Options {
        insecure: global.insecure,
        verbose: global.verbose,
        ca_cert: global.ca_cert.clone(),
        timeout: std::time::Duration::from_secs(global.timeout),
        credentials: Sources::from_env(explicit),
        cache_tags,
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
            let platforms = Platform::parse_list(&args.platform)?;
            let client = client(g, false)?;
            let mut doc = read_document("fetch-manifest", true)?;
            client.limit_explicit_credentials(
                named_hosts(&doc)
                    .into_iter()
                    .chain(reference.as_ref().map(|r| r.registry.clone())),
            );
            let opts = fetch_manifest::Options {
                label: &args.label,
                platforms: &platforms,
                annotation_failed: None,
            };
            let notes =
                fetch_manifest::step(&client, &mut doc, args.role, reference.as_ref(), &opts)?;
            note_skipped(&doc, err)?;
            print_notes(err, &notes)?;
            write_document(&doc, out)
        }
        Command::FetchConfig => {
            let client = client(g, false)?;
            let mut doc = read_document("fetch-config", false)?;
            client.limit_explicit_credentials(named_hosts(&doc));
            fetch_config::step(&client, &mut doc)?;
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
            print_notes(err, &notes_of(&doc))?;
            write_document(&doc, out)
        }
        Command::PutManifest(args) => {
            let client = client(g, false)?;
            let mut doc = read_document("put-manifest", false)?;
            client.limit_explicit_credentials(named_hosts(&doc));
            let notes = put_manifest::step(&client, &mut doc, &args.push)?;
            print_notes(err, &notes)?;
            write_document(&doc, out)
        }
        Command::Rebase(args) if args.from_file.is_some() => {
            // The list may come on stdin: then the password cannot.
            let stdin_is_free = args.from_file.as_deref() != Some("-");
            fleet::run(&client_with(g, stdin_is_free, true)?, g, &args, out, err)
        }
        Command::Rebase(args) => rebase::run(&client(g, true)?, g, &args, out, err),
    }
}

/// Writes notes for the user, one a line.
pub fn print_notes(err: &mut impl Write, notes: &[String]) -> Result<()> {
    for note in notes {
        writeln!(err, "image-rebase: note: {note}")?;
    }
    Ok(())
}

/// The notes of every result of the document (each platform's, prefixed with it).
pub fn notes_of(doc: &Document) -> Vec<String> {
    let mut notes = Vec::new();
    for note in doc.unit.result.iter().flat_map(|r| &r.notes) {
        notes.push(note.clone());
    }
    for p in &doc.platforms {
        for note in p.unit.result.iter().flat_map(|r| &r.notes) {
            notes.push(format!("{}: {note}", p.platform));
        }
    }
    notes
}

/// Says on `err` which entries of an index are not rebased.
pub fn note_skipped(doc: &Document, err: &mut impl Write) -> Result<()> {
    // Attestations are reported by put-manifest, which leaves them out.
    for s in doc
        .index
        .iter()
        .flat_map(|ix| &ix.skipped)
        .filter(|s| s.reason != "attestation")
    {
        let what = s.platform.as_deref().unwrap_or("an entry");
        writeln!(
            err,
            "image-rebase: note: not rebasing {what} ({}): {}",
            s.digest, s.reason
        )?;
    }
    Ok(())
}

/// The registries the user named: the image's, the bases given as arguments, and the
/// targets. --username credentials go to these only, never to a registry that a label
/// or annotation inside an image points at.
pub fn named_hosts(doc: &Document) -> Vec<String> {
    let mut hosts: Vec<String> = doc.index.iter().map(|ix| ix.registry.clone()).collect();
    for unit in std::iter::once(&doc.unit).chain(doc.platforms.iter().map(|p| &p.unit)) {
        hosts.extend(unit.image.iter().map(|s| s.registry.clone()));
        for s in [&unit.old_base, &unit.new_base].into_iter().flatten() {
            if s.found_by.as_deref() == Some("argument") {
                hosts.push(s.registry.clone());
            }
        }
        hosts.extend(unit.result.iter().map(|r| r.target.registry.clone()));
    }
    hosts
}
