//! promote and rollback: move tags by the report of an earlier run, each only while the
//! tag still holds what the report says it held. Both read the JSON lines of a report
//! (`rebase --from-file`, `rebase --json`, promote or rollback), decide per line which
//! tag to move from which digest to which, and write one outcome per moved (or refused)
//! tag through the fleet machinery. A tag moves only by a manifest PUT of bytes already
//! in its repository (fetched by digest), so no blob moves.
//!
//! Registries have no compare-and-swap: between the HEAD that checks a tag and the PUT
//! that moves it lies one request, in which another writer may move the tag.

use crate::oci::digest::Digest;
use crate::oci::reference::Reference;
use crate::ops::fleet::{Outcome, Status};
use crate::registry::{Client, Push};
use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Deserializer};

/// Which way the tags move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A side tag's image becomes the image's own tag.
    Promote,
    /// A moved tag gets back what it held before.
    Rollback,
}

/// The keys of a report line that promote and rollback read (others are ignored).
#[derive(Debug, Deserialize)]
struct ReportLine {
    image: String,
    outcome: Status,
    source: Option<Digest>,
    target: Option<String>,
    /// Absent: the line moved no tag; null: the tag was new.
    #[serde(default, deserialize_with = "present")]
    previous: Option<Option<Digest>>,
    result: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// A key that is there, null or not.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Digest>>, D::Error> {
    Option::<Digest>::deserialize(d).map(Some)
}

/// One tag to move: from `expect` (what it must hold now) to `put`.
#[derive(Debug, PartialEq, Eq)]
pub struct Move {
    /// registry, repository and the tag.
    pub tag: Reference,
    pub expect: Digest,
    pub put: Digest,
}

