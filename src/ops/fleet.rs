//! Fleet mode: `rebase --from-file`, many images in one run. Each image goes through the
//! same `rebase` as a single one, several at once, sharing one client (connections, one
//! token per registry, bases fetched once, blobs placed once per repository). One outcome
//! per image, as it finishes; one failure never stops the others. Reading the list and
//! printing the outcomes is the command line's part (`cli::fleet`).

use crate::document::Document;
use crate::error::NotBased;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::ops::rebase::{Spec, final_pushed, rebase};
use crate::ops::{PushOptions, SplitOptions};
use crate::registry::Client;
use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The command line's options, which every entry of the list starts from.
pub struct Defaults {
    /// `--registry`: the registry of references without one.
    pub registry: Option<String>,
    pub old_base: Option<String>,
    pub new_base: Option<String>,
    pub platforms: Vec<String>,
    pub split: SplitOptions,
    pub push: PushOptions,
}

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

/// One list line, read: its number, its text, and what to rebase (or why it cannot be).
pub struct Line<'a> {
    pub number: usize,
    pub text: &'a str,
    pub spec: Result<(String, Spec)>,
}

/// Reads each list line once: `(number, text)` pairs, comments and blank lines already
/// left out.
pub fn read_lines<'a>(d: &Defaults, lines: &[(usize, &'a str)]) -> Vec<Line<'a>> {
    lines
        .iter()
        .map(|&(number, text)| Line {
            number,
            text,
            spec: spec_of(d, text),
        })
        .collect()
}

/// The registries the list and the options name (where --username credentials may go).
pub fn named_hosts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.spec.as_ref().ok())
        .flat_map(|(_, spec)| spec.named_hosts())
        .collect()
}

/// What became of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Rebased,
    /// Nothing to write: already on the new base, or the target already holds the result.
    UpToDate,
    /// Not based on the given old base, or its base cannot be found in it.
    Skipped,
    Failed,
}

/// One line of output.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Line number in the list (1-based).
    pub line: usize,
    pub image: String,
    pub outcome: Status,
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

/// The spec of one list line: the command line's options, overridden by the entry's.
fn spec_of(d: &Defaults, line: &str) -> Result<(String, Spec)> {
    let entry = if line.starts_with('{') {
        serde_json::from_str::<Entry>(line).context("not a valid list entry")?
    } else {
        Entry {
            image: line.to_string(),
            ..Entry::default()
        }
    };
    let reference = |r: &str| Reference::parse_with_default(r, d.registry.as_deref());
    let parse = |s: Option<&String>| s.map(|r| reference(r)).transpose();
    let mut split = d.split.clone();
    if let Some(n) = entry.layers {
        split.layers = Some(n);
    }
    if let Some(l) = &entry.label {
        split.label = l.clone();
    }
    let mut push = d.push.clone();
    if let Some(t) = &entry.tag {
        push.to = None;
        push.set_tag(t, d.registry.as_deref())?;
    }
    let platforms = match &entry.platform {
        Some(PlatformList::One(p)) => Platform::parse_list(std::slice::from_ref(p))?,
        Some(PlatformList::Many(ps)) => Platform::parse_list(ps)?,
        None => Platform::parse_list(&d.platforms)?,
    };
    let spec = Spec {
        image: reference(&entry.image)?,
        // An entry that says how to split (layers, label) does not inherit --old-base.
        old_base: match (
            &entry.old_base,
            entry.layers.is_some() || entry.label.is_some(),
        ) {
            (Some(r), _) => parse(Some(r))?,
            (None, true) => None,
            (None, false) => parse(d.old_base.as_ref())?,
        },
        new_base: parse(entry.new_base.as_ref().or(d.new_base.as_ref()))?,
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
        outcome: Status::Failed,
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
            o.outcome = if up_to_date {
                Status::UpToDate
            } else {
                Status::Rebased
            };
            o.result = Some(pushed.reference.clone());
            o.old_base = unit.old_base.as_ref().map(|s| s.pinned());
            o.new_base = unit.new_base.as_ref().map(|s| s.pinned());
        }
        Err(e) => {
            o.outcome = if e.chain().any(|c| c.is::<NotBased>()) {
                Status::Skipped
            } else {
                Status::Failed
            };
            o.error = Some(format!("{e:#}"));
        }
    }
    o
}

/// Rebases every line, `jobs` at once; `each` gets each outcome as it comes (in the
/// order they finish). Stops early only when `each` fails (e.g. stdout went away).
pub fn run(
    client: &Client,
    lines: &[Line],
    jobs: usize,
    dry_run: bool,
    mut each: impl FnMut(Outcome) -> Result<()>,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Outcome>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..jobs.clamp(1, lines.len().max(1)) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                while let Some(l) = lines.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if tx.send(rebase_line(client, l, dry_run)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        rx.into_iter().try_for_each(&mut each)
    })
}

/// One line's outcome. A panic in one image is that image's failure, not the run's.
fn rebase_line(client: &Client, l: &Line, dry_run: bool) -> Outcome {
    let mut notes = Vec::new();
    let (image, result) = match &l.spec {
        Ok((image, spec)) => {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rebase(client, spec, &mut notes)
            }));
            (
                image.clone(),
                result.unwrap_or_else(|_| {
                    Err(anyhow!(
                        "internal error (a panic) while rebasing this image"
                    ))
                }),
            )
        }
        Err(e) => (shown(l.text), Err(anyhow!("{e:#}"))),
    };
    outcome_of(l.number, image, result, notes, dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;

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
