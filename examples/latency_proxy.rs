//! A latency proxy for scripts/bench-latency.sh (a cargo example: `cargo build --release
//! --example latency_proxy`; std only). This sandbox's kernel has no `netem`, so a remote
//! registry is modelled in user space: a TCP proxy on 127.0.0.1 in front of a loopback
//! registry that
//!
//! - delays each direction by RTT/2: every chunk read is queued with the time it may leave
//!   and written in order when that time comes (one queue and one writer per direction, so
//!   a slow direction never holds up the other);
//! - charges one RTT per new connection (the TCP handshake): the client's first bytes leave
//!   no earlier than one RTT after the connection was accepted, so a request on a new
//!   connection costs 2 RTTs, on a kept-alive one 1 RTT, and a TLS 1.3 handshake its real
//!   round trip on top (TLS passes through untouched);
//! - logs, one line per event, to a file: `open ID T PEER`; `req ID T METHOD PATH` (a
//!   chunk from the client that starts with an HTTP/1 request line) or `req ID T - N bytes`
//!   (the first chunk the client sends after an answer: a TLS flight, such as a request);
//!   `close ID T UP DOWN` (bytes client->upstream and upstream->client). T is seconds since
//!   the Unix epoch, millisecond precision; T of `req` is when the client sent it.
//!
//! Usage:
//!
//! ```text
//! latency_proxy --upstream 127.0.0.1:PORT --rtt-ms N [--listen PORT] [--port-file FILE]
//!               [--log FILE] [--max-conns N] [--max-seconds S]
//! ```
//!
//! Bounded: at most --max-conns (default 512) connections at once (more are closed at
//! once, logged `refused`), a life of --max-seconds (default 3600); it exits when killed
//! (SIGTERM's default action) and when its parent process goes away. Loopback only: it
//! listens on 127.0.0.1 and refuses an upstream that is not loopback. The chosen port is
//! printed on stdout and, with --port-file, written to FILE (atomically, once listening).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Chunks queued per direction before the reader waits (back pressure, bounded memory).
const QUEUE: usize = 256;
const CHUNK: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("latency_proxy: {e}");
        std::process::exit(2);
    }
}

struct Config {
    upstream: SocketAddr,
    /// One way: RTT/2.
    half: Duration,
    rtt: Duration,
    max_conns: usize,
}

