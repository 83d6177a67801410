//! The registry client: the distribution API calls a rebase needs, over one ureq agent
//! whose connections are reused. Everything fetched is verified against its digest and
//! kept as the exact bytes that were hashed.

mod ahead;
mod auth;
mod cache;
mod catalog;
mod copy;
pub mod credentials;
mod error;
#[cfg(test)]
pub(crate) mod fake;
mod http;
mod push;
pub mod secret;
mod session;
mod tls;

pub use ahead::Ahead;
use cache::Memo;
pub use copy::{MAX_COPIES, Progress};
pub use error::{ConnectError, ConnectKind, RegistryError};
pub use push::{Blob, Copied, Placed, Push, PushReport, Why};
pub use session::{Options, Transport};

use crate::oci::digest::Digest;
use crate::oci::media;
use crate::oci::reference::{Reference, check_repository, check_tag};
use anyhow::{Context, Result, bail};

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
    timeout: std::time::Duration,
    manifests: Memo<Fetched>,
    blobs: Memo<Vec<u8>>,
    present: Memo<Placed>,
    /// For each registry and blob this run copied there: the repository it went into,
    /// which the other repositories of that registry mount it from.
    crossed: Memo<String>,
    copying: copy::Slots,
    /// Registries that want uploads in chunks: the smallest chunk they take.
    chunk_min: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    progress: Option<std::sync::Arc<dyn Progress>>,
}

impl Client {
    /// See `Transport::learnt`.
    pub fn learnt(&self) -> Vec<(String, &'static str, &'static str)> {
        self.transport.learnt()
    }

    /// See `Transport::wanted`.
    #[cfg(test)]
    pub(crate) fn wanted(&self, registry: &str) -> Vec<String> {
        self.transport.wanted(registry)
    }

    /// See `Transport::settle`.
    pub fn settle(&self, registry: &str, sent: std::time::Instant, answered: std::time::Instant) {
        self.transport.settle(registry, sent, answered)
    }

    /// See `Transport::teach`.
    pub fn teach(&self, registry: &str, scheme: &str, auth: &str) {
        self.transport.teach(registry, scheme, auth)
    }

    pub fn new(options: Options) -> Result<Client> {
        Ok(Client {
            cache_tags: options.cache_tags,
            timeout: options.timeout,
            transport: Transport::new(options)?,
            manifests: Memo::default(),
            blobs: Memo::default(),
            present: Memo::default(),
            crossed: Memo::default(),
            copying: copy::Slots::default(),
            chunk_min: Default::default(),
            progress: None,
        })
    }

    /// The client, telling `progress` how the blobs it copies go.
    pub fn with_progress(mut self, progress: std::sync::Arc<dyn Progress>) -> Client {
        self.progress = Some(progress);
        self
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
        let resp = self.manifest_request(r, "GET")?;
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

    /// A GET or HEAD of a manifest by tag or digest, accepting every manifest type.
    fn manifest_request(&self, r: &Reference, method: &str) -> Result<ureq::Response> {
        let path = api_path(&r.repository, "manifests", &r.manifest_ref())?;
        let accept = [("Accept", media::MANIFEST_ACCEPT)];
        self.transport
            .send(&r.registry, method, &path, &accept, None)
    }

    /// HEADs a manifest: its digest, or `None` when the registry has no such manifest.
    /// A HEAD does not count as a pull on rate-limited registries.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<Digest>> {
        let resp = self.manifest_request(r, "HEAD")?;
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
        Ok(self
            .mount_or_session(registry, repository, digest, from, false)?
            .0)
    }

