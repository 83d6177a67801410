//! Benchmark helper for scripts/bench.sh (a cargo example: `cargo build --release
//! --example ceiling`). Plain HTTP to a loopback registry only.
//!
//!   ceiling bases --registry HOST:PORT --layers DIR [--repos R]
//!       pushes base:v1 (layer v1) and base:v2 (layer v2), and uploads the layers v1 and
//!       app into team0/app .. team{R-1}/app. DIR holds v1.tar, v1.tar.gz, v2.tar,
//!       v2.tar.gz, app.tar, app.tar.gz.
//!   ceiling seed --registry HOST:PORT --layers DIR --prefix P --count N [--repos R]
//!                [--jobs J] [--first K]
//!       pushes images K..K+N-1: team{i%R}/app:P-i = layer v1 + layer app + a config of its
//!       own (ENV ID=P-i); 3 requests each (config POST + PUT, manifest PUT). Prints the
//!       references, one a line.
//!   ceiling run --from-file LIST --old-base REF --new-base REF [--jobs J] [--pool K]
//!       the ceiling: for each image of LIST, exactly the requests a rebase needs and
//!       nothing else: GET manifest, GET config, (mount the new base's layer, once per
//!       repository), POST + PUT the new config, PUT the new manifest under the same tag.
//!       The new config and manifest are made by substituting the first layer (digest,
//!       diff_id, history entry). J threads; K idle connections kept per host (default J).
//!       Prints "images N seconds S images_per_s R requests Q" on stdout.
//!   ceiling find --registry HOST:PORT [--jobs J] [--request head|get|head-get]
//!       the ceiling of `find`: the catalog's pages (1,000 a page, following Link), each
//!       repository's tag list (J at once), then per tag (J at once) a HEAD of the manifest
//!       (head), a GET (get), or a HEAD and a GET by digest for digests not seen yet
//!       (head-get, what find sends). Nothing is parsed beyond the lists. Prints
//!       "tags N seconds S tags_per_s R requests Q" on stdout.

use anyhow::{Context, Result, bail, ensure};
use image_rebase::oci::digest::Digest;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json";
const CREATED: &str = "2020-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest response body read.
const MAX_BODY: u64 = 4 * 1024 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("ceiling: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let (mode, rest) = args
        .split_first()
        .context("usage: ceiling bases|seed|run OPTIONS (see scripts/ceiling.rs)")?;
    let opts = Opts::parse(rest)?;
    match mode.as_str() {
        "bases" => bases(&opts),
        "seed" => seed(&opts),
        "run" => ceiling(&opts),
        "find" => find_ceiling(&opts),
        other => bail!("unknown mode {other:?}: expected bases, seed, run or find"),
    }
}

/// `--name value` options.
struct Opts(HashMap<String, String>);

impl Opts {
    fn parse(args: &[String]) -> Result<Opts> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument {a:?}"))?;
            let value = it.next().with_context(|| format!("{a} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Opts(map))
    }

    fn str(&self, name: &str) -> Result<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("--{name} is required"))
    }

    fn num(&self, name: &str, default: usize) -> Result<usize> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .with_context(|| format!("--{name} {v:?} is not a number")),
        }
    }
}

/// A plain-HTTP client for one loopback registry that counts its requests.
struct Http {
    agent: ureq::Agent,
    base: String,
    requests: AtomicUsize,
}

impl Http {
    fn new(registry: &str, pool: usize) -> Result<Http> {
        let (host, _) = registry
            .rsplit_once(':')
            .with_context(|| format!("registry {registry:?} is not HOST:PORT"))?;
        ensure!(
            host == "127.0.0.1" || host == "localhost" || host == "[::1]",
            "the registry must be on loopback, not {registry}"
        );
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_idle_connections(pool.max(1) * 2)
            .max_idle_connections_per_host(pool)
            .build();
        Ok(Http {
            agent,
            base: format!("http://{registry}"),
            requests: AtomicUsize::new(0),
        })
    }

