//! The HTTP transport against a hostile registry: rate limits, server errors, dropped
//! connections, slow answers, lying digests, oversized manifests, and non-idempotent
//! requests. A real registry does not misbehave on demand, so these tests run the binary
//! against a tiny scripted HTTP/1.1 server on loopback (first half of this file) and
//! check its exit status, its messages and the requests the server saw (second half).

mod common;

use image_rebase::oci::digest::Digest;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The scripted server
// ---------------------------------------------------------------------------------------

/// At most this many connections are accepted, ...
const MAX_CONNECTIONS: usize = 200;
/// ... each serving at most this many requests, ...
const MAX_REQUESTS_PER_CONNECTION: usize = 200;
/// ... and nothing is served after this long.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);
/// How often blocked reads, writes and sleeps look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Largest request body read.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// One request as the server read it.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    /// Path and query as sent, e.g. `/v2/app/manifests/1`.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The connection that carried it, numbered from 1 in accept order.
    conn: usize,
    at: Instant,
}

impl Req {
    /// (method, target), to match on in scripts.
    fn route(&self) -> (&str, &str) {
        (&self.method, &self.target)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
enum Action {
    /// Answer with this status, headers and body (Content-Length is added unless given;
    /// no body is sent to a HEAD). `Connection: close` among the headers closes the
    /// connection after the answer.
    Respond(u16, Vec<(String, String)>, Vec<u8>),
    /// Close the connection without answering.
    Close,
    /// Write these bytes (not necessarily HTTP), then close the connection.
    Raw(Vec<u8>),
    /// Sleep, then do the action.
    Sleep(Duration, Box<Action>),
    /// Send a 200 with these headers, then `total` filler bytes (spaces), counting what
    /// the socket accepted, then close. The body is delimited by the close unless the
    /// headers give a Content-Length.
    Stream(Vec<(String, String)>, u64),
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Action {
    Action::Respond(status, owned(headers), body.into())
}

fn after(ms: u64, action: Action) -> Action {
    Action::Sleep(Duration::from_millis(ms), Box::new(action))
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Maps a request and how many times its method and target have been seen (this one
/// included, from 1) to what the server does.
type Script = dyn Fn(&Req, usize) -> Action + Send + Sync;

struct Shared {
    script: Box<Script>,
    requests: Mutex<Vec<Req>>,
    /// Connections that did not start with an HTTP request (TLS ClientHellos).
    not_http: AtomicUsize,
    /// Body bytes the sockets accepted from `Action::Stream`.
    streamed: AtomicU64,
    stop: AtomicBool,
    started: Instant,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.started.elapsed() > SERVER_LIFETIME
    }
}

/// A scripted HTTP/1.1 server on 127.0.0.1; stopped (every thread joined) on drop.
struct Server {
    /// `127.0.0.1:PORT`.
    addr: String,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(script: impl Fn(&Req, usize) -> Action + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Shared {
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
            not_http: AtomicUsize::new(0),
            streamed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            let mut connections = Vec::new();
            for (n, stream) in listener.incoming().take(MAX_CONNECTIONS).enumerate() {
                if s.stopping() {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let s = s.clone();
                connections.push(std::thread::spawn(move || serve(&s, stream, n + 1)));
            }
            for c in connections {
                let _ = c.join();
            }
        });
        Server {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT/reference`.
    fn r(&self, reference: &str) -> String {
        format!("{}/{reference}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests with this method and target.
    fn hits(&self, method: &str, target: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.target == target)
            .collect()
    }

    fn count(&self, method: &str, target: &str) -> usize {
        self.hits(method, target).len()
    }

    fn count_method(&self, method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }

    fn not_http(&self) -> usize {
        self.shared.not_http.load(Ordering::SeqCst)
    }

    fn streamed(&self) -> u64 {
        self.shared.streamed.load(Ordering::SeqCst)
    }

    /// The binary sent no ping (its first request taught it the scheme), in plain HTTP
    /// with no TLS attempt.
    fn assert_no_ping(&self) {
        assert_eq!(
            self.not_http(),
            0,
            "no https attempt: {:#?}",
            self.requests()
        );
        assert_eq!(self.count("GET", "/v2/"), 0, "{:#?}", self.requests());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then joins every connection thread; those poll
        // the stop flag at least every POLL.
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Serves one connection: requests one after another (keep-alive) until the client
/// closes, an action closes, or the server stops.
fn serve(shared: &Shared, stream: TcpStream, conn: usize) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut stream = stream;
    let _ = stream.set_write_timeout(Some(POLL));
    let mut reader = BufReader::new(read_half);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some(first) = wait_for_data(shared, &mut reader) else {
            return;
        };
        if first == 0x16 {
            // A TLS handshake record: this server speaks plain HTTP only.
            shared.not_http.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let Some(req) = read_request(&mut reader, conn) else {
            return;
        };
        let nth = {
            let mut log = shared.requests.lock().unwrap();
            log.push(req.clone());
            log.iter()
                .filter(|r| r.method == req.method && r.target == req.target)
                .count()
        };
        let action = (shared.script)(&req, nth);
        if !perform(shared, &mut stream, &req, action) {
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

/// Reads a request line, headers and a Content-Length body.
fn read_request(reader: &mut BufReader<TcpStream>, conn: usize) -> Option<Req> {
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)));
    let line = |reader: &mut BufReader<TcpStream>| -> Option<String> {
        let mut l = String::new();
        let n = reader.by_ref().take(16 * 1024).read_line(&mut l).ok()?;
        (n > 0 && l.ends_with('\n')).then(|| l.trim_end().to_string())
    };
    let request_line = line(reader)?;
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
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
    if len > MAX_REQUEST_BODY {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Req {
        method,
        target,
        headers,
        body,
        conn,
        at: Instant::now(),
    })
}

/// Does the action; false when the connection is to be closed.
fn perform(shared: &Shared, stream: &mut TcpStream, req: &Req, action: Action) -> bool {
    match action {
        Action::Respond(status, headers, body) => {
            let close = headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("Connection") && v.eq_ignore_ascii_case("close")
            });
            let mut out = head(status, &headers, Some(body.len() as u64));
            if req.method != "HEAD" {
                out.extend_from_slice(&body);
            }
            write_patiently(shared, stream, &out) == out.len() && !close
        }
        Action::Close => false,
        Action::Raw(bytes) => {
            write_patiently(shared, stream, &bytes);
            false
        }
        Action::Sleep(duration, then) => {
            let until = Instant::now() + duration;
            while Instant::now() < until {
                if shared.stopping() {
                    return false;
                }
                std::thread::sleep(POLL.min(until - Instant::now()));
            }
            perform(shared, stream, req, *then)
        }
        Action::Stream(headers, total) => {
            let head = head(200, &headers, None);
            if write_patiently(shared, stream, &head) < head.len() {
                return false;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0u64;
            while sent < total {
                let n = (total - sent).min(chunk.len() as u64) as usize;
                let written = write_patiently(shared, stream, &chunk[..n]);
                shared.streamed.fetch_add(written as u64, Ordering::SeqCst);
                sent += written as u64;
                if written < n {
                    break;
                }
            }
            false
        }
    }
}

/// Status line and headers; a Content-Length is added when `len` is given and the
/// headers have none.
fn head(status: u16, headers: &[(String, String)], len: Option<u64>) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = len
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
    {
        out.push_str(&format!("Content-Length: {len}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Writes `bytes` unless the peer goes away or the server stops; the number of bytes
/// the socket accepted (all of them, or the write failed).
fn write_patiently(shared: &Shared, stream: &mut TcpStream, bytes: &[u8]) -> usize {
    let mut done = 0;
    while done < bytes.len() && !shared.stopping() {
        match stream.write(&bytes[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    done
}

/// What a registry answers to anything a test does not script: 200 to the ping, 404
/// with a registry error body to the rest.
fn fallback(req: &Req) -> Action {
    if req.target == "/v2/" {
        return respond(
            200,
            &[
                ("Content-Type", "application/json"),
                ("Docker-Distribution-API-Version", "registry/2.0"),
            ],
            "{}",
        );
    }
    respond(
        404,
        &[("Content-Type", "application/json")],
        r#"{"errors":[{"code":"NAME_UNKNOWN","message":"not scripted"}]}"#,
    )
}

// ---------------------------------------------------------------------------------------
// Running the binary, and fixtures
// ---------------------------------------------------------------------------------------

/// The binary never gets longer than this in any test.
const RUN_LIMIT: Duration = Duration::from_secs(90);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// Runs the binary with `args` and stdin (empty when `None`), killing it after RUN_LIMIT.
fn image_rebase(args: &[&str], stdin: Option<&[u8]>) -> Run {
    image_rebase_env(args, stdin, &[])
}

/// `image_rebase` with extra environment variables.
fn image_rebase_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut child = common::spawn(args, stdin, env);
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("image-rebase {args:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    }
}

impl Run {
    /// Exit 0; the document on stdout.
    fn document(&self) -> Value {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).expect("a JSON document on stdout")
    }

    /// Exit 2, nothing on stdout, and an error on stderr holding every needle.
    fn assert_error(&self, needles: &[&str]) {
        assert_eq!(
            self.code,
            Some(2),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "", "nothing on stdout after an error");
        let error = self
            .stderr
            .lines()
            .find(|l| l.starts_with("image-rebase: error: "))
            .unwrap_or_else(|| panic!("an error line in: {}", self.stderr));
        for n in needles {
            assert!(error.contains(n), "{n:?} not in: {error}");
        }
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The bytes of a valid minimal OCI manifest.
fn manifest() -> Vec<u8> {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},"layers":[]}}"#,
        Digest::of(config),
        config.len()
    )
    .into_bytes()
}

/// A registry's 200 to a manifest GET, with its true digest.
fn manifest_ok(bytes: &[u8]) -> Action {
    let digest = Digest::of(bytes).to_string();
    respond(
        200,
        &[
            ("Content-Type", OCI_MANIFEST),
            ("Docker-Content-Digest", &digest),
        ],
        bytes,
    )
}

/// The milliseconds between two requests.
fn gap(a: &Req, b: &Req) -> u128 {
    b.at.duration_since(a.at).as_millis()
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

const APP_1: &str = "/v2/app/manifests/1";

#[test]
fn rate_limits_are_waited_out_as_retry_after_asks() {
    let m = manifest();
    let server = Server::start(move |req, n| match req.route() {
        ("GET", APP_1) if n <= 2 => respond(429, &[("Retry-After", "1")], ""),
        ("GET", APP_1) => manifest_ok(&m),
        _ => fallback(req),
    });
    let run = image_rebase(&["-v", "fetch-manifest", &server.r("app:1")], None);
    let doc = run.document();
    assert_eq!(doc["image"]["digest"], Digest::of(&manifest()).to_string());

    server.assert_no_ping();
    let gets = server.hits("GET", APP_1);
    assert_eq!(gets.len(), 3, "{gets:#?}");
    let accept = gets[0].header("Accept").unwrap_or_default();
    for t in [
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.v2+json",
    ] {
        assert!(accept.contains(t), "{t} not in Accept: {accept}");
    }
    for (i, line) in ["retry 1 of 3", "retry 2 of 3"].iter().enumerate() {
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains("HTTP 429") && l.contains(line) && l.contains("in 1.00s")),
            "retry line {i} missing from: {}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("retry 3 of 3"), "{}", run.stderr);
    // Retry-After: 1 honoured each time (measured at the server, a little slack for
    // clock granularity), and in all.
    assert!(gap(&gets[0], &gets[1]) >= 950, "{gets:#?}");
    assert!(gap(&gets[1], &gets[2]) >= 950, "{gets:#?}");
    assert!(
        run.elapsed >= Duration::from_millis(1900),
        "{:?}",
        run.elapsed
    );
    eprintln!("429 x2 then 200: {:?}", run.elapsed);
}

#[test]
fn a_503_is_retried_once_then_succeeds() {
    let m = manifest();
    let server = Server::start(move |req, n| match req.route() {
        ("GET", APP_1) if n == 1 => respond(503, &[], "busy"),
        ("GET", APP_1) => manifest_ok(&m),
        _ => fallback(req),
    });
    let run = image_rebase(&["-v", "fetch-manifest", &server.r("app:1")], None);
    let doc = run.document();
    assert_eq!(doc["image"]["digest"], Digest::of(&manifest()).to_string());
    assert_eq!(doc["image"]["size"], manifest().len());
    server.assert_no_ping();
    assert_eq!(server.count("GET", APP_1), 2);
    assert!(
        run.stderr.contains("HTTP 503; retry 1 of 3"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("retry 2 of 3"), "{}", run.stderr);
}

#[test]
fn a_500_forever_fails_after_four_attempts() {
    let server = Server::start(|req, _| match req.route() {
        ("GET", APP_1) => respond(500, &[], "broken"),
        _ => fallback(req),
    });
    let run = image_rebase(&["fetch-manifest", &server.r("app:1")], None);
    run.assert_error(&[
        &format!("fetching manifest {}", server.r("app:1")),
        "HTTP 500",
    ]);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    server.assert_no_ping();
    assert_eq!(server.count("GET", APP_1), 4);
    // Backoff without Retry-After: 0.25 s, 0.5 s, 1 s.
    let gets = server.hits("GET", APP_1);
    assert!(gap(&gets[0], &gets[3]) >= 1700, "{gets:#?}");
    eprintln!("500 forever: {:?}", run.elapsed);
}

#[test]
fn a_connection_dropped_without_an_answer_is_retried() {
    // The first request, on a fresh connection: plain HTTP got no answer, so HTTPS is
    // tried, then plain HTTP again. A later attempt, on the connection kept alive since
    // a 503 (ureq itself may retry on a reused connection), is retried in plain HTTP.
    for reused in [false, true] {
        let m = manifest();
        let server = Server::start(move |req, n| match req.route() {
            ("GET", APP_1) if reused && n == 1 => respond(503, &[], ""),
            ("GET", APP_1) if n == 1 + usize::from(reused) => Action::Close,
            ("GET", APP_1) => manifest_ok(&m),
            _ => fallback(req),
        });
        let run = image_rebase(&["-v", "fetch-manifest", &server.r("app:1")], None);
        let doc = run.document();
        assert_eq!(doc["image"]["digest"], Digest::of(&manifest()).to_string());
        assert_eq!(server.count("GET", "/v2/"), 0, "no ping");
        let gets = server.hits("GET", APP_1);
        let dropped = usize::from(reused);
        assert_eq!(gets.len(), 2 + dropped, "reused={reused}: {gets:#?}");
        assert_ne!(
            gets[dropped].conn,
            gets[dropped + 1].conn,
            "a new connection"
        );
        assert_eq!(server.not_http(), usize::from(!reused), "{}", run.stderr);
        if reused {
            assert_eq!(
                gets[0].conn, gets[1].conn,
                "the 503's connection was reused"
            );
        }
    }
}

#[test]
fn a_connection_reset_in_the_middle_of_a_body_is_retried() {
    // The first answer to the manifest GET and to the config GET breaks off half-way
    // through its body; the second is whole.
    let m = manifest();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_path = format!("/v2/app/blobs/{}", Digest::of(config));
    let cut = |bytes: &[u8]| {
        let len = bytes.len().to_string();
        respond(
            200,
            &[("Content-Length", &len), ("Connection", "close")],
            &bytes[..bytes.len() / 2],
        )
    };
    let (m2, path) = (m.clone(), config_path.clone());
    let server = Server::start(move |req, n| match req.route() {
        ("GET", APP_1) if n == 1 => cut(&m2),
        ("GET", APP_1) => manifest_ok(&m2),
        ("GET", p) if p == path && n == 1 => cut(config),
        ("GET", p) if p == path => respond(200, &[], config.as_slice()),
        _ => fallback(req),
    });
    let run = image_rebase(&["-v", "fetch-manifest", &server.r("app:1")], None);
    let doc = run.document();
    assert_eq!(doc["image"]["digest"], Digest::of(&m).to_string());
    assert_eq!(server.count("GET", APP_1), 2);
    assert!(run.stderr.contains("broke while reading"), "{}", run.stderr);
    let run = image_rebase(&["fetch-config"], Some(run.stdout.as_bytes()));
    let doc = run.document();
    assert_eq!(doc["image"]["config"]["architecture"], "amd64");
    assert_eq!(server.count("GET", &config_path), 2);
}

#[test]
fn an_answer_that_is_not_http_is_not_retried() {
    let server = Server::start(|req, _| match req.route() {
        ("GET", APP_1) => Action::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        _ => fallback(req),
    });
    let run = image_rebase(&["-v", "fetch-manifest", &server.r("app:1")], None);
    run.assert_error(&["the answer is not valid HTTP"]);
    assert_eq!(
        server.count("GET", APP_1),
        1,
        "a broken answer is not retried"
    );
    assert!(!run.stderr.contains("retry"), "{}", run.stderr);
}

/// A registry that answers the manifest GET only after 3 s, every time, to a binary run
/// with `--timeout 1`; with `reused`, the first GET is answered 503 at once, so that the
/// next one goes on a connection kept alive.
fn slow_registry(reused: bool) -> (Server, Run) {
    let m = manifest();
    let server = Server::start(move |req, n| match req.route() {
        ("GET", APP_1) if reused && n == 1 => respond(503, &[], ""),
        ("GET", APP_1) => after(3000, manifest_ok(&m)),
        _ => fallback(req),
    });
    let run = image_rebase(
        &["--timeout", "1", "-v", "fetch-manifest", &server.r("app:1")],
        None,
    );
    (server, run)
}

fn assert_timed_out(server: &Server, run: &Run, most: usize) {
    let attempts = server.count("GET", APP_1);
    eprintln!(
        "slow registry: {attempts} attempts, exit {:?} after {:?}",
        run.code, run.elapsed
    );
    run.assert_error(&["timed out"]);
    assert!(run.elapsed < Duration::from_secs(20), "{:?}", run.elapsed);
    assert_eq!(server.count("GET", "/v2/"), 0, "no ping");
    assert!((1..=most).contains(&attempts), "{attempts} attempts");
}

#[test]
fn a_registry_slower_than_the_timeout_fails_in_bounded_time() {
    // The second GET goes on the connection kept alive since the first, as it does
    // against any real registry. (ureq 2.12 clears the socket timeouts of a connection
    // it returns to its pool and sets the read timeout again only for the body, so the
    // wait for the answer's status line on a reused connection has no timeout.)
    let (server, run) = slow_registry(true);
    let gets = server.hits("GET", APP_1);
    assert_eq!(gets[0].conn, gets[1].conn, "reused");
    // The scheme answered: the timeouts are retried in plain HTTP, never tried in HTTPS.
    assert_timed_out(&server, &run, 4);
    assert_eq!(server.not_http(), 0);
}

#[test]
fn a_registry_slower_than_the_timeout_on_a_new_connection_fails_in_bounded_time() {
    let (server, run) = slow_registry(false);
    // Once in plain HTTP, once in HTTPS (no answer either), then plain HTTP with retries.
    assert_timed_out(&server, &run, 5);
    assert_eq!(server.count("GET", APP_1), 5, "retried after each timeout");
    assert_eq!(server.not_http(), 1);
    assert!(run.stderr.contains("retry 3 of 3"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// Verification and limits
// ---------------------------------------------------------------------------------------

#[test]
fn a_manifest_that_does_not_match_the_digest_asked_for_is_refused() {
    let other = Digest::of(b"some other manifest");
    let target = format!("/v2/app/manifests/{other}");
    let m = manifest();
    let (t, o) = (target.clone(), other.clone());
    let server = Server::start(move |req, _| {
        if req.method == "GET" && req.target == t {
            // Served with the header the client asked for, as a lying cache might.
            respond(
                200,
                &[
                    ("Content-Type", OCI_MANIFEST),
                    ("Docker-Content-Digest", o.as_str()),
                ],
                m.clone(),
            )
        } else {
            fallback(req)
        }
    });
    let run = image_rebase(
        &["fetch-manifest", &server.r(&format!("app@{other}"))],
        None,
    );
    run.assert_error(&[
        "content does not match its digest",
        other.as_str(),
        Digest::of(&manifest()).as_str(),
    ]);
    assert_eq!(server.count("GET", &target), 1, "not retried");
}

#[test]
fn a_docker_content_digest_that_disagrees_with_the_bytes_is_refused() {
    let claimed = Digest::of(b"what the registry claims");
    let m = manifest();
    let c = claimed.clone();
    let server = Server::start(move |req, _| match req.route() {
        ("GET", APP_1) => respond(
            200,
            &[
                ("Content-Type", OCI_MANIFEST),
                ("Docker-Content-Digest", c.as_str()),
            ],
            m.clone(),
        ),
        _ => fallback(req),
    });
    let run = image_rebase(&["fetch-manifest", &server.r("app:1")], None);
    run.assert_error(&[
        claimed.as_str(),
        &format!("hash to {}", Digest::of(&manifest())),
    ]);
    assert_eq!(server.count("GET", APP_1), 1, "not retried");
}

const MAX_MANIFEST: usize = 4 * 1024 * 1024;

#[test]
fn manifests_over_4_mib_are_refused_without_reading_them_whole() {
    // Exactly 4 MiB (the manifest padded with JSON whitespace) is accepted.
    let mut at_limit = manifest();
    at_limit.resize(MAX_MANIFEST, b' ');
    let mut over = at_limit.clone();
    over.push(b' ');
    let server = Server::start(move |req, _| match req.route() {
        ("GET", "/v2/app/manifests/at-limit") => manifest_ok(&at_limit),
        ("GET", "/v2/app/manifests/over") => manifest_ok(&over),
        // Announces 1 GiB, and would send it.
        ("GET", "/v2/app/manifests/huge") => Action::Stream(
            owned(&[
                ("Content-Type", OCI_MANIFEST),
                ("Content-Length", "1073741824"),
            ]),
            1 << 30,
        ),
        // 1 GiB without a Content-Length: the body ends when the connection does.
        ("GET", "/v2/app/manifests/endless") => {
            Action::Stream(owned(&[("Content-Type", OCI_MANIFEST)]), 1 << 30)
        }
        _ => fallback(req),
    });

    let doc = image_rebase(&["fetch-manifest", &server.r("app:at-limit")], None).document();
    assert_eq!(doc["image"]["size"], MAX_MANIFEST);

    let run = image_rebase(&["fetch-manifest", &server.r("app:over")], None);
    run.assert_error(&[&format!(
        "the manifest is {} bytes, more than the {MAX_MANIFEST} bytes accepted",
        MAX_MANIFEST + 1
    )]);

    let streamed = server.streamed();
    let run = image_rebase(&["fetch-manifest", &server.r("app:huge")], None);
    run.assert_error(&["the manifest is 1073741824 bytes, more than the 4194304 bytes accepted"]);
    // Refused on the header: at most what the socket buffers took was sent.
    let huge = server.streamed() - streamed;
    assert!(huge < 64 << 20, "{huge} bytes were sent");

    let streamed = server.streamed();
    let run = image_rebase(&["fetch-manifest", &server.r("app:endless")], None);
    run.assert_error(&["the manifest is more than the 4194304 bytes accepted"]);
    let endless = server.streamed() - streamed;
    assert!(endless < 64 << 20, "{endless} bytes were sent");
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);

    for tag in ["at-limit", "over", "huge", "endless"] {
        let target = format!("/v2/app/manifests/{tag}");
        assert_eq!(server.count("GET", &target), 1, "{tag} not retried");
    }
    eprintln!("bytes sent before the refusal: {huge} (Content-Length), {endless} (endless)");
}

// ---------------------------------------------------------------------------------------
// Registry errors in plain words
// ---------------------------------------------------------------------------------------

const TOO_MANY: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#;

#[test]
fn a_rate_limit_that_never_ends_is_explained() {
    let server = Server::start(|req, _| match req.route() {
        ("GET", APP_1) => respond(429, &[("Content-Type", "application/json")], TOO_MANY),
        _ => fallback(req),
    });
    let run = image_rebase(&["fetch-manifest", &server.r("app:1")], None);
    run.assert_error(&[
        "HTTP 429",
        "TOOMANYREQUESTS: slow down",
        "the registry is rate limiting these requests; try again later",
    ]);
    assert_eq!(server.count("GET", APP_1), 4);
}

#[test]
fn a_retry_after_longer_than_the_retries_may_wait_is_not_waited_for() {
    let server = Server::start(|req, _| match req.route() {
        ("GET", APP_1) => respond(
            429,
            &[
                ("Retry-After", "3600"),
                ("Content-Type", "application/json"),
            ],
            TOO_MANY,
        ),
        _ => fallback(req),
    });
    let run = image_rebase(&["fetch-manifest", &server.r("app:1")], None);
    run.assert_error(&["HTTP 429", "TOOMANYREQUESTS"]);
    assert_eq!(server.count("GET", APP_1), 1);
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}

// ---------------------------------------------------------------------------------------
// Non-idempotent requests
// ---------------------------------------------------------------------------------------

/// A put-manifest document: the result (target `app:rebased`) has one layer, listed by
/// the new base `base:v2` on the same registry, so it is to be mounted from there.
struct PushFixture {
    doc: Vec<u8>,
    layer: Digest,
    config: Digest,
    manifest: Vec<u8>,
}

fn push_fixture(registry: &str) -> PushFixture {
    let layer = Digest::of(b"layer");
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"diff")]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(&config_bytes), "size": config_bytes.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": 5}],
    });
    // The image is on another layer (its old base's): the new base's layer has to be
    // mounted into its repository.
    let mut old_manifest = manifest.clone();
    old_manifest["layers"][0]["digest"] = json!(Digest::of(b"old layer"));
    let section = |repository: &str, tag: &str| {
        let manifest = if repository == "app" {
            &old_manifest
        } else {
            &manifest
        };
        let bytes = serde_json::to_vec(manifest).unwrap();
        json!({
            "reference": format!("{registry}/{repository}:{tag}"),
            "registry": registry, "repository": repository, "tag": tag,
            "digest": Digest::of(&bytes), "media_type": OCI_MANIFEST, "size": bytes.len(),
            "manifest": manifest, "config": config,
        })
    };
    let doc = json!({
        "image_rebase": 1,
        "image": section("app", "1"),
        "new_base": section("base", "v2"),
        "result": {
            "target": {"registry": registry, "repository": "app", "tag": "rebased"},
            "media_type": OCI_MANIFEST,
            "manifest": manifest,
            "config": config,
        },
    });
    // What put-manifest will write: the config and manifest as splice's finalize does.
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    PushFixture {
        doc: serde_json::to_vec(&doc).unwrap(),
        layer,
        config: Digest::of(&config_bytes),
        manifest: manifest_bytes,
    }
}

#[test]
fn a_blob_mount_answered_503_is_not_retried() {
    let server = Server::start(|req, _| match req.route() {
        ("POST", t) if t.starts_with("/v2/app/blobs/uploads/") => respond(503, &[], "busy"),
        _ => fallback(req),
    });
    let f = push_fixture(&server.addr);
    let run = image_rebase(&["-v", "put-manifest"], Some(&f.doc));
    run.assert_error(&[
        &format!("making layer {} present in {}", f.layer, server.r("app")),
        "the registry refused the blob mount: HTTP 503",
    ]);
    server.assert_no_ping();
    let mount = format!("/v2/app/blobs/uploads/?mount={}&from=base", f.layer);
    assert_eq!(server.count("POST", &mount), 1, "{:#?}", server.requests());
    // The config upload's POST went out with the mount, once too.
    assert_eq!(server.count("POST", "/v2/app/blobs/uploads/"), 1);
    assert_eq!(server.count_method("POST"), 2);
    assert!(!run.stderr.contains("retry"), "{}", run.stderr);
    // Before it: the target tag was checked; the blob is mounted without a HEAD first
    // (a mount of a blob the repository has succeeds as well).
    assert_eq!(server.count("HEAD", "/v2/app/manifests/rebased"), 1);
    assert_eq!(
        server.count("HEAD", &format!("/v2/app/blobs/{}", f.layer)),
        0
    );
    assert_eq!(server.count_method("PUT"), 0, "nothing written");
}

#[test]
fn an_upload_start_answered_503_is_not_retried_but_a_manifest_put_is() {
    // The layer mounts; the config upload's POST fails once: no retry.
    // The digests do not depend on the registry, which is not known yet.
    let f = push_fixture("127.0.0.1:0");
    let (layer, config) = (f.layer.to_string(), f.config.to_string());
    let server = Server::start(move |req, n| {
        let blob = req.target.strip_prefix("/v2/app/blobs/");
        match (req.method.as_str(), blob) {
            ("POST", Some(m)) if m.starts_with(&format!("uploads/?mount={layer}")) => {
                respond(201, &[], "")
            }
            ("POST", Some("uploads/")) if n == 1 => respond(503, &[], "busy"),
            ("POST", Some("uploads/")) => respond(
                202,
                &[("Location", "/v2/app/blobs/uploads/u1?_state=s")],
                "",
            ),
            ("PUT", Some(u)) if u.starts_with("uploads/u1?") && u.ends_with(&config) => {
                respond(201, &[("Docker-Content-Digest", &config)], "")
            }
            ("PUT", None) if req.target == "/v2/app/manifests/rebased" => {
                if n == 1 {
                    respond(503, &[], "busy")
                } else {
                    let d = Digest::of(&req.body).to_string();
                    respond(201, &[("Docker-Content-Digest", &d)], "")
                }
            }
            _ => fallback(req),
        }
    });
    let f = push_fixture(&server.addr);

    let run = image_rebase(&["-v", "put-manifest"], Some(&f.doc));
    run.assert_error(&[
        &format!("uploading config {} to {}", f.config, server.r("app")),
        "the registry refused to start an upload: HTTP 503",
    ]);
    assert_eq!(server.count("POST", "/v2/app/blobs/uploads/"), 1);
    assert_eq!(
        server.count_method("POST"),
        2,
        "the mount, then the upload's start"
    );
    assert_eq!(server.count_method("PUT"), 0, "the manifest is put last");

    // Run again: the upload goes through; the manifest PUT gets a 503, then a 201.
    let run = image_rebase(&["-v", "put-manifest"], Some(&f.doc));
    let doc = run.document();
    assert_eq!(doc["pushed"]["digest"], Digest::of(&f.manifest).to_string());
    let puts = server.hits("PUT", "/v2/app/manifests/rebased");
    assert_eq!(puts.len(), 2, "a manifest PUT is idempotent: retried");
    assert_eq!(puts[0].body, f.manifest);
    assert_eq!(puts[1].body, f.manifest);
    assert_eq!(
        server.count("POST", "/v2/app/blobs/uploads/"),
        2,
        "the upload's start is not retried within a run"
    );
    assert!(
        run.stderr.contains("HTTP 503; retry 1 of 3"),
        "{}",
        run.stderr
    );
}

/// A registry that takes every blob and closes the connection on every manifest PUT.
fn closes_on_manifest_put() -> Server {
    let f = push_fixture("127.0.0.1:0");
    let (layer, config) = (f.layer.to_string(), f.config.to_string());
    Server::start(move |req, _| {
        let blob = req.target.strip_prefix("/v2/app/blobs/");
        match (req.method.as_str(), blob) {
            ("POST", Some(m)) if m.starts_with(&format!("uploads/?mount={layer}")) => {
                respond(201, &[], "")
            }
            ("POST", Some("uploads/")) => respond(
                202,
                &[("Location", "/v2/app/blobs/uploads/u1?_state=s")],
                "",
            ),
            ("PUT", Some(u)) if u.ends_with(&config) => {
                respond(201, &[("Docker-Content-Digest", &config)], "")
            }
            ("PUT", None) => Action::Close,
            _ => fallback(req),
        }
    })
}

#[test]
fn a_connection_closed_without_an_answer_is_said_once_in_plain_words() {
    let server = closes_on_manifest_put();
    let f = push_fixture(&server.addr);
    let run = image_rebase(&["put-manifest"], Some(&f.doc));
    run.assert_error(&[
        &format!("putting manifest {}", server.r("app:rebased")),
        "the connection broke before the registry answered (Unexpected EOF)",
    ]);
    assert!(!run.stderr.contains("Network Error"), "{}", run.stderr);
    assert_eq!(server.count("PUT", "/v2/app/manifests/rebased"), 4);
}

#[test]
fn credentials_never_follow_a_location_to_another_host() {
    // The upload's Location points at another server: the password must not go there.
    let other = Server::start(|_, _| respond(201, &[], ""));
    let elsewhere = format!("http://{}/stolen?_state=s", other.addr);
    let server = Server::start(move |req, _| {
        if req.header("Authorization").is_none() {
            return respond(401, &[("WWW-Authenticate", "Basic realm=\"test\"")], "");
        }
        match (req.method.as_str(), req.target.as_str()) {
            ("POST", t) if t.contains("mount=") => respond(201, &[], ""),
            ("POST", "/v2/app/blobs/uploads/") => {
                respond(202, &[("Location", elsewhere.as_str())], "")
            }
            _ => fallback(req),
        }
    });
    let f = push_fixture(&server.addr);
    let run = image_rebase_env(
        &["put-manifest"],
        Some(&f.doc),
        &[
            ("IMAGE_REBASE_USERNAME", "alice"),
            ("IMAGE_REBASE_PASSWORD", "s3cret-pw"),
        ],
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.header("Authorization").is_some()),
        "the registry itself got the credentials"
    );
    let stolen = other.requests();
    assert!(!stolen.is_empty(), "the upload went to the Location given");
    for r in &stolen {
        assert!(
            r.header("Authorization").is_none(),
            "credentials went to another host: {:?}",
            r.headers
        );
    }
    assert!(!run.stderr.contains("s3cret-pw") && !run.stdout.contains("s3cret-pw"));
}
