//! The command line: the only code that knows clap, stdin, stdout, stderr and the
//! terminal. Each subcommand reads its input, builds the options of its operation, runs it
//! and writes the document (or the result) and the notes.

pub mod args;
pub mod document_io;
mod find;
mod fleet;
mod plan;
mod progress;
mod rollout;

use crate::document::{Document, Role};
use crate::error::NotBased;
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_registry};
use crate::ops::fleet as fleet_ops;
use crate::ops::rebase::{Spec, final_pushed, rebase};
use crate::ops::rollout::Kind;
use crate::ops::{fetch_config, fetch_manifest, put_manifest, splice, split_history};
use crate::registry::credentials::{Credential, Found, Sources};
use crate::registry::secret::Secret;
use crate::registry::{Client, Options};
use anyhow::{Context, Result, bail};
use args::{Cli, Command, FetchManifestArgs, Global, RebaseArgs};
use document_io::{read_document, write_document};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

/// The environment variable that holds the password for --username.
pub const PASSWORD_ENV: &str = "IMAGE_REBASE_PASSWORD";

/// Runs the command line, writing results to `out` and notes to `err`.
pub fn run(cli: Cli, out: &mut impl Write, err: &mut impl Write) -> Result<()> {
    let g = &cli.global;
    if let Some(registry) = &g.registry {
        check_registry(registry).map_err(|_| {
            anyhow::anyhow!("invalid --registry {registry:?}: expected HOST or HOST:PORT")
        })?;
    }
    match cli.command {
        Command::FetchManifest(args) => fetch_manifest_cmd(g, &args, out, err),
        Command::FetchConfig => {
            with_client(g, "fetch-config", out, None, |client, doc| {
                fetch_config::step(client, doc)?;
                Ok(vec![])
            })?;
            Ok(())
        }
        Command::SplitHistory(args) => {
            let mut doc = read_document("split-history", false)?;
            split_history::step(&mut doc, &(&args).into())?;
            write_document(&doc, out)
        }
        Command::Splice => {
            let mut doc = read_document("splice", false)?;
            splice::step(&mut doc)?;
            print_notes(err, &doc.result_notes())?;
            write_document(&doc, out)
        }
        Command::PutManifest(args) => {
            let opts = args.push.options(g.registry.as_deref())?;
            let line = progress_line();
            let notes = with_client(g, "put-manifest", out, line.clone(), |client, doc| {
                put_manifest::step(client, doc, &opts)
            });
            if let Some(l) = &line {
                l.finish();
            }
            notes.and_then(|notes| print_notes(err, &notes))
        }
        Command::Rebase(args) if args.from_file.is_some() => fleet::run(g, &args, out, err),
        Command::Rebase(args) => rebase_one(g, &args, out, err),
        Command::Promote(args) => rollout::run(g, Kind::Promote, &args, out, err),
        Command::Rollback(args) => rollout::run(g, Kind::Rollback, &args, out, err),
        Command::Completions(args) => completions(args.shell, out),
        Command::Find(args) => find::run(g, &args, out, err),
    }
}

/// fetch-manifest: the document on stdin is optional (the first step of a pipeline).
fn fetch_manifest_cmd(
    g: &Global,
    args: &FetchManifestArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    let reference = args
        .reference
        .as_deref()
        .map(|r| parse_reference(g, r))
        .transpose()?;
    let platforms = Platform::parse_list(&args.platform)?;
    let explicit = explicit_credential(g, false)?;
    let role: Role = args.role.into();
    // A base given by reference is fetched while the document is read: the stages of a
    // pipeline run at once, so its manifest is there when the image's document arrives.
    let named: Vec<String> = reference.iter().map(|r| r.registry.clone()).collect();
    let early = client(g, explicit.clone(), named.clone(), true)?;
    let mut doc = std::thread::scope(|s| {
        if let Some(r) = reference.as_ref().filter(|_| role != Role::Image) {
            s.spawn(|| early.fetch_base_manifest(r).map(drop));
        }
        read_document("fetch-manifest", true)
    })?;
    let hosts = doc.named_hosts();
    // A credential given on the command line goes only to the registries named: those
    // of the document too, known only now.
    let client = if explicit.is_none() || hosts.iter().all(|h| named.contains(h)) {
        early
    } else {
        client(g, explicit, hosts.into_iter().chain(named), false)?
    };
    teach(&client, &doc);
    let opts = fetch_manifest::Options {
        label: &args.label,
        platforms: &platforms,
        annotation_failed: None,
    };
    let notes = fetch_manifest::step(&client, &mut doc, role, reference.as_ref(), &opts)?;
    doc.note_registries(client.learnt());
    print_notes(err, &doc.skipped_notes())?;
    print_notes(err, &notes)?;
    write_document(&doc, out)
}

/// A plumbing step that talks to registries: reads the document, runs `step` with a
/// client for the registries the document names, writes the document; the step's notes
/// back.
fn with_client(
    g: &Global,
    command: &str,
    out: &mut impl Write,
    line: Option<Arc<progress::Line>>,
    step: impl FnOnce(&Client, &mut Document) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let explicit = explicit_credential(g, false)?;
    let mut doc = read_document(command, false)?;
    let mut client = client(g, explicit, doc.named_hosts(), false)?;
    if let Some(l) = line {
        client = client.with_progress(l);
    }
    teach(&client, &doc);
    let notes = step(&client, &mut doc)?;
    doc.note_registries(client.learnt());
    write_document(&doc, out)?;
    Ok(notes)
}

