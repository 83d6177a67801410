//! find: every image in registries (or under repository prefixes, or in a list of
//! repositories) that is built on a base, as lines `rebase --from-file` reads. The walk:
//! catalog pages, then each repository's tag list, then one HEAD per tag for its digest;
//! a manifest is fetched once per run by digest, a config only when the layers cannot
//! tell (the base's very layers) or a label is looked for. One repository or tag that
//! cannot be read is a failed line of its own; the walk goes on.

use crate::image::{self, detect, split};
use crate::oci::digest::Digest;
use crate::oci::media;
use crate::oci::platform::{Platform, is_attestation};
use crate::oci::reference::Reference;
use crate::ops::fleet::{Status, run_all};
use crate::registry::{Client, Fetched, MAX_JSON_BYTES};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What `find` is told besides where to look.
pub struct FindOptions {
    /// The base, in all the versions to look for (tags or digests). Empty: images whose
    /// annotations or label name a base.
    pub bases: Vec<Reference>,
    /// The label that names the base (`LABEL FROM=<base>`), without bases.
    pub label: String,
    /// Requests at once.
    pub jobs: usize,
    /// Only the I-th of N slices of the repositories (sorted by name).
    pub shard: Option<(usize, usize)>,
    /// One line per manifest and repository (`repo@digest`) instead of one per tag.
    pub by_digest: bool,
}

/// Where to look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// Every repository in the registry's catalog.
    Registry(String),
    /// The repositories of the catalog named `prefix` or under `prefix/`.
    Prefix { registry: String, prefix: String },
    /// One repository (from a list: no catalog needed).
    Repository {
        registry: String,
        repository: String,
    },
}

/// A dependent: one line of output, which `rebase --from-file` reads as it is.
#[derive(Debug, Serialize)]
pub struct Dependent {
    /// `registry/repository:tag` (with `by_digest`, `registry/repository@digest`).
    pub image: String,
    /// What the tag held when it was examined.
    pub digest: String,
    /// The base the image is on, pinned (`registry/repository@digest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_base: Option<String>,
    /// For an index: its platforms that are on the base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Vec<String>>,
    /// Found by a label: its name (rebase then splits by that label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Found by a label: the base it names (informational).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub found_by: Evidence,
}

/// How an image was found to be on its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Evidence {
    /// Its layers start with the base's.
    Layers,
    /// Its OCI base annotations name the base.
    Annotation,
    /// Its label names the base.
    Label,
}

/// A repository or tag that could not be read.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub image: String,
    pub outcome: Status,
    pub error: String,
}

/// One line of output.
#[derive(Debug)]
pub enum Record {
    Dependent(Dependent),
    Failed(Failure),
}

impl Record {
    pub fn to_json(&self) -> String {
        match self {
            Record::Dependent(d) => serde_json::to_string(d),
            Record::Failed(f) => serde_json::to_string(f),
        }
        .unwrap_or_default()
    }
}

/// How far the walk is, for a progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub repositories: usize,
    pub repositories_done: usize,
    pub tags: usize,
    pub tags_done: usize,
    pub found: usize,
    pub failed: usize,
}

/// What the walk hands out as it goes.
pub enum Event {
    Record(Record),
    Progress(Counts),
}

/// One version of a base for one platform: what an image built on it starts with.
struct Variant {
    /// Index of the `--base` it came from.
    base: usize,
    layers: Vec<String>,
    config: Value,
}

/// The bases, fetched before the walk.
pub struct Bases {
    /// Each `--base` pinned: `registry/repository@digest`.
    pinned: Vec<String>,
    variants: Vec<Variant>,
    /// Digests of the bases' manifests and indexes: never dependents.
    own: HashSet<String>,
}

/// Fetches every base (for an index, each platform's manifest) and its config. A base
/// that cannot be fetched stops everything, before the walk.
pub fn load_bases(client: &Client, refs: &[Reference]) -> Result<Bases> {
    let mut bases = Bases {
        pinned: vec![],
        variants: vec![],
        own: HashSet::new(),
    };
    for (i, r) in refs.iter().enumerate() {
        load_base(client, &mut bases, i, r).with_context(|| {
            format!("fetching the base {r} (nothing was searched; check --base)")
        })?;
    }
    Ok(bases)
}