    /// Sends a request to a path or an absolute URL; returns status, Location and body.
    fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(u16, Option<String>, Vec<u8>)> {
        let url = if target.starts_with("http") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        };
        let mut req = self.agent.request(method, &url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => bail!("{method} {url}: {e}"),
        };
        let status = resp.status();
        let location = resp.header("Location").map(str::to_string);
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_BODY)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{method} {url}: reading the body"))?;
        Ok((status, location, bytes))
    }

    fn expect(
        &self,
        want: u16,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(Option<String>, Vec<u8>)> {
        let (status, location, bytes) = self.send(method, target, headers, body)?;
        if status != want {
            bail!(
                "{method} {target}: HTTP {status} (expected {want}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        Ok((location, bytes))
    }

    /// POST for a session, then PUT the bytes with their digest.
    fn upload(&self, repo: &str, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let (location, _) = self.expect(
            202,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[("Content-Length", "0")],
            Some(b""),
        )?;
        let mut location = location.context("an upload without a Location")?;
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(&format!("digest={digest}"));
        self.expect(
            201,
            "PUT",
            &location,
            &[("Content-Type", "application/octet-stream")],
            Some(bytes),
        )?;
        Ok(())
    }

    fn put_manifest(&self, repo: &str, tag: &str, bytes: &[u8]) -> Result<()> {
        self.expect(
            201,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(bytes),
        )?;
        Ok(())
    }

    fn get_manifest(&self, repo: &str, reference: &str) -> Result<Vec<u8>> {
        Ok(self
            .expect(
                200,
                "GET",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Accept", ACCEPT)],
                None,
            )?
            .1)
    }

    fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        Ok(self
            .expect(200, "GET", &format!("/v2/{repo}/blobs/{digest}"), &[], None)?
            .1)
    }
}

/// A layer of the fixture: its compressed bytes, their digest, and its diff_id.
struct Layer {
    name: &'static str,
    gz: Vec<u8>,
    digest: Digest,
    diff_id: Digest,
}

impl Layer {
    fn load(dir: &str, name: &'static str) -> Result<Layer> {
        let read = |file: String| std::fs::read(&file).with_context(|| format!("reading {file}"));
        let tar = read(format!("{dir}/{name}.tar"))?;
        let gz = read(format!("{dir}/{name}.tar.gz"))?;
        Ok(Layer {
            name,
            digest: Digest::of(&gz),
            diff_id: Digest::of(&tar),
            gz,
        })
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": OCI_LAYER, "digest": self.digest, "size": self.gz.len()})
    }

    fn history(&self) -> Value {
        let created_by = if self.name == "app" {
            "COPY app /app # buildkit".to_string()
        } else {
            format!("ADD {}.tar / # buildkit", self.name)
        };
        json!({"created": CREATED, "created_by": created_by, "comment": "buildkit.dockerfile.v0"})
    }
}

/// Uploads a config (POST + PUT) and puts a manifest of `layers` under `repo:tag`.
fn push_image(http: &Http, repo: &str, tag: &str, layers: &[&Layer], env: &[String]) -> Result<()> {
    let mut history: Vec<Value> = layers.iter().map(|l| l.history()).collect();
    // The image's own ENV: an empty-layer entry before its layer, as a Dockerfile has.
    if let Some(id) = env.iter().find(|e| e.starts_with("ID=")) {
        history.insert(
            history.len().min(1),
            json!({"created": CREATED, "created_by": format!("ENV {id}"),
                   "comment": "buildkit.dockerfile.v0", "empty_layer": true}),
        );
    }
    let config = json!({
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
        "history": history,
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = Digest::of(&config);
    http.upload(repo, &config_digest, &config)
        .with_context(|| format!("uploading the config of {repo}:{tag}"))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| l.descriptor()).collect::<Vec<_>>(),
    });
    http.put_manifest(repo, tag, &serde_json::to_vec(&manifest)?)
        .with_context(|| format!("putting {repo}:{tag}"))
}

fn bases(opts: &Opts) -> Result<()> {
    let registry = opts.str("registry")?;
    let dir = opts.str("layers")?;
    let repos = opts.num("repos", 4)?;
    let http = Http::new(registry, 1)?;
    let [v1, v2, app] = ["v1", "v2", "app"].map(|n| Layer::load(dir, n));
    let (v1, v2, app) = (v1?, v2?, app?);
    for (tag, layer) in [("v1", &v1), ("v2", &v2)] {
        http.upload("base", &layer.digest, &layer.gz)?;
        push_image(&http, "base", tag, &[layer], &[PATH_ENV.to_string()])?;
    }
    for r in 0..repos {
        for layer in [&v1, &app] {
            http.upload(&format!("team{r}/app"), &layer.digest, &layer.gz)?;
        }
    }
    Ok(())
}

