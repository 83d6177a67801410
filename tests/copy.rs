//! Layer data copied where a mount cannot do, against real registries on loopback
//! (different ports are different registries): a new base on another registry with
//! htpasswd auth on both, a fleet that copies each layer once, a registry behind a test
//! proxy that turns mounts into plain uploads (and asks for chunks), a source that lies
//! about a blob or drops it mid-layer, a redirect to other storage, `--no-copy`, and no
//! layer bytes moved when everything is on one registry. Results are checked with skopeo +
//! umoci and the registries' own logs.

mod common;

use base64::Engine;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ALICE_PW: &str = "alice-c0py-Pa55";
const BOB_PW: &str = "bob-c0py-Pa55";

/// Base v1 and v2 (v2 with two layers) and apps built on v1, in an OCI layout.
const BUILD: &str = r#"
mkdir -p v1/etc v2a/etc v2b/etc app/app app2/app
echo 'base v1' > v1/etc/os-release; echo 1 > v1/etc/base-v1-only
echo 'base v2' > v2a/etc/os-release; echo 2 > v2a/etc/base-v2-only
head -c 300000 /dev/urandom | base64 > v2b/etc/big
echo hello > app/app/hello.txt
echo other > app2/app/other.txt
build_image layout base-v1 v1
build_image layout base-v2 v2a v2b
build_image layout app --from base-v1 app
build_image layout app2 --from base-v1 app2
"#;

/// A registry with htpasswd auth for `user`.
fn registry_with_user(work: &Path, user: &str, password: &str) -> Registry {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd (apache2-utils) is installed");
    let htpasswd = work.join(format!("htpasswd-{user}"));
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
        htpasswd.display()
    ))
}

/// A podman auth file (read by skopeo and image-rebase alike) for `(host, user, pw)`.
fn auth_file(path: &Path, entries: &[(&str, &str, &str)]) {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(host, user, pw)| {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            (host.to_string(), serde_json::json!({ "auth": auth }))
        })
        .collect();
    std::fs::write(path, serde_json::json!({ "auths": auths }).to_string()).unwrap();
}

/// Runs a bash script with scripts/lib.sh sourced and `env`; panics on failure.
fn sh_env(cwd: &Path, env: &[(&str, &str)], script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; source {}/scripts/lib.sh; {script}",
            root().display()
        ))
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed: {script}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds the layout in `work` (once per test).
fn build(work: &Path) {
    sh_env(work, &[], BUILD);
}

/// Copies `layout:tag` to `docker://ref`, with the auth file if any.
fn push(work: &Path, env: &[(&str, &str)], tag: &str, reference: &str) {
    sh_env(
        work,
        env,
        &format!(
            "skopeo copy --quiet --dest-tls-verify=false oci:layout:{tag} docker://{reference}"
        ),
    );
}