fn load_base(client: &Client, bases: &mut Bases, i: usize, r: &Reference) -> Result<()> {
    let fetched = client.fetch_manifest(r)?;
    bases
        .pinned
        .push(format!("{}@{}", r.name(), fetched.digest));
    bases.own.insert(fetched.digest.to_string());
    let manifest: Value = serde_json::from_slice(&fetched.bytes)?;
    let mut images = vec![];
    if is_index(&fetched.media_type) {
        for (_, d) in children(&manifest)? {
            let child = Reference {
                digest: Some(d),
                tag: None,
                ..r.clone()
            };
            let f = client
                .fetch_manifest(&child)
                .with_context(|| format!("fetching manifest {child}"))?;
            bases.own.insert(f.digest.to_string());
            images.push(serde_json::from_slice::<Value>(&f.bytes)?);
        }
    } else {
        images.push(manifest);
    }
    for m in images {
        let layers: Vec<String> = image::layer_digests(&m)?
            .into_iter()
            .map(str::to_string)
            .collect();
        if layers.is_empty() {
            bail!("the base has no layers: every image would be on it");
        }
        let config = fetch_config(client, r, &m)?;
        bases.variants.push(Variant {
            base: i,
            layers,
            config,
        });
    }
    Ok(())
}

fn is_index(media_type: &str) -> bool {
    matches!(media_type, media::OCI_INDEX | media::DOCKER_LIST)
}

/// The image entries of an index (attestations left out) with their platforms.
fn children(index: &Value) -> Result<Vec<(Platform, Digest)>> {
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .context("the index has no \"manifests\" array")?;
    list.iter()
        .filter(|d| !is_attestation(d))
        .map(|d| {
            let digest = d
                .get("digest")
                .and_then(Value::as_str)
                .context("an index entry has no digest")?
                .parse()?;
            Ok((Platform::of_descriptor(d).unwrap_or_default(), digest))
        })
        .collect()
}

fn fetch_config(client: &Client, r: &Reference, manifest: &Value) -> Result<Value> {
    let (digest, _) = image::config_descriptor(manifest)?;
    let digest: Digest = digest.parse()?;
    let bytes = client
        .fetch_blob(&r.registry, &r.repository, &digest, MAX_JSON_BYTES)
        .with_context(|| format!("fetching the config {digest} of {}", r.name()))?;
    serde_json::from_slice(&bytes).context("the config is not valid JSON")
}

/// What one image manifest (not an index) is on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum On {
    Nothing,
    /// Its layers start with this variant's.
    Variant(usize),
    /// Its annotations name this old base (pinned).
    Annotation(String),
    /// Its label names this base.
    Label(String),
}

/// What a manifest by digest is: an image and what it is on, or an index of them.
#[derive(Clone, Debug)]
enum Verdict {
    Image(On),
    /// Per platform; `annotated`: the index's own annotations name this old base.
    Index {
        platforms: Vec<(Platform, On)>,
        annotated: Option<String>,
    },
}

/// Single-flight memo of verdicts by `registry@digest`: each manifest fetched once per
/// run. An error is not kept (another repository may serve the same digest).
type Cell = Arc<OnceLock<std::result::Result<Verdict, String>>>;

struct Walker<'a> {
    client: &'a Client,
    opts: &'a FindOptions,
    bases: &'a Bases,
    verdicts: Mutex<HashMap<String, Cell>>,
    /// With `by_digest`: `(repository, digest)` already listed.
    listed: Mutex<HashSet<(String, String)>>,
    /// Tags looked at, and of those the ones whose manifest this run had seen already:
    /// which way of asking costs fewer requests (see `ask_by_get`).
    looked: AtomicUsize,
    repeated: AtomicUsize,
}

/// After this many tags, the share of repeated manifests decides how tags are asked.
const SAMPLE: usize = 32;

