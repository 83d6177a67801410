//! An in-memory distribution registry on loopback for unit tests, grown from the scripted
//! server of `tests/hostile.rs`: plain HTTP/1.1 with keep-alive and Content-Length bodies,
//! blobs and manifests per repository, upload sessions, cross-repository mounts, and the
//! checks a registry makes on a manifest PUT (every blob or child it lists is there). It
//! records every request, and misbehaves on demand: an error answer to the next matching
//! request, a blob lost just before one, mounts refused. A TLS ClientHello is closed at
//! once, and counted: a client asks a loopback registry in plain HTTP first.
//! Every loop is bounded in count and time; the server stops (threads joined) on drop.

use super::{Client, Options};
use crate::oci::digest::Digest;
use crate::oci::reference::Reference;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// At most this many connections are accepted, ...
const MAX_CONNECTIONS: usize = 256;
/// ... each serving at most this many requests, ...
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// ... and nothing is served after this long.
const LIFETIME: Duration = Duration::from_secs(120);
/// How often blocked accepts and reads look at the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// The longest a request may take to arrive once its first byte has, and a response to
/// be written.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body read.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// The timeout of the clients made by `Fake::client`: a test never waits longer on one
/// request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// A delay (see `delay`) far longer than the client's own work between an answer and
/// the requests it lets go, even on a loaded machine: with it, `levels` counts round
/// trips.
pub(crate) const AWAY: Duration = Duration::from_millis(100);

/// One request as the registry read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path, e.g. `/v2/app/manifests/1`.
    pub(crate) path: String,
    /// The query without its `?` (empty without one), e.g. `mount=sha256:...&from=base`.
    pub(crate) query: String,
}

