//! Test harness: a real CNCF distribution registry on a free loopback port, fixtures
//! built with umoci and pushed with skopeo (through scripts/lib.sh), and the binary.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "image-rebase-test-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running registry; stopped on drop.
pub struct Registry {
    pub addr: String,
    pub dir: TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with("")
    }

    /// A registry with `extra` appended to its config (`auth:` sections), and `http:`
    /// settings from `http_extra` (e.g. `  tls:` lines, indented by two spaces).
    pub fn start_with(extra: &str) -> Registry {
        Registry::start_full(extra, "")
    }

    pub fn start_full(extra: &str, http_extra: &str) -> Registry {
        let dir = TempDir::new("registry");
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = format!("127.0.0.1:{port}");
            // The configuration shared with scripts/lib.sh.
            let storage = format!(
                "  filesystem:\n    rootdirectory: {}",
                dir.path().join("data").display()
            );
            let config = std::fs::read_to_string(root().join("scripts/registry.yml"))
                .unwrap()
                .replace("@STORAGE@", &storage)
                .replace("@ADDR@", &addr)
                + http_extra
                + extra;
            std::fs::write(dir.path().join("config.yml"), config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(dir.path().join("config.yml"))
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry is installed (scripts/install-deps.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let listening = std::fs::read_to_string(dir.path().join("registry.log"))
                    .is_ok_and(|l| l.contains(&format!("listening on {addr}")));
                if listening && std::net::TcpStream::connect(&addr).is_ok() {
                    return Registry { addr, dir, child };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "registry attempt {attempt} failed: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
        }
        panic!("the registry did not start");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap()
    }

    /// Current end of the log, to look at requests made after this point.
    pub fn mark(&self) -> usize {
        self.sync();
        self.log().len()
    }

    /// Waits until the registry has logged every request made so far: it logs a request
    /// after answering it, so a marker request is sent and waited for.
    pub fn sync(&self) {
        let marker = format!("sync-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let _ = ureq::get(&format!("http://{}/v2/?{marker}", self.addr)).call();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(&marker) {
            assert!(
                Instant::now() < deadline,
                "the registry never logged {marker}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// (method, uri, status) of each request the registry logged after `mark`, marker
    /// requests left out.
    pub fn requests_since(&self, mark: usize) -> Vec<(String, String, String)> {
        self.sync();
        let log = self.log();
        log[mark..]
            .lines()
            .filter(|l| l.contains("msg=\"response completed") && !l.contains("/v2/?sync-"))
            .map(|l| {
                (
                    field(l, "http.request.method"),
                    field(l, "http.request.uri"),
                    field(l, "http.response.status"),
                )
            })
            .collect()
    }

    /// Asserts that the requests after `mark` changed nothing: only reads, but for upload
    /// sessions opened (`POST .../blobs/uploads/`, no mount) and each cancelled (`DELETE`).
    pub fn assert_nothing_written_since(&self, mark: usize) {
        let requests = self.requests_since(mark);
        let session = |method: &str, uri: &str| {
            uri.contains("/blobs/uploads/")
                && (method == "DELETE" || (method == "POST" && !uri.contains("mount=")))
        };
        for (method, uri, _) in &requests {
            assert!(
                method == "GET" || method == "HEAD" || session(method, uri),
                "nothing written: {method} {uri}"
            );
        }
        let count = |m: &str| {
            requests
                .iter()
                .filter(|(method, uri, _)| method == m && session(method, uri))
                .count()
        };
        assert_eq!(
            count("POST"),
            count("DELETE"),
            "every upload session opened is cancelled: {requests:#?}"
        );
    }

    /// The raw manifest bytes of `reference` (repository:tag or repository@digest).
    pub fn manifest(&self, repo_ref: &str) -> Option<(Vec<u8>, Value)> {
        let (repo, r) = split_repo_ref(repo_ref);
        let resp = ureq::get(&format!("http://{}/v2/{repo}/manifests/{r}", self.addr))
            .set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json")
            .call()
            .ok()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).unwrap();
        let json = serde_json::from_slice(&bytes).unwrap();
        Some((bytes, json))
    }

    /// The config of `repo_ref`, parsed.
    pub fn config(&self, repo_ref: &str) -> Value {
        let (repo, _) = split_repo_ref(repo_ref);
        let (_, m) = self
            .manifest(repo_ref)
            .unwrap_or_else(|| panic!("{repo_ref} exists"));
        let digest = m["config"]["digest"].as_str().unwrap();
        let resp = ureq::get(&format!("http://{}/v2/{repo}/blobs/{digest}", self.addr))
            .call()
            .unwrap();
        serde_json::from_reader(resp.into_reader()).unwrap()
    }

    /// `addr/reference`.
    pub fn r(&self, reference: &str) -> String {
        format!("{}/{reference}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn split_repo_ref(repo_ref: &str) -> (&str, &str) {
    if let Some((repo, d)) = repo_ref.split_once('@') {
        (repo, d)
    } else {
        repo_ref.rsplit_once(':').unwrap_or((repo_ref, "latest"))
    }
}

fn field(line: &str, name: &str) -> String {
    let key = format!(" {name}=");
    let Some(start) = line.find(&key) else {
        return String::new();
    };
    let rest = &line[start + key.len()..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().unwrap_or("").to_string()
    } else {
        rest.split(' ').next().unwrap_or("").to_string()
    }
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a bash script with scripts/lib.sh sourced and REGISTRY set; panics on failure.
pub fn sh(reg: &Registry, cwd: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; source {}/scripts/lib.sh; {script}",
            root().display()
        ))
        .current_dir(cwd)
        .env("REGISTRY", &reg.addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        panic!(
            "script failed: {script}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// Writes files (path relative to `dir`, contents) for a layer.
pub fn files(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
}

/// Starts the binary with `args`, extra `env` and optional stdin (written from a thread;
/// closed when `None`), stdout and stderr piped. Credentials in the test's own
/// environment are not passed on.
pub fn spawn(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_image-rebase"))
        .args(args)
        .env_remove("IMAGE_REBASE_USERNAME")
        .env_remove("IMAGE_REBASE_PASSWORD")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    child
}

/// Runs the binary with `args` and optional stdin.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    spawn(args, stdin, &[]).wait_with_output().unwrap()
}

/// Runs the binary and expects success; returns stdout.
pub fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run(args, stdin);
    assert!(
        out.status.success(),
        "image-rebase {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the binary and expects it to exit with `code`; returns stderr.
pub fn fails(args: &[&str], stdin: Option<&[u8]>, code: i32) -> String {
    let out = run(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "image-rebase {args:?}: {err}"
    );
    err
}

/// Runs the plumbing pipeline, each step's stdout feeding the next one's stdin.
pub fn pipeline(steps: &[&[&str]]) -> String {
    let mut input: Option<Vec<u8>> = None;
    for step in steps {
        input = Some(ok(step, input.as_deref()).into_bytes());
    }
    String::from_utf8(input.unwrap()).unwrap()
}

/// Runs plumbing steps on a document, each step's stdout feeding the next one's stdin.
pub fn pipeline_from(input: &str, steps: &[&[&str]]) -> String {
    let mut doc = input.to_string();
    for step in steps {
        doc = ok(step, Some(doc.as_bytes()));
    }
    doc
}

/// Copies `reference` out with skopeo, unpacks it with umoci, and lists the regular files
/// of its root filesystem (sorted, relative paths) with their contents.
pub fn unpack(reg: &Registry, repo_ref: &str) -> Vec<(String, String)> {
    let dir = TempDir::new("unpack");
    sh(
        reg,
        dir.path(),
        &format!("unpack_image {} out", reg.r(repo_ref)),
    );
    let rootfs = dir.path().join("out/bundle/rootfs");
    let mut found = Vec::new();
    walk(&rootfs, &rootfs, &mut found);
    found.sort();
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            walk(root, &p, found);
        } else {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            found.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
        }
    }
}

/// The layer digests of a manifest.
pub fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Checks the registry log after `mark`: no layer data moved (no blob GET of a layer, no
/// PATCH, no blob PUT of anything but configs), for the given layer digests.
pub fn assert_no_layer_traffic(reg: &Registry, mark: usize, layers: &[String]) {
    let requests = reg.requests_since(mark);
    assert!(
        !requests.is_empty(),
        "the registry logged the rebase's requests"
    );
    for (method, uri, _) in &requests {
        let is_layer = layers.iter().any(|l| uri.contains(l.as_str()));
        match method.as_str() {
            "PATCH" => panic!("layer data was uploaded: PATCH {uri}"),
            "GET" if uri.contains("/blobs/") && is_layer => {
                panic!("layer data was downloaded: GET {uri}")
            }
            "PUT" if uri.contains("/blobs/") && is_layer => {
                panic!("layer data was uploaded: PUT {uri}")
            }
            _ => {}
        }
    }
}

/// Images built by this project's own registry client: Docker schema 2 with classic
/// `docker build` history text, layers made by GNU tar.
pub mod own {
    use super::*;
    use image_rebase::oci::digest::Digest;
    use image_rebase::registry::{Client, Options};
    use serde_json::json;

    pub struct Layer {
        pub gz: Vec<u8>,
        pub diff_id: Digest,
        pub created_by: String,
    }

    pub fn layer(reg: &Registry, files_: &[(&str, &str)], created_by: &str) -> Layer {
        let dir = TempDir::new("layer");
        files(&dir.path().join("src"), files_);
        sh(
            reg,
            dir.path(),
            "make_layer l.tar src && gzip -n -c l.tar > l.tar.gz",
        );
        let tar = std::fs::read(dir.path().join("l.tar")).unwrap();
        let gz = std::fs::read(dir.path().join("l.tar.gz")).unwrap();
        Layer {
            gz,
            diff_id: Digest::of(&tar),
            created_by: created_by.into(),
        }
    }

    /// Pushes an image of `layers` (each with its history entry followed by an empty CMD
    /// entry) to `repo:tag`.
    pub fn push(reg: &Registry, repo: &str, tag: &str, layers: &[&Layer], env: &[&str]) {
        push_with(reg, repo, tag, layers, &[], env, serde_json::json!({}));
    }

    /// Like `push`, with `empty` history entries (text, placed after layer index) and
    /// labels in the config.
    pub fn push_with(
        reg: &Registry,
        repo: &str,
        tag: &str,
        layers: &[&Layer],
        empty: &[(usize, &str)],
        env: &[&str],
        labels: Value,
    ) {
        let client = Client::new(Options::default()).unwrap();
        let mut descriptors = vec![];
        let mut history = vec![];
        for l in layers {
            let digest = Digest::of(&l.gz);
            if !client.blob_exists(&reg.addr, repo, &digest).unwrap() {
                client.upload_blob(&reg.addr, repo, &digest, &l.gz).unwrap();
            }
            descriptors.push(json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": l.gz.len(), "digest": digest}));
            history.push(json!({"created": "2021-01-01T00:00:00Z", "created_by": l.created_by}));
            history.push(json!({"created": "2021-01-01T00:00:00Z", "created_by": format!("/bin/sh -c #(nop)  CMD [\"{}\"]", l.created_by.len()), "empty_layer": true}));
        }
        for (after, text) in empty.iter().rev() {
            history.insert(
                2 * after + 2,
                json!({"created": "2021-01-01T00:00:00Z", "created_by": text, "empty_layer": true}),
            );
        }
        let config = json!({
            "architecture": "amd64", "os": "linux", "created": "2021-01-01T00:00:00Z",
            "config": {"Env": env, "Cmd": ["sh"], "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
            "history": history,
        });
        let config = serde_json::to_vec_pretty(&config).unwrap();
        let config_digest = Digest::of(&config);
        client
            .upload_blob(&reg.addr, repo, &config_digest, &config)
            .unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
            "layers": descriptors,
        });
        // Pretty-printed with a trailing newline, as some tools write them: digests are of
        // these exact bytes.
        let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap();
        bytes.push(b'\n');
        client
            .put_manifest(
                &reg.addr,
                repo,
                tag,
                "application/vnd.docker.distribution.manifest.v2+json",
                &bytes,
            )
            .unwrap();
    }
}