impl<'a> Walker<'a> {
    fn new(client: &'a Client, opts: &'a FindOptions, bases: &'a Bases) -> Walker<'a> {
        Walker {
            client,
            opts,
            bases,
            verdicts: Mutex::default(),
            listed: Mutex::default(),
            looked: AtomicUsize::new(0),
            repeated: AtomicUsize::new(0),
        }
    }

    /// What the manifest `digest` in `r`'s repository is, judged once per run (see
    /// `Cell`); `nested`: an index's entry; `fetched`: the manifest, when it was fetched
    /// already (by tag). Also counts the tags whose manifest was seen before.
    fn verdict(
        &self,
        r: &Reference,
        digest: &Digest,
        nested: bool,
        fetched: Option<Fetched>,
    ) -> Result<Verdict> {
        let key = format!("{}@{digest}", r.registry);
        let cell = {
            let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
            if !nested {
                self.looked.fetch_add(1, Ordering::Relaxed);
                if verdicts.contains_key(&key) {
                    self.repeated.fetch_add(1, Ordering::Relaxed);
                }
            }
            verdicts.entry(key.clone()).or_default().clone()
        };
        let mut computed_here = false;
        let mut fetched = fetched;
        let got = cell.get_or_init(|| {
            computed_here = true;
            self.judge(r, digest, nested, fetched.take())
                .map_err(|e| format!("{e:#}"))
        });
        match got {
            Ok(v) => Ok(v.clone()),
            Err(e) => {
                self.verdicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                if computed_here {
                    Err(anyhow!("{e}"))
                } else {
                    // Failed in another repository: try in this one.
                    self.judge(r, digest, nested, fetched)
                }
            }
        }
    }

    /// Fetches the manifest `digest` from `r`'s repository (unless it is `fetched`
    /// already) and judges it.
    fn judge(
        &self,
        r: &Reference,
        digest: &Digest,
        nested: bool,
        fetched: Option<Fetched>,
    ) -> Result<Verdict> {
        // The base itself (or one of its platforms), under any tag: not a dependent.
        if self.bases.own.contains(digest.as_str()) {
            return Ok(Verdict::Image(On::Nothing));
        }
        let pinned = Reference {
            tag: None,
            digest: Some(digest.clone()),
            ..r.clone()
        };
        let fetched = match fetched {
            Some(f) => f,
            None => self
                .client
                .fetch_manifest(&pinned)
                .with_context(|| format!("fetching manifest {pinned}"))?,
        };
        let manifest: Value =
            serde_json::from_slice(&fetched.bytes).context("the manifest is not valid JSON")?;
        if is_index(&fetched.media_type) {
            if nested {
                bail!(
                    "the index entry {digest} is itself an index; nested indexes are not supported"
                );
            }
            return self.judge_index(r, &pinned, &manifest);
        }
        if self.bases.variants.is_empty() {
            return self.named(&pinned, &manifest).map(Verdict::Image);
        }
        self.judge_layers(&pinned, &manifest).map(Verdict::Image)
    }

    /// An index: each platform's verdict (and the old base its annotations name).
    fn judge_index(&self, r: &Reference, pinned: &Reference, manifest: &Value) -> Result<Verdict> {
        let annotated = if self.bases.variants.is_empty() {
            self.annotated(pinned, manifest)?
        } else {
            None
        };
        let mut platforms = vec![];
        for (p, d) in children(manifest)? {
            match self.verdict(r, &d, true, None)? {
                Verdict::Image(on) => platforms.push((p, on)),
                Verdict::Index { .. } => bail!(
                    "the index entry {d} is itself an index; nested indexes are not supported"
                ),
            }
        }
        Ok(Verdict::Index {
            platforms,
            annotated,
        })
    }

    /// An image: on the base with the most layers that the image starts with, if any.
    /// With exactly a base's layers, it is on that base only with history of its own.
    fn judge_layers(&self, pinned: &Reference, manifest: &Value) -> Result<On> {
        let layers = image::layer_digests(manifest)?;
        let mut best: Option<(usize, usize)> = None;
        let mut config: Option<Value> = None;
        for (i, v) in self.bases.variants.iter().enumerate() {
            let base: Vec<&str> = v.layers.iter().map(String::as_str).collect();
            let Some(own) = split::own_layers(&layers, &base) else {
                continue;
            };
            if own == 0 {
                if config.is_none() {
                    config = Some(fetch_config(self.client, pinned, manifest)?);
                }
                if !split::own_history(config.as_ref().expect("fetched"), &v.config) {
                    continue;
                }
            }
            if best.is_none_or(|(_, n)| base.len() > n) {
                best = Some((i, base.len()));
            }
        }
        Ok(best.map_or(On::Nothing, |(i, _)| On::Variant(i)))
    }

    /// The old base that a manifest's annotations name, pinned.
    fn annotated(&self, r: &Reference, manifest: &Value) -> Result<Option<String>> {
        let view = detect::View {
            reference: r.to_string(),
            registry: r.registry.clone(),
            manifest: manifest.clone(),
            config: None,
        };
        Ok(detect::old_base(&view)?.map(|b| b.to_string()))
    }

    /// Without bases: what an image's annotations, else its label, name.
    fn named(&self, r: &Reference, manifest: &Value) -> Result<On> {
        if let Some(b) = self.annotated(r, manifest)? {
            return Ok(On::Annotation(b));
        }
        let view = detect::View {
            reference: r.to_string(),
            registry: r.registry.clone(),
            manifest: manifest.clone(),
            config: Some(fetch_config(self.client, r, manifest)?),
        };
        Ok(match detect::label_base(&view, &self.opts.label)? {
            Some(b) => On::Label(b.to_string()),
            None => On::Nothing,
        })
    }

    /// One tag: its digest (HEAD), its verdict, and its line if it is a dependent.
    fn tag(&self, registry: &str, repository: &str, tag: &str) -> Result<Option<Dependent>> {
        let r = Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: Some(tag.to_string()),
            digest: None,
        };
        let (digest, fetched) = if self.ask_by_get() {
            let f = self
                .client
                .fetch_manifest(&r)
                .with_context(|| format!("fetching manifest {r}"))?;
            (f.digest.clone(), Some(f))
        } else {
            let digest = self
                .client
                .head_manifest(&r)
                .with_context(|| format!("checking manifest {r}"))?
                .with_context(|| {
                    format!("{r} is listed but has no manifest (deleted during the walk?)")
                })?;
            (digest, None)
        };
        let verdict = self.verdict(&r, &digest, false, fetched)?;
        let Some(mut d) = self.dependent(&verdict) else {
            return Ok(None);
        };
        if self.opts.by_digest {
            let first = self
                .listed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((r.name(), digest.to_string()));
            if !first {
                return Ok(None);
            }
            d.image = format!("{}@{digest}", r.name());
        } else {
            d.image = r.to_string();
        }
        d.digest = digest.to_string();
        Ok(Some(d))
    }

