//! One HTTP request, and its bounded retries: idempotent requests are sent again after a
//! connection error or HTTP 429/5xx (honouring Retry-After), and a GET whose body broke
//! off is read again. Authentication is the session's business, not this file's.

use super::error::ConnectError;
use super::secret::Secret;
use anyhow::{Result, bail};
use std::io::Read;
use std::time::Duration;

/// Retries of one idempotent request: at most this many attempts, waiting at most
/// MAX_RETRY_WAIT in all and MAX_ONE_WAIT at once (a longer Retry-After ends the retries).
pub const MAX_ATTEMPTS: u32 = 4;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
const MAX_ONE_WAIT: Duration = Duration::from_secs(30);

/// The connection pool and the request log switch.
pub struct Http {
    pub agent: ureq::Agent,
    pub verbose: bool,
}

impl Http {
    pub fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        let req = self.request(method, url, headers, authorization);
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        self.answer(method, url, result)
    }

    /// Sends a request once whose body (if any) is read from `body` as it is sent, with
    /// a deadline of its own for the whole exchange (a layer takes longer than a
    /// manifest); the answer's body, too, is read within it. Never retried here: a body
    /// read once cannot be sent again.
    pub fn send_stream(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
        body: Option<&mut dyn Read>,
        deadline: Duration,
    ) -> Result<ureq::Response> {
        let req = self
            .request(method, url, headers, authorization)
            .timeout(deadline);
        let result = match body {
            Some(b) => req.send(b),
            None => req.call(),
        };
        self.answer(method, url, result)
    }

    fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
    ) -> ureq::Request {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(a) = authorization {
            req = req.set("Authorization", a.expose());
        }
        req
    }

    /// The response whatever its status, or the connection error.
    fn answer(
        &self,
        method: &str,
        url: &str,
        result: std::result::Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response> {
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                if self.verbose {
                    eprintln!("image-rebase: {method} {url} -> {}", resp.status());
                }
                Ok(resp)
            }
            Err(ureq::Error::Transport(t)) => {
                let e = ConnectError::new(method, url, &t);
                if self.verbose {
                    eprintln!("image-rebase: {method} {url} -> {}", e.message);
                }
                Err(e.into())
            }
        }
    }

    /// Sends a request; an idempotent one is retried on connection errors, 5xx and 429
    /// (honouring Retry-After), a bounded number of times within a bounded time.
    pub fn send_with_retries(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        self.send_retrying(method, url, headers, authorization, body, true)
    }

    /// `send_with_retries`, retrying after a connection error on the first attempt only
    /// when `connect` (a request trying out a registry's scheme tries another first).
    pub fn send_retrying(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
        body: Option<&[u8]>,
        connect: bool,
    ) -> Result<ureq::Response> {
        let idempotent = matches!(method, "GET" | "HEAD" | "DELETE")
            || (method == "PUT" && url.contains("/manifests/"));
        let mut waited = Duration::ZERO;
        let mut answered = false;
        for attempt in 1.. {
            let mut result = self.send_once(method, url, headers, authorization, body);
            if let Err(e) = &mut result
                && let Some(c) = e.downcast_mut::<ConnectError>()
            {
                c.answered = answered;
            }
            let (why, retry_after) = match &result {
                Ok(r) if matches!(r.status(), 429 | 500 | 502 | 503 | 504) => {
                    (format!("HTTP {}", r.status()), retry_after(r))
                }
                Err(e) => match e.downcast_ref::<ConnectError>() {
                    // After an answer, the scheme is right: a broken connection is retried.
                    Some(c) if c.is_temporary() && (connect || answered) => {
                        (c.message.clone(), None)
                    }
                    _ => return result,
                },
                _ => return result,
            };
            let delay = retry_after.unwrap_or_else(|| backoff(attempt));
            if !idempotent || !may_retry(attempt, delay, waited) {
                return result;
            }
            if self.verbose {
                eprintln!(
                    "image-rebase: {method} {url}: {why}; retry {attempt} of {} in {:.2}s",
                    MAX_ATTEMPTS - 1,
                    delay.as_secs_f64()
                );
            }
            if let Ok(r) = result {
                answered = true;
                drain(r);
            }
            std::thread::sleep(delay);
            waited += delay;
        }
        unreachable!("the loop returns")
    }

    /// Runs `get` (a GET and the reading of its body) again when the body broke off, as a
    /// connection error before the answer is: a bounded number of times, waiting longer
    /// each time.
    pub fn retry_cut_body<T>(&self, mut get: impl FnMut() -> Result<T>) -> Result<T> {
        for attempt in 1.. {
            match get() {
                Err(e) if attempt < MAX_ATTEMPTS && e.is::<CutBody>() => {
                    let delay = backoff(attempt);
                    if self.verbose {
                        eprintln!(
                            "image-rebase: {e}; retry {attempt} of {} in {:.2}s",
                            MAX_ATTEMPTS - 1,
                            delay.as_secs_f64()
                        );
                    }
                    std::thread::sleep(delay);
                }
                result => return result,
            }
        }
        unreachable!("the loop returns")
    }
}

