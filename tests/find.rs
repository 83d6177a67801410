//! `find` against the real registry: more than 1,000 repositories (the catalog
//! paginates) and a repository of more than 1,000 tags (its tag list paginates); images on
//! the base, on another base, on a base two levels down, with only history of their own;
//! an index with one platform on the base; the base's own tags. The result is checked
//! against an independent walk (direct HTTP), the requests the registry saw are counted,
//! and `find | rebase --from-file -` runs end to end. A repository that answers 403 needs a
//! small proxy in front of the registry (a real registry does not answer so on demand).

mod common;

use common::own::{Layer, layer};
use common::*;
use image_rebase::oci::digest::Digest;
use image_rebase::registry::{Client, Options};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Repositories under `many/`: with the others, more than one catalog page of 1,000.
const MANY: usize = 1100;
/// Tags of `tags/many`: more than one tag-list page of 1,000.
const TAGS: usize = 1050;

/// Pushes an image of `layers` (blobs already in the repository, or mounted from
/// `from`) with history `history` (entries after the layers' own) and `arch`;
/// returns the manifest's bytes and digest. The tag is written when given.
#[allow(clippy::too_many_arguments)]
fn push_image(
    client: &Client,
    reg: &Registry,
    repo: &str,
    tag: Option<&str>,
    layers: &[&Layer],
    extra_history: &[&str],
    arch: &str,
    annotations: Option<Value>,
    labels: Value,
) -> (Vec<u8>, Digest) {
    let mut history: Vec<Value> = layers
        .iter()
        .map(|l| json!({"created_by": l.created_by}))
        .collect();
    history.extend(
        extra_history
            .iter()
            .map(|h| json!({"created_by": h, "empty_layer": true})),
    );
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "history": history,
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = Digest::of(&config);
    if !client.blob_exists(&reg.addr, repo, &config_digest).unwrap() {
        client
            .upload_blob(&reg.addr, repo, &config_digest, &config)
            .unwrap();
    }
    for l in layers {
        let d = Digest::of(&l.gz);
        if !client.blob_exists(&reg.addr, repo, &d).unwrap() {
            client.upload_blob(&reg.addr, repo, &d, &l.gz).unwrap();
        }
    }
    let mut manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(&l.gz), "size": l.gz.len()})).collect::<Vec<_>>(),
    });
    if let Some(a) = annotations {
        manifest["annotations"] = a;
    }
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = Digest::of(&bytes);
    client
        .put_manifest(
            &reg.addr,
            repo,
            tag.unwrap_or(digest.as_str()),
            OCI_MANIFEST,
            &bytes,
        )
        .unwrap();
    (bytes, digest)
}

fn push(client: &Client, reg: &Registry, repo: &str, tag: &str, layers: &[&Layer]) -> Digest {
    push_image(
        client,
        reg,
        repo,
        Some(tag),
        layers,
        &[],
        "amd64",
        None,
        json!({}),
    )
    .1
}