fn run(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let get = |k: &str| opts.get(k).map(String::as_str);
    let num = |k: &str, default: u64| -> Result<u64, String> {
        get(k).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{k} {v:?} is not a number"))
        })
    };
    let upstream = get("upstream")
        .ok_or("--upstream HOST:PORT is required")?
        .to_socket_addrs()
        .map_err(|e| format!("--upstream: {e}"))?
        .next()
        .ok_or("--upstream resolves to no address")?;
    if !upstream.ip().is_loopback() {
        return Err(format!("the upstream must be on loopback, not {upstream}"));
    }
    let rtt = Duration::from_millis(num("rtt-ms", 0)?);
    let config = Arc::new(Config {
        upstream,
        half: rtt / 2,
        rtt,
        max_conns: num("max-conns", 512)?.max(1) as usize,
    });
    let listener = TcpListener::bind(("127.0.0.1", num("listen", 0)? as u16))
        .map_err(|e| format!("listening on 127.0.0.1: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let log = match get("log") {
        Some(path) => Some(File::create(path).map_err(|e| format!("creating {path}: {e}"))?),
        None => None,
    };
    let log = Arc::new(Log(log.map(Mutex::new)));
    if let Some(path) = get("port-file") {
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, format!("{port}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("writing {path}: {e}"))?;
    }
    println!("{port}");
    let _ = std::io::stdout().flush();
    watchdog(Duration::from_secs(num("max-seconds", 3600)?));

    let active = Arc::new(AtomicUsize::new(0));
    let mut next_id: u64 = 0;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        next_id += 1;
        let id = next_id;
        if active.load(Ordering::SeqCst) >= config.max_conns {
            log.line(format_args!("refused {id} {}", now()));
            drop(client);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (config, conn_log, conn_active) = (config.clone(), log.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || {
                connection(id, client, &config, &conn_log);
                conn_active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
            log.line(format_args!("refused {id} {}", now()));
        }
    }
    Ok(())
}

/// `--name value` options.
fn parse(args: &[String]) -> Result<HashMap<String, String>, String> {
    let known = [
        "upstream",
        "rtt-ms",
        "listen",
        "port-file",
        "log",
        "max-conns",
        "max-seconds",
    ];
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .filter(|n| known.contains(n))
            .ok_or_else(|| format!("unexpected argument {a:?} (see examples/latency_proxy.rs)"))?;
        let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        map.insert(name.to_string(), value.clone());
    }
    Ok(map)
}

/// Ends the process after `life`, or as soon as its parent is gone (a script killed
/// without its traps running leaves no proxy behind).
fn watchdog(life: Duration) {
    let parent = std::os::unix::process::parent_id();
    let start = Instant::now();
    std::thread::spawn(move || {
        while start.elapsed() < life && std::os::unix::process::parent_id() == parent {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::process::exit(0);
    });
}

/// Seconds since the Unix epoch, millisecond precision.
fn now() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", t.as_secs(), t.subsec_millis())
}

/// The event log: whole lines, each written at once.
struct Log(Option<Mutex<File>>);

impl Log {
    fn line(&self, args: std::fmt::Arguments) {
        if let Some(file) = &self.0 {
            let line = format!("{args}\n");
            let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// What a direction's reader hands its writer: bytes, or the end of the stream, each with
/// the time it may leave.
enum Chunk {
    Data(Instant, Vec<u8>),
    End(Instant),
}

/// One proxied connection: connects upstream, then runs both directions until both ended.
fn connection(id: u64, client: TcpStream, config: &Config, log: &Log) {
    let opened = Instant::now();
    let peer = client
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    log.line(format_args!("open {id} {} {peer}", now()));
    let upstream = match TcpStream::connect_timeout(&config.upstream, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            log.line(format_args!("close {id} {} 0 0 upstream: {e}", now()));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (client.try_clone(), upstream.try_clone());
    let (Ok(client_w), Ok(upstream_w)) = clones else {
        log.line(format_args!(
            "close {id} {} 0 0 cannot clone sockets",
            now()
        ));
        return;
    };
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    std::thread::scope(|s| {
        // Client -> upstream: not before the handshake's round trip has passed.
        let (tx, rx) = sync_channel(QUEUE);
        let (client, upstream, answered) = (&client, &upstream, &down);
        s.spawn(move || {
            read_side(
                client,
                tx,
                opened + config.rtt,
                config.half,
                Some(Turns { id, log, answered }),
            )
        });
        s.spawn(|| write_side(rx, &upstream_w, client, &up));
        let (tx, rx) = sync_channel(QUEUE);
        s.spawn(move || read_side(upstream, tx, opened, config.half, None));
        write_side(rx, &client_w, upstream, &down);
    });
    log.line(format_args!(
        "close {id} {} {} {}",
        now(),
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed)
    ));
}

/// The client's turns of one connection: what `read_side` needs to log them.
struct Turns<'a> {
    id: u64,
    log: &'a Log,
    /// Bytes forwarded to the client so far: when it changed since the client's last
    /// chunk, the client's next chunk starts a new turn (a request, a TLS flight).
    answered: &'a AtomicU64,
}

/// Reads `from` until its end, queueing each chunk to leave at max(now, gate) + delay.
/// With `turns`, logs each chunk that starts a turn of the client's or an HTTP request.
fn read_side(
    mut from: &TcpStream,
    tx: SyncSender<Chunk>,
    gate: Instant,
    delay: Duration,
    turns: Option<Turns>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut seen: Option<u64> = None;
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        let due = Instant::now().max(gate) + delay;
        if n == 0 {
            let _ = tx.send(Chunk::End(due));
            return;
        }
        if let Some(t) = &turns {
            let answered = t.answered.load(Ordering::SeqCst);
            let new_turn = seen != Some(answered);
            seen = Some(answered);
            match request_line(&buf[..n]) {
                Some(line) => t.log.line(format_args!("req {} {} {line}", t.id, now())),
                None if new_turn => t
                    .log
                    .line(format_args!("req {} {} - {n} bytes", t.id, now())),
                None => {}
            }
        }
        if tx.send(Chunk::Data(due, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// "METHOD PATH" when `data` starts with an HTTP/1 request line.
fn request_line(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == b'\r')?;
    let line = std::str::from_utf8(&data[..end]).ok()?;
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    (is_method && version.starts_with("HTTP/1.")).then(|| format!("{method} {path}"))
}

/// Writes queued chunks to `to` when each is due; at the end of the stream shuts `to`'s
/// sending side. A failed write tears the connection down (`to` and `other`), so every
/// reader returns.
fn write_side(rx: Receiver<Chunk>, mut to: &TcpStream, other: &TcpStream, count: &AtomicU64) {
    let mut broken = false;
    for chunk in rx {
        let due = match &chunk {
            Chunk::Data(due, _) | Chunk::End(due) => *due,
        };
        if !broken {
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        match chunk {
            Chunk::Data(_, bytes) if !broken => {
                // Counted before the write: the other side may answer before this thread
                // runs again, and its reader must see that this turn was answered.
                count.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                if to.write_all(&bytes).is_err() {
                    broken = true;
                    let _ = to.shutdown(Shutdown::Both);
                    let _ = other.shutdown(Shutdown::Both);
                }
            }
            Chunk::Data(..) => {}
            Chunk::End(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}