/// How long to wait after attempt number `attempt` (from 1) failed: 250 ms, doubling.
pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << (attempt - 1))
}

/// Whether attempt number `attempt` (from 1), having waited `waited` already, may be
/// followed by another after `delay`.
fn may_retry(attempt: u32, delay: Duration, waited: Duration) -> bool {
    attempt < MAX_ATTEMPTS && delay <= MAX_ONE_WAIT && waited + delay <= MAX_RETRY_WAIT
}

/// A response whose body broke off: the connection failed in the middle of it.
#[derive(Debug)]
pub struct CutBody {
    url: String,
    msg: String,
}

impl std::fmt::Display for CutBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the connection broke while reading the answer to GET {}: {}",
            self.url, self.msg
        )
    }
}

impl std::error::Error for CutBody {}

/// The Retry-After header as a delay (seconds form; an HTTP date counts as absent).
fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    resp.header("Retry-After")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads and drops a body so the connection can be reused.
pub fn drain(resp: ureq::Response) {
    let _ = std::io::copy(
        &mut resp.into_reader().take(1024 * 1024),
        &mut std::io::sink(),
    );
}

/// Reads a body of at most `limit` bytes; `what` names it in the error.
pub fn read_limited(resp: ureq::Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|l| l.parse::<u64>().ok())
        && len > limit
    {
        bail!("the {what} is {len} bytes, more than the {limit} bytes accepted");
    }
    let mut bytes = Vec::new();
    let url = resp.get_url().to_string();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CutBody {
            url,
            msg: e.to_string(),
        })?;
    if bytes.len() as u64 > limit {
        bail!("the {what} is more than the {limit} bytes accepted");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A server on loopback that reads each request's head, writes `answer` (nothing:
    /// the connection just closes) and closes: one connection per request. Counts them;
    /// stops when dropped. Bounded in connections and time.
    struct Server {
        addr: String,
        served: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        fn start(answer: &'static str) -> Server {
            Server::start_with(answer.to_string(), false)
        }

        /// Answers every request on a connection (keep-alive) instead of one.
        fn start_with(answer: String, keep_alive: bool) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let (served, stop) = (
                Arc::new(AtomicUsize::new(0)),
                Arc::new(AtomicBool::new(false)),
            );
            let (n, halt) = (served.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while !halt.load(Ordering::SeqCst)
                    && started.elapsed() < Duration::from_secs(30)
                    && n.load(Ordering::SeqCst) < 20
                {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    n.fetch_add(1, Ordering::SeqCst);
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut reader = BufReader::new(&stream);
                    for _ in 0..10 {
                        let (mut line, mut head, mut length) = (String::new(), 0, 0);
                        while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            (head, line) = (head + 1, String::new());
                        }
                        // The body too: closing with unread bytes would reset the
                        // connection under the answer.
                        let _ =
                            std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink());
                        let _ = (&stream).write_all(answer.as_bytes());
                        if !keep_alive || head == 0 {
                            break;
                        }
                    }
                }
            });
            Server {
                addr,
                served,
                stop,
                thread: Some(thread),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        fn served(&self) -> usize {
            self.served.load(Ordering::SeqCst)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn http() -> Http {
        Http {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .build(),
            verbose: false,
        }
    }

    fn send(server: &Server, method: &str, path: &str) -> Result<ureq::Response> {
        let body = (method != "GET").then_some(&b"{}"[..]);
        http().send_with_retries(method, &server.url(path), &[], None, body)
    }

    const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_get_that_meets_a_broken_connection_is_sent_four_times_waiting_longer_each_time() {
        let server = Server::start("");
        let started = std::time::Instant::now();
        let err = send(&server, "GET", "/v2/").unwrap_err();
        assert_eq!(server.served(), MAX_ATTEMPTS as usize);
        assert_eq!(
            err.downcast_ref::<ConnectError>().map(|c| c.kind),
            Some(super::super::error::ConnectKind::Broken)
        );
        // 250 + 500 + 1000 ms between the four.
        assert!(started.elapsed() >= Duration::from_millis(1750));
    }

    #[test]
    fn a_get_answered_503_is_sent_again_and_a_404_is_not() {
        let server = Server::start(UNAVAILABLE);
        let last = send(&server, "GET", "/v2/").unwrap();
        assert_eq!((last.status(), server.served()), (503, 4));
        let server = Server::start("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        let last = send(&server, "GET", "/v2/").unwrap();
        assert_eq!((last.status(), server.served()), (404, 1));
    }

    #[test]
    fn the_body_of_an_answer_that_is_retried_is_read_so_the_connection_is_reused() {
        let body = "x".repeat(256 * 1024);
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let server = Server::start_with(answer, true);
        let last = send(&server, "GET", "/v2/").unwrap();
        assert_eq!(last.status(), 503);
        assert_eq!(server.served(), 1, "one connection for the four attempts");
    }

    #[test]
    fn a_manifest_put_is_sent_again_but_a_post_or_a_blob_put_is_not() {
        for (method, path, times) in [
            ("PUT", "/v2/app/manifests/1", 4),
            ("DELETE", "/v2/app/manifests/1", 4),
            ("POST", "/v2/app/blobs/uploads/", 1),
            ("PUT", "/v2/app/blobs/uploads/1?digest=sha256:0", 1),
            ("PATCH", "/v2/app/manifests/1", 1),
        ] {
            let server = Server::start(UNAVAILABLE);
            let last = send(&server, method, path).unwrap();
            assert_eq!(last.status(), 503);
            assert_eq!(server.served(), times, "{method} {path}");
        }
    }

    #[test]
    fn an_answer_that_is_not_http_is_not_sent_again() {
        let server = Server::start("not HTTP at all\r\n\r\n");
        let err = send(&server, "GET", "/v2/").unwrap_err();
        let connect = err.downcast_ref::<ConnectError>().expect("a connect error");
        assert!(!connect.is_temporary(), "{connect:?}");
        assert_eq!(server.served(), 1);
    }

    fn response(head_and_body: &str) -> ureq::Response {
        head_and_body.parse().unwrap()
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_a_date_counts_as_absent() {
        let with = |v: &str| {
            response(&format!(
                "HTTP/1.1 429 Too Many\r\nRetry-After: {v}\r\n\r\n"
            ))
        };
        assert_eq!(retry_after(&with("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&with(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&with("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(
            retry_after(&response("HTTP/1.1 429 Too Many\r\n\r\n")),
            None
        );
    }

    #[test]
    fn a_body_without_a_length_is_cut_at_the_limit_with_an_error() {
        let ok = read_limited(response("HTTP/1.1 200 OK\r\n\r\n1234"), 4, "blob").unwrap();
        assert_eq!(ok, b"1234");
        let err = read_limited(response("HTTP/1.1 200 OK\r\n\r\n12345"), 4, "blob").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the blob is more than the 4 bytes accepted"
        );
        let err = read_limited(
            response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"),
            4,
            "blob",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the blob is 5 bytes, more than the 4 bytes accepted"
        );
    }

    fn cut() -> anyhow::Error {
        CutBody {
            url: "http://r/v2/app/blobs/x".into(),
            msg: "unexpected end of file".into(),
        }
        .into()
    }

    #[test]
    fn a_cut_body_is_fetched_again_at_most_four_times_in_all() {
        let mut calls = 0;
        let got = http().retry_cut_body(|| {
            calls += 1;
            if calls < 3 { Err(cut()) } else { Ok(calls) }
        });
        assert_eq!(got.unwrap(), 3);
        let mut calls = 0;
        let err = http()
            .retry_cut_body(|| -> Result<()> {
                calls += 1;
                Err(cut())
            })
            .unwrap_err();
        assert_eq!(calls, MAX_ATTEMPTS);
        assert_eq!(
            err.to_string(),
            "the connection broke while reading the answer to GET http://r/v2/app/blobs/x: \
             unexpected end of file"
        );
        let mut calls = 0;
        let _ = http().retry_cut_body(|| -> Result<()> {
            calls += 1;
            bail!("another error")
        });
        assert_eq!(calls, 1, "only a cut body is fetched again");
    }

    #[test]
    fn the_wait_between_attempts_starts_at_a_quarter_second_and_doubles() {
        let waits: Vec<u128> = (1..=3).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000]);
    }

    #[test]
    fn retries_are_bounded_in_count_and_time() {
        let s = Duration::from_secs;
        assert!(may_retry(1, s(1), s(0)));
        assert!(may_retry(3, s(1), s(0)));
        assert!(!may_retry(4, s(1), s(0)), "4 attempts at most");
        assert!(
            may_retry(1, s(30), s(0)),
            "a wait of exactly 30 s is waited"
        );
        assert!(!may_retry(1, s(31), s(0)));
        assert!(may_retry(2, s(30), s(30)), "60 s in all");
        assert!(!may_retry(2, s(30), s(31)));
    }
}