    /// Whether to ask for a tag's manifest with a GET by tag instead of a HEAD (then a GET
    /// by digest for a manifest not seen yet). A HEAD is the polite question (it fetches
    /// nothing and is not counted as a pull), and the right one where tags share
    /// manifests; where most tags have a manifest of their own, it only adds a request
    /// per tag. So after `SAMPLE` tags, a GET by tag while fewer than half of the tags so
    /// far repeated a manifest seen before (one request a tag, each manifest still
    /// judged once).
    fn ask_by_get(&self) -> bool {
        let looked = self.looked.load(Ordering::Relaxed);
        looked >= SAMPLE && 2 * self.repeated.load(Ordering::Relaxed) < looked
    }

    /// The line for a verdict (image and digest left to the caller), if a dependent.
    fn dependent(&self, verdict: &Verdict) -> Option<Dependent> {
        let (on, platforms) = match verdict {
            Verdict::Image(on) => return self.line(on),
            Verdict::Index {
                annotated: Some(b),
                platforms,
            } => (On::Annotation(b.clone()), platforms.iter().collect()),
            Verdict::Index { platforms, .. } => {
                // The platforms on the base (or naming it) the most of them are on.
                let chosen = self.most_common(platforms)?;
                let on: Vec<&(Platform, On)> = platforms
                    .iter()
                    .filter(|(_, on)| self.base_of(on) == chosen)
                    .collect();
                (on.first()?.1.clone(), on)
            }
        };
        let mut d = self.line(&on)?;
        d.platform = Some(platforms.iter().map(|(p, _)| p.to_string()).collect());
        Some(d)
    }

