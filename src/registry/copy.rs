//! Copying a blob where a mount cannot do (another registry, or a registry that does not
//! mount): a GET from the registry that has it, streamed into an upload on the target as
//! it arrives, never held whole in memory nor written to disk. Its size and digest are
//! checked on the way, and the last bytes are held back until they are: a blob that is not
//! what its digest says never completes an upload. A few blobs copy at once per run.

use super::error::ConnectError;
use super::http::MAX_ATTEMPTS;
use super::{Client, RegistryError, api_path};
use crate::oci::digest::{Digest, Hasher};
use anyhow::{Context, Result, anyhow, bail};
use std::io::Read;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Told how copies go, for a progress line; called from several threads at once.
pub trait Progress: Send + Sync {
    /// `bytes` more are to be copied (negative: a copy that failed gives back what it
    /// did not do).
    fn planned(&self, bytes: i64);
    /// `bytes` more were copied (negative: a copy that starts again takes back what it
    /// had done).
    fn copied(&self, bytes: i64);
}

/// Most blobs one run copies at once.
pub const MAX_COPIES: usize = 4;

/// The slowest average rate a copy may have before its deadline ends it, in bytes per
/// second (the ordinary request timeout is for small answers, not layers).
const SLOWEST_RATE: u64 = 100 * 1024;

/// Chunk size of a chunked upload (larger where the registry asks for larger ones).
const CHUNK: u64 = 32 * 1024 * 1024;

/// At most `MAX_COPIES` holders at once.
#[derive(Default)]
pub(super) struct Slots {
    taken: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn take(&self) -> Slot<'_> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        while *taken >= MAX_COPIES {
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken += 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// One copy: from where, to where, what.
pub(super) struct Copy<'a> {
    pub from: (&'a str, &'a str),
    pub to: (&'a str, &'a str),
    pub digest: &'a Digest,
    pub size: u64,
}

