//! The registry client: the distribution API calls a rebase needs, over one ureq agent
//! whose connections are reused. Everything fetched is verified against its digest and
//! kept as the exact bytes that were hashed.

mod auth;
pub mod credentials;
mod error;
mod http;
mod push;
pub mod secret;
mod session;
mod tls;

pub use error::{ConnectError, ConnectKind, RegistryError};
pub use push::{Blob, Placed, Push, PushReport};
pub use session::{Options, Transport};

use crate::oci::digest::Digest;
use crate::oci::media;
use crate::oci::reference::{Reference, check_repository, check_tag};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `/v2/<repository>/<kind>/<reference>` from checked parts, so that no name (from a
/// document, a label, a server) changes what the URL means: no `..`, no `/` in a tag.
/// `uploads/` is the one fixed reference.
fn api_path(repository: &str, kind: &str, reference: &str) -> Result<String> {
    check_repository(repository)?;
    if reference != "uploads/" && reference.parse::<Digest>().is_err() {
        check_tag(reference)?;
    }
    Ok(format!("/v2/{repository}/{kind}/{reference}"))
}

/// Largest manifest or config accepted.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;

/// A manifest as the registry served it.
#[derive(Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// What a cross-repository mount did.
#[derive(Debug, PartialEq, Eq)]
pub enum Mount {
    Mounted,
    NotMounted,
}

/// A registry client. Safe to share between threads: one connection pool, one token
/// per registry, and caches that spare repeated requests within a run: manifests fetched
/// by digest (and, with `cache_tags`, bases fetched by tag), configs by digest, and the
/// blobs known to be in each repository.
pub struct Client {
    transport: Transport,
    cache_tags: bool,
    manifests: Memo<Fetched>,
    blobs: Memo<Vec<u8>>,
    present: Memo<Placed>,
}

/// Results computed once per run per key, even when threads ask at the same time (the
/// others wait for the first). Errors are not kept: the next caller tries again.
struct Memo<T> {
    cells: Mutex<HashMap<String, Arc<Mutex<Option<T>>>>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            cells: Mutex::default(),
        }
    }
}

impl<T: Clone> Memo<T> {
    /// The value for `key`, computing it with `f` if no caller has; and whether this
    /// call computed it.
    fn get_or_try(&self, key: String, f: impl FnOnce() -> Result<T>) -> Result<(T, bool)> {
        let cell = self.cell(key);
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = slot.as_ref() {
            return Ok((v.clone(), false));
        }
        let v = f()?;
        *slot = Some(v.clone());
        Ok((v, true))
    }

    fn cell(&self, key: String) -> Arc<Mutex<Option<T>>> {
        self.cells
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default()
            .clone()
    }
}

impl Client {
    pub fn new(options: Options) -> Result<Client> {
        Ok(Client {
            cache_tags: options.cache_tags,
            transport: Transport::new(options)?,
            manifests: Memo::default(),
            blobs: Memo::default(),
            present: Memo::default(),
        })
    }

    /// Fetches a base's manifest: once per run for the same reference when the client
    /// caches tags (fleet mode: every image of the list names the same bases).
    pub fn fetch_base_manifest(&self, r: &Reference) -> Result<Fetched> {
        let key = match &r.digest {
            // Content-addressed: always the same.
            Some(d) => format!("{}/{}@{d}", r.registry, r.repository),
            None if self.cache_tags => r.to_string(),
            None => return self.fetch_manifest(r),
        };
        Ok(self.manifests.get_or_try(key, || self.fetch_manifest(r))?.0)
    }