/// Pushes an index of `children` ((arch, manifest bytes), already in the repository).
fn push_index(
    client: &Client,
    reg: &Registry,
    repo: &str,
    tag: &str,
    children: &[(&str, &[u8])],
) -> Digest {
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(arch, m)| json!({
            "mediaType": OCI_MANIFEST, "digest": Digest::of(m), "size": m.len(),
            "platform": {"os": "linux", "architecture": arch},
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    client
        .put_manifest(&reg.addr, repo, tag, OCI_INDEX, &bytes)
        .unwrap()
}

struct Layers {
    v1: Layer,
    v2: Layer,
    other: Layer,
    derived: Layer,
    app: Layer,
}

fn layers(reg: &Registry) -> Layers {
    Layers {
        v1: layer(reg, &[("etc/v1", "1\n")], "ADD v1 /"),
        v2: layer(reg, &[("etc/v2", "2\n")], "ADD v2 /"),
        other: layer(reg, &[("etc/other", "o\n")], "ADD other /"),
        derived: layer(reg, &[("opt/derived", "d\n")], "COPY derived /opt"),
        app: layer(reg, &[("app/a", "a\n")], "COPY app /app"),
    }
}

/// The registry of the main test, and what `find --base library/base:v1` must list.
struct World {
    reg: Registry,
    l: Layers,
    base_v1: Digest,
    /// `repo:tag` of every dependent.
    expected: BTreeSet<String>,
}

fn world() -> World {
    let reg = Registry::start();
    let client = Client::new(Options::default()).unwrap();
    let l = layers(&reg);
    let mut expected = BTreeSet::new();
    // The base and its other tags: not dependents. base:v2 is the new base.
    let base_v1 = push(&client, &reg, "library/base", "v1", &[&l.v1]);
    push(&client, &reg, "library/base", "v1-again", &[&l.v1]);
    push(&client, &reg, "library/base", "v2", &[&l.v2]);
    push(&client, &reg, "library/other", "1", &[&l.other]);
    // Two levels down: derived is on the base, and so is what is built on derived.
    push(&client, &reg, "library/derived", "1", &[&l.v1, &l.derived]);
    expected.insert("library/derived:1".into());
    push(
        &client,
        &reg,
        "team/on-derived",
        "1",
        &[&l.v1, &l.derived, &l.app],
    );
    expected.insert("team/on-derived:1".into());
    // The base's layers and history of its own (an ENV): a dependent.
    push_image(
        &client,
        &reg,
        "team/env-only",
        Some("1"),
        &[&l.v1],
        &["ENV MODE=prod"],
        "amd64",
        None,
        json!({}),
    );
    expected.insert("team/env-only:1".into());
    push(&client, &reg, "team/on-other", "1", &[&l.other, &l.app]);
    // An index: amd64 on the base, arm64 on the other base.
    let (amd64, _) = push_image(
        &client,
        &reg,
        "team/multi",
        None,
        &[&l.v1, &l.app],
        &[],
        "amd64",
        None,
        json!({}),
    );
    let (arm64, _) = push_image(
        &client,
        &reg,
        "team/multi",
        None,
        &[&l.other, &l.app],
        &[],
        "arm64",
        None,
        json!({}),
    );
    push_index(
        &client,
        &reg,
        "team/multi",
        "1",
        &[("amd64", &amd64), ("arm64", &arm64)],
    );
    expected.insert("team/multi:1".into());
    // One repository with more than a page of tags, all on the base.
    let (bytes, _) = push_image(
        &client,
        &reg,
        "tags/many",
        Some("t0"),
        &[&l.v1, &l.app],
        &[],
        "amd64",
        None,
        json!({}),
    );
    for t in 0..TAGS {
        if t > 0 {
            client
                .put_manifest(
                    &reg.addr,
                    "tags/many",
                    &format!("t{t}"),
                    OCI_MANIFEST,
                    &bytes,
                )
                .unwrap();
        }
        expected.insert(format!("tags/many:t{t}"));
    }
    // Many repositories, two tags each: nine in ten on the base, every tenth on the other
    // one. Their blobs are mounted from tags/many and team/on-other; 8 threads.
    let on_base = bytes;
    let (on_other, _) = reg.manifest("team/on-other:1").unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (reg, on_base, on_other) = (&reg, &on_base, &on_other);
            s.spawn(move || {
                let client = Client::new(Options::default()).unwrap();
                for i in (t..MANY).step_by(8) {
                    let repo = format!("many/r{i:04}");
                    let (bytes, from) = if i % 10 == 0 {
                        (on_other, "team/on-other")
                    } else {
                        (on_base, "tags/many")
                    };
                    let m: Value = serde_json::from_slice(bytes).unwrap();
                    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
                    blobs.extend(layer_digests(&m));
                    for b in blobs {
                        let d: Digest = b.parse().unwrap();
                        client.mount_blob(&reg.addr, &repo, &d, from).unwrap();
                    }
                    for tag in ["1", "latest"] {
                        client
                            .put_manifest(&reg.addr, &repo, tag, OCI_MANIFEST, bytes)
                            .unwrap();
                    }
                }
            });
        }
    });
    for i in (0..MANY).filter(|i| i % 10 != 0) {
        for tag in ["1", "latest"] {
            expected.insert(format!("many/r{i:04}:{tag}"));
        }
    }
    World {
        reg,
        l,
        base_v1,
        expected,
    }
}