    /// The line for what an image is on, if anything.
    fn line(&self, on: &On) -> Option<Dependent> {
        let mut d = Dependent {
            image: String::new(),
            digest: String::new(),
            old_base: None,
            platform: None,
            label: None,
            base: None,
            found_by: Evidence::Layers,
        };
        match on {
            On::Nothing => return None,
            On::Variant(i) => {
                d.old_base = Some(self.bases.pinned[self.bases.variants[*i].base].clone())
            }
            On::Annotation(b) => {
                d.old_base = Some(b.clone());
                d.found_by = Evidence::Annotation;
            }
            On::Label(b) => {
                d.label = Some(self.opts.label.clone());
                d.base = Some(b.clone());
                d.found_by = Evidence::Label;
            }
        }
        Some(d)
    }

    /// What a platform is on, with a base's versions taken as one base.
    fn base_of(&self, on: &On) -> On {
        match on {
            On::Variant(i) => On::Variant(self.bases.variants[*i].base),
            other => other.clone(),
        }
    }

    /// The base (see `base_of`) the most platforms are on; the first of equals.
    fn most_common(&self, platforms: &[(Platform, On)]) -> Option<On> {
        let mut tally: Vec<(On, usize)> = vec![];
        for (_, on) in platforms.iter().filter(|(_, on)| *on != On::Nothing) {
            let k = self.base_of(on);
            match tally.iter_mut().find(|(o, _)| *o == k) {
                Some((_, n)) => *n += 1,
                None => tally.push((k, 1)),
            }
        }
        let (chosen, _) = tally.into_iter().rev().max_by_key(|(_, n)| *n)?;
        Some(chosen)
    }
}

fn failed(image: String, e: &anyhow::Error) -> Record {
    Record::Failed(Failure {
        image,
        outcome: Status::Failed,
        error: format!("{e:#}"),
    })
}

/// Walks `places` and hands each dependent (and each failure) to `each` as it is found,
/// with progress events between. Returns the counts at the end.
pub fn find(
    client: &Client,
    bases: &Bases,
    places: &[Place],
    opts: &FindOptions,
    mut each: impl FnMut(Event) -> Result<()>,
) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut report = |counts: &mut Counts, name: String, e: &anyhow::Error| {
        counts.failed += 1;
        each(Event::Record(failed(name, e)))
    };
    let mut repos = repositories(client, places, |name, e| report(&mut counts, name, e))?;
    repos.sort();
    repos.dedup();
    if let Some((i, n)) = opts.shard {
        repos = repos
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % n == i)
            .map(|(_, r)| r)
            .collect();
    }
    counts.repositories = repos.len();
    each(Event::Progress(counts))?;
    let tags = list_tags(client, &repos, opts.jobs, &mut counts, &mut each)?;
    let walker = Walker::new(client, opts, bases);
    walk_tags(&walker, &repos, &tags, &mut counts, &mut each)?;
    Ok(counts)
}