/// The files of `reference`'s root filesystem, copied out with skopeo and unpacked with
/// umoci.
fn files_of(env: &[(&str, &str)], reference: &str) -> Vec<String> {
    let dir = TempDir::new("unpack");
    sh_env(dir.path(), env, &format!("unpack_image {reference} out"));
    let rootfs = dir.path().join("out/bundle/rootfs");
    let mut found = Vec::new();
    walk(&rootfs, &rootfs, &mut found);
    found.sort();
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            walk(root, &p, found);
        } else {
            found.push(p.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

fn assert_on_v2(files: &[String], app_file: &str) {
    for want in ["etc/os-release", "etc/base-v2-only", "etc/big", app_file] {
        assert!(files.iter().any(|f| f == want), "{want} missing: {files:?}");
    }
    assert!(
        !files.iter().any(|f| f == "etc/base-v1-only"),
        "an old base file is left: {files:?}"
    );
}

/// The binary with `args` and `env` (credentials of the test's own environment left out).
fn image_rebase(args: &[&str], env: &[(&str, &str)]) -> Output {
    spawn(args, None, env).wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn assert_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The layer digests of `repo_ref` on a registry without auth.
fn layers(reg: &Registry, repo_ref: &str) -> Vec<String> {
    let (_, m) = reg.manifest(repo_ref).expect("the manifest exists");
    layer_digests(&m)
}

/// GETs of each of `blobs` the registry logged after `mark`.
fn blob_gets(reg: &Registry, mark: usize, blobs: &[String]) -> Vec<usize> {
    let requests = reg.requests_since(mark);
    blobs
        .iter()
        .map(|b| {
            requests
                .iter()
                .filter(|(m, uri, _)| {
                    m == "GET" && uri.contains("/blobs/") && uri.contains(b.as_str())
                })
                .count()
        })
        .collect()
}

#[test]
fn a_new_base_on_another_registry_with_auth_on_both_is_copied_once_and_the_result_unpacks() {
    let work = TempDir::new("two-registries");
    let apps = registry_with_user(work.path(), "alice", ALICE_PW);
    let bases = registry_with_user(work.path(), "bob", BOB_PW);
    let auth = work.path().join("auth.json");
    auth_file(
        &auth,
        &[
            (&apps.addr, "alice", ALICE_PW),
            (&bases.addr, "bob", BOB_PW),
        ],
    );
    let auth = auth.display().to_string();
    let home = work.path().display().to_string();
    let env = [
        ("REGISTRY_AUTH_FILE", auth.as_str()),
        ("HOME", home.as_str()),
    ];
    build(work.path());
    push(work.path(), &env, "base-v1", &bases.r("library/base:v1"));
    push(work.path(), &env, "base-v2", &bases.r("library/base:v2"));
    push(work.path(), &env, "app", &apps.r("team/app:1"));
    let out = sh_env(
        work.path(),
        &env,
        &format!(
            "skopeo inspect --raw --tls-verify=false docker://{}",
            bases.r("library/base:v2")
        ),
    );
    let v2_layers = layer_digests(&serde_json::from_str::<serde_json::Value>(&out).unwrap());
    assert_eq!(v2_layers.len(), 2);
    let image = apps.r("team/app:1");
    let (old, new) = (bases.r("library/base:v1"), bases.r("library/base:v2"));
    let args = |tag: &'static str, extra: &'static [&'static str]| {
        let mut a: Vec<String> = [
            "rebase",
            &image,
            "--old-base",
            &old,
            "--new-base",
            &new,
            "-t",
            tag,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        image_rebase(&a, &env)
    };

    // --no-copy refuses as before, naming the other registry; nothing is written.
    let mark = bases.mark();
    let out = run(args("rebased", &["--no-copy"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("on another registry") && err.contains("cannot be mounted across registries"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}/library/base", bases.addr)),
        "{err}"
    );
    assert_eq!(blob_gets(&bases, mark, &v2_layers), vec![0, 0]);

    // --dry-run says what would be copied, and how many bytes, and reads no layer.
    let out = run(args("rebased", &["--dry-run"]));
    let plan = assert_ok(&out);
    assert!(plan.contains("copy:       "), "{plan}");
    assert!(plan.contains("(2 blobs, "), "{plan}");
    assert!(
        stderr(&out).contains("would copy 2 layers, ")
            && stderr(&out).contains(&format!("from {}", bases.addr)),
        "{}",
        stderr(&out)
    );
    assert_eq!(blob_gets(&bases, mark, &v2_layers), vec![0, 0]);

    // The rebase: the new base's layers are read from its registry once each.
    let out = run(args("rebased", &[]));
    let printed = assert_ok(&out);
    assert!(
        printed.starts_with(&format!("{}/team/app@sha256:", apps.addr)),
        "{printed}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("copied 2 layers, ")
            && err.contains(&format!(
                "from {} to {}/team/app: a mount across registries is impossible",
                bases.addr, apps.addr
            )),
        "{err}"
    );
    assert_eq!(blob_gets(&bases, mark, &v2_layers), vec![1, 1]);
    for secret in [ALICE_PW, BOB_PW] {
        assert!(!err.contains(secret) && !printed.contains(secret));
    }
    assert_on_v2(
        &files_of(&env, &apps.r("team/app:rebased")),
        "app/hello.txt",
    );

    // Again: the layers are in the target now; nothing is read from the other registry.
    let mark = bases.mark();
    let out = run(args("rebased", &[]));
    assert_ok(&out);
    assert!(!stderr(&out).contains("copied"), "{}", stderr(&out));
    assert_eq!(blob_gets(&bases, mark, &v2_layers), vec![0, 0]);
}

#[test]
fn a_fleet_over_two_repositories_reads_each_new_base_layer_once_and_mounts_the_second() {
    let work = TempDir::new("fleet-copy");
    let apps = Registry::start();
    let bases = Registry::start();
    build(work.path());
    push(work.path(), &[], "base-v1", &bases.r("library/base:v1"));
    push(work.path(), &[], "base-v2", &bases.r("library/base:v2"));
    push(work.path(), &[], "app", &apps.r("team/app:1"));
    push(work.path(), &[], "app2", &apps.r("team/app2:1"));
    let v2_layers = layers(&bases, "library/base:v2");
    let list = work.path().join("list");
    std::fs::write(
        &list,
        format!("{}\n{}\n", apps.r("team/app:1"), apps.r("team/app2:1")),
    )
    .unwrap();
    let (old, new) = (bases.r("library/base:v1"), bases.r("library/base:v2"));
    let list = list.display().to_string();
    let mark = bases.mark();
    let apps_mark = apps.mark();
    let out = image_rebase(
        &[
            "rebase",
            "--from-file",
            &list,
            "--jobs",
            "2",
            "--old-base",
            &old,
            "--new-base",
            &new,
            "-t",
            "rebased",
        ],
        &[],
    );
    let lines = assert_ok(&out);
    let outcomes: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "rebased"),
        "{lines}"
    );
    // Each layer copied once, into whichever repository got to it first (the two images
    // run at once, so one may copy one layer and the other the other), and mounted from
    // there into the other repository.
    let copied: usize = outcomes
        .iter()
        .flat_map(|o| o["notes"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| {
            let n = n.as_str()?.strip_prefix("copied ")?.to_string();
            n.split_once(' ')?.0.parse::<usize>().ok()
        })
        .sum();
    assert_eq!(copied, v2_layers.len(), "{lines}");
    assert_eq!(blob_gets(&bases, mark, &v2_layers), vec![1, 1]);
    let mounts = apps
        .requests_since(apps_mark)
        .into_iter()
        .filter(|(m, uri, _)| m == "POST" && uri.contains("mount="))
        .filter(|(_, uri, _)| v2_layers.iter().any(|l| uri.contains(l.as_str())))
        .count();
    assert_eq!(
        mounts, 2,
        "each layer is mounted into the repository that did not copy it"
    );
    assert_on_v2(&files_of(&[], &apps.r("team/app:rebased")), "app/hello.txt");
    assert_on_v2(
        &files_of(&[], &apps.r("team/app2:rebased")),
        "app/other.txt",
    );
}

#[test]
fn everything_on_one_registry_moves_no_layer_bytes() {
    let work = TempDir::new("one-registry");
    let reg = Registry::start();
    build(work.path());
    push(work.path(), &[], "base-v1", &reg.r("library/base:v1"));
    push(work.path(), &[], "base-v2", &reg.r("library/base:v2"));
    push(work.path(), &[], "app", &reg.r("team/app:1"));
    let mut all = layers(&reg, "library/base:v2");
    all.extend(layers(&reg, "team/app:1"));
    let mark = reg.mark();
    // -v: the mounts run on several threads, each logging its requests to stderr while
    // the main thread writes there too (once a deadlock on a stderr lock held by main).
    let out = image_rebase(
        &[
            "-v",
            "rebase",
            &reg.r("team/app:1"),
            "--old-base",
            &reg.r("library/base:v1"),
            "--new-base",
            &reg.r("library/base:v2"),
            "-t",
            "rebased",
        ],
        &[],
    );
    assert_ok(&out);
    assert!(!stderr(&out).contains("copied"), "{}", stderr(&out));
    assert!(stderr(&out).contains("mount="), "{}", stderr(&out));
    assert_no_layer_traffic(&reg, mark, &all);
}

// ---------------------------------------------------------------------------------------
// A test proxy in front of a real registry
// ---------------------------------------------------------------------------------------

/// What the proxy changes.
#[derive(Clone, Default)]
struct Faults {
    /// Mounts become plain upload starts: the registry answers 202.
    refuse_mounts: bool,
    /// Upload starts are answered with `OCI-Chunk-Min-Length`: the client must PATCH.
    chunks: Option<u64>,
    /// GETs of this blob get one byte changed.
    lie: Option<String>,
    /// GETs of this blob break off half-way.
    cut: Option<String>,
    /// GETs of blobs are redirected to `/storage/...` on the proxy.
    redirect: bool,
}

/// One request the proxy saw: method, target, whether it carried Authorization.
type Seen = (String, String, bool);

struct Proxy {
    addr: String,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Connections one proxy accepts at most, and requests per connection.
const MAX_CONNECTIONS: usize = 500;
const MAX_REQUESTS: usize = 500;

impl Proxy {
    /// A proxy in front of `backend`; `storage_auth` is the Authorization it sends for
    /// `/storage/` requests (the "other storage" has its own access).
    fn start(backend: &str, storage_auth: Option<String>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, st, b, a) = (
            faults.clone(),
            seen.clone(),
            stop.clone(),
            backend.to_string(),
            addr.clone(),
        );
        let thread = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(30))
                .build();
            let accepted = AtomicUsize::new(0);
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst)
                    || accepted.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS
                {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (f, s, b, a, agent, auth) = (
                    f.clone(),
                    s.clone(),
                    b.clone(),
                    a.clone(),
                    agent.clone(),
                    storage_auth.clone(),
                );
                std::thread::spawn(move || {
                    serve(stream, &agent, &b, &a, &f, &s, auth.as_deref());
                });
            }
        });
        Proxy {
            addr,
            faults,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    fn r(&self, reference: &str) -> String {
        format!("{}/{reference}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the requests of one connection.
fn serve(
    stream: TcpStream,
    agent: &ureq::Agent,
    backend: &str,
    me: &str,
    faults: &Mutex<Faults>,
    seen: &Mutex<Vec<Seen>>,
    storage_auth: Option<&str>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    for _ in 0..MAX_REQUESTS {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let len: usize = header("Content-Length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let auth = header("Authorization");
        seen.lock()
            .unwrap()
            .push((method.clone(), target.clone(), auth.is_some()));
        let f = faults.lock().unwrap().clone();
        let is_blob_get =
            method == "GET" && target.starts_with("/v2/") && target.contains("/blobs/sha256:");
        if f.redirect && is_blob_get {
            let location = format!("http://{me}/storage{target}");
            let head = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
            );
            if out.write_all(head.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        // The "other storage": the registry's blob, fetched with the storage's own access.
        let (path, auth) = match target.strip_prefix("/storage") {
            Some(rest) => (rest.to_string(), storage_auth.map(str::to_string)),
            None => (target.clone(), auth),
        };
        let mut path = path;
        if f.refuse_mounts && method == "POST" && path.contains("mount=") {
            path = path.split('?').next().unwrap().to_string();
        }
        let mut req = agent.request(&method, &format!("http://{backend}{path}"));
        for (k, v) in &headers {
            if ![
                "host",
                "content-length",
                "connection",
                "authorization",
                "transfer-encoding",
            ]
            .contains(&k.to_ascii_lowercase().as_str())
            {
                req = req.set(k, v);
            }
        }
        if let Some(a) = &auth {
            req = req.set("Authorization", a);
        }
        let resp = match req.send_bytes(&body) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(_) => return,
        };
        let status = resp.status();
        let mut head = format!("HTTP/1.1 {status} {}\r\n", resp.status_text());
        let names = resp.headers_names();
        let entity_len = resp.header("Content-Length").map(str::to_string);
        for name in &names {
            let lower = name.to_ascii_lowercase();
            if ["content-length", "connection", "transfer-encoding"].contains(&lower.as_str()) {
                continue;
            }
            for value in resp.all(name) {
                let value = value.replace(&format!("http://{backend}"), &format!("http://{me}"));
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        if let Some(min) = f.chunks
            && method == "POST"
            && status == 202
        {
            head.push_str(&format!("OCI-Chunk-Min-Length: {min}\r\n"));
        }
        let mut bytes = Vec::new();
        if method != "HEAD" {
            let _ = resp.into_reader().read_to_end(&mut bytes);
        }
        let named = |d: &Option<String>| {
            d.as_ref()
                .is_some_and(|d| is_blob_get && target.contains(d.as_str()))
        };
        if named(&f.lie) && !bytes.is_empty() {
            bytes[0] ^= 0x20;
        }
        let length = if method == "HEAD" {
            entity_len.unwrap_or_else(|| "0".into())
        } else {
            bytes.len().to_string()
        };
        head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
        if named(&f.cut) {
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&bytes[..bytes.len() / 2]);
            let _ = out.flush();
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// Bases and an app on one registry, pushed directly (not through a proxy).
fn one_registry_fixture(work: &Path) -> Registry {
    let reg = Registry::start();
    build(work);
    push(work, &[], "base-v1", &reg.r("library/base:v1"));
    push(work, &[], "base-v2", &reg.r("library/base:v2"));
    push(work, &[], "app", &reg.r("team/app:1"));
    reg
}

#[test]
fn a_registry_that_turns_mounts_into_uploads_gets_a_copy_and_a_correct_result_also_in_chunks() {
    for chunks in [None, Some(1000)] {
        let work = TempDir::new("refuses-mounts");
        let reg = one_registry_fixture(work.path());
        let proxy = Proxy::start(&reg.addr, None);
        proxy.set(Faults {
            refuse_mounts: true,
            chunks,
            ..Faults::default()
        });
        let out = image_rebase(
            &[
                "rebase",
                &proxy.r("team/app:1"),
                "--old-base",
                &proxy.r("library/base:v1"),
                "--new-base",
                &proxy.r("library/base:v2"),
                "-t",
                "rebased",
            ],
            &[],
        );
        assert_ok(&out);
        let err = stderr(&out);
        assert!(
            err.contains("copied 2 layers, ") && err.contains("the registry did not mount it"),
            "{err}"
        );
        assert_on_v2(&files_of(&[], &reg.r("team/app:rebased")), "app/hello.txt");
        let seen = proxy.seen();
        let patches = seen.iter().filter(|(m, _, _)| m == "PATCH").count();
        match chunks {
            // One chunk per layer (they are smaller than a chunk), then the PUT.
            Some(_) => assert_eq!(patches, 2, "chunks were sent"),
            None => assert_eq!(patches, 0, "one PUT per layer"),
        }
        // The refused mounts' upload sessions were used: no upload start but the config's.
        let starts = seen
            .iter()
            .filter(|(m, t, _)| m == "POST" && t.starts_with("/v2/team/app/blobs/uploads/"))
            .count();
        assert_eq!(starts, 3, "two mounts and the config: {seen:?}");
    }
}

#[test]
fn with_no_copy_a_registry_that_refuses_mounts_is_refused_as_before() {
    let work = TempDir::new("no-copy");
    let reg = one_registry_fixture(work.path());
    let proxy = Proxy::start(&reg.addr, None);
    proxy.set(Faults {
        refuse_mounts: true,
        ..Faults::default()
    });
    let out = image_rebase(
        &[
            "rebase",
            &proxy.r("team/app:1"),
            "--old-base",
            &proxy.r("library/base:v1"),
            "--new-base",
            &proxy.r("library/base:v2"),
            "-t",
            "rebased",
            "--no-copy",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("did not mount it from library/base"), "{err}");
    assert!(reg.manifest("team/app:rebased").is_none());
    assert!(
        !proxy.seen().iter().any(|(m, t, _)| m == "PUT"
            && t.contains("/blobs/uploads/")
            && !t.contains("digest=sha256:")),
        "no layer uploaded"
    );
}

#[test]
fn a_source_that_lies_about_a_blob_or_drops_it_mid_layer_tags_nothing_and_a_rerun_finishes() {
    let work = TempDir::new("hostile-source");
    let apps = Registry::start();
    let bases = Registry::start();
    build(work.path());
    push(work.path(), &[], "base-v1", &bases.r("library/base:v1"));
    push(work.path(), &[], "base-v2", &bases.r("library/base:v2"));
    push(work.path(), &[], "app", &apps.r("team/app:1"));
    let v2_layers = layers(&bases, "library/base:v2");
    let big = v2_layers[1].clone();
    let source = Proxy::start(&bases.addr, None);
    let args = [
        "rebase".to_string(),
        apps.r("team/app:1"),
        "--old-base".into(),
        source.r("library/base:v1"),
        "--new-base".into(),
        source.r("library/base:v2"),
        "-t".into(),
        "rebased".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A lie: refused at once, naming the blob and the source; nothing tagged.
    source.set(Faults {
        lie: Some(big.clone()),
        ..Faults::default()
    });
    let out = image_rebase(&args, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("not to {big}"))
            && err.contains("hash to")
            && err.contains(&source.addr),
        "{err}"
    );
    assert!(apps.manifest("team/app:rebased").is_none());
    let gets = |p: &Proxy| {
        p.seen()
            .iter()
            .filter(|(m, t, _)| m == "GET" && t.contains(big.as_str()))
            .count()
    };
    assert_eq!(gets(&source), 1, "a lie is not asked again");
    assert!(
        !blob_in(&apps, "team/app", &big),
        "the bad blob was not stored"
    );

    // Dropped mid-layer every time: tried a bounded number of times, then a clear error.
    source.set(Faults {
        cut: Some(big.clone()),
        ..Faults::default()
    });
    let before = gets(&source);
    let out = image_rebase(&args, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("broke after") || err.contains("ended the blob after"),
        "{err}"
    );
    assert_eq!(gets(&source) - before, 4, "4 attempts in all");
    assert!(apps.manifest("team/app:rebased").is_none());

    // A re-run with an honest source finishes.
    source.set(Faults::default());
    let out = image_rebase(&args, &[]);
    assert_ok(&out);
    assert_on_v2(&files_of(&[], &apps.r("team/app:rebased")), "app/hello.txt");
}

/// The layer digests of `reference`, read with skopeo and the auth file in `env`.
fn layers_with_auth(env: &[(&str, &str)], reference: &str) -> Vec<String> {
    let out = sh_env(
        Path::new("/"),
        env,
        &format!("skopeo inspect --raw --tls-verify=false docker://{reference}"),
    );
    layer_digests(&serde_json::from_str::<serde_json::Value>(&out).unwrap())
}

/// Whether the registry has the blob in the repository (HEAD).
fn blob_in(reg: &Registry, repo: &str, digest: &str) -> bool {
    ureq::head(&format!("http://{}/v2/{repo}/blobs/{digest}", reg.addr))
        .call()
        .is_ok()
}

#[test]
fn a_blob_redirected_to_other_storage_is_fetched_there_without_the_registry_credentials() {
    let work = TempDir::new("redirect");
    let apps = Registry::start();
    let bases = registry_with_user(work.path(), "bob", BOB_PW);
    let auth = work.path().join("auth.json");
    let source_auth = base64::engine::general_purpose::STANDARD.encode(format!("bob:{BOB_PW}"));
    let source = Proxy::start(&bases.addr, Some(format!("Basic {source_auth}")));
    source.set(Faults {
        redirect: true,
        ..Faults::default()
    });
    auth_file(
        &auth,
        &[(&bases.addr, "bob", BOB_PW), (&source.addr, "bob", BOB_PW)],
    );
    let auth = auth.display().to_string();
    let home = work.path().display().to_string();
    let env = [
        ("REGISTRY_AUTH_FILE", auth.as_str()),
        ("HOME", home.as_str()),
    ];
    build(work.path());
    push(work.path(), &env, "base-v1", &bases.r("library/base:v1"));
    push(work.path(), &env, "base-v2", &bases.r("library/base:v2"));
    push(work.path(), &env, "app", &apps.r("team/app:1"));
    let out = image_rebase(
        &[
            "rebase",
            &apps.r("team/app:1"),
            "--old-base",
            &source.r("library/base:v1"),
            "--new-base",
            &source.r("library/base:v2"),
            "-t",
            "rebased",
        ],
        &env,
    );
    assert_ok(&out);
    let seen = source.seen();
    let storage: Vec<&Seen> = seen
        .iter()
        .filter(|(_, t, _)| t.starts_with("/storage/"))
        .collect();
    // The two configs read and the two layers copied.
    assert_eq!(storage.len(), 4, "{seen:?}");
    let v2_layers = layers_with_auth(&env, &bases.r("library/base:v2"));
    for l in &v2_layers {
        assert!(
            storage.iter().any(|(_, t, _)| t.contains(l.as_str())),
            "{l}: {seen:?}"
        );
    }
    assert!(
        storage.iter().all(|(_, _, auth)| !auth),
        "the registry's credentials went to the other storage: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(m, t, auth)| m == "GET" && t.starts_with("/v2/library/base/blobs/") && *auth),
        "the registry itself got them: {seen:?}"
    );
    assert_on_v2(&files_of(&[], &apps.r("team/app:rebased")), "app/hello.txt");
}

#[test]
fn a_target_on_another_registry_gets_the_rebased_image_with_every_layer_copied_there() {
    let work = TempDir::new("other-target");
    let reg = one_registry_fixture(work.path());
    let other = Registry::start();
    let mut all = layers(&reg, "library/base:v2");
    let app_layers = layers(&reg, "team/app:1");
    all.push(app_layers.last().unwrap().clone());
    let mark = reg.mark();
    let target = other.r("mirror/app:1");
    let out = image_rebase(
        &[
            "-v",
            "rebase",
            &reg.r("team/app:1"),
            "--old-base",
            &reg.r("library/base:v1"),
            "--new-base",
            &reg.r("library/base:v2"),
            "--tag",
            &target,
        ],
        &[],
    );
    let printed = assert_ok(&out);
    assert!(
        printed.starts_with(&format!("{}/mirror/app@sha256:", other.addr)),
        "{printed}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("from {} to {}/mirror/app", reg.addr, other.addr)),
        "{err}"
    );
    assert_on_v2(&files_of(&[], &target), "app/hello.txt");
    // Each layer (new base and app) read once; the image's tag on its own registry stays.
    assert_eq!(blob_gets(&reg, mark, &all), vec![1; all.len()]);
    assert_eq!(layers(&reg, "team/app:1"), app_layers);
    assert_eq!(layers(&other, "mirror/app:1").len(), 3);
}
