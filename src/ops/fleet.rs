//! Fleet mode: `rebase --from-file`, many images in one run. Each image goes through the
//! same `rebase` as a single one, several at once, sharing one client (connections, one
//! token per registry, bases fetched once, blobs mounted once per repository). One JSON
//! line per image on `out`; one failure never stops the others.

use crate::cli::args::{Global, RebaseArgs};
use crate::document::Document;
use crate::error::NotBased;
use crate::oci::platform::Platform;
use crate::ops::parse_reference;
use crate::ops::rebase::{Spec, final_pushed, rebase};
use crate::registry::Client;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Largest list read.
const MAX_LIST_BYTES: u64 = 256 * 1024 * 1024;

/// A JSON Lines entry of the list: a reference and options of its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(alias = "reference")]
    image: String,
    old_base: Option<String>,
    new_base: Option<String>,
    tag: Option<String>,
    layers: Option<usize>,
    label: Option<String>,
    #[serde(default)]
    platform: Option<PlatformList>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PlatformList {
    One(String),
    Many(Vec<String>),
}

/// One line of output.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Line number in the list (1-based).
    pub line: usize,
    pub image: String,
    /// `rebased`, `up-to-date`, `skipped` (not based on the given old base) or `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// `--shard I/N`.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("invalid --shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"),
    }
}

fn read_list(path: &str) -> Result<String> {
    let too_large = || {
        anyhow::anyhow!(
            "the list is larger than {MAX_LIST_BYTES} bytes: split it, e.g. with split(1), \
             and run the parts one after another"
        )
    };
    let mut text = String::new();
    if path == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            bail!("--from-file - reads the list on stdin, and stdin is a terminal");
        }
        // A file redirected to stdin has a size to refuse by before reading; a pipe does not.
        if size_of_file(&stdin).is_some_and(|n| n > MAX_LIST_BYTES) {
            return Err(too_large());
        }
        stdin
            .lock()
            .take(MAX_LIST_BYTES + 1)
            .read_to_string(&mut text)
            .context("reading the list from stdin")?;
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("reading the list {path}"))?;
        if size_of_file(&file).is_some_and(|n| n > MAX_LIST_BYTES) {
            return Err(too_large());
        }
        file.take(MAX_LIST_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading the list {path}"))?;
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

/// The spec of one list line: the command line's options, overridden by the entry's.
fn spec_of(g: &Global, args: &RebaseArgs, line: &str) -> Result<(String, Spec)> {
    let entry = if line.starts_with('{') {
        serde_json::from_str::<Entry>(line).context("not a valid list entry")?
    } else {
        Entry {
            image: line.to_string(),
            ..Entry::default()
        }
    };
    let parse = |s: Option<&String>| s.map(|r| parse_reference(g, r)).transpose();
    let mut split = args.split.clone();
    if let Some(n) = entry.layers {
        split.layers = Some(n);
    }
    if let Some(l) = &entry.label {
        split.label = l.clone();
    }
    let mut push = args.push.clone();
    if entry.tag.is_some() {
        push.tag = entry.tag.clone();
    }
    let platforms = match &entry.platform {
        Some(PlatformList::One(p)) => Platform::parse_list(std::slice::from_ref(p))?,
        Some(PlatformList::Many(ps)) => Platform::parse_list(ps)?,
        None => Platform::parse_list(&args.platform)?,
    };
    let spec = Spec {
        image: parse_reference(g, &entry.image)?,
        // An entry that says how to split (layers, label) does not inherit --old-base.
        old_base: match (
            &entry.old_base,
            entry.layers.is_some() || entry.label.is_some(),
        ) {
            (Some(r), _) => parse(Some(r))?,
            (None, true) => None,
            (None, false) => parse(args.old_base.as_ref())?,
        },
        new_base: parse(entry.new_base.as_ref().or(args.new_base.as_ref()))?,
        platforms,
        split,
        push,
    };
    Ok((entry.image, spec))
}

/// How a list line that could not be read is named in its output line: its image, with
/// any credentials in it replaced.
fn shown(line: &str) -> String {
    let image = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            ["image", "reference"]
                .iter()
                .find_map(|k| v.get(k)?.as_str().map(str::to_string))
        });
    match image {
        Some(image) => crate::oci::reference::redact(&image),
        None if line.starts_with('{') => "(not a valid list entry)".to_string(),
        None => crate::oci::reference::redact(line),
    }
}