/// The source's connection broke, or it ended the blob early: worth another attempt.
#[derive(Debug)]
struct Transient(String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Transient {}

impl Client {
    /// Copies a blob into the target repository, using the upload `session` a refused
    /// mount opened there if there is one. Attempts that fail because a connection broke
    /// (the source's mid-layer too) are made again, a bounded number of times; a blob
    /// that is not what its digest says is refused at once.
    pub(super) fn copy_blob(&self, c: &Copy, session: Option<String>) -> Result<()> {
        let _slot = self.copying.take();
        let deadline = self.timeout + Duration::from_secs(c.size / SLOWEST_RATE);
        if let Some(p) = &self.progress {
            p.planned(c.size as i64);
        }
        let mut session = session;
        let mut attempt = 1;
        loop {
            let mut done = 0u64;
            let result = self.copy_once(c, session.take(), deadline, &mut done);
            if let Some(p) = &self.progress {
                p.copied(-(done as i64));
                if result.is_ok() {
                    p.copied(c.size as i64);
                }
            }
            match result {
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    let delay = super::http::backoff(attempt);
                    if self.transport.verbose() {
                        eprintln!(
                            "image-rebase: copying {}: {e:#}; retry {attempt} of {} in {:.2}s",
                            c.digest,
                            MAX_ATTEMPTS - 1,
                            delay.as_secs_f64()
                        );
                    }
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => {
                    if let Some(p) = &self.progress {
                        p.planned(-(c.size as i64));
                    }
                    return Err(e);
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    fn copy_once(
        &self,
        c: &Copy,
        session: Option<String>,
        deadline: Duration,
        done: &mut u64,
    ) -> Result<()> {
        let ((from_registry, from_repository), (to_registry, to_repository)) = (c.from, c.to);
        let source = format!("{from_registry}/{from_repository}");
        let resp = match self.open_source(c, &source, deadline) {
            Ok(resp) => resp,
            Err(e) => return Err(self.abandon(to_registry, session, e)),
        };
        let mut body = Verified {
            inner: resp.into_reader(),
            hasher: Hasher::default(),
            read: 0,
            size: c.size,
            digest: c.digest,
            source: &source,
            failure: None,
            progress: self.progress.as_deref(),
        };
        let location = match session {
            Some(l) => l,
            None => self
                .start_upload(to_registry, to_repository)
                .with_context(|| format!("writing it to {to_registry}/{to_repository}"))?,
        };
        let result = self.upload_from(to_registry, &location, c, deadline, &mut body);
        *done = body.read;
        if let Some(failure) = body.failure.take() {
            return Err(self.abandon(to_registry, Some(location), failure));
        }
        result.map_err(|e| {
            let e = e.context(format!("writing it to {to_registry}/{to_repository}"));
            self.abandon(to_registry, Some(location), e)
        })
    }

    /// The source registry's answer to the blob's GET, its length checked against the
    /// descriptor's size (its bytes are checked as they are read).
    fn open_source(&self, c: &Copy, source: &str, deadline: Duration) -> Result<ureq::Response> {
        let (from_registry, from_repository) = c.from;
        if c.size == 0 && c.digest != &Digest::of(b"") {
            bail!(
                "the manifest says it is empty, but {} is not the digest of no bytes",
                c.digest
            );
        }
        // A redirect to other storage (S3, a CDN) is followed without the registry's
        // credentials (the agent never sends Authorization to a redirect).
        let path = api_path(from_repository, "blobs", c.digest.as_str())?;
        let resp = self
            .transport
            .send_stream(from_registry, "GET", &path, &[], None, deadline)
            .with_context(|| format!("reading it from {source}"))?;
        if resp.status() != 200 {
            return Err(self
                .transport
                .status_error(
                    from_registry,
                    "GET",
                    resp,
                    "the registry refused the blob request",
                )
                .context(format!("reading it from {source}")));
        }
        if let Some(len) = resp
            .header("Content-Length")
            .and_then(|l| l.parse::<u64>().ok())
            && len != c.size
        {
            bail!(
                "{source} serves it as {len} bytes, but the manifest says it is {} bytes; nothing was copied",
                c.size
            );
        }
        Ok(resp)
    }

    /// Sends the blob from `body` into the upload at `location`: one PUT with its length,
    /// or chunks where the registry asks for them (`OCI-Chunk-Min-Length`).
    fn upload_from(
        &self,
        registry: &str,
        location: &str,
        c: &Copy,
        deadline: Duration,
        body: &mut Verified<impl Read>,
    ) -> Result<()> {
        let (mut location, sent) = match self.chunk_size(registry) {
            Some(chunk) => self.send_chunks(registry, location, c, chunk, deadline, body)?,
            None => (location.to_string(), 0),
        };
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(&format!("digest={}", c.digest));
        let len = (c.size - sent).to_string();
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", len.as_str()),
        ];
        let resp = self.transport.send_stream(
            registry,
            "PUT",
            &location,
            &headers,
            Some(body),
            deadline,
        )?;
        let resp = self.expect(
            resp,
            registry,
            "PUT",
            201,
            "the registry refused the upload",
        )?;
        if let Some(h) = resp
            .header("Docker-Content-Digest")
            .and_then(|h| h.parse::<Digest>().ok())
            && &h != c.digest
        {
            bail!("the registry stored the blob as {h} but it is {}", c.digest);
        }
        Ok(())
    }

    /// Sends all but the last part of the blob in PATCH chunks of `chunk` bytes; the
    /// upload's location after them and the bytes sent.
    fn send_chunks(
        &self,
        registry: &str,
        location: &str,
        c: &Copy,
        chunk: u64,
        deadline: Duration,
        body: &mut Verified<impl Read>,
    ) -> Result<(String, u64)> {
        let mut location = location.to_string();
        let mut sent = 0u64;
        while sent < c.size {
            let n = chunk.min(c.size - sent);
            let range = format!("{sent}-{}", sent + n - 1);
            let len = n.to_string();
            let headers = [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", len.as_str()),
                ("Content-Range", range.as_str()),
            ];
            let mut part = (&mut *body).take(n);
            let resp = self.transport.send_stream(
                registry,
                "PATCH",
                &location,
                &headers,
                Some(&mut part),
                deadline,
            )?;
            let resp = self.expect(
                resp,
                registry,
                "PATCH",
                202,
                "the registry refused a chunk of the upload",
            )?;
            location = self.transport.resolve(
                registry,
                resp.header("Location")
                    .context("the registry took a chunk without a Location")?,
            )?;
            sent += n;
        }
        Ok((location, sent))
    }

    /// The chunk size for uploads to `registry` if it wants chunks (learnt from the
    /// answer to an upload's start).
    fn chunk_size(&self, registry: &str) -> Option<u64> {
        let min = *self
            .chunk_min
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(registry)?;
        Some(min.max(CHUNK))
    }

    /// Starts an upload (POST); its Location, resolved. An `OCI-Chunk-Min-Length` in the
    /// answer means the registry wants the blob in chunks of at least that size.
    pub(super) fn start_upload(&self, registry: &str, repository: &str) -> Result<String> {
        let start = api_path(repository, "blobs", "uploads/")?;
        let resp = self.transport.send(
            registry,
            "POST",
            &start,
            &[("Content-Length", "0")],
            Some(b""),
        )?;
        let resp = self.expect(
            resp,
            registry,
            "POST",
            202,
            "the registry refused to start an upload",
        )?;
        self.learn_chunks(registry, &resp);
        let location = resp
            .header("Location")
            .context("the registry started an upload without a Location")?;
        self.transport.resolve(registry, location)
    }

    /// Takes in an upload start's `OCI-Chunk-Min-Length`: the registry wants the blob in
    /// chunks of at least that size.
    pub(super) fn learn_chunks(&self, registry: &str, resp: &ureq::Response) {
        if let Some(min) = resp
            .header("OCI-Chunk-Min-Length")
            .and_then(|m| m.trim().parse::<u64>().ok())
        {
            self.chunk_min
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(registry.to_string(), min);
        }
    }

    /// Cancels an upload session (best effort: an abandoned one expires anyway) and
    /// gives back `e`.
    pub(super) fn abandon(
        &self,
        registry: &str,
        session: Option<String>,
        e: anyhow::Error,
    ) -> anyhow::Error {
        if let Some(location) = session {
            let _ = self
                .transport
                .send(registry, "DELETE", &location, &[], None);
        }
        e
    }
}

/// Whether another attempt may succeed: a connection broke (the source's mid-blob too),
/// or a registry answered 429 or 5xx.
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Transient>()
            || c.downcast_ref::<ConnectError>()
                .is_some_and(ConnectError::is_temporary)
            || c.downcast_ref::<RegistryError>()
                .is_some_and(|r| matches!(r.status, 429 | 500 | 502 | 503 | 504))
    })
}

/// The source's body, checked as it is read: no more than `size` bytes are read; the read
/// that brings the last bytes fails instead if they do not hash to the digest, so an
/// upload fed from it never completes with wrong bytes.
struct Verified<'a, R> {
    inner: R,
    hasher: Hasher,
    read: u64,
    size: u64,
    digest: &'a Digest,
    /// `registry/repository` it comes from, for messages.
    source: &'a str,
    /// Why reading failed: the source's fault, not the target's.
    failure: Option<anyhow::Error>,
    progress: Option<&'a dyn Progress>,
}

impl<R: Read> Read for Verified<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.size - self.read;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(self.fail(anyhow::Error::new(Transient(format!(
                    "{} ended the blob after {} of {} bytes",
                    self.source, self.read, self.size
                )))));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                return Err(self.fail(anyhow::Error::new(Transient(format!(
                    "the connection to {} broke after {} of {} bytes of the blob: {e}",
                    self.source, self.read, self.size
                )))));
            }
        };
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if self.read == self.size {
            let got = self.hasher.finish();
            if &got != self.digest {
                return Err(self.fail(anyhow!(
                    "{} sent bytes that hash to {got}, not to {}: refused, nothing was written",
                    self.source,
                    self.digest
                )));
            }
        }
        if let Some(p) = self.progress {
            p.copied(n as i64);
        }
        Ok(n)
    }
}

impl<R> Verified<'_, R> {
    fn fail(&mut self, e: anyhow::Error) -> std::io::Error {
        let io = std::io::Error::other(format!("{e:#}"));
        self.failure = Some(e);
        io
    }
}
