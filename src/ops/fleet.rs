//! Fleet mode: `rebase --from-file`, many images in one run. Each image goes through the
//! same `rebase` as a single one, several at once, sharing one client (connections, one
//! token per registry, bases fetched once, blobs placed once per repository). One outcome
//! per image, as it finishes; one failure never stops the others. Reading the list and
//! printing the outcomes is the command line's part (`cli::fleet`).

use crate::document::Document;
use crate::error::{EXIT_NOT_BASED, exit_status};
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::reference::Reference;
use crate::ops::rebase::{Spec, final_pushed, rebase, source_of};
use crate::ops::{PushOptions, SplitOptions};
use crate::registry::Client;
use anyhow::{Context, Result, anyhow, bail};
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
    /// `--require-same-label`.
    pub same_labels: Vec<String>,
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
    /// What the tag held when `find` listed it: it must still hold it.
    digest: Option<String>,
    /// How `find` found the image (informational).
    #[allow(dead_code)]
    found_by: Option<serde_json::Value>,
    /// The base a label names, as `find` lists it (informational).
    #[allow(dead_code)]
    base: Option<serde_json::Value>,
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
    pub spec: Result<Planned>,
}

/// What one list line asks for.
pub struct Planned {
    /// The image as the line names it.
    pub image: String,
    pub spec: Spec,
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
        .flat_map(|p| p.spec.named_hosts())
        .collect()
}

/// Refuses, before any request, a list that would write two different images of one
/// repository to one tag: a fixed `--tag` (or entry `tag`) for several images of a
/// repository. A template with `{tag}` or `{digest}` gives each its own.
pub fn check_targets(lines: &[Line]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for Planned { image, spec, .. } in lines.iter().filter_map(|l| l.spec.as_ref().ok()) {
        let own = &spec.image;
        let tag = match (&spec.push.tag, &own.tag) {
            (Some(t), _) if t.contains("{digest}") => continue,
            (Some(t), Some(own_tag)) => t.replace("{tag}", own_tag),
            // By digest: `{tag}` fails for this image alone, when it is rebased.
            (Some(t), None) if t.contains("{tag}") => continue,
            (Some(t), None) => t.clone(),
            (None, Some(own_tag)) => own_tag.clone(),
            (None, None) => continue,
        };
        let key = (own.registry.clone(), own.repository.clone(), tag);
        let explicit = spec.push.tag.is_some();
        let this = (own.tag.clone(), own.digest.clone());
        if let Some((other, first, first_explicit)) =
            seen.insert(key.clone(), (this.clone(), image, explicit))
            && other != this
            && (explicit || first_explicit)
        {
            bail!(
                "{first} and {image} would both be written to {}/{}:{}: a fixed --tag (or an \
                 entry's \"tag\") takes one image per repository; use a template such as \
                 '{{tag}}-rebased' (the image's own tag) or '{{tag}}-{{digest}}'",
                key.0,
                key.1,
                key.2
            );
        }
    }
    Ok(())
}

/// What became of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Rebased,
    /// Nothing to write: already on the new base, or the target already holds the result.
    UpToDate,
    /// Not based on the given old base, or its base cannot be found in it.
    Skipped,
    Failed,
    /// promote: the image's own tag now points at the rebased image.
    Promoted,
    /// rollback: the tag holds again what it held before.
    RolledBack,
}

/// One line of output.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// Line number in the list (1-based).
    pub line: usize,
    pub image: String,
    pub outcome: Status,
    /// The digest of the manifest (or index) the operation read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Digest>,
    /// `registry/repository:tag`: the tag written (or that would be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the target tag held before the write; null when the tag was new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Option<Digest>>,
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
fn spec_of(d: &Defaults, line: &str) -> Result<Planned> {
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
        same_labels: d.same_labels.clone(),
        found: entry
            .digest
            .as_deref()
            .map(|s| s.parse::<Digest>().context("\"digest\""))
            .transpose()?,
        open_early: false,
    };
    Ok(Planned {
        image: entry.image,
        spec,
    })
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

/// The outcome of one rebase (`rebase --json` prints it for its one image).
pub fn outcome_of(
    line: usize,
    image: String,
    result: Result<Document>,
    notes: Vec<String>,
    dry_run: bool,
) -> Outcome {
    let mut o = Outcome::new(line, image, Status::Failed, dry_run);
    o.notes = notes;
    match result {
        Ok(doc) => rebased(&mut o, &doc),
        Err(e) => {
            o.outcome = if exit_status(&e) == EXIT_NOT_BASED {
                Status::Skipped
            } else {
                Status::Failed
            };
            o.error = Some(format!("{e:#}"));
        }
    }
    o
}