fn outcome_of(
    line: usize,
    image: String,
    result: Result<Document>,
    notes: Vec<String>,
    dry_run: bool,
) -> Outcome {
    let mut o = Outcome {
        line,
        image,
        outcome: "failed",
        result: None,
        old_base: None,
        new_base: None,
        error: None,
        notes,
        dry_run,
    };
    match result {
        Ok(doc) => {
            let pushed = final_pushed(&doc);
            let unit = doc.platforms.first().map(|p| &p.unit).unwrap_or(&doc.unit);
            // Nothing written, or every platform already on the new base.
            let all_up_to_date = if doc.index.is_some() {
                doc.platforms
                    .iter()
                    .all(|p| p.unit.result.as_ref().is_some_and(|r| r.up_to_date))
            } else {
                unit.result.as_ref().is_some_and(|r| r.up_to_date)
            };
            let up_to_date = pushed.unchanged || all_up_to_date;
            o.outcome = if up_to_date { "up-to-date" } else { "rebased" };
            o.result = Some(pushed.reference.clone());
            o.old_base = unit.old_base.as_ref().map(|s| s.pinned());
            o.new_base = unit.new_base.as_ref().map(|s| s.pinned());
        }
        Err(e) => {
            o.outcome = if e.chain().any(|c| c.is::<NotBased>()) {
                "skipped"
            } else {
                "failed"
            };
            o.error = Some(format!("{e:#}"));
        }
    }
    o
}

/// Runs the list. The error returned when any image failed carries exit status 2.
pub fn run(
    client: &Client,
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
        parse_reference(g, r)?;
    }
    Platform::parse_list(&args.platform)?;
    if let Some(t) = &args.push.tag {
        crate::oci::reference::check_tag(t)?;
    }
    let text = read_list(path)?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .filter(|(k, _)| shard.is_none_or(|(i, n)| k % n == i))
        .map(|(_, l)| l)
        .collect();

    // --username credentials go only to the registries the list and the options name.
    let hosts: Vec<String> = lines
        .iter()
        .filter_map(|(_, text)| spec_of(g, args, text).ok())
        .flat_map(|(_, spec)| spec.named_hosts())
        .collect();
    client.limit_explicit_credentials(hosts);
    let total = lines.len();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Outcome>();
    let progress = std::io::stderr().is_terminal();
    let start = Instant::now();
    let (mut done, mut failed) = (0usize, 0usize);
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..args.jobs.min(total.max(1)) {
            let tx = tx.clone();
            let (lines, next) = (&lines, &next);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(line, text)) = lines.get(k) else {
                        break;
                    };
                    let mut notes = Vec::new();
                    let (image, result) = match spec_of(g, args, text) {
                        // A panic in one image is that image's failure, not the run's.
                        Ok((image, spec)) => {
                            let result =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    rebase(client, &spec, &mut notes)
                                }));
                            (
                                image,
                                result.unwrap_or_else(|_| {
                                    Err(anyhow::anyhow!(
                                        "internal error (a panic) while rebasing this image"
                                    ))
                                }),
                            )
                        }
                        Err(e) => (shown(text), Err(e)),
                    };
                    let notes = String::from_utf8_lossy(&notes)
                        .lines()
                        .map(|l| l.trim_start_matches("image-rebase: note: ").to_string())
                        .collect();
                    if tx
                        .send(outcome_of(line, image, result, notes, args.push.dry_run))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for o in rx {
            done += 1;
            if o.outcome == "failed" {
                failed += 1;
            }
            writeln!(
                out,
                "{}",
                serde_json::to_string(&o).expect("an outcome serialises")
            )?;
            if progress {
                let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
                write!(err, "\r{done}/{total} images, {rate:.1}/s, {failed} failed")?;
            }
        }
        Ok(())
    })?;
    if progress {
        writeln!(err)?;
    }
    out.flush()?;
    if failed > 0 {
        bail!("{failed} of {total} images failed (see their JSON lines)");
    }
    Ok(())
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

    #[test]
    fn entries() {
        let e: Entry = serde_json::from_str(
            r#"{"image":"a:1","tag":"t","layers":2,"platform":["linux/amd64"]}"#,
        )
        .unwrap();
        assert_eq!(
            (e.image.as_str(), e.tag.as_deref(), e.layers),
            ("a:1", Some("t"), Some(2))
        );
        assert!(
            serde_json::from_str::<Entry>(r#"{"image":"a","tga":"x"}"#).is_err(),
            "typos are refused"
        );
        let e: Entry = serde_json::from_str(r#"{"reference":"b"}"#).unwrap();
        assert_eq!(e.image, "b");
    }
}
