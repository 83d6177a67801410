//! Fleet mode on the command line: reads the list (a file or stdin, bounded in size),
//! takes this shard of it, runs `ops::fleet`, and prints one JSON line per image, with a
//! progress line on stderr when it is a terminal.

use super::args::{Global, RebaseArgs};
use super::{client, explicit_credential};
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::ops::fleet::{self, Defaults, Outcome, Status};
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Read, Write};
use std::time::Instant;

/// Largest list read.
const MAX_LIST_BYTES: u64 = 256 * 1024 * 1024;

/// `rebase --from-file`. The error returned when any image failed carries exit status 2.
pub fn run(
    g: &Global,
    args: &RebaseArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    let path = args
        .from_file
        .as_deref()
        .expect("fleet mode has --from-file");
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    // The command line's own options are checked once, before any request.
    for r in [&args.old_base, &args.new_base].into_iter().flatten() {
        Reference::parse_with_default(r, g.registry.as_deref())?;
    }
    Platform::parse_list(&args.platform)?;
    let push = args.push.options(g.registry.as_deref())?;
    // The list may come on stdin: then the password cannot.
    let explicit = explicit_credential(g, path != "-")?;
    let defaults = Defaults {
        registry: g.registry.clone(),
        old_base: args.old_base.clone(),
        new_base: args.new_base.clone(),
        platforms: args.platform.clone(),
        split: (&args.split).into(),
        push,
        same_labels: args.require_same_label.clone(),
    };
    let text = read_list(path, "--from-file", "the list")?;
    // Every shard checks the whole list: two shards may not write one tag either.
    fleet::check_targets(&fleet::read_lines(&defaults, &numbered(&text, None)))?;
    let lines = fleet::read_lines(&defaults, &numbered(&text, shard));
    // --username credentials go only to the registries the list and the options name.
    let client = client(g, explicit, fleet::named_hosts(&lines), true)?;
    let total = lines.len();
    report(total, "images", out, err, |each| {
        fleet::run(&client, &lines, args.jobs, args.push.dry_run, each)
    })
}

/// Prints the outcomes `run` hands to its callback as JSON lines on `out`, with a progress
/// line on `err` when it is a terminal; an error (exit status 2) when any failed.
pub(super) fn report(
    total: usize,
    what: &str,
    out: &mut impl Write,
    err: &mut impl Write,
    run: impl FnOnce(&mut dyn FnMut(Outcome) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let progress = std::io::stderr().is_terminal();
    let start = Instant::now();
    let (mut done, mut failed) = (0usize, 0usize);
    run(&mut |o: Outcome| {
        done += 1;
        if o.outcome == Status::Failed {
            failed += 1;
        }
        writeln!(out, "{}", serde_json::to_string(&o)?)?;
        if progress {
            let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
            write!(err, "\r{done}/{total} {what}, {rate:.1}/s, {failed} failed")?;
        }
        Ok(())
    })?;
    if progress {
        writeln!(err)?;
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} of {total} {what} failed (see their JSON lines)");
    }
    Ok(())
}

/// The list's entries with their line numbers: blank lines and `#` comments left out,
/// and with `--shard I/N` only the I-th of every N entries.
pub(super) fn numbered(text: &str, shard: Option<(usize, usize)>) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .filter(|(k, _)| shard.is_none_or(|(i, n)| k % n == i))
        .map(|(_, l)| l)
        .collect()
}

/// `--shard I/N`.
pub(super) fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("invalid --shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"),
    }
}

/// Reads `what` (the list, or a report), given by `option` (`--from-file`), from the file
/// `path`, or stdin for `-`.
pub(super) fn read_list(path: &str, option: &str, what: &str) -> Result<String> {
    let too_large = || {
        anyhow::anyhow!(
            "{what} is larger than {MAX_LIST_BYTES} bytes: split it, e.g. with split(1), \
             and run the parts one after another"
        )
    };
    let mut text = String::new();
    if path == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            bail!("{option} - reads {what} on stdin, and stdin is a terminal");
        }
        // A file redirected to stdin has a size to refuse by before reading; a pipe does not.
        if size_of_file(&stdin).is_some_and(|n| n > MAX_LIST_BYTES) {
            return Err(too_large());
        }
        stdin
            .lock()
            .take(MAX_LIST_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {what} from stdin"))?;
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("reading {what} {path}"))?;
        if size_of_file(&file).is_some_and(|n| n > MAX_LIST_BYTES) {
            return Err(too_large());
        }
        file.take(MAX_LIST_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {what} {path}"))?;
    }
    if text.len() as u64 > MAX_LIST_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// The size of a regular file open as `f` (None for a pipe or a terminal).
fn size_of_file(f: &impl std::os::fd::AsFd) -> Option<u64> {
    let file = std::fs::File::from(f.as_fd().try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards() {
        assert_eq!(parse_shard("0/4").unwrap(), (0, 4));
        assert_eq!(parse_shard("3/4").unwrap(), (3, 4));
        for bad in ["4/4", "1/0", "x/2", "1", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