/// What to do with one report line that concerns this command.
#[derive(Debug)]
pub struct Task {
    /// Line number in the report (1-based).
    pub number: usize,
    pub image: String,
    /// The move, or why this line cannot be acted on (`Skip`), or why it cannot be read.
    pub what: Result<Planned>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Planned {
    Move(Move),
    /// Nothing will be done, for this reason (reported as `skipped`).
    Skip(String),
}

/// The tasks of a report's lines, `(number, text)` pairs; lines that concern this command
/// not at all (promote: all but `rebased`; rollback: those that moved no tag) are left out.
pub fn read_report(kind: Kind, lines: &[(usize, &str)]) -> Vec<Task> {
    lines
        .iter()
        .filter_map(|&(number, text)| {
            let line = match serde_json::from_str::<ReportLine>(text) {
                Ok(line) => line,
                Err(e) => {
                    return Some(Task {
                        number,
                        image: crate::oci::reference::redact(text.get(..80).unwrap_or(text)),
                        what: Err(anyhow!(
                            "not a line of an image-rebase report (JSON with \"image\" and \"outcome\"): {e}"
                        )),
                    });
                }
            };
            let what = match kind {
                Kind::Promote => promotion(&line),
                Kind::Rollback => rollback(&line),
            };
            what.transpose().map(|what| Task {
                number,
                image: line.image.clone(),
                what,
            })
        })
        .collect()
}

/// The registries the tasks write to.
pub fn named_hosts(tasks: &[Task]) -> Vec<String> {
    tasks
        .iter()
        .filter_map(|t| match &t.what {
            Ok(Planned::Move(m)) => Some(m.tag.registry.clone()),
            _ => None,
        })
        .collect()
}

/// promote: a `rebased` line written to a side tag moves the image's own tag from the
/// source to the result.
fn promotion(line: &ReportLine) -> Result<Option<Planned>> {
    if line.outcome != Status::Rebased {
        return Ok(None);
    }
    if line.dry_run {
        return skip("the line is from a dry run: nothing was written to promote");
    }
    let (side, result) = target_and_result(line)?;
    let own = Reference::parse_with_default(&line.image, Some(&side.registry))?;
    let Some(own_tag) = own.tag.filter(|_| own.digest.is_none()) else {
        return skip("the image was named by digest: it has no tag of its own to promote to");
    };
    if (&own.registry, &own.repository) != (&side.registry, &side.repository) {
        return skip(
            "the rebase wrote to another repository: promote moves a tag within the image's \
             own repository (copy it there with rebase --tag instead)",
        );
    }
    if Some(&own_tag) == side.tag.as_ref() {
        return skip("the rebase wrote the image's own tag already: nothing to promote");
    }
    let source = line
        .source
        .clone()
        .context("the line has no \"source\" digest (a report of an older image-rebase?): rebase again to get one")?;
    Ok(Some(Planned::Move(Move {
        tag: Reference {
            tag: Some(own_tag),
            ..side
        },
        expect: source,
        put: result,
    })))
}

/// rollback: a line that moved a tag puts back what the tag held before.
fn rollback(line: &ReportLine) -> Result<Option<Planned>> {
    let moved_a_tag = matches!(
        line.outcome,
        Status::Rebased | Status::UpToDate | Status::Promoted | Status::RolledBack
    );
    if !moved_a_tag || line.dry_run || line.target.is_none() {
        return Ok(None);
    }
    let (tag, result) = target_and_result(line)?;
    let previous = line
        .previous
        .clone()
        .context("the line has a \"target\" but no \"previous\": it cannot be rolled back")?;
    match previous {
        Some(previous) if previous == result => Ok(None),
        Some(previous) => Ok(Some(Planned::Move(Move {
            tag,
            expect: result,
            put: previous,
        }))),
        None => skip(&format!(
            "the tag was new (\"previous\" is null) and is left at {result}: registries remove \
             a manifest by digest only, which would take it from every tag that shares it; \
             delete the tag with the registry's own tools if it must go"
        )),
    }
}

fn skip(why: &str) -> Result<Option<Planned>> {
    Ok(Some(Planned::Skip(why.to_string())))
}

/// The line's target (a tag) and the digest of its result.
fn target_and_result(line: &ReportLine) -> Result<(Reference, Digest)> {
    let target = line.target.as_deref().context(
        "the line has no \"target\" (the tag it wrote): a report of an older image-rebase?",
    )?;
    let target = Reference::parse(target).context("the line's \"target\"")?;
    if target.tag.is_none() || target.digest.is_some() {
        bail!("the line's \"target\" is not registry/repository:tag");
    }
    let result = line
        .result
        .as_deref()
        .context("the line has no \"result\"")?;
    let result = Reference::parse(result)
        .ok()
        .and_then(|r| r.digest)
        .context("the line's \"result\" is not registry/repository@digest")?;
    Ok((target, result))
}

/// Carries out one task: checks the tag (one HEAD), then puts the manifest (its bytes
/// fetched by digest from the same repository). A panic is this line's failure.
pub fn apply(client: &Client, kind: Kind, task: &Task, dry_run: bool) -> Outcome {
    let mut o = Outcome::new(task.number, task.image.clone(), Status::Failed, dry_run);
    let m = match &task.what {
        Ok(Planned::Move(m)) => m,
        Ok(Planned::Skip(why)) => {
            o.outcome = Status::Skipped;
            o.error = Some(why.clone());
            return o;
        }
        Err(e) => {
            o.error = Some(format!("{e:#}"));
            return o;
        }
    };
    o.source = Some(m.put.clone());
    o.target = Some(m.tag.to_string());
    o.result = Some(format!("{}@{}", m.tag.name(), m.put));
    let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        move_tag(client, kind, m, dry_run)
    }))
    .unwrap_or_else(|_| Err(anyhow!("internal error (a panic) while moving this tag")));
    match moved {
        Ok((status, previous)) => {
            o.outcome = status;
            o.previous = Some(previous);
        }
        Err(e) => match e.downcast_ref::<Moved>() {
            Some(Moved(now)) => {
                o.outcome = Status::Skipped;
                o.previous = Some(now.clone());
                o.error = Some(e.to_string());
            }
            None => o.error = Some(format!("{e:#}")),
        },
    }
    o
}

/// The tag holds something else than the report says: it moved since.
#[derive(Debug)]
struct Moved(Option<Digest>);

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(d) => write!(f, "it holds {d}"),
            None => write!(f, "it holds nothing"),
        }
    }
}

impl std::error::Error for Moved {}

/// What the tag holds now: the result already, or what the report expects; else the
/// `Moved` error.
fn check_tag(client: &Client, kind: Kind, m: &Move) -> Result<Option<Digest>> {
    let current = client
        .head_manifest(&m.tag)
        .with_context(|| format!("checking {}", m.tag))?;
    if current.as_ref() == Some(&m.put) || current.as_ref() == Some(&m.expect) {
        return Ok(current);
    }
    let now = current
        .as_ref()
        .map_or("nothing".to_string(), |d| d.to_string());
    let why = format!(
        "{} holds {now}, not {} as the report says: it moved since, and is left alone{}",
        m.tag,
        m.expect,
        match kind {
            Kind::Promote => " (rebase the image again, then promote that)",
            Kind::Rollback => "",
        }
    );
    Err(anyhow::Error::new(Moved(current)).context(why))
}