    /// `mount_blob`; with `keep`, the upload session a refused mount opened is kept, and
    /// its Location (resolved) given back, for a copy into it.
    fn mount_or_session(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        from: &str,
        keep: bool,
    ) -> Result<(Mount, Option<String>)> {
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
            201 => Ok((Mount::Mounted, None)),
            202 => {
                self.learn_chunks(registry, &resp);
                let mut session = resp
                    .header("Location")
                    .and_then(|l| self.transport.resolve(registry, l).ok());
                let refused = self.transport.grants(registry, from, "pull") == Some(false);
                if !keep || refused {
                    // Best effort: an abandoned session expires on its own anyway.
                    if let Some(location) = session.take() {
                        let _ = self
                            .transport
                            .send(registry, "DELETE", &location, &[], None);
                    }
                }
                if refused {
                    bail!(
                        "cannot mount it from {registry}/{from}: {} has no pull right on {registry}/{from}",
                        self.transport.identity(registry)
                    );
                }
                Ok((Mount::NotMounted, session))
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
        self.upload_blob_into(None, registry, repository, digest, bytes)
    }

    /// `upload_blob`, into the session opened `ahead` for it when there is one.
    pub(super) fn upload_blob_into(
        &self,
        ahead: Option<&Ahead>,
        registry: &str,
        repository: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<()> {
        let mut location = match self.take_session(ahead, registry, repository)? {
            Some(location) => location,
            None => self.start_upload(registry, repository)?,
        };
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

    /// Declares what a push to `registry/repository` needs, so that one token a registry
    /// covers it: `actions` on the target (first), pull on each source repository of the
    /// same registry that blobs may be mounted from, and pull on each source of another
    /// registry, from that registry, for blobs copied from there.
    pub fn want_push<'a>(
        &self,
        registry: &str,
        repository: &str,
        actions: &str,
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        let mut scopes = vec![format!("repository:{repository}:{actions}")];
        for (source_registry, source) in sources {
            let pull = format!("repository:{source}:pull");
            if source_registry != registry {
                self.want_scopes(source_registry, &[pull])?;
            } else if source != repository && !scopes.contains(&pull) {
                scopes.push(pull);
            }
        }
        self.want_scopes(registry, &scopes)
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

    use crate::oci::media::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
    use fake::Fake;

    fn manifest() -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            Digest::of(b"{}")
        )
        .into_bytes()
    }

    /// The error and its causes, one line.
    fn message(err: anyhow::Error) -> String {
        format!("{err:#}")
    }

    /// The error of a call that must fail (`Fetched` has no Debug for `unwrap_err`).
    fn error_of<T>(result: Result<T>) -> anyhow::Error {
        match result {
            Ok(_) => panic!("the call succeeded"),
            Err(e) => e,
        }
    }

    #[test]
    fn fetch_manifest_by_tag_gives_the_exact_bytes_their_digest_and_media_type() {
        let fake = Fake::start();
        let digest = fake.put_manifest("team/app", Some("1"), OCI_MANIFEST, &manifest());
        let fetched = fake.client().fetch_manifest(&fake.r("team/app:1")).unwrap();
        assert_eq!(fetched.bytes, manifest());
        assert_eq!(fetched.digest, digest);
        assert_eq!(fetched.media_type, OCI_MANIFEST);
        assert_eq!(fake.count("GET", "/v2/team/app/manifests/1"), 1);
    }

    #[test]
    fn fetch_manifest_by_digest_refuses_bytes_that_do_not_match_the_digest() {
        let fake = Fake::start();
        let claimed = Digest::of(b"another manifest");
        fake.put_manifest_raw("app", None, &claimed, OCI_MANIFEST, &manifest());
        let err = error_of(
            fake.client()
                .fetch_manifest(&fake.r(&format!("app@{claimed}"))),
        );
        let msg = message(err);
        assert!(msg.contains("content does not match its digest"), "{msg}");
        assert!(msg.contains(claimed.as_str()), "{msg}");
        assert!(msg.contains(Digest::of(&manifest()).as_str()), "{msg}");
    }

    #[test]
    fn fetch_manifest_refuses_a_docker_content_digest_that_disagrees_with_the_bytes() {
        let fake = Fake::start();
        let claimed = Digest::of(b"another manifest");
        // Served by tag with `Docker-Content-Digest: <claimed>`.
        fake.put_manifest_raw("app", Some("1"), &claimed, OCI_MANIFEST, &manifest());
        let msg = message(error_of(fake.client().fetch_manifest(&fake.r("app:1"))));
        assert!(
            msg.contains(&format!("hash to {}", Digest::of(&manifest()))),
            "{msg}"
        );
        assert!(msg.contains(&format!("its digest is {claimed}")), "{msg}");
    }

    #[test]
    fn a_manifest_without_a_media_type_field_takes_it_from_the_content_type() {
        let fake = Fake::start();
        let untyped = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        fake.put_manifest("app", Some("docker"), DOCKER_MANIFEST, untyped);
        // application/json: an untyped index is told from a manifest by its "manifests".
        let plain = br#"{"schemaVersion":2,"config":{},"layers":[{}]}"#;
        fake.put_manifest("app", Some("plain"), "application/json", plain);
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        fake.put_manifest("app", Some("index"), "application/json", index);
        let client = fake.client();
        for (tag, want) in [
            ("docker", DOCKER_MANIFEST),
            ("plain", OCI_MANIFEST),
            ("index", OCI_INDEX),
        ] {
            let got = client
                .fetch_manifest(&fake.r(&format!("app:{tag}")))
                .unwrap();
            assert_eq!(got.media_type, want, "{tag}");
        }
    }

    #[test]
    fn a_missing_manifest_is_an_error_with_the_registry_code() {
        let fake = Fake::start();
        let err = error_of(fake.client().fetch_manifest(&fake.r("app:1")));
        let code = err
            .chain()
            .find_map(|e| e.downcast_ref::<RegistryError>())
            .map(|e| (e.status, e.has_code("MANIFEST_UNKNOWN")));
        assert_eq!(code, Some((404, true)), "{err:#}");
    }

    #[test]
    fn head_manifest_gives_none_on_404_and_the_digest_otherwise() {
        let fake = Fake::start();
        let digest = fake.put_manifest("app", Some("1"), OCI_MANIFEST, &manifest());
        let client = fake.client();
        assert_eq!(client.head_manifest(&fake.r("app:2")).unwrap(), None);
        assert_eq!(client.head_manifest(&fake.r("other:1")).unwrap(), None);
        assert_eq!(
            client.head_manifest(&fake.r("app:1")).unwrap(),
            Some(digest)
        );
        assert_eq!(fake.count("HEAD", "/v2/app/manifests/1"), 1);
        assert_eq!(fake.count("GET", "/v2/app/manifests/1"), 0, "a HEAD only");
    }

    #[test]
    fn upload_blob_then_fetch_blob_round_trips() {
        let fake = Fake::start();
        let client = fake.client();
        let bytes = b"some blob bytes".to_vec();
        let digest = Digest::of(&bytes);
        let reg = fake.addr();
        assert!(!client.blob_exists(reg, "app", &digest).unwrap());
        client.upload_blob(reg, "app", &digest, &bytes).unwrap();
        assert!(fake.has_blob("app", &digest));
        assert!(client.blob_exists(reg, "app", &digest).unwrap());
        assert_eq!(client.fetch_blob(reg, "app", &digest, 1024).unwrap(), bytes);
        // One POST for the session, one PUT with the digest and the bytes.
        let uploads: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v2/app/blobs/uploads/"))
            .collect();
        assert_eq!(uploads.len(), 2, "{uploads:#?}");
        assert_eq!(uploads[0].method, "POST");
        assert_eq!(uploads[1].method, "PUT");
        assert_eq!(uploads[1].param("digest"), Some(digest.to_string()));
        assert!(
            uploads[1].param("_state").is_some(),
            "the Location's query is kept"
        );
    }

    #[test]
    fn upload_blob_with_a_digest_that_does_not_match_is_refused() {
        let fake = Fake::start();
        let wrong = Digest::of(b"other bytes");
        let err = fake
            .client()
            .upload_blob(fake.addr(), "app", &wrong, b"bytes")
            .unwrap_err();
        let refused = err
            .chain()
            .find_map(|e| e.downcast_ref::<RegistryError>())
            .is_some_and(|e| e.has_code("DIGEST_INVALID"));
        assert!(refused, "{err:#}");
        assert!(!fake.has_blob("app", &wrong));
    }

    #[test]
    fn fetch_blob_refuses_bytes_that_do_not_match_the_digest_or_the_limit() {
        let fake = Fake::start();
        let claimed = Digest::of(b"the real blob");
        fake.put_blob_raw("app", &claimed, b"a different blob");
        let client = fake.client();
        let msg = message(
            client
                .fetch_blob(fake.addr(), "app", &claimed, 1024)
                .unwrap_err(),
        );
        assert!(msg.contains("content does not match its digest"), "{msg}");
        let big = fake.put_blob("app", &[b'x'; 100]);
        let msg = message(client.fetch_blob(fake.addr(), "app", &big, 99).unwrap_err());
        assert!(msg.contains("more than the 99 bytes accepted"), "{msg}");
        assert_eq!(
            client
                .fetch_blob(fake.addr(), "app", &big, 100)
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn mount_blob_says_whether_the_registry_mounted_and_cancels_a_session_it_opened() {
        let fake = Fake::start();
        let digest = fake.put_blob("base", b"layer");
        let client = fake.client();
        let reg = fake.addr();
        assert_eq!(
            client.mount_blob(reg, "app", &digest, "base").unwrap(),
            Mount::Mounted
        );
        assert!(fake.has_blob("app", &digest));
        assert_eq!(fake.count("DELETE", "/v2/app2/blobs/uploads/u1"), 0);
        // Not in the source repository: 202 and an upload session, which is cancelled.
        assert_eq!(
            client.mount_blob(reg, "app2", &digest, "nowhere").unwrap(),
            Mount::NotMounted
        );
        assert_eq!(fake.count("DELETE", "/v2/app2/blobs/uploads/u1"), 1);
        assert!(!fake.has_blob("app2", &digest));
        assert!(client.mount_blob(reg, "app", &digest, "../x").is_err());
    }

    #[test]
    fn put_manifest_returns_its_digest_and_a_refusal_carries_the_registry_code() {
        let fake = Fake::start();
        let client = fake.client();
        let reg = fake.addr();
        // The config the manifest lists is not in the repository yet.
        let err = client
            .put_manifest(reg, "app", "1", OCI_MANIFEST, &manifest())
            .unwrap_err();
        let code = err
            .chain()
            .find_map(|e| e.downcast_ref::<RegistryError>())
            .map(|e| (e.status, e.has_code("MANIFEST_BLOB_UNKNOWN")));
        assert_eq!(code, Some((400, true)), "{err:#}");
        assert_eq!(fake.manifest("app", "1"), None);
        fake.put_blob("app", b"{}");
        let digest = client
            .put_manifest(reg, "app", "1", OCI_MANIFEST, &manifest())
            .unwrap();
        assert_eq!(digest, Digest::of(&manifest()));
        assert_eq!(fake.manifest("app", "1"), Some(manifest()));
        assert_eq!(fake.manifest("app", digest.as_str()), Some(manifest()));
        // By digest: no tag moves.
        let again = client
            .put_manifest(reg, "app", digest.as_str(), OCI_MANIFEST, &manifest())
            .unwrap();
        assert_eq!(again, digest);
    }

    #[test]
    fn a_base_manifest_by_tag_is_fetched_once_per_run_only_when_tags_are_cached() {
        let fake = Fake::start();
        fake.put_manifest("base", Some("v2"), OCI_MANIFEST, &manifest());
        let r = fake.r("base:v2");
        let client = fake.client();
        client.fetch_base_manifest(&r).unwrap();
        client.fetch_base_manifest(&r).unwrap();
        assert_eq!(fake.count("GET", "/v2/base/manifests/v2"), 2);
        let cached = Client::new(Options {
            cache_tags: true,
            timeout: std::time::Duration::from_secs(10),
            ..Options::default()
        })
        .unwrap();
        cached.fetch_base_manifest(&r).unwrap();
        cached.fetch_base_manifest(&r).unwrap();
        assert_eq!(fake.count("GET", "/v2/base/manifests/v2"), 3);
    }
}
