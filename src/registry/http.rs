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
        let idempotent = matches!(method, "GET" | "HEAD" | "DELETE")
            || (method == "PUT" && url.contains("/manifests/"));
        let mut waited = Duration::ZERO;
        for attempt in 1.. {
            let result = self.send_once(method, url, headers, authorization, body);
            let (why, retry_after) = match &result {
                Ok(r) if matches!(r.status(), 429 | 500 | 502 | 503 | 504) => {
                    (format!("HTTP {}", r.status()), retry_after(r))
                }
                Err(e) => match e.downcast_ref::<ConnectError>() {
                    Some(c) if c.is_temporary() => (c.message.clone(), None),
                    _ => return result,
                },
                _ => return result,
            };
            let delay = retry_after.unwrap_or_else(|| Duration::from_millis(250 << (attempt - 1)));
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
                    let delay = Duration::from_millis(250 << (attempt - 1));
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