fn seed(opts: &Opts) -> Result<()> {
    let registry = opts.str("registry")?;
    let dir = opts.str("layers")?;
    let prefix = opts.str("prefix")?;
    let count = opts.num("count", 0)?;
    let first = opts.num("first", 0)?;
    let repos = opts.num("repos", 4)?.max(1);
    let jobs = opts.num("jobs", 8)?.max(1);
    let http = Http::new(registry, jobs)?;
    let (v1, app) = (Layer::load(dir, "v1")?, Layer::load(dir, "app")?);
    let next = AtomicUsize::new(first);
    let end = first + count;
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs.min(count.max(1)))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end {
                            return Ok(());
                        }
                        let tag = format!("{prefix}-{i}");
                        let env = [PATH_ENV.to_string(), format!("ID={tag}")];
                        push_image(
                            &http,
                            &format!("team{}/app", i % repos),
                            &tag,
                            &[&v1, &app],
                            &env,
                        )?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a seeding thread panicked")?;
        }
        Ok(())
    })?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in first..end {
        writeln!(out, "{registry}/team{}/app:{prefix}-{i}", i % repos)?;
    }
    out.flush()?;
    Ok(())
}

/// `HOST:PORT/repo/sitory:tag` split into its parts.
fn split_ref(r: &str) -> Result<(&str, &str, &str)> {
    let (registry, rest) = r
        .split_once('/')
        .with_context(|| format!("{r:?}: expected HOST:PORT/REPOSITORY:TAG"))?;
    let (repo, tag) = rest
        .rsplit_once(':')
        .with_context(|| format!("{r:?}: expected HOST:PORT/REPOSITORY:TAG"))?;
    Ok((registry, repo, tag))
}

fn first_layer(manifest: &Value) -> Result<&Value> {
    manifest
        .pointer("/layers/0")
        .context("a manifest without layers")
}

/// What the substitution puts in: the new base's first layer, diff_id and history entry.
struct NewBase {
    layer: Value,
    diff_id: Value,
    history: Value,
    repo: String,
}

fn ceiling(opts: &Opts) -> Result<()> {
    let list = std::fs::File::open(opts.str("from-file")?).context("opening the list")?;
    let images: Vec<String> = std::io::BufReader::new(list)
        .lines()
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    ensure!(!images.is_empty(), "the list is empty");
    let (old_registry, old_repo, old_tag) = split_ref(opts.str("old-base")?)?;
    let (new_registry, new_repo, new_tag) = split_ref(opts.str("new-base")?)?;
    let (registry, _, _) = split_ref(&images[0])?;
    ensure!(
        old_registry == registry && new_registry == registry,
        "the bases and the images must be on one registry"
    );
    let jobs = opts.num("jobs", 8)?.max(1);
    let http = Http::new(registry, opts.num("pool", jobs)?)?;

    let start = Instant::now();
    // Once per run: the bases.
    let old: Value = serde_json::from_slice(&http.get_manifest(old_repo, old_tag)?)?;
    let old_layer = first_layer(&old)?["digest"].clone();
    let new: Value = serde_json::from_slice(&http.get_manifest(new_repo, new_tag)?)?;
    let new_config_digest = new
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .context("the new base has no config")?;
    let new_config: Value = serde_json::from_slice(&http.get_blob(new_repo, new_config_digest)?)?;
    let base = NewBase {
        layer: first_layer(&new)?.clone(),
        diff_id: new_config
            .pointer("/rootfs/diff_ids/0")
            .context("the new base has no diff_id")?
            .clone(),
        history: new_config
            .pointer("/history/0")
            .context("the new base has no history")?
            .clone(),
        repo: new_repo.to_string(),
    };
    let mounted: HashMap<String, Mutex<bool>> = images
        .iter()
        .filter_map(|i| split_ref(i).ok())
        .map(|(_, repo, _)| (repo.to_string(), Mutex::new(false)))
        .collect();

    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs.min(images.len()))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while let Some(image) = images.get(next.fetch_add(1, Ordering::Relaxed)) {
                        one(&http, image, &old_layer, &base, &mounted)
                            .with_context(|| format!("rebasing {image}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked")?;
        }
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "images {} seconds {seconds:.3} images_per_s {:.1} requests {}",
        images.len(),
        images.len() as f64 / seconds,
        http.requests.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The minimal requests for one image.
fn one(
    http: &Http,
    image: &str,
    old_layer: &Value,
    base: &NewBase,
    mounted: &HashMap<String, Mutex<bool>>,
) -> Result<()> {
    let (_, repo, tag) = split_ref(image)?;
    let mut manifest: Value = serde_json::from_slice(&http.get_manifest(repo, tag)?)?;
    ensure!(
        &first_layer(&manifest)?["digest"] == old_layer,
        "not on the old base"
    );
    let config_digest = manifest
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .context("a manifest without config")?
        .to_string();
    let mut config: Value = serde_json::from_slice(&http.get_blob(repo, &config_digest)?)?;
    config["rootfs"]["diff_ids"][0] = base.diff_id.clone();
    config["history"][0] = base.history.clone();
    let config = serde_json::to_vec(&config)?;
    let config_digest = Digest::of(&config);

    {
        let mut done = mounted
            .get(repo)
            .context("a repository not in the list")?
            .lock()
            .expect("not poisoned");
        if !*done {
            let digest = base.layer["digest"].as_str().context("a layer digest")?;
            http.expect(
                201,
                "POST",
                &format!(
                    "/v2/{repo}/blobs/uploads/?mount={digest}&from={}",
                    base.repo
                ),
                &[("Content-Length", "0")],
                Some(b""),
            )?;
            *done = true;
        }
    }
    http.upload(repo, &config_digest, &config)?;

    manifest["layers"][0] = base.layer.clone();
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config.len());
    http.put_manifest(repo, tag, &serde_json::to_vec(&manifest)?)
}