impl Outcome {
    /// An outcome with nothing but its line, image and status.
    pub fn new(line: usize, image: String, outcome: Status, dry_run: bool) -> Outcome {
        Outcome {
            line,
            image,
            outcome,
            source: None,
            target: None,
            previous: None,
            result: None,
            old_base: None,
            new_base: None,
            error: None,
            notes: vec![],
            dry_run,
        }
    }
}

/// Fills in the outcome of a rebase that went through.
fn rebased(o: &mut Outcome, doc: &Document) {
    let pushed = final_pushed(doc);
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
    o.source = source_of(doc).map(|(_, d)| d);
    if let Some(tag) = &pushed.tag {
        o.target = Some(format!("{}/{}:{tag}", pushed.registry, pushed.repository));
        o.previous = Some(pushed.previous.clone());
    }
    o.result = Some(pushed.reference.clone());
    o.old_base = unit.old_base.as_ref().map(|s| s.pinned());
    o.new_base = unit.new_base.as_ref().map(|s| s.pinned());
}

/// Rebases every line, `jobs` at once; `each` gets each outcome as it comes (in the
/// order they finish). Stops early only when `each` fails (e.g. stdout went away).
pub fn run(
    client: &Client,
    lines: &[Line],
    jobs: usize,
    dry_run: bool,
    each: impl FnMut(Outcome) -> Result<()>,
) -> Result<()> {
    run_all(lines, jobs, |l| rebase_line(client, l, dry_run), each)
}

/// Runs `work` on every item, `jobs` at once; `each` gets each result as it comes, on
/// this thread. Stops early only when `each` fails. The fleet machinery that rebase,
/// promote, rollback and find share.
pub fn run_all<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    mut each: impl FnMut(R) -> Result<()>,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<R>();
    let work = &work;
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if tx.send(work(item)).is_err() {
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
        Ok(p) => {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rebase(client, &p.spec, &mut notes)
            }));
            (
                p.image.clone(),
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
        // A line of `find`, as it prints them.
        let found = r#"{"image":"r/a:1","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","old_base":"r/base@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","platform":["linux/amd64"],"found_by":"layers"}"#;
        let d = Defaults {
            registry: None,
            old_base: None,
            new_base: Some("r/base:2".into()),
            platforms: vec![],
            split: SplitOptions {
                label: "FROM".into(),
                layers: None,
            },
            push: PushOptions::default(),
            same_labels: vec![],
        };
        let p = spec_of(&d, found).unwrap();
        assert_eq!(p.spec.found, Some(Digest::of(b"")));
        assert_eq!(p.spec.platforms, [Platform::parse("linux/amd64").unwrap()]);
        assert!(p.spec.old_base.is_some());
        let bad = r#"{"image":"r/a:1","digest":"sha256:zz"}"#;
        assert!(spec_of(&d, bad).is_err(), "a digest that is not one");
        let failed = r#"{"image":"r/a:1","outcome":"failed","error":"x"}"#;
        assert!(
            spec_of(&d, failed).is_err(),
            "find's failed lines fail here too"
        );
    }

    #[test]
    fn fixed_tags_for_several_images_of_a_repository_are_refused() {
        let defaults = |tag: &str| Defaults {
            registry: Some("r.example".into()),
            old_base: None,
            new_base: None,
            platforms: vec![],
            split: SplitOptions {
                label: "FROM".into(),
                layers: None,
            },
            push: PushOptions {
                tag: Some(tag.into()),
                ..PushOptions::default()
            },
            same_labels: vec![],
        };
        let list = [(1, "app:1"), (2, "app:2"), (3, "other:1"), (4, "app:1")];
        for (tag, ok) in [
            ("fixed", false),
            ("{tag}-rebased", true),
            ("{digest}", true),
            ("x-{tag}", true),
        ] {
            let lines = read_lines(&defaults(tag), &list);
            assert_eq!(check_targets(&lines).is_ok(), ok, "{tag}");
        }
        // One image per repository (listed twice): a fixed tag is fine.
        let lines = read_lines(
            &defaults("fixed"),
            &[(1, "app:1"), (2, "app:1"), (3, "b:1")],
        );
        check_targets(&lines).unwrap();
        let entry = r#"{"image":"app:2","tag":"1-rebased"}"#;
        let lines = read_lines(&defaults("{tag}-rebased"), &[(1, "app:1"), (2, entry)]);
        assert!(check_targets(&lines).is_err(), "an entry's tag collides");
        // An entry's tag that is another image's own tag, written in place.
        let mut in_place = defaults("x");
        in_place.push.tag = None;
        let entry = r#"{"image":"app:2","tag":"1"}"#;
        let lines = read_lines(&in_place, &[(1, "app:1"), (2, entry)]);
        assert!(check_targets(&lines).is_err(), "app:2 onto app:1");
        let lines = read_lines(&in_place, &[(1, "app:1"), (2, "app:1"), (3, "app:2")]);
        check_targets(&lines).unwrap();
    }
}