/// Checks the tag and moves it; the status and what the tag held before.
fn move_tag(
    client: &Client,
    kind: Kind,
    m: &Move,
    dry_run: bool,
) -> Result<(Status, Option<Digest>)> {
    // One token for the check and the write; a dry run asks for no push right.
    if !dry_run {
        let scope = format!("repository:{}:pull,push", m.tag.repository);
        client.want_scopes(&m.tag.registry, &[scope])?;
    }
    let current = check_tag(client, kind, m)?;
    if current.as_ref() == Some(&m.put) {
        return Ok((Status::UpToDate, current));
    }
    let pinned = Reference {
        tag: None,
        digest: Some(m.put.clone()),
        ..m.tag.clone()
    };
    let status = match kind {
        Kind::Promote => Status::Promoted,
        Kind::Rollback => Status::RolledBack,
    };
    if dry_run {
        client
            .head_manifest(&pinned)
            .with_context(|| format!("checking {pinned}"))?
            .with_context(|| format!("{pinned} is no longer in the repository"))?;
        return Ok((status, current));
    }
    let fetched = client
        .fetch_manifest(&pinned)
        .with_context(|| format!("fetching manifest {pinned}"))?;
    client
        .push(&Push {
            registry: &m.tag.registry,
            repository: &m.tag.repository,
            tag: m.tag.tag.as_deref(),
            media_type: &fetched.media_type,
            manifest: &fetched.bytes,
            blobs: vec![],
            upload: None,
            dry_run: false,
            // The manifest is in this repository already, and so is all it lists.
            no_copy: true,
            ahead: None,
        })
        .with_context(|| format!("putting {} under {}", m.put, m.tag))?;
    Ok((status, current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn line(outcome: &str, image: &str, target: &str, previous: Option<&Digest>) -> String {
        json!({
            "line": 1, "image": image, "outcome": outcome, "source": d("src"),
            "target": target, "previous": previous,
            "result": format!("r.example/app@{}", d("res")),
        })
        .to_string()
    }

    fn plan(kind: Kind, text: &str) -> Option<Result<Planned>> {
        read_report(kind, &[(1, text)]).pop().map(|t| t.what)
    }

    #[test]
    fn promotions() {
        let staged = line(
            "rebased",
            "r.example/app:1",
            "r.example/app:1-rebased",
            None,
        );
        let Some(Ok(Planned::Move(m))) = plan(Kind::Promote, &staged) else {
            panic!("a staged line is promoted");
        };
        assert_eq!(m.tag.to_string(), "r.example/app:1");
        assert_eq!((m.expect, m.put), (d("src"), d("res")));
        let in_place = line(
            "rebased",
            "r.example/app:1",
            "r.example/app:1",
            Some(&d("src")),
        );
        assert!(matches!(
            plan(Kind::Promote, &in_place),
            Some(Ok(Planned::Skip(_)))
        ));
        let up = line("up-to-date", "r.example/app:1", "r.example/app:1", None);
        assert!(plan(Kind::Promote, &up).is_none(), "left out");
        assert!(matches!(plan(Kind::Promote, "not json"), Some(Err(_))));
    }

    #[test]
    fn rollbacks() {
        let in_place = line("rebased", "app:1", "r.example/app:1", Some(&d("src")));
        let Some(Ok(Planned::Move(m))) = plan(Kind::Rollback, &in_place) else {
            panic!("an in-place line is rolled back");
        };
        assert_eq!((m.expect, m.put), (d("res"), d("src")));
        let new_tag = line("rebased", "app:1", "r.example/app:1-rebased", None);
        assert!(matches!(
            plan(Kind::Rollback, &new_tag),
            Some(Ok(Planned::Skip(_)))
        ));
        let same = line("up-to-date", "app:1", "r.example/app:1", Some(&d("res")));
        assert!(plan(Kind::Rollback, &same).is_none(), "moved nothing");
        let failed = json!({"line": 1, "image": "app:1", "outcome": "failed", "error": "x"});
        assert!(plan(Kind::Rollback, &failed.to_string()).is_none());
    }
}