/// GETs a registry list (catalog or tags) through every page of its `Link` headers.
fn list_all(reg: &Registry, first: &str, key: &str) -> Vec<String> {
    let mut all = vec![];
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let resp = ureq::get(&format!("http://{}{path}", reg.addr))
            .call()
            .unwrap();
        if let Some(link) = resp.header("Link") {
            next = Some(
                link.split('<')
                    .nth(1)
                    .unwrap()
                    .split('>')
                    .next()
                    .unwrap()
                    .into(),
            );
        }
        let page: Value = serde_json::from_reader(resp.into_reader()).unwrap();
        all.extend(
            page[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap().to_string()),
        );
    }
    all
}

/// The independent walk: every `repo:tag` whose manifest (or, for an index, one of its
/// platforms) starts with the base's layers and has a layer or a history entry more,
/// and is not the base itself; by direct HTTP, with the registry's own pagination.
fn independent_walk(reg: &Registry, base: &Value, base_config: &Value) -> BTreeSet<String> {
    let base_layers = layer_digests(base);
    let base_history = base_config["history"].as_array().unwrap().len();
    let mut found = BTreeSet::new();
    let mut judged: BTreeMap<String, bool> = BTreeMap::new();
    let repos = list_all(reg, "/v2/_catalog?n=500", "repositories");
    assert!(repos.len() > 1000, "{} repositories", repos.len());
    for repo in repos {
        for tag in list_all(reg, &format!("/v2/{repo}/tags/list?n=500"), "tags") {
            let (bytes, m) = reg.manifest(&format!("{repo}:{tag}")).unwrap();
            let key = Digest::of(&bytes).to_string();
            let on = *judged.entry(key).or_insert_with(|| {
                let on_base = |m: &Value, r: &str| {
                    let layers = layer_digests(m);
                    let history = || reg.config(r)["history"].as_array().unwrap().len();
                    layers.starts_with(&base_layers)
                        && (layers.len() > base_layers.len() || history() > base_history)
                };
                match m.get("manifests") {
                    Some(children) => children.as_array().unwrap().iter().any(|c| {
                        let r = format!("{repo}@{}", c["digest"].as_str().unwrap());
                        on_base(&reg.manifest(&r).unwrap().1, &r)
                    }),
                    None => on_base(&m, &format!("{repo}:{tag}")),
                }
            });
            if on {
                found.insert(format!("{repo}:{tag}"));
            }
        }
    }
    found
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn find_lists_exactly_the_images_on_the_base_and_rebase_reads_its_lines() {
    let w = world();
    let reg = &w.reg;
    let base = reg.r("library/base:v1");
    let mark = reg.mark();
    let out = run(&["find", "--base", &base, "--jobs", "8", &reg.addr], None);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{err}");
    let requests = reg.requests_since(mark);
    let found = lines(&out.stdout);
    let pinned = format!("{}/library/base@{}", reg.addr, w.base_v1);
    let mut listed = BTreeSet::new();
    for l in &found {
        let image = l["image"].as_str().unwrap();
        let short = image.strip_prefix(&format!("{}/", reg.addr)).unwrap();
        assert!(listed.insert(short.to_string()), "listed once: {l}");
        assert_eq!(l["old_base"], pinned.as_str(), "{l}");
        assert_eq!(l["found_by"], "layers", "{l}");
        let (held, _) = reg.manifest(short).unwrap();
        assert_eq!(l["digest"], Digest::of(&held).to_string(), "{l}");
        if short == "team/multi:1" {
            assert_eq!(l["platform"], json!(["linux/amd64"]), "{l}");
        } else {
            assert!(l.get("platform").is_none(), "{l}");
        }
    }
    assert_eq!(listed, w.expected, "exactly the images built on the base");
    let (base_m, base_json) = reg.manifest("library/base:v1").unwrap();
    assert_eq!(Digest::of(&base_m), w.base_v1);
    let walked = independent_walk(reg, &base_json, &reg.config("library/base:v1"));
    assert_eq!(listed, walked, "the independent walk agrees");
    let repositories = MANY + 8;
    let tags = 2 * MANY + TAGS + 9;
    assert!(
        err.contains(&format!(
            "find: {} images on the base in 1,{:03} repositories, {},{:03} tags",
            thousands(w.expected.len()),
            repositories % 1000,
            tags / 1000,
            tags % 1000
        )),
        "{err}"
    );

    // The requests: both lists paginated; one HEAD per tag; each manifest GET once by
    // digest (the image on the base is in 991 repositories); configs only for the base
    // and the image with the base's very layers.
    let count =
        |f: &dyn Fn(&str, &str) -> bool| requests.iter().filter(|(m, u, _)| f(m, u)).count();
    assert_eq!(
        count(&|m, u| m == "GET" && u.starts_with("/v2/_catalog")),
        2,
        "two catalog pages"
    );
    // distribution 2.8 sends a tag list in one page whatever `n` asks (the tag list's
    // `Link` pagination is tested against the in-process fake registry).
    assert_eq!(
        count(&|m, u| m == "GET" && u.starts_with("/v2/tags/many/tags/list?n=1000")),
        1
    );
    assert_eq!(
        count(&|m, u| m == "HEAD" && u.contains("/manifests/")),
        tags
    );
    let on_base = Digest::of(&reg.manifest("tags/many:t0").unwrap().0);
    assert_eq!(
        count(&|m, u| m == "GET" && u.ends_with(&format!("/manifests/{on_base}"))),
        1,
        "one GET of a manifest in 1,000 repositories"
    );
    assert_eq!(
        count(&|m, u| m == "GET" && u.contains("/manifests/") && !u.contains("sha256:")),
        1,
        "by tag only the base"
    );
    assert_eq!(
        count(&|m, u| m == "GET" && u.ends_with(&format!("/manifests/{}", w.base_v1))),
        0,
        "the base's other tags are known by their digest alone"
    );
    assert_eq!(
        count(&|m, u| m == "GET" && u.contains("/blobs/")),
        2,
        "configs: the base's and team/env-only's"
    );
    assert!(
        requests.iter().all(|(m, _, _)| m == "GET" || m == "HEAD"),
        "find writes nothing"
    );

    // --by-digest: one line per manifest and repository.
    let by_digest = ok(
        &["find", "--base", &base, "--by-digest", &reg.r("tags")],
        None,
    );
    let by_digest = lines(by_digest.as_bytes());
    assert_eq!(by_digest.len(), 1, "{by_digest:?}");
    assert_eq!(
        by_digest[0]["image"],
        format!("{}/tags/many@{on_base}", reg.addr)
    );

    // --shard I/N: the slices of the repositories under many/ cover them exactly once.
    let mut union = BTreeSet::new();
    for shard in ["0/3", "1/3", "2/3"] {
        let out = ok(
            &["find", "--base", &base, "--shard", shard, &reg.r("many")],
            None,
        );
        let part = lines(out.as_bytes());
        assert!(
            part.len() > 500 && part.len() < 800,
            "{shard}: {}",
            part.len()
        );
        for l in part {
            let image = l["image"].as_str().unwrap().to_string();
            assert!(union.insert(image), "in one shard only");
        }
    }
    let many: BTreeSet<String> = w
        .expected
        .iter()
        .filter(|e| e.starts_with("many/"))
        .map(|e| reg.r(e))
        .collect();
    assert_eq!(union, many);

    // find | rebase --from-file -: the team/ prefix, one tag moved in between.
    let team = run(&["find", "--base", &base, &reg.r("team")], None);
    assert_eq!(team.status.code(), Some(0));
    let team_lines = lines(&team.stdout);
    assert_eq!(team_lines.len(), 3, "{team_lines:?}");
    let client = Client::new(Options::default()).unwrap();
    push(&client, reg, "team/env-only", "1", &[&w.l.v1, &w.l.app]);
    let rebased = run(
        &[
            "rebase",
            "--from-file",
            "-",
            "--new-base",
            &reg.r("library/base:v2"),
        ],
        Some(&team.stdout),
    );
    let outcomes = lines(&rebased.stdout);
    let by_image: BTreeMap<String, &Value> = outcomes
        .iter()
        .map(|o| (o["image"].as_str().unwrap().to_string(), o))
        .collect();
    assert_eq!(by_image.len(), 3, "{outcomes:?}");
    let env_only = by_image[&reg.r("team/env-only:1")];
    assert_eq!(env_only["outcome"], "skipped", "{env_only}");
    assert!(
        env_only["error"]
            .as_str()
            .unwrap()
            .contains("moved since it was found"),
        "{env_only}"
    );
    assert_eq!(
        rebased.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rebased.stderr)
    );
    // Checked by direct HTTP: the new base under each, the image's own layers on top; the
    // index's arm64 platform untouched.
    let v2 = Digest::of(&w.l.v2.gz).to_string();
    let (app, derived) = (
        Digest::of(&w.l.app.gz).to_string(),
        Digest::of(&w.l.derived.gz).to_string(),
    );
    assert_eq!(by_image[&reg.r("team/on-derived:1")]["outcome"], "rebased");
    let (_, m) = reg.manifest("team/on-derived:1").unwrap();
    assert_eq!(layer_digests(&m), [v2.clone(), derived, app.clone()]);
    assert_eq!(by_image[&reg.r("team/multi:1")]["outcome"], "rebased");
    let (_, ix) = reg.manifest("team/multi:1").unwrap();
    for c in ix["manifests"].as_array().unwrap() {
        let (_, child) = reg
            .manifest(&format!("team/multi@{}", c["digest"].as_str().unwrap()))
            .unwrap();
        let first = match c["platform"]["architecture"].as_str().unwrap() {
            "amd64" => v2.clone(),
            _ => Digest::of(&w.l.other.gz).to_string(),
        };
        assert_eq!(layer_digests(&child), [first, app.clone()], "{c}");
    }
    let files = unpack(reg, "team/on-derived:1");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["app/a", "etc/v2", "opt/derived"]);
}