    /// Fetches a base's config (or another blob shared by many images) once per run.
    pub fn fetch_base_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let key = format!("{registry}@{digest}");
        Ok(self
            .blobs
            .get_or_try(key, || self.fetch_blob(registry, repository, digest, limit))?
            .0)
    }

    /// The response if its status is `want`; otherwise an error saying `doing`, with the
    /// registry's error codes and what can be said about access rights.
    fn expect(
        &self,
        resp: ureq::Response,
        registry: &str,
        method: &str,
        want: u16,
        doing: &str,
    ) -> Result<ureq::Response> {
        if resp.status() == want {
            Ok(resp)
        } else {
            Err(self.transport.status_error(registry, method, resp, doing))
        }
    }

    /// GETs a manifest by tag or digest, checks its digest and size, and works out its
    /// media type (the `mediaType` field, else the Content-Type header).
    pub fn fetch_manifest(&self, r: &Reference) -> Result<Fetched> {
        self.transport
            .retry_cut_body(|| self.fetch_manifest_once(r))
    }

    fn fetch_manifest_once(&self, r: &Reference) -> Result<Fetched> {
        let path = api_path(&r.repository, "manifests", &r.manifest_ref())?;
        let resp = self.transport.send(
            &r.registry,
            "GET",
            &path,
            &[("Accept", media::MANIFEST_ACCEPT)],
            None,
        )?;
        let resp = self.expect(
            resp,
            &r.registry,
            "GET",
            200,
            "the registry refused the manifest request",
        )?;
        let content_type = resp.header("Content-Type").unwrap_or("").to_string();
        let header_digest = resp.header("Docker-Content-Digest").map(str::to_string);
        let bytes = http::read_limited(resp, MAX_JSON_BYTES, "manifest")?;
        let digest = Digest::of(&bytes);
        if let Some(expected) = &r.digest {
            expected.verify(&bytes, "manifest")?;
        }
        if let Some(h) = header_digest
            .as_deref()
            .and_then(|h| h.parse::<Digest>().ok())
            && h != digest
        {
            bail!(
                "the registry sent a manifest whose bytes hash to {digest} but said its digest is {h}"
            );
        }
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).context("the manifest is not valid JSON")?;
        let media_type = match json.get("mediaType").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => {
                let ct = content_type
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if ct.is_empty() || ct == "application/json" {
                    // Untyped OCI manifests (umoci writes them) still declare schemaVersion 2.
                    if json.get("manifests").is_some() {
                        media::OCI_INDEX
                    } else {
                        media::OCI_MANIFEST
                    }
                    .to_string()
                } else {
                    ct
                }
            }
        };
        Ok(Fetched {
            bytes,
            media_type,
            digest,
        })
    }

    /// HEADs a manifest: its digest, or `None` when the registry has no such manifest.
    /// A HEAD does not count as a pull on rate-limited registries.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<Digest>> {
        let path = api_path(&r.repository, "manifests", &r.manifest_ref())?;
        let resp = self.transport.send(
            &r.registry,
            "HEAD",
            &path,
            &[("Accept", media::MANIFEST_ACCEPT)],
            None,
        )?;
        match resp.status() {
            200 => match resp.header("Docker-Content-Digest") {
                Some(h) => Ok(Some(
                    h.parse()
                        .context("the registry sent an invalid Docker-Content-Digest")?,
                )),
                // Without the header only a GET can tell.
                None => Ok(Some(self.fetch_manifest(r)?.digest)),
            },
            404 => Ok(None),
            _ => Err(self.transport.status_error(
                &r.registry,
                "HEAD",
                resp,
                "the registry refused the manifest check",
            )),
        }
    }

    /// GETs a blob of at most `limit` bytes and checks it against its digest.
    pub fn fetch_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>> {
        self.transport
            .retry_cut_body(|| self.fetch_blob_once(registry, repository, digest, limit))
    }

    fn fetch_blob_once(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let resp = self.transport.send(
            registry,
            "GET",
            &api_path(repository, "blobs", digest.as_str())?,
            &[],
            None,
        )?;
        let resp = self.expect(
            resp,
            registry,
            "GET",
            200,
            "the registry refused the blob request",
        )?;
        let bytes = http::read_limited(resp, limit, "blob")?;
        digest.verify(&bytes, "blob")?;
        Ok(bytes)
    }

    /// Whether the repository has the blob (HEAD).
    pub fn blob_exists(&self, registry: &str, repository: &str, digest: &Digest) -> Result<bool> {
        let resp = self.transport.send(
            registry,
            "HEAD",
            &api_path(repository, "blobs", digest.as_str())?,
            &[],
            None,
        )?;
        match resp.status() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.transport.status_error(
                registry,
                "HEAD",
                resp,
                "the registry refused the blob check",
            )),
        }
    }

    /// Asks the registry to mount a blob of repository `from` into `repository`.
    /// On 202 the registry opened an upload session instead: it is cancelled.
    pub fn mount_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount> {
        check_repository(from)?;
        let path = format!(
            "{}?mount={digest}&from={from}",
            api_path(repository, "blobs", "uploads/")?
        );
        let resp = self.transport.send(
            registry,
            "POST",
            &path,
            &[("Content-Length", "0")],
            Some(b""),
        )?;
        match resp.status() {
            201 => Ok(Mount::Mounted),
            202 => {
                if let Some(location) = resp.header("Location") {
                    // Best effort: an abandoned session expires on its own anyway.
                    let _ = self.transport.send(registry, "DELETE", location, &[], None);
                }
                if self.transport.grants(registry, from, "pull") == Some(false) {
                    bail!(
                        "cannot mount it from {registry}/{from}: {} has no pull right on {registry}/{from}",
                        self.transport.identity(registry)
                    );
                }
                Ok(Mount::NotMounted)
            }
            401 | 403 if self.transport.grants(registry, from, "pull") == Some(false) => bail!(
                "cannot mount it from {registry}/{from}: {} has no pull right on {registry}/{from}",
                self.transport.identity(registry)
            ),
            _ => Err(self.transport.status_error(
                registry,
                "POST",
                resp,
                "the registry refused the blob mount",
            )),
        }
    }

    /// Uploads a small blob in one request (POST for a session, then PUT with the digest).
    pub fn upload_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<()> {
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
        let location = resp
            .header("Location")
            .context("the registry started an upload without a Location")?;
        let mut location = self.transport.resolve(registry, location)?;
        location.push(if location.contains('?') { '&' } else { '?' });
        location.push_str(&format!("digest={digest}"));
        let headers = [("Content-Type", "application/octet-stream")];
        let resp = self
            .transport
            .send(registry, "PUT", &location, &headers, Some(bytes))?;
        self.expect(
            resp,
            registry,
            "PUT",
            201,
            "the registry refused the upload",
        )?;
        Ok(())
    }

    /// Declares the scopes an operation will need on `registry`, so that one token covers
    /// them all (target first).
    pub fn want_scopes(&self, registry: &str, scopes: &[String]) -> Result<()> {
        self.transport.want(registry, scopes)
    }

    /// PUTs a manifest under a tag or its digest; returns the digest the registry reports.
    pub fn put_manifest(
        &self,
        registry: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let path = api_path(repository, "manifests", reference)?;
        let resp = self.transport.send(
            registry,
            "PUT",
            &path,
            &[("Content-Type", media_type)],
            Some(bytes),
        )?;
        let resp = self.expect(
            resp,
            registry,
            "PUT",
            201,
            "the registry refused the manifest",
        )?;
        let ours = Digest::of(bytes);
        if let Some(h) = resp
            .header("Docker-Content-Digest")
            .and_then(|h| h.parse::<Digest>().ok())
            && h != ours
        {
            bail!("the registry stored the manifest as {h} but its bytes hash to {ours}");
        }
        Ok(ours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_built_from_checked_parts_only() {
        let d = Digest::of(b"");
        assert_eq!(
            api_path("team/app", "blobs", d.as_str()).unwrap(),
            format!("/v2/team/app/blobs/{d}")
        );
        assert_eq!(
            api_path("app", "manifests", "1.0").unwrap(),
            "/v2/app/manifests/1.0"
        );
        for (repo, reference) in [
            ("app/../app2", "1"),
            ("app", "x/../rel"),
            ("app", ".."),
            ("app", "a/b"),
            ("app?x=1", "1"),
            ("", "1"),
        ] {
            assert!(
                api_path(repo, "manifests", reference).is_err(),
                "{repo} {reference}"
            );
        }
    }
}