/// Tells the client what earlier steps learnt of the registries (the document's
/// `registries`), so that it does not try them out again.
fn teach(client: &Client, doc: &Document) {
    for (name, note) in &doc.registries {
        client.teach(name, &note.scheme, &note.auth);
    }
}

/// The porcelain for one image: `repo@digest` on `out` (or, with --dry-run, the plan).
fn rebase_one(
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
    let parse = |r: Option<&String>| r.map(|r| parse_reference(g, r)).transpose();
    let spec = Spec {
        image: parse_reference(g, image)?,
        old_base: parse(args.old_base.as_ref())?,
        new_base: parse(args.new_base.as_ref())?,
        platforms: Platform::parse_list(&args.platform)?,
        split: (&args.split).into(),
        push: args.push.options(g.registry.as_deref())?,
        same_labels: args.require_same_label.clone(),
        found: None,
        open_early: true,
    };
    let explicit = explicit_credential(g, true)?;
    // Bases by tag once for the run: the rebase fetches them ahead, while the image is.
    let mut client = client(g, explicit, spec.named_hosts(), true)?;
    let line = progress_line();
    if let Some(l) = &line {
        client = client.with_progress(l.clone());
    }
    let mut notes = Vec::new();
    let result = rebase(&client, &spec, &mut notes);
    if let Some(l) = &line {
        l.finish();
    }
    if args.json {
        return rebase_json(image, result, notes, args.push.dry_run, out);
    }
    print_notes(err, &notes)?;
    let doc = result?;
    if args.push.dry_run {
        return plan::plan(&doc, out);
    }
    writeln!(out, "{}", final_pushed(&doc).reference)?;
    Ok(())
}

/// `rebase --json`: the outcome as a fleet line for a list of one (notes inside it); an
/// image that was skipped or failed still gives exit status 1 or 2.
fn rebase_json(
    image: &str,
    result: Result<Document>,
    notes: Vec<String>,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<()> {
    let status = result.as_ref().err().map(crate::error::exit_status);
    let o = fleet_ops::outcome_of(1, image.to_string(), result, notes, dry_run);
    writeln!(out, "{}", serde_json::to_string(&o)?)?;
    out.flush()?;
    match (status, o.error) {
        (Some(crate::error::EXIT_NOT_BASED), Some(e)) => Err(NotBased(e).into()),
        (Some(_), Some(e)) => Err(anyhow::anyhow!(e)),
        _ => Ok(()),
    }
}

/// `completions`: the script clap_complete generates for the shell. Its bash script
/// spells the state of a subcommand two ways when the program's name has a hyphen
/// (`image__rebase__subcmd__promote` in the loop, `image__subcmd__rebase__subcmd__promote`
/// in the case arms; clap-rs/clap#6421), so nothing after the subcommand would complete:
/// the arms are spelt as the loop spells them.
fn completions(shell: args::ShellArg, out: &mut impl Write) -> Result<()> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut command,
        "image-rebase",
        &mut script,
    );
    let mut script = String::from_utf8(script)?;
    if shell == args::ShellArg::Bash {
        script = script.replace("image__subcmd__rebase", "image__rebase");
    }
    out.write_all(script.as_bytes())?;
    Ok(())
}

/// The copy progress line, when stderr is a terminal.
fn progress_line() -> Option<Arc<progress::Line>> {
    std::io::stderr()
        .is_terminal()
        .then(|| Arc::new(progress::Line::new()))
}

/// Writes notes for the user, one a line.
fn print_notes(err: &mut impl Write, notes: &[String]) -> Result<()> {
    for note in notes {
        writeln!(err, "image-rebase: note: {note}")?;
    }
    Ok(())
}

/// Parses a reference given on the command line, with `--registry` as the default host.
fn parse_reference(g: &Global, s: &str) -> Result<Reference> {
    Reference::parse_with_default(s, g.registry.as_deref())
}

/// The credential given with --username (password from --password-stdin or
/// IMAGE_REBASE_PASSWORD), checking the global options first. `stdin_is_free`: the command
/// reads no document or list on stdin, so --password-stdin may take it.
fn explicit_credential(g: &Global, stdin_is_free: bool) -> Result<Option<Found>> {
    if g.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let password = if g.password_stdin {
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
    match (&g.username, password) {
        (Some(username), Some(password)) => Ok(Some(Found {
            credential: Credential::Basic {
                username: username.clone(),
                password,
            },
            source: "the command line".to_string(),
        })),
        (Some(_), None) => {
            bail!("--username needs a password: give --password-stdin or set {PASSWORD_ENV}")
        }
        (None, Some(_)) if g.password_stdin => bail!("--password-stdin needs --username"),
        (None, _) => Ok(None),
    }
}

/// A registry client for the global options. The explicit credential goes to
/// `named_hosts` only (the registries the user named); `cache_tags`: bases fetched by tag
/// are fetched once for the whole run (fleet mode, and the porcelain, which fetches them
/// ahead).
fn client(
    g: &Global,
    explicit: Option<Found>,
    named_hosts: impl IntoIterator<Item = String>,
    cache_tags: bool,
) -> Result<Client> {
    Client::new(Options {
        insecure: g.insecure,
        https: g.https,
        verbose: g.verbose,
        ca_cert: g.ca_cert.clone(),
        timeout: std::time::Duration::from_secs(g.timeout),
        credentials: Sources::from_env(explicit, named_hosts),
        cache_tags,
    })
}