fn thousands(n: usize) -> String {
    if n >= 1000 {
        format!("{},{:03}", n / 1000, n % 1000)
    } else {
        n.to_string()
    }
}

#[test]
fn a_base_that_cannot_be_fetched_stops_before_the_walk() {
    let reg = Registry::start();
    let mark = reg.mark();
    let out = run(
        &["find", "--base", &reg.r("library/base:nope"), &reg.addr],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fetching the base") && err.contains("library/base:nope"),
        "{err}"
    );
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
    assert!(out.stdout.is_empty());
    let requests = reg.requests_since(mark);
    assert!(
        requests.iter().all(|(_, u, _)| !u.contains("_catalog")),
        "no walk: {requests:?}"
    );
}

#[test]
fn without_a_base_the_annotations_and_the_label_name_it() {
    let reg = Registry::start();
    let client = Client::new(Options::default()).unwrap();
    let l = layers(&reg);
    let base_v1 = push(&client, &reg, "library/base", "v1", &[&l.v1]);
    let annotated = json!({
        "org.opencontainers.image.base.name": "library/base:v1",
        "org.opencontainers.image.base.digest": base_v1,
    });
    push_image(
        &client,
        &reg,
        "team/annotated",
        Some("1"),
        &[&l.v1, &l.app],
        &[],
        "amd64",
        Some(annotated),
        json!({}),
    );
    push_image(
        &client,
        &reg,
        "team/labelled",
        Some("1"),
        &[&l.v1, &l.app],
        &["LABEL FROM=library/base:v1"],
        "amd64",
        None,
        json!({"FROM": "library/base:v1"}),
    );
    push(&client, &reg, "team/plain", "1", &[&l.v1, &l.derived]);
    let out = ok(&["find", &reg.addr], None);
    let mut found = lines(out.as_bytes());
    found.sort_by_key(|l| l["image"].as_str().unwrap().to_string());
    assert_eq!(
        found,
        [
            json!({"image": reg.r("team/annotated:1"), "digest": Digest::of(&reg.manifest("team/annotated:1").unwrap().0),
                   "old_base": format!("{}/library/base@{base_v1}", reg.addr), "found_by": "annotation"}),
            json!({"image": reg.r("team/labelled:1"), "digest": Digest::of(&reg.manifest("team/labelled:1").unwrap().0),
                   "label": "FROM", "base": reg.r("library/base:v1"), "found_by": "label"}),
        ]
    );
    // rebase reads both kinds of line (a dry run: nothing written).
    push(&client, &reg, "library/base", "v2", &[&l.v2]);
    let rebased = run(
        &[
            "rebase",
            "--from-file",
            "-",
            "--new-base",
            &reg.r("library/base:v2"),
            "--dry-run",
        ],
        Some(out.as_bytes()),
    );
    let outcomes = lines(&rebased.stdout);
    assert_eq!(outcomes.len(), 2);
    for o in &outcomes {
        assert_eq!(o["outcome"], "rebased", "{o}");
        assert_eq!(o["dry_run"], true, "{o}");
    }
}

