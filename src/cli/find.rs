//! `find` on the command line: reads where to look (arguments, a list of repositories),
//! fetches the bases, runs `ops::find`, and prints one JSON line per dependent tag on
//! stdout, progress on stderr when it is a terminal, and a summary line at the end.

use super::args::{FindArgs, Global};
use super::fleet::{parse_shard, read_list};
use super::{client, explicit_credential};
use crate::oci::reference::{Reference, check_registry, check_repository};
use crate::ops::find::{self, Counts, Event, FindOptions, Place};
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// `find`. The error returned when a repository or tag could not be read carries exit
/// status 2.
pub fn run(g: &Global, args: &FindArgs, out: &mut impl Write, err: &mut impl Write) -> Result<()> {
    // Every argument is checked before the first request.
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let bases = args
        .bases
        .iter()
        .map(|b| Reference::parse_with_default(b, g.registry.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let mut places = args
        .places
        .iter()
        .map(|p| place(p))
        .collect::<Result<Vec<_>>>()?;
    let from_stdin = args.repositories.as_deref() == Some("-");
    let explicit = explicit_credential(g, !from_stdin)?;
    if let Some(path) = &args.repositories {
        places.extend(listed(
            g,
            &read_list(path, "--repositories", "the list of repositories")?,
        )?);
    }
    let hosts = places
        .iter()
        .map(|p| match p {
            Place::Registry(r) | Place::Prefix { registry: r, .. } => r.clone(),
            Place::Repository { registry, .. } => registry.clone(),
        })
        .chain(bases.iter().map(|b| b.registry.clone()));
    let client = client(g, explicit, hosts, false)?;
    let given = !bases.is_empty();
    let loaded = find::load_bases(&client, &bases)?;
    let opts = FindOptions {
        bases,
        label: args.label.clone(),
        jobs: args.jobs,
        shard,
        by_digest: args.by_digest,
    };
    let progress = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut shown = Instant::now() - Duration::from_secs(1);
    let counts = find::find(&client, &loaded, &places, &opts, |event| {
        match event {
            Event::Record(r) => writeln!(out, "{}", r.to_json())?,
            Event::Progress(c) if progress && shown.elapsed() >= Duration::from_millis(100) => {
                shown = Instant::now();
                write!(err, "\r{}", progress_line(&c, start.elapsed()))?;
            }
            Event::Progress(_) => {}
        }
        Ok(())
    })?;
    out.flush()?;
    if progress {
        writeln!(err, "\r{}", progress_line(&counts, start.elapsed()))?;
    }
    summary(err, &counts, given)
}

/// The summary line; an error (exit status 2) when anything could not be read.
fn summary(err: &mut impl Write, counts: &Counts, bases_given: bool) -> Result<()> {
    let on = if bases_given {
        "on the base"
    } else {
        "naming a base"
    };
    writeln!(
        err,
        "find: {} {on} in {}, {}",
        count(counts.found, "image", "images"),
        count(counts.repositories, "repository", "repositories"),
        count(counts.tags, "tag", "tags")
    )?;
    if counts.failed > 0 {
        bail!(
            "{} repositories or tags could not be read (see their JSON lines)",
            thousands(counts.failed)
        );
    }
    Ok(())
}

fn progress_line(c: &Counts, elapsed: Duration) -> String {
    let rate = c.tags_done as f64 / elapsed.as_secs_f64().max(1e-3);
    format!(
        "{}/{} repositories, {}/{} tags, {rate:.0} tags/s, {} found, {} failed",
        c.repositories_done, c.repositories, c.tags_done, c.tags, c.found, c.failed
    )
}

/// `1264` as `1,264`.
/// `n` things, in the singular for one: "1 tag", "2,731 tags".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

/// A place argument: `HOST[:PORT]` (the whole catalog) or `HOST[:PORT]/prefix`.
fn place(arg: &str) -> Result<Place> {
    let bad = || {
        format!(
            "invalid place {arg:?}: expected a registry (HOST[:PORT]) or a repository prefix \
             (HOST[:PORT]/team-a)"
        )
    };
    match arg.trim_end_matches('/').split_once('/') {
        None => {
            check_registry(arg).with_context(bad)?;
            Ok(Place::Registry(arg.to_string()))
        }
        Some((registry, prefix)) => {
            check_registry(registry).with_context(bad)?;
            check_repository(prefix).with_context(bad)?;
            Ok(Place::Prefix {
                registry: registry.to_string(),
                prefix: prefix.to_string(),
            })
        }
    }
}

/// The repositories of a `--repositories` list: `[registry/]repository` a line (`#`
/// comments and blank lines left out), `--registry` for names without a host.
fn listed(g: &Global, text: &str) -> Result<Vec<Place>> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| {
            let r = Reference::parse_with_default(l, g.registry.as_deref())
                .with_context(|| format!("--repositories line {n}"))?;
            let last = l.rsplit('/').next().unwrap_or(l);
            if last.contains(':') || l.contains('@') {
                bail!(
                    "--repositories line {n}: {l:?} names an image; the list names repositories \
                     ([registry/]repository)"
                );
            }
            Ok(Place::Repository {
                registry: r.registry,
                repository: r.repository,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_and_thousands() {
        assert_eq!(
            place("127.0.0.1:5000").unwrap(),
            Place::Registry("127.0.0.1:5000".into())
        );
        assert_eq!(
            place("reg:5000/team-a/").unwrap(),
            Place::Prefix {
                registry: "reg:5000".into(),
                prefix: "team-a".into()
            }
        );
        assert!(place("reg/Team").is_err());
        assert!(place("").is_err());
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1264), "1,264");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