/// One page of a list: its entries under `key` and the target of its `Link` header.
fn list_page(http: &Http, target: &str, key: &str) -> Result<(Vec<String>, Option<String>)> {
    let url = if target.starts_with("http") {
        target.to_string()
    } else {
        format!("{}{target}", http.base)
    };
    http.requests.fetch_add(1, Ordering::Relaxed);
    let resp = http
        .agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let next = resp.header("Link").and_then(|l| {
        let start = l.find('<')? + 1;
        let end = l.find('>')?;
        Some(l[start..end].to_string())
    });
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(16 * MAX_BODY)
        .read_to_end(&mut bytes)?;
    let page: Value = serde_json::from_slice(&bytes)?;
    let names = page[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    Ok((names, next))
}

fn list_all(http: &Http, first: &str, key: &str) -> Result<Vec<String>> {
    let mut all = vec![];
    let mut next = Some(first.to_string());
    while let Some(target) = next.take() {
        let (names, link) = list_page(http, &target, key)?;
        all.extend(names);
        next = link;
    }
    Ok(all)
}

/// Runs `work` on each item, `jobs` threads at once; the first error stops the run.
fn each_parallel<T: Sync>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..jobs.clamp(1, items.len().max(1)))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        work(item)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a worker panicked")?;
        }
        Ok(())
    })
}

fn find_ceiling(opts: &Opts) -> Result<()> {
    let registry = opts.str("registry")?;
    let jobs = opts.num("jobs", 8)?.max(1);
    let request = opts.0.get("request").map_or("head", String::as_str);
    ensure!(
        ["head", "get", "head-get"].contains(&request),
        "--request {request:?}: expected head, get or head-get"
    );
    let http = Http::new(registry, jobs)?;
    let start = Instant::now();
    let repos = list_all(&http, "/v2/_catalog?n=1000", "repositories")?;
    let tags = Mutex::new(Vec::new());
    each_parallel(&repos, jobs, |repo| {
        let list = list_all(&http, &format!("/v2/{repo}/tags/list?n=1000"), "tags")?;
        let mut tags = tags.lock().unwrap();
        tags.extend(list.into_iter().map(|t| (repo.clone(), t)));
        Ok(())
    })?;
    let tags = tags.into_inner().unwrap();
    let seen = Mutex::new(std::collections::HashSet::new());
    each_parallel(&tags, jobs, |(repo, tag)| {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let accept = [("Accept", ACCEPT)];
        match request {
            "get" => {
                http.expect(200, "GET", &path, &accept, None)?;
            }
            "head" => {
                http.expect(200, "HEAD", &path, &accept, None)?;
            }
            _ => {
                let url = format!("{}{path}", http.base);
                http.requests.fetch_add(1, Ordering::Relaxed);
                let resp = http
                    .agent
                    .head(&url)
                    .set("Accept", ACCEPT)
                    .call()
                    .with_context(|| format!("HEAD {url}"))?;
                let digest = resp
                    .header("Docker-Content-Digest")
                    .context("no Docker-Content-Digest")?
                    .to_string();
                if seen.lock().unwrap().insert(digest.clone()) {
                    http.expect(
                        200,
                        "GET",
                        &format!("/v2/{repo}/manifests/{digest}"),
                        &accept,
                        None,
                    )?;
                }
            }
        }
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "tags {} seconds {seconds:.3} tags_per_s {:.1} requests {}",
        tags.len(),
        tags.len() as f64 / seconds,
        http.requests.load(Ordering::Relaxed)
    );
    Ok(())
}