/// The repositories `places` name: catalogs are read one after another (each is one
/// paginated list), each registry's once however many prefixes name it. A catalog that
/// cannot be read goes to `failed`.
fn repositories(
    client: &Client,
    places: &[Place],
    mut failed: impl FnMut(String, &anyhow::Error) -> Result<()>,
) -> Result<Vec<(String, String)>> {
    let mut repos: Vec<(String, String)> = vec![];
    let mut catalogs: HashMap<&str, std::result::Result<Vec<String>, String>> = HashMap::new();
    for place in places {
        let (registry, prefix) = match place {
            Place::Repository {
                registry,
                repository,
            } => {
                repos.push((registry.clone(), repository.clone()));
                continue;
            }
            Place::Registry(registry) => (registry, None),
            Place::Prefix { registry, prefix } => (registry, Some(prefix)),
        };
        let catalog = catalogs
            .entry(registry)
            .or_insert_with(|| client.catalog(registry).map_err(|e| format!("{e:#}")));
        match (catalog, prefix) {
            (Ok(names), prefix) => repos.extend(
                names
                    .iter()
                    .filter(|n| prefix.is_none_or(|p| *n == p || n.starts_with(&format!("{p}/"))))
                    .map(|n| (registry.clone(), n.clone())),
            ),
            (Err(e), None) => failed(registry.clone(), &anyhow!("{e}"))?,
            (Err(e), Some(p)) => failed(format!("{registry}/{p}"), &anyhow!("{e}"))?,
        }
    }
    Ok(repos)
}

/// The tags of every repository (by its index in `repos`), `jobs` lists at once.
fn list_tags(
    client: &Client,
    repos: &[(String, String)],
    jobs: usize,
    counts: &mut Counts,
    each: &mut impl FnMut(Event) -> Result<()>,
) -> Result<Vec<(usize, String)>> {
    let mut tags: Vec<(usize, String)> = vec![];
    let indexed: Vec<usize> = (0..repos.len()).collect();
    run_all(
        &indexed,
        jobs,
        |&i| (i, client.tags(&repos[i].0, &repos[i].1)),
        |(i, listed)| {
            counts.repositories_done += 1;
            match listed {
                Ok(list) => {
                    counts.tags += list.len();
                    tags.extend(list.into_iter().map(|t| (i, t)));
                }
                Err(e) => {
                    counts.failed += 1;
                    let (registry, repository) = &repos[i];
                    each(Event::Record(failed(
                        format!("{registry}/{repository}"),
                        &e,
                    )))?;
                }
            }
            each(Event::Progress(*counts))
        },
    )?;
    Ok(tags)
}