impl Request {
    /// Whether the request asks the registry to change something.
    pub(crate) fn writes(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// Whether the path or query names this digest.
    pub(crate) fn names(&self, digest: &Digest) -> bool {
        self.path.contains(digest.as_str()) || self.query.contains(digest.as_str())
    }

    /// The value of a query parameter.
    pub(crate) fn param(&self, name: &str) -> Option<String> {
        query_param(&self.query, name)
    }
}

/// A manifest as stored: its media type (served as Content-Type) and exact bytes.
struct Stored {
    media_type: String,
    bytes: Vec<u8>,
}

/// What a scripted fault does to the next request that matches it.
enum Effect {
    /// Answer with this status and registry error code instead of handling it.
    Answer(u16, String),
    /// Remove this blob from this repository, then handle the request as usual.
    LoseBlob(String, Digest),
}

struct Fault {
    method: String,
    /// Matched against the path and query (`/v2/app/blobs/uploads/?mount=...`).
    prefix: String,
    effect: Effect,
}

#[derive(Default)]
struct Store {
    /// (repository, digest) to bytes.
    blobs: HashMap<(String, Digest), Vec<u8>>,
    /// (repository, digest) to the manifest. The digest is the key it was stored under,
    /// which is the hash of its bytes unless a test stored it raw.
    manifests: HashMap<(String, Digest), Stored>,
    /// (repository, tag) to a manifest digest.
    tags: HashMap<(String, String), Digest>,
    /// Open upload sessions: id to repository.
    uploads: HashMap<String, String>,
    next_upload: u64,
    faults: Vec<Fault>,
    refuse_mounts: bool,
    log: Vec<Request>,
}

struct Shared {
    store: Mutex<Store>,
    /// How long each request waits before it is handled (a distant registry).
    delay: Mutex<Duration>,
    /// How much longer requests with a method wait (a registry slower at some work).
    slower: Mutex<Vec<(String, Duration)>>,
    /// Requests being handled now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Each request with its level: one more than the highest level of the requests
    /// answered before it arrived (requests sent together share a level; a request
    /// that had to wait for an answer is one level up). The highest is how many round
    /// trips the requests cost, one after another.
    levels: Mutex<Vec<(Request, usize)>>,
    done_level: AtomicUsize,
    /// Connections that began with a TLS handshake record.
    tls_attempts: AtomicUsize,
    /// Connections accepted.
    connections: AtomicUsize,
    stop: AtomicBool,
    started: Instant,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.started.elapsed() > LIFETIME
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn levels(&self) -> MutexGuard<'_, Vec<(Request, usize)>> {
        self.levels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The registry; stopped, every thread joined, on drop.
pub(crate) struct Fake {
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Fake {
    /// Starts a registry on 127.0.0.1 on a free port.
    pub(crate) fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("an address").to_string();
        let shared = Arc::new(Shared {
            store: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            slower: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            levels: Mutex::default(),
            done_level: AtomicUsize::new(0),
            tls_attempts: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(&s, &listener));
        Fake {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`: the registry's name in references.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// A reference on this registry: `r("app:1")` is `127.0.0.1:PORT/app:1`.
    pub(crate) fn r(&self, name: &str) -> Reference {
        Reference::parse(&format!("{}/{name}", self.addr)).expect("a valid reference")
    }

    /// A client with default options (plain HTTP first on loopback) but a short timeout.
    pub(crate) fn client(&self) -> Client {
        Client::new(Options {
            timeout: CLIENT_TIMEOUT,
            ..Options::default()
        })
        .expect("a client")
    }

    /// A client as the porcelain and fleet mode make one: bases fetched by tag once a run.
    pub(crate) fn run_client(&self) -> Client {
        Client::new(Options {
            timeout: CLIENT_TIMEOUT,
            cache_tags: true,
            ..Options::default()
        })
        .expect("a client")
    }

    /// Stores a blob in a repository; its digest.
    pub(crate) fn put_blob(&self, repository: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.put_blob_raw(repository, &digest, bytes);
        digest
    }

    /// Stores bytes as the blob `digest`, whether or not they hash to it.
    pub(crate) fn put_blob_raw(&self, repository: &str, digest: &Digest, bytes: &[u8]) {
        self.shared
            .store()
            .blobs
            .insert((repository.to_string(), digest.clone()), bytes.to_vec());
    }

    /// Stores a manifest by its digest, and under `tag` when given; its digest. Nothing
    /// is checked: a test may store a manifest whose blobs are missing.
    pub(crate) fn put_manifest(
        &self,
        repository: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Digest {
        let digest = Digest::of(bytes);
        self.put_manifest_raw(repository, tag, &digest, media_type, bytes);
        digest
    }

    /// Stores bytes as the manifest `digest` (and under `tag`), whether or not they hash
    /// to it: it is served with `Docker-Content-Digest: <digest>`.
    pub(crate) fn put_manifest_raw(
        &self,
        repository: &str,
        tag: Option<&str>,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) {
        let mut store = self.shared.store();
        store.manifests.insert(
            (repository.to_string(), digest.clone()),
            Stored {
                media_type: media_type.to_string(),
                bytes: bytes.to_vec(),
            },
        );
        if let Some(tag) = tag {
            store
                .tags
                .insert((repository.to_string(), tag.to_string()), digest.clone());
        }
    }

    /// Every request so far, in the order they arrived.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.shared.store().log.clone()
    }

    /// Forgets the requests so far (and their levels).
    pub(crate) fn clear_requests(&self) {
        self.shared.store().log.clear();
        self.shared.levels().clear();
        self.shared.done_level.store(0, Ordering::SeqCst);
    }

    /// Every request so far with its level (see `Shared::levels`), in the order they
    /// arrived. Meaningful with a `delay` far longer than the client's own work.
    pub(crate) fn levels(&self) -> Vec<(Request, usize)> {
        self.shared.levels().clone()
    }

    /// The level of the first request with this method and path.
    pub(crate) fn level_of(&self, method: &str, path: &str) -> Option<usize> {
        self.levels()
            .into_iter()
            .find(|(r, _)| r.method == method && r.path == path)
            .map(|(_, level)| level)
    }

    /// The highest level: how many round trips the requests so far cost.
    pub(crate) fn depth(&self) -> usize {
        self.levels().iter().map(|(_, l)| *l).max().unwrap_or(0)
    }

    /// How many requests had this method and path (any query).
    pub(crate) fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    /// How many connections began with a TLS handshake (and were closed unanswered).
    pub(crate) fn tls_attempts(&self) -> usize {
        self.shared.tls_attempts.load(Ordering::SeqCst)
    }

    /// How many connections clients opened.
    pub(crate) fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub(crate) fn has_blob(&self, repository: &str, digest: &Digest) -> bool {
        self.shared
            .store()
            .blobs
            .contains_key(&(repository.to_string(), digest.clone()))
    }

    /// How many requests had this method.
    pub(crate) fn count_method(&self, method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    /// How many upload sessions are open (started, neither finished nor cancelled).
    pub(crate) fn open_uploads(&self) -> usize {
        self.shared.store().uploads.len()
    }

    /// The bytes of a manifest, by tag or digest.
    pub(crate) fn manifest(&self, repository: &str, reference: &str) -> Option<Vec<u8>> {
        let store = self.shared.store();
        let digest = store.resolve(repository, reference)?;
        store
            .manifests
            .get(&(repository.to_string(), digest))
            .map(|m| m.bytes.clone())
    }

    /// Answers the next request with this method whose path and query start with
    /// `prefix` with `status` and the registry error `code`, once.
    pub(crate) fn fail_next(&self, method: &str, prefix: &str, status: u16, code: &str) {
        self.fault(method, prefix, Effect::Answer(status, code.to_string()));
    }

    /// Removes a blob from a repository just before the next request with this method
    /// whose path and query start with `prefix`, which is then handled as usual: the
    /// registry lost track of the blob, as distribution can while another upload of it
    /// rewrites its link.
    pub(crate) fn lose_blob_on_next(
        &self,
        method: &str,
        prefix: &str,
        repository: &str,
        digest: &Digest,
    ) {
        self.fault(
            method,
            prefix,
            Effect::LoseBlob(repository.to_string(), digest.clone()),
        );
    }

    fn fault(&self, method: &str, prefix: &str, effect: Effect) {
        self.shared.store().faults.push(Fault {
            method: method.to_string(),
            prefix: prefix.to_string(),
            effect,
        });
    }

    /// Refuses (or allows again) cross-repository mounts: every mount is answered 202
    /// with a new upload session, as by a registry that does not mount.
    /// Makes every request wait this long before it is handled, as over a long link.
    pub(crate) fn delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Makes requests with this method wait `more` on top of `delay`.
    pub(crate) fn slower(&self, method: &str, more: Duration) {
        let mut slower = self.shared.slower.lock().unwrap_or_else(|e| e.into_inner());
        slower.push((method.to_string(), more));
    }

    /// The most requests that were being handled at once.
    pub(crate) fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn refuse_mounts(&self, refuse: bool) {
        self.shared.store().refuse_mounts = refuse;
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Accepts connections until stopped, then joins every connection thread (they poll the
/// stop flag at least every POLL).
fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let mut accepted = 0;
    while !shared.stopping() && accepted < MAX_CONNECTIONS {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted += 1;
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let s = shared.clone();
                connections.push(std::thread::spawn(move || serve(&s, stream)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for c in connections {
        let _ = c.join();
    }
}

/// Serves one connection: requests one after another (keep-alive) until the client
/// closes, a request cannot be read, or the server stops.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut stream = stream;
    let mut reader = BufReader::new(read_half);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some(first) = wait_for_data(shared, &mut reader) else {
            return;
        };
        if first == 0x16 {
            // A TLS handshake record: this registry speaks plain HTTP only. Closing at
            // once makes the client's HTTPS attempt fail at once.
            shared.tls_attempts.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let level = shared.done_level.load(Ordering::SeqCst) + 1;
        shared.levels().push((
            Request {
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query.clone(),
            },
            level,
        ));
        let mut delay = *shared.delay.lock().unwrap_or_else(|e| e.into_inner());
        for (method, more) in shared
            .slower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if *method == req.method {
                delay += *more;
            }
        }
        std::thread::sleep(delay);
        let response = shared.store().handle(&req);
        shared.done_level.fetch_max(level, Ordering::SeqCst);
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if stream
            .write_all(&response.to_bytes(req.method == "HEAD"))
            .is_err()
        {
            return;
        }
    }
}

/// Waits for the first byte of the next request; `None` at end of stream or on stop.
fn wait_for_data(shared: &Shared, reader: &mut BufReader<TcpStream>) -> Option<u8> {
    let _ = reader.get_ref().set_read_timeout(Some(POLL));
    while !shared.stopping() {
        match reader.fill_buf() {
            Ok([]) => return None,
            Ok(buf) => return Some(buf[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
    None
}

/// A request as read: method, target, headers, body.
struct Incoming {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request line, headers and a Content-Length body.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Incoming> {
    let _ = reader.get_ref().set_read_timeout(Some(IO_TIMEOUT));
    let line = |reader: &mut BufReader<TcpStream>| -> Option<String> {
        let mut l = String::new();
        let n = reader.by_ref().take(16 * 1024).read_line(&mut l).ok()?;
        (n > 0 && l.ends_with('\n')).then(|| l.trim_end().to_string())
    };
    let request_line = line(reader)?;
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let l = line(reader)?;
        if l.is_empty() {
            break;
        }
        if headers.len() >= 100 {
            return None;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(Some(0))?;
    if len > MAX_BODY {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Incoming {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// A response to write.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    fn header(mut self, name: &str, value: impl ToString) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Status line, headers with the body's Content-Length, and the body (none to a HEAD).
    fn to_bytes(&self, head: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Other",
        };
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut out = out.into_bytes();
        if !head {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// An answer with a registry error body.
fn error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    Response::new(status)
        .header("Content-Type", "application/json")
        .body(body.to_string())
}

/// The value of `name` in a query string, percent-decoded.
fn json_null() -> serde_json::Value {
    serde_json::Value::Null
}

/// One page of a sorted list as distribution pages them: `n` entries after `last`, and a
/// `Link` to the next page when more follow.
fn page(
    path: &str,
    query: &str,
    key: &str,
    mut names: Vec<String>,
    name: serde_json::Value,
) -> Response {
    names.sort();
    names.dedup();
    let last = query_param(query, "last");
    let n = query_param(query, "n").and_then(|n| n.parse::<usize>().ok());
    let after: Vec<String> = names
        .into_iter()
        .filter(|x| last.as_ref().is_none_or(|l| x > l))
        .collect();
    let take = n.unwrap_or(after.len());
    let shown = &after[..take.min(after.len())];
    let mut body = serde_json::json!({ key: shown });
    if !name.is_null() {
        body["name"] = name;
    }
    let mut resp = Response::new(200).header("Content-Type", "application/json");
    if after.len() > take
        && let Some(l) = shown.last()
    {
        resp = resp.header("Link", format!("<{path}?last={l}&n={take}>; rel=\"next\""));
    }
    resp.body(body.to_string())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path under `/v2/` names.
enum Route<'a> {
    Ping,
    /// `/v2/<repo>/blobs/uploads/<id>` (`id` empty to start one).
    Upload(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    /// `/v2/<repo>/tags/list`.
    Tags(&'a str),
    Catalog,
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    if path == "/v2/" || path == "/v2" {
        return Route::Ping;
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::Unknown;
    };
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Route::Tags(repo);
    }
    if let Some(i) = rest.find("/blobs/uploads/") {
        return Route::Upload(&rest[..i], &rest[i + "/blobs/uploads/".len()..]);
    }
    if let Some(i) = rest.find("/blobs/") {
        return Route::Blob(&rest[..i], &rest[i + "/blobs/".len()..]);
    }
    if let Some(i) = rest.find("/manifests/") {
        return Route::Manifest(&rest[..i], &rest[i + "/manifests/".len()..]);
    }
    Route::Unknown
}

impl Store {
    /// The digest a tag or digest names in a repository.
    fn resolve(&self, repository: &str, reference: &str) -> Option<Digest> {
        match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => self
                .tags
                .get(&(repository.to_string(), reference.to_string()))
                .cloned(),
        }
    }

    /// Logs the request, applies the faults it matches, and answers it.
    fn handle(&mut self, req: &Incoming) -> Response {
        self.log.push(Request {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
        });
        let target = if req.query.is_empty() {
            req.path.clone()
        } else {
            format!("{}?{}", req.path, req.query)
        };
        let mut answer = None;
        let mut kept = Vec::new();
        for fault in std::mem::take(&mut self.faults) {
            let hit = fault.method == req.method && target.starts_with(&fault.prefix);
            match &fault.effect {
                Effect::LoseBlob(repository, digest) if hit => {
                    self.blobs.remove(&(repository.clone(), digest.clone()));
                }
                Effect::Answer(status, code) if hit && answer.is_none() => {
                    answer = Some(error(*status, code, "a fault scripted by the test"));
                }
                _ => kept.push(fault),
            }
        }
        self.faults = kept;
        if let Some(answer) = answer {
            return answer;
        }
        match (req.method.as_str(), route(&req.path)) {
            ("GET", Route::Ping) => Response::new(200)
                .header("Content-Type", "application/json")
                .header("Docker-Distribution-API-Version", "registry/2.0")
                .body("{}"),
            ("POST", Route::Upload(repo, "")) => self.start_upload(repo, req),
            ("PUT", Route::Upload(repo, id)) => self.finish_upload(repo, id, req),
            ("DELETE", Route::Upload(repo, id)) => {
                if self.uploads.get(id).is_some_and(|r| r == repo) {
                    self.uploads.remove(id);
                    Response::new(204)
                } else {
                    error(404, "BLOB_UPLOAD_UNKNOWN", "no such upload session")
                }
            }
            ("GET" | "HEAD", Route::Blob(repo, digest)) => {
                let found = digest
                    .parse::<Digest>()
                    .ok()
                    .and_then(|d| Some((self.blobs.get(&(repo.to_string(), d.clone()))?, d)));
                match found {
                    Some((bytes, d)) => Response::new(200)
                        .header("Content-Type", "application/octet-stream")
                        .header("Docker-Content-Digest", d)
                        .body(bytes.clone()),
                    None => error(404, "BLOB_UNKNOWN", "blob unknown to registry"),
                }
            }
            ("GET" | "HEAD", Route::Manifest(repo, reference)) => {
                let found = self
                    .resolve(repo, reference)
                    .and_then(|d| Some((self.manifests.get(&(repo.to_string(), d.clone()))?, d)));
                match found {
                    Some((m, d)) => Response::new(200)
                        .header("Content-Type", &m.media_type)
                        .header("Docker-Content-Digest", d)
                        .body(m.bytes.clone()),
                    None => error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
                }
            }
            ("PUT", Route::Manifest(repo, reference)) => self.put_manifest(repo, reference, req),
            ("GET", Route::Catalog) => {
                let names = self.tags.keys().map(|(r, _)| r.clone()).collect();
                page(&req.path, &req.query, "repositories", names, json_null())
            }
            ("GET", Route::Tags(repo)) => {
                let names: Vec<String> = (self.tags.keys())
                    .filter(|(r, _)| r == repo)
                    .map(|(_, t)| t.clone())
                    .collect();
                if names.is_empty() {
                    return error(404, "NAME_UNKNOWN", "repository name not known to registry");
                }
                page(&req.path, &req.query, "tags", names, repo.into())
            }
            (_, Route::Unknown | Route::Ping) => {
                error(404, "NAME_UNKNOWN", "not a registry API path")
            }
            _ => error(405, "UNSUPPORTED", "the operation is unsupported"),
        }
    }

    /// POST `/v2/<repo>/blobs/uploads/`, with `mount` and `from` a cross-repository mount.
    fn start_upload(&mut self, repo: &str, req: &Incoming) -> Response {
        let mount = query_param(&req.query, "mount").and_then(|d| d.parse::<Digest>().ok());
        let from = query_param(&req.query, "from");
        if let (Some(digest), Some(from), false) = (mount, from, self.refuse_mounts)
            && let Some(bytes) = self.blobs.get(&(from, digest.clone())).cloned()
        {
            self.blobs.insert((repo.to_string(), digest.clone()), bytes);
            return Response::new(201)
                .header("Location", format!("/v2/{repo}/blobs/{digest}"))
                .header("Docker-Content-Digest", digest);
        }
        self.next_upload += 1;
        let id = format!("u{}", self.next_upload);
        self.uploads.insert(id.clone(), repo.to_string());
        Response::new(202)
            .header(
                "Location",
                format!("/v2/{repo}/blobs/uploads/{id}?_state={id}"),
            )
            .header("Docker-Upload-UUID", &id)
            .header("Range", "0-0")
    }

    /// PUT `<location>&digest=D` with the whole blob.
    fn finish_upload(&mut self, repo: &str, id: &str, req: &Incoming) -> Response {
        if self.uploads.get(id).is_none_or(|r| r != repo) {
            return error(404, "BLOB_UPLOAD_UNKNOWN", "no such upload session");
        }
        let Some(digest) = query_param(&req.query, "digest").and_then(|d| d.parse::<Digest>().ok())
        else {
            return error(400, "DIGEST_INVALID", "no valid digest parameter");
        };
        if Digest::of(&req.body) != digest {
            return error(
                400,
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
            );
        }
        self.uploads.remove(id);
        self.blobs
            .insert((repo.to_string(), digest.clone()), req.body.clone());
        Response::new(201)
            .header("Location", format!("/v2/{repo}/blobs/{digest}"))
            .header("Docker-Content-Digest", digest)
    }

    /// PUT `/v2/<repo>/manifests/<tag or digest>`: refused when a blob (for an index: a
    /// child manifest) it lists is not in the repository.
    fn put_manifest(&mut self, repo: &str, reference: &str, req: &Incoming) -> Response {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return error(400, "MANIFEST_INVALID", "the manifest is not JSON");
        };
        let digests = |v: Option<&serde_json::Value>| -> Vec<serde_json::Value> {
            v.and_then(|v| v.as_array()).cloned().unwrap_or_default()
        };
        let (listed, children) = match json.get("manifests") {
            Some(m) => (digests(Some(m)), true),
            None => {
                let mut listed = digests(json.get("layers"));
                listed.retain(|l| {
                    let t = l.get("mediaType").and_then(|t| t.as_str()).unwrap_or("");
                    !t.contains("foreign") && !t.contains("nondistributable")
                });
                listed.extend(json.get("config").cloned());
                (listed, false)
            }
        };
        for descriptor in &listed {
            let Some(d) = descriptor
                .get("digest")
                .and_then(|d| d.as_str())
                .and_then(|d| d.parse::<Digest>().ok())
            else {
                return error(400, "MANIFEST_INVALID", "a descriptor has no valid digest");
            };
            let key = (repo.to_string(), d.clone());
            let there = if children {
                self.manifests.contains_key(&key)
            } else {
                self.blobs.contains_key(&key)
            };
            if !there {
                return error(
                    400,
                    "MANIFEST_BLOB_UNKNOWN",
                    &format!("blob unknown to registry: {d}"),
                );
            }
        }
        let digest = Digest::of(&req.body);
        if let Ok(d) = reference.parse::<Digest>()
            && d != digest
        {
            return error(
                400,
                "DIGEST_INVALID",
                "the manifest does not match its digest",
            );
        }
        let media_type = req
            .header("Content-Type")
            .or_else(|| json.get("mediaType").and_then(|m| m.as_str()))
            .unwrap_or("application/json")
            .to_string();
        self.manifests.insert(
            (repo.to_string(), digest.clone()),
            Stored {
                media_type,
                bytes: req.body.clone(),
            },
        );
        if reference.parse::<Digest>().is_err() {
            self.tags
                .insert((repo.to_string(), reference.to_string()), digest.clone());
        }
        Response::new(201)
            .header("Location", format!("/v2/{repo}/manifests/{digest}"))
            .header("Docker-Content-Digest", digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_registry_on_loopback_is_asked_in_plain_http_first() {
        let fake = Fake::start();
        let client = fake.client();
        assert_eq!(client.head_manifest(&fake.r("app:1")).unwrap(), None);
        assert_eq!(fake.tls_attempts(), 0, "no HTTPS attempt");
        assert_eq!(fake.count("GET", "/v2/"), 0, "no ping");
    }

    #[test]
    fn with_https_a_registry_on_loopback_is_never_asked_in_plain_http() {
        let fake = Fake::start();
        let client = Client::new(Options {
            timeout: CLIENT_TIMEOUT,
            https: true,
            ..Options::default()
        })
        .unwrap();
        let err = client.head_manifest(&fake.r("app:1")).unwrap_err();
        assert!(format!("{err:#}").contains("https:"), "{err:#}");
        assert!(fake.tls_attempts() >= 1, "HTTPS tried");
        assert_eq!(fake.requests(), [], "no plain HTTP request");
        // Nor when a document says the registry speaks plain HTTP.
        client.teach(fake.addr(), "http", "none");
        assert!(client.head_manifest(&fake.r("app:1")).is_err());
        assert_eq!(fake.requests(), []);
    }

    #[test]
    fn a_400_in_plain_http_is_tried_in_https_and_stands_when_https_gets_no_answer() {
        let fake = Fake::start();
        fake.fail_next("HEAD", "/v2/app/manifests/1", 400, "UNSUPPORTED");
        let err = fake.client().head_manifest(&fake.r("app:1")).unwrap_err();
        assert!(format!("{err:#}").contains("HTTP 400"), "{err:#}");
        assert_eq!(fake.tls_attempts(), 1, "HTTPS tried after the 400");
    }

    #[test]
    fn a_registry_that_cannot_be_reached_fails_its_next_requests_at_once() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let r = Reference::parse(&format!("127.0.0.1:{port}/app:1")).expect("a reference");
        let client = Fake::start().client();
        let first = client.head_manifest(&r).unwrap_err();
        let started = Instant::now();
        let second = client.head_manifest(&r).unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(format!("{first:#}"), format!("{second:#}"));
        assert!(
            format!("{first:#}").contains(&format!(
                "cannot reach the registry 127.0.0.1:{port}: http: HEAD http://127.0.0.1:{port}/v2/app/manifests/1"
            )),
            "{first:#}"
        );
    }

    #[test]
    fn a_scheme_taught_is_used_at_once_and_plain_http_only_where_it_may_be() {
        let fake = Fake::start();
        let client = fake.client();
        client.teach(fake.addr(), "https", "none");
        client.teach("r.example", "http", "none");
        assert_eq!(
            client.learnt(),
            [(fake.addr().to_string(), "https", "none")],
            "plain HTTP beyond loopback is not taken in"
        );
        let fake = Fake::start();
        let client = fake.client();
        client.teach(fake.addr(), "http", "basic");
        assert_eq!(client.head_manifest(&fake.r("app:1")).unwrap(), None);
        assert_eq!(
            client.learnt(),
            [(fake.addr().to_string(), "http", "basic")]
        );
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            query_param("mount=sha256%3Aab&from=x%2Fy", "mount").as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(
            query_param("mount=sha256%3Aab&from=x%2Fy", "from").as_deref(),
            Some("x/y")
        );
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(percent_decode("100%"), "100%");
    }
}