// ---------------------------------------------------------------------------------------
// A repository that answers 403: a proxy in front of the registry
// ---------------------------------------------------------------------------------------

/// Forwards every request to the registry, except those for repositories under
/// `secret/`, which it answers with 403. One request per connection. Stopped on drop.
struct Proxy {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, upstream) = (stop.clone(), upstream.to_string());
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().redirects(0).build();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (agent, upstream) = (agent.clone(), upstream.clone());
                        std::thread::spawn(move || forward(&agent, &upstream, stream));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Proxy { addr, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn forward(agent: &ureq::Agent, upstream: &str, stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = vec![];
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim().split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut out = stream;
    if target.starts_with("/v2/secret/") {
        let body = r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let _ = write!(
            out,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let mut req = agent.request(&method, &format!("http://{upstream}{target}"));
    for (k, v) in &headers {
        if !["host", "connection", "content-length"].contains(&k.to_ascii_lowercase().as_str()) {
            req = req.set(k, v);
        }
    }
    let resp = match if body.is_empty() {
        req.call()
    } else {
        req.send_bytes(&body)
    } {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(_) => return,
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status(), resp.status_text());
    for name in resp.headers_names() {
        if ["connection", "content-length", "transfer-encoding"].contains(&name.as_str()) {
            continue;
        }
        for v in resp.all(&name) {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let is_head = method == "HEAD";
    let length = resp.header("Content-Length").map(str::to_string);
    let mut bytes = vec![];
    let _ = resp.into_reader().read_to_end(&mut bytes);
    let length = if is_head {
        length.unwrap_or_else(|| "0".into())
    } else {
        bytes.len().to_string()
    };
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    let _ = out.write_all(head.as_bytes());
    if !is_head {
        let _ = out.write_all(&bytes);
    }
}

#[test]
fn a_repository_that_answers_403_is_a_failed_line_and_the_walk_goes_on() {
    let reg = Registry::start();
    let client = Client::new(Options::default()).unwrap();
    let l = layers(&reg);
    push(&client, &reg, "library/base", "v1", &[&l.v1]);
    push(&client, &reg, "secret/app", "1", &[&l.v1, &l.app]);
    push(&client, &reg, "team/app", "1", &[&l.v1, &l.app]);
    let proxy = Proxy::start(&reg.addr);
    let base = format!("{}/library/base:v1", proxy.addr);
    let out = run(&["find", "--base", &base, &proxy.addr], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("1 repositories or tags could not be read"),
        "{err}"
    );
    assert!(
        err.contains("find: 1 image on the base in 3 repositories, 2 tags"),
        "{err}"
    );
    let found = lines(&out.stdout);
    assert_eq!(found.len(), 2, "{found:?}");
    let failed = found.iter().find(|l| l["outcome"] == "failed").unwrap();
    assert_eq!(failed["image"], format!("{}/secret/app", proxy.addr));
    assert!(
        failed["error"].as_str().unwrap().contains("403"),
        "{failed}"
    );
    let dependent = found.iter().find(|l| l.get("outcome").is_none()).unwrap();
    assert_eq!(dependent["image"], format!("{}/team/app:1", proxy.addr));

    // Two prefixes of one registry: its catalog is read once.
    let mark = reg.mark();
    let out = run(
        &[
            "find",
            "--base",
            &base,
            &format!("{}/team", proxy.addr),
            &format!("{}/secret", proxy.addr),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(lines(&out.stdout).len(), 2);
    let catalogs = reg
        .requests_since(mark)
        .into_iter()
        .filter(|(_, u, _)| u.starts_with("/v2/_catalog"))
        .count();
    assert_eq!(catalogs, 1);

    // The same repositories from a list (no catalog), the one that answers 403 included.
    let list = format!(
        "# repositories\n{0}/team/app\n\n{0}/secret/app\n",
        proxy.addr
    );
    let out = run(
        &["find", "--base", &base, "--repositories", "-"],
        Some(list.as_bytes()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(lines(&out.stdout).len(), 2, "{err}");
}

#[test]
fn a_base_that_is_an_index_matches_per_platform() {
    let reg = Registry::start();
    let client = Client::new(Options::default()).unwrap();
    let l = layers(&reg);
    let arm = layer(&reg, &[("etc/v1-arm", "1\n")], "ADD v1-arm /");
    let image = |repo: &str, tag: Option<&str>, layers: &[&Layer], arch: &str| {
        push_image(&client, &reg, repo, tag, layers, &[], arch, None, json!({})).0
    };
    let (base_amd, base_arm) = (
        image("library/base", None, &[&l.v1], "amd64"),
        image("library/base", Some("v1-arm64"), &[&arm], "arm64"),
    );
    let base = push_index(
        &client,
        &reg,
        "library/base",
        "v1",
        &[("amd64", &base_amd), ("arm64", &base_arm)],
    );
    // A single arm64 image on the base's arm64 platform.
    image("team/arm", Some("1"), &[&arm, &l.app], "arm64");
    // An index: amd64 on the base, arm64 on another base.
    let (amd, other) = (
        image("team/multi", None, &[&l.v1, &l.app], "amd64"),
        image("team/multi", None, &[&l.other, &l.app], "arm64"),
    );
    push_index(
        &client,
        &reg,
        "team/multi",
        "1",
        &[("amd64", &amd), ("arm64", &other)],
    );
    image("team/other", Some("1"), &[&l.other, &l.app], "amd64");
    let out = ok(
        &["find", "--base", &reg.r("library/base:v1"), &reg.addr],
        None,
    );
    let mut found = lines(out.as_bytes());
    found.sort_by_key(|l| l["image"].as_str().unwrap().to_string());
    let pinned = format!("{}/library/base@{base}", reg.addr);
    let images: Vec<&str> = found.iter().map(|l| l["image"].as_str().unwrap()).collect();
    assert_eq!(
        images,
        [reg.r("team/arm:1"), reg.r("team/multi:1")],
        "the base's own platform tag is not a dependent: {found:?}"
    );
    for l in &found {
        assert_eq!(l["old_base"], pinned.as_str(), "{l}");
    }
    assert!(found[0].get("platform").is_none(), "{}", found[0]);
    assert_eq!(found[1]["platform"], json!(["linux/amd64"]));
}