/// Each tag's verdict, `jobs` at once (see `Walker::tag`); each dependent and failure to
/// `each` as it comes.
fn walk_tags(
    walker: &Walker,
    repos: &[(String, String)],
    tags: &[(usize, String)],
    counts: &mut Counts,
    each: &mut impl FnMut(Event) -> Result<()>,
) -> Result<()> {
    run_all(
        tags,
        walker.opts.jobs,
        |(i, tag)| {
            let (registry, repository) = &repos[*i];
            let name = format!("{registry}/{repository}:{tag}");
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                walker.tag(registry, repository, tag)
            }))
            .unwrap_or_else(|_| Err(anyhow!("internal error (a panic) while examining this tag")));
            (name, result)
        },
        |(name, result)| {
            counts.tags_done += 1;
            match result {
                Ok(Some(d)) => {
                    counts.found += 1;
                    each(Event::Record(Record::Dependent(d)))?;
                }
                Ok(None) => {}
                Err(e) => {
                    counts.failed += 1;
                    each(Event::Record(failed(name, &e)))?;
                }
            }
            each(Event::Progress(*counts))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(layers: &[&[&str]]) -> Bases {
        Bases {
            pinned: vec!["r/base@sha256:b1".into(), "r/base@sha256:b2".into()],
            variants: layers
                .iter()
                .enumerate()
                .map(|(i, l)| Variant {
                    base: i.min(1),
                    layers: l.iter().map(|s| s.to_string()).collect(),
                    config: Value::Null,
                })
                .collect(),
            own: HashSet::new(),
        }
    }

    fn walker<'a>(client: &'a Client, opts: &'a FindOptions, bases: &'a Bases) -> Walker<'a> {
        Walker::new(client, opts, bases)
    }

    /// Walks `app:t0` .. `app:t39` of a fake registry whose tags hold `manifests`
    /// distinct manifests; the requests sent: (HEADs, GETs by tag, GETs by digest).
    fn ask(manifests: usize) -> (usize, usize, usize) {
        use crate::registry::fake::Fake;
        let fake = Fake::start();
        for t in 0..40 {
            let layer = Digest::of(format!("layer {}", t % manifests).as_bytes());
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                "config": {"mediaType": media::OCI_CONFIG, "digest": Digest::of(b"c"), "size": 1},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 1}],
            });
            let bytes = serde_json::to_vec(&manifest).unwrap();
            fake.put_manifest("app", Some(&format!("t{t}")), media::OCI_MANIFEST, &bytes);
        }
        let client = fake.client();
        let (opts, bases) = (opts(), bases(&[&["sha256:not-these-layers"]]));
        let w = walker(&client, &opts, &bases);
        for t in 0..40 {
            assert!(
                w.tag(fake.addr(), "app", &format!("t{t}"))
                    .unwrap()
                    .is_none()
            );
        }
        let log = fake.requests();
        let count = |method: &str, by_tag: bool| {
            log.iter()
                .filter(|r| r.method == method && r.path.contains("/manifests/"))
                .filter(|r| r.path.contains("/manifests/t") == by_tag)
                .count()
        };
        (count("HEAD", true), count("GET", true), count("GET", false))
    }

    #[test]
    fn tags_that_share_manifests_are_asked_by_head_and_each_manifest_fetched_once() {
        assert_eq!(ask(2), (40, 0, 2));
    }

    #[test]
    fn tags_with_manifests_of_their_own_are_asked_by_get_after_a_sample() {
        // HEAD and GET by digest for the first SAMPLE tags, then one GET by tag each.
        assert_eq!(ask(40), (SAMPLE, 40 - SAMPLE, SAMPLE));
    }

    fn opts() -> FindOptions {
        FindOptions {
            bases: vec![],
            label: "FROM".into(),
            jobs: 1,
            shard: None,
            by_digest: false,
        }
    }

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn an_index_is_listed_with_its_platforms_on_the_base_most_of_them_are_on() {
        let client = Client::new(Default::default()).unwrap();
        let (b, o) = (bases(&[&["a"], &["x"], &["y"]]), opts());
        let w = walker(&client, &o, &b);
        // Variants 1 and 2 are both of base 1.
        let v = Verdict::Index {
            platforms: vec![
                (p("linux/amd64"), On::Variant(0)),
                (p("linux/arm64"), On::Variant(1)),
                (p("linux/arm/v7"), On::Variant(2)),
                (p("linux/s390x"), On::Nothing),
            ],
            annotated: None,
        };
        let d = w.dependent(&v).unwrap();
        assert_eq!(d.old_base.as_deref(), Some("r/base@sha256:b2"));
        assert_eq!(
            d.platform.unwrap(),
            ["linux/arm64".to_string(), "linux/arm/v7".to_string()]
        );
        assert_eq!(d.found_by, Evidence::Layers);
        let none = Verdict::Index {
            platforms: vec![(p("linux/amd64"), On::Nothing)],
            annotated: None,
        };
        assert!(w.dependent(&none).is_none());
        assert!(w.dependent(&Verdict::Image(On::Nothing)).is_none());
    }

    #[test]
    fn label_lines_carry_the_label_and_the_base_it_names() {
        let client = Client::new(Default::default()).unwrap();
        let (b, o) = (bases(&[]), opts());
        let w = walker(&client, &o, &b);
        let d = w
            .dependent(&Verdict::Image(On::Label("r/base:v1".into())))
            .unwrap();
        let json: Value = serde_json::from_str(&Record::Dependent(d).to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"image": "", "digest": "", "label": "FROM", "base": "r/base:v1", "found_by": "label"})
        );
        let d = w
            .dependent(&Verdict::Image(On::Annotation("r/base@sha256:b".into())))
            .unwrap();
        assert_eq!(
            (d.old_base.as_deref(), d.found_by),
            (Some("r/base@sha256:b"), Evidence::Annotation)
        );
    }
}
