//! Putting an image into a repository, in the shape of go-containerregistry's
//! `remote.Write`: every blob the manifest lists is made present by the cheapest means
//! that works (already there; mounted from a repository of the same registry that has
//! it, or that this run copied it into; else copied, streamed from where it is), a new
//! blob (the config) is uploaded, and the manifest is put last, so that a failure part-way
//! moves no tag. Each blob is placed in a repository once per run, and crosses into a
//! registry once per run, however many images need it. Which tag to write, and whether it
//! may be written, is the caller's decision.

use super::copy::{Copy, MAX_COPIES};
use super::{Ahead, Client, Mount, RegistryError};
use crate::oci::digest::Digest;
use anyhow::{Context, Result, bail};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A blob the manifest lists, and where it can be found.
pub struct Blob {
    pub digest: Digest,
    /// Its size, as its descriptor says (what a copy sends).
    pub size: u64,
    /// What it is, for messages (`layer`, `config`).
    pub what: &'static str,
    /// The repositories (registry, repository) whose manifests list it.
    pub sources: Vec<(String, String)>,
}

/// One manifest to write and what it needs.
pub struct Push<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    /// The tag to write; without one the manifest is put by its digest.
    pub tag: Option<&'a str>,
    pub media_type: &'a str,
    pub manifest: &'a [u8],
    /// Blobs to make present from where they are.
    pub blobs: Vec<Blob>,
    /// A new blob to upload (the rebased config): its digest and bytes.
    pub upload: Option<(&'a Digest, &'a [u8])>,
    /// Only look: say what would be placed; mount, copy, upload and put nothing.
    pub dry_run: bool,
    /// Never copy layer data: refuse where a mount cannot do.
    pub no_copy: bool,
    /// What was sent ahead for this push: the upload uses its session.
    pub ahead: Option<&'a Ahead>,
}

/// How a blob came to be in the target repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    /// It was there already (or another image of this run put it there).
    Present,
    Mounted,
    Uploaded,
    /// Its bytes were streamed from where it was.
    Copied(Copied),
}

/// A blob copy: how many bytes, from which registry, and why a mount could not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    /// The registry it was read from.
    pub from: String,
    pub why: Why,
}

/// Why a blob was copied rather than mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    /// It is only on another registry: a mount across registries is impossible.
    OtherRegistry,
    /// The registry answered the mount with an upload session (202): it does not mount.
    MountRefused,
}

impl Why {
    pub fn explain(self) -> &'static str {
        match self {
            Why::OtherRegistry => "a mount across registries is impossible",
            Why::MountRefused => {
                "the registry did not mount it (it does not allow cross-repository mounts)"
            }
        }
    }
}

/// What a push did (a dry run: would do) with each blob, in the order of `blobs`, then
/// the upload.
#[derive(Debug, Default)]
pub struct PushReport {
    pub blobs: Vec<(Digest, Placed)>,
}

/// How many times a manifest PUT is tried when the registry says a blob is missing.
const PUT_ATTEMPTS: u64 = 3;

impl Client {
    /// Writes `p`: blobs first (several at once, the upload of the new one with them),
    /// the manifest last, once every blob is there.
    pub fn push(&self, p: &Push) -> Result<PushReport> {
        let name = format!("{}/{}", p.registry, p.repository);
        let mut report = PushReport::default();
        // What no request can place is refused before anything is written.
        for blob in &p.blobs {
            if let Some(e) = unplaceable(p, blob) {
                return Err(e).with_context(|| {
                    format!("making {} {} present in {name}", blob.what, blob.digest)
                });
            }
        }
        // The config's upload session is opened while the layers are mounted (or
        // copied): neither waits for the other, the manifest waits for both.
        let (placed, uploaded) = std::thread::scope(|s| {
            let upload = p
                .upload
                .map(|(digest, bytes)| s.spawn(move || self.upload_once(p, digest, bytes)));
            let placed = self.place_all(p);
            let uploaded =
                upload.map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            (placed, uploaded)
        });
        for (blob, placed) in p.blobs.iter().zip(placed) {
            let placed = placed.with_context(|| {
                format!("making {} {} present in {name}", blob.what, blob.digest)
            })?;
            report.blobs.push((blob.digest.clone(), placed));
        }
        if let (Some((digest, _)), Some(placed)) = (p.upload, uploaded) {
            let placed = placed.with_context(|| format!("uploading config {digest} to {name}"))?;
            report.blobs.push((digest.clone(), placed));
        }
        if !p.dry_run {
            self.put_checked(p)?;
        }
        Ok(report)
    }

    /// Makes every blob present, up to `MAX_COPIES` at once (a copy takes long; a mount
    /// does not, but waits for nothing either). After a failure no further blob is begun.
    fn place_all(&self, p: &Push) -> Vec<Result<Placed>> {
        let n = p.blobs.len();
        if n <= 1 {
            return p.blobs.iter().map(|b| self.make_present(p, b)).collect();
        }
        let results: Vec<Mutex<Option<Result<Placed>>>> =
            (0..n).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..n.min(MAX_COPIES) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n || failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = self.make_present(p, &p.blobs[i]);
                        if r.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    }
                });
            }
        });
        results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| Err(anyhow::anyhow!("not begun: another blob failed")))
            })
            .collect()
    }

    /// Makes one blob present in the target repository.
    fn make_present(&self, p: &Push, blob: &Blob) -> Result<Placed> {
        let (registry, repository, digest) = (p.registry, p.repository, &blob.digest);
        // A manifest in the target repository lists it: a registry keeps the blobs of its
        // manifests, so it is there without asking.
        if blob
            .sources
            .iter()
            .any(|(r, repo)| r == registry && repo == repository)
        {
            return Ok(Placed::Present);
        }
        let same_registry: Vec<&str> = blob
            .sources
            .iter()
            .filter(|(r, _)| r == registry)
            .map(|(_, repo)| repo.as_str())
            .collect();
        if same_registry.is_empty() {
            if let Some(e) = unplaceable(p, blob) {
                return Err(e);
            }
            let (r, repo) = blob
                .sources
                .iter()
                .find(|(r, _)| r != registry)
                .expect("unplaceable: a blob has a source");
            return self.cross(p, blob, (r, repo));
        }
        self.once_per_blob(p, digest, || {
            if p.dry_run {
                // Reads only: what would be mounted.
                let there = self.blob_exists(registry, repository, digest)?;
                return Ok(if there { Placed::Present } else { Placed::Mounted });
            }
            // A mount of a blob the repository has already succeeds too: no HEAD first.
            let mut session = None;
            for from in &same_registry {
                let (mount, opened) =
                    self.mount_or_session(registry, repository, digest, from, !p.no_copy)?;
                if mount == Mount::Mounted {
                    return Ok(Placed::Mounted);
                }
                if let Some(old) = std::mem::replace(&mut session, opened) {
                    let _ = self.transport.send(registry, "DELETE", &old, &[], None);
                }
            }
            if self.blob_exists(registry, repository, digest)? {
                self.abandon(registry, session, anyhow::anyhow!("present"));
                return Ok(Placed::Present);
            }
            if p.no_copy {
                bail!(
                    "the registry did not mount it from {} (it is missing there, or the registry does not allow \
                     cross-repository mounts), and --no-copy forbids copying layer data",
                    same_registry.join(", ")
                )
            }
            self.copy_into(p, blob, (registry, same_registry[0]), Why::MountRefused, session)
        })
    }

    /// Makes present a blob that is only on another registry: the first repository of the
    /// run that needs it on this registry gets a copy; every other one mounts it from
    /// there (and gets a copy of its own only if the registry will not mount).
    fn cross(&self, p: &Push, blob: &Blob, from: (&str, &str)) -> Result<Placed> {
        let dry = if p.dry_run { "dry run " } else { "" };
        let key = format!("{dry}{}@{}", p.registry, blob.digest);
        let mut placed = None;
        let (home, first) = self.crossed.get_or_try(key, || {
            placed = Some(self.once_per_blob(p, &blob.digest, || {
                self.copy_into(p, blob, from, Why::OtherRegistry, None)
            })?);
            Ok(p.repository.to_string())
        })?;
        if first {
            return Ok(placed.expect("the first caller placed it"));
        }
        if home == p.repository {
            return Ok(Placed::Present);
        }
        self.once_per_blob(p, &blob.digest, || {
            let (registry, repository) = (p.registry, p.repository);
            if p.dry_run {
                return Ok(Placed::Mounted);
            }
            let (mount, session) =
                self.mount_or_session(registry, repository, &blob.digest, &home, true)?;
            if mount == Mount::Mounted {
                return Ok(Placed::Mounted);
            }
            if self.blob_exists(registry, repository, &blob.digest)? {
                self.abandon(registry, session, anyhow::anyhow!("present"));
                return Ok(Placed::Present);
            }
            self.copy_into(p, blob, from, Why::OtherRegistry, session)
        })
    }

    /// Copies a blob into the target repository unless it is there already (a dry run:
    /// says whether it would be copied).
    fn copy_into(
        &self,
        p: &Push,
        blob: &Blob,
        from: (&str, &str),
        why: Why,
        session: Option<String>,
    ) -> Result<Placed> {
        let (registry, repository) = (p.registry, p.repository);
        let copied = Placed::Copied(Copied {
            bytes: blob.size,
            from: from.0.to_string(),
            why,
        });
        // A session kept from a refused mount means the blob was just looked for.
        if session.is_none() && self.blob_exists(registry, repository, &blob.digest)? {
            return Ok(Placed::Present);
        }
        if p.dry_run {
            return Ok(copied);
        }
        self.copy_blob(
            &Copy {
                from,
                to: (registry, repository),
                digest: &blob.digest,
                size: blob.size,
            },
            session,
        )
        .with_context(|| {
            format!(
                "copying it ({} bytes) from {}/{} to {registry}/{repository}",
                blob.size, from.0, from.1
            )
        })?;
        Ok(copied)
    }

    /// Uploads a new blob once per repository and run, however many images share it (tags
    /// of one image): two uploads of one blob at once can make a registry lose track of it
    /// (see `put_checked`).
    fn upload_once(&self, p: &Push, digest: &Digest, bytes: &[u8]) -> Result<Placed> {
        self.once_per_blob(p, digest, || {
            if p.dry_run {
                let there = self.blob_exists(p.registry, p.repository, digest)?;
                return Ok(if there {
                    Placed::Present
                } else {
                    Placed::Uploaded
                });
            }
            // No HEAD first: the blob is new, or uploading it again is cheap.
            self.upload_blob_into(p.ahead, p.registry, p.repository, digest, bytes)?;
            Ok(Placed::Uploaded)
        })
    }

    /// Runs `place` for the first caller of the run that needs `digest` in the target
    /// repository; every other caller finds it present.
    fn once_per_blob(
        &self,
        p: &Push,
        digest: &Digest,
        place: impl FnOnce() -> Result<Placed>,
    ) -> Result<Placed> {
        // A dry run's answers say what would be placed, not what is: kept apart, so a
        // real push later in the run still places every blob.
        let dry = if p.dry_run { "dry run " } else { "" };
        let key = format!("{dry}{}/{}@{digest}", p.registry, p.repository);
        let (placed, first) = self.present.get_or_try(key, place)?;
        Ok(if first { placed } else { Placed::Present })
    }

    /// Puts the manifest. distribution rewrites a repository's link to a blob in place on
    /// every upload of it, so while another process uploads the same config a PUT may find
    /// the blob missing (`MANIFEST_BLOB_UNKNOWN`, `DIGEST_INVALID`). Then the blobs the
    /// repository lacks are made present again and the PUT is tried again, a bounded
    /// number of times.
    fn put_checked(&self, p: &Push) -> Result<()> {
        let digest = Digest::of(p.manifest);
        let reference = p.tag.map_or_else(|| digest.to_string(), str::to_string);
        let shown = match p.tag {
            Some(t) => format!("{}/{}:{t}", p.registry, p.repository),
            None => format!("{}/{}@{digest}", p.registry, p.repository),
        };
        let mut attempt = 1;
        loop {
            let err = match self
                .put_manifest(
                    p.registry,
                    p.repository,
                    &reference,
                    p.media_type,
                    p.manifest,
                )
                .with_context(|| format!("putting manifest {shown}"))
            {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if attempt >= PUT_ATTEMPTS || !is_missing_blob(&err) {
                return Err(err);
            }
            std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
            self.replace_missing(p)
                .with_context(|| format!("{err:#}; making its blobs present again"))?;
            attempt += 1;
        }
    }

    /// Mounts, copies or uploads again, bypassing the run's record, each blob the target
    /// lacks now.
    fn replace_missing(&self, p: &Push) -> Result<()> {
        let (registry, repository) = (p.registry, p.repository);
        if let Some((digest, bytes)) = p.upload
            && !self.blob_exists(registry, repository, digest)?
        {
            self.upload_blob(registry, repository, digest, bytes)?;
        }
        for blob in &p.blobs {
            if self.blob_exists(registry, repository, &blob.digest)? {
                continue;
            }
            let mut mounted = false;
            for (_, from) in blob
                .sources
                .iter()
                .filter(|(r, repo)| r == registry && repo != repository)
            {
                if self.mount_blob(registry, repository, &blob.digest, from)? == Mount::Mounted {
                    mounted = true;
                    break;
                }
            }
            // Where no mount does, copied again (a copy is what placed it the first time).
            if let (false, false, Some((r, repo))) = (
                mounted,
                p.no_copy,
                blob.sources
                    .iter()
                    .find(|(r, repo)| r != registry || repo != repository),
            ) {
                let c = Copy {
                    from: (r, repo),
                    to: (registry, repository),
                    digest: &blob.digest,
                    size: blob.size,
                };
                self.copy_blob(&c, None)?;
            }
        }
        Ok(())
    }
}

/// Why a blob that is not in the target repository cannot be placed there, without
/// asking: it is nowhere else, or only on another registry and copies are forbidden.
fn unplaceable(p: &Push, blob: &Blob) -> Option<anyhow::Error> {
    let registry = p.registry;
    if blob.sources.iter().any(|(r, _)| r == registry) {
        return None;
    }
    let Some((r, repo)) = blob.sources.iter().find(|(r, _)| r != registry) else {
        return Some(anyhow::anyhow!(
            "it is in none of the document's other repositories, so there is nowhere to mount it from"
        ));
    };
    p.no_copy.then(|| {
        anyhow::anyhow!(
            "it is only in {r}/{repo}, on another registry; a blob cannot be mounted across registries \
             and --no-copy forbids copying layer data: copy the new base into {registry} first \
             (e.g. with skopeo copy) and name that copy as the new base, or leave out --no-copy"
        )
    })
}

/// Whether a manifest PUT was refused because a blob seemed missing.
fn is_missing_blob(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<RegistryError>())
        .any(|e| e.has_code("MANIFEST_BLOB_UNKNOWN") || e.has_code("DIGEST_INVALID"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_CONFIG, OCI_MANIFEST};
    use crate::registry::fake::{Fake, Request};

    const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    /// An image to push to `app`: one layer (in `base` of the fake) and a new config.
    struct Image {
        layer: Digest,
        config: Vec<u8>,
        config_digest: Digest,
        manifest: Vec<u8>,
    }

    fn image(fake: &Fake) -> Image {
        let layer = fake.put_blob("base", b"the base layer");
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let config_digest = Digest::of(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer, "size": 14}],
        }))
        .unwrap();
        Image {
            layer,
            config,
            config_digest,
            manifest,
        }
    }

    /// A push of `img` to `app:<tag>` whose layer is found in the given repositories.
    fn push<'a>(
        fake: &'a Fake,
        img: &'a Image,
        tag: &'a str,
        sources: &[(&str, &str)],
    ) -> Push<'a> {
        Push {
            registry: fake.addr(),
            repository: "app",
            tag: Some(tag),
            media_type: OCI_MANIFEST,
            manifest: &img.manifest,
            blobs: vec![Blob {
                digest: img.layer.clone(),
                size: 14,
                what: "layer",
                sources: sources
                    .iter()
                    .map(|(r, repo)| (r.to_string(), repo.to_string()))
                    .collect(),
            }],
            upload: Some((&img.config_digest, &img.config)),
            dry_run: false,
            no_copy: false,
            ahead: None,
        }
    }

    fn from_base(fake: &Fake) -> [(&str, &str); 1] {
        [(fake.addr(), "base")]
    }

    /// The requests other than the ping.
    fn api_requests(fake: &Fake) -> Vec<Request> {
        fake.requests()
            .into_iter()
            .filter(|r| r.path != "/v2/")
            .collect()
    }

    fn is_upload_start(r: &Request) -> bool {
        r.method == "POST" && r.path == "/v2/app/blobs/uploads/" && r.param("mount").is_none()
    }

    fn is_upload_put(r: &Request) -> bool {
        r.method == "PUT" && r.path.starts_with("/v2/app/blobs/uploads/")
    }

    fn is_manifest_put(r: &Request) -> bool {
        r.method == "PUT" && r.path.starts_with("/v2/app/manifests/")
    }

    #[test]
    fn layers_are_mounted_from_a_source_repository_of_the_same_registry() {
        let fake = Fake::start();
        let img = image(&fake);
        let client = fake.client();
        let report = client
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        assert_eq!(
            report.blobs,
            vec![
                (img.layer.clone(), Placed::Mounted),
                (img.config_digest.clone(), Placed::Uploaded)
            ]
        );
        assert!(fake.has_blob("app", &img.layer));
        assert!(fake.has_blob("app", &img.config_digest));
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
        let mounts: Vec<Request> = api_requests(&fake)
            .into_iter()
            .filter(|r| r.param("mount").is_some())
            .collect();
        assert_eq!(mounts.len(), 1, "{mounts:#?}");
        assert_eq!(mounts[0].param("mount"), Some(img.layer.to_string()));
        assert_eq!(mounts[0].param("from").as_deref(), Some("base"));
    }

    #[test]
    fn a_layer_listed_by_a_manifest_in_the_target_repository_is_present_without_any_request() {
        let fake = Fake::start();
        let img = image(&fake);
        // The target repository has it (a manifest there lists it).
        fake.put_blob("app", b"the base layer");
        let client = fake.client();
        let sources = [(fake.addr(), "base"), (fake.addr(), "app")];
        let report = client.push(&push(&fake, &img, "1", &sources)).unwrap();
        assert_eq!(report.blobs[0], (img.layer.clone(), Placed::Present));
        let asked: Vec<Request> = fake
            .requests()
            .into_iter()
            .filter(|r| r.names(&img.layer))
            .collect();
        assert!(asked.is_empty(), "{asked:#?}");
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
    }

    #[test]
    fn the_config_is_uploaded_once_per_repository_when_two_pushes_of_one_image_run_on_one_client() {
        let fake = Fake::start();
        let img = image(&fake);
        let client = fake.client();
        let first = client
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        let second = client
            .push(&push(&fake, &img, "latest", &from_base(&fake)))
            .unwrap();
        assert_eq!(
            first.blobs[1],
            (img.config_digest.clone(), Placed::Uploaded)
        );
        assert_eq!(
            second.blobs,
            vec![
                (img.layer.clone(), Placed::Present),
                (img.config_digest.clone(), Placed::Present)
            ]
        );
        let log = api_requests(&fake);
        assert_eq!(
            log.iter().filter(|r| is_upload_start(r)).count(),
            1,
            "{log:#?}"
        );
        assert_eq!(
            log.iter().filter(|r| is_upload_put(r)).count(),
            1,
            "{log:#?}"
        );
        assert_eq!(
            log.iter().filter(|r| r.param("mount").is_some()).count(),
            1,
            "the layer is mounted once too: {log:#?}"
        );
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
        assert_eq!(fake.manifest("app", "latest"), Some(img.manifest.clone()));
    }

    #[test]
    fn a_dry_run_writes_nothing_and_reports_what_it_would_do() {
        let fake = Fake::start();
        let img = image(&fake);
        let client = fake.client();
        let mut p = push(&fake, &img, "1", &from_base(&fake));
        p.dry_run = true;
        let report = client.push(&p).unwrap();
        assert_eq!(
            report.blobs,
            vec![
                (img.layer.clone(), Placed::Mounted),
                (img.config_digest.clone(), Placed::Uploaded)
            ]
        );
        // Blobs the target has already are reported present.
        let fake2 = Fake::start();
        let img2 = image(&fake2);
        fake2.put_blob("app", b"the base layer");
        fake2.put_blob("app", &img2.config);
        let mut p = push(&fake2, &img2, "1", &from_base(&fake2));
        p.dry_run = true;
        let report = fake2.client().push(&p).unwrap();
        assert_eq!(
            report.blobs,
            vec![
                (img2.layer.clone(), Placed::Present),
                (img2.config_digest.clone(), Placed::Present)
            ]
        );
        for f in [&fake, &fake2] {
            let writes: Vec<Request> = f.requests().into_iter().filter(Request::writes).collect();
            assert!(writes.is_empty(), "{writes:#?}");
            assert_eq!(f.manifest("app", "1"), None);
        }
        assert!(!fake.has_blob("app", &img.layer));
    }

    #[test]
    fn the_manifest_is_put_last() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        let log = api_requests(&fake);
        let last = log.last().expect("requests");
        assert!(is_manifest_put(last), "{log:#?}");
        assert_eq!(log.iter().filter(|r| is_manifest_put(r)).count(), 1);
        assert!(
            log[..log.len() - 1]
                .iter()
                .all(|r| r.path.contains("/blobs/")),
            "{log:#?}"
        );
        assert!(log.iter().any(is_upload_put), "{log:#?}");
    }

    #[test]
    fn a_manifest_put_refused_once_with_manifest_blob_unknown_is_retried_after_replacing_the_missing_blobs()
     {
        let fake = Fake::start();
        let img = image(&fake);
        // The registry loses both blobs just before the first manifest PUT, which it then
        // refuses with MANIFEST_BLOB_UNKNOWN.
        fake.lose_blob_on_next("PUT", "/v2/app/manifests/", "app", &img.layer);
        fake.lose_blob_on_next("PUT", "/v2/app/manifests/", "app", &img.config_digest);
        let report = fake
            .client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        assert_eq!(report.blobs.len(), 2);
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
        let log = api_requests(&fake);
        let puts: Vec<usize> = (0..log.len())
            .filter(|&i| is_manifest_put(&log[i]))
            .collect();
        assert_eq!(puts.len(), 2, "{log:#?}");
        // Between the two PUTs: the config uploaded again, the layer mounted again.
        let between = &log[puts[0]..puts[1]];
        assert_eq!(
            between.iter().filter(|r| is_upload_start(r)).count(),
            1,
            "{log:#?}"
        );
        assert_eq!(
            between.iter().filter(|r| is_upload_put(r)).count(),
            1,
            "{log:#?}"
        );
        assert!(
            between
                .iter()
                .any(|r| r.param("mount") == Some(img.layer.to_string())),
            "{log:#?}"
        );
    }

    #[test]
    fn a_manifest_put_refused_once_with_digest_invalid_is_retried() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.fail_next("PUT", "/v2/app/manifests/1", 400, "DIGEST_INVALID");
        fake.client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        assert_eq!(fake.count("PUT", "/v2/app/manifests/1"), 2);
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
        // Nothing was missing: checked, not placed again.
        let log = api_requests(&fake);
        assert_eq!(
            log.iter().filter(|r| is_upload_start(r)).count(),
            1,
            "{log:#?}"
        );
        assert_eq!(
            fake.count("HEAD", &format!("/v2/app/blobs/{}", img.config_digest)),
            1
        );
    }

    #[test]
    fn a_manifest_put_refused_for_another_reason_is_not_retried() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.fail_next("PUT", "/v2/app/manifests/1", 400, "MANIFEST_INVALID");
        let err = fake
            .client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("MANIFEST_INVALID"), "{msg}");
        assert!(
            msg.contains(&format!("putting manifest {}/app:1", fake.addr())),
            "{msg}"
        );
        assert_eq!(fake.count("PUT", "/v2/app/manifests/1"), 1);
    }

    #[test]
    fn a_manifest_put_refused_every_time_gives_up_after_three_attempts() {
        let fake = Fake::start();
        let img = image(&fake);
        for _ in 0..5 {
            fake.fail_next("PUT", "/v2/app/manifests/1", 400, "MANIFEST_BLOB_UNKNOWN");
        }
        let err = fake
            .client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("MANIFEST_BLOB_UNKNOWN"),
            "{err:#}"
        );
        assert_eq!(fake.count("PUT", "/v2/app/manifests/1"), 3);
        assert_eq!(fake.manifest("app", "1"), None);
    }

    #[test]
    fn with_no_copy_a_layer_only_on_another_registry_is_refused_with_a_message_saying_another_registry()
     {
        let fake = Fake::start();
        let img = image(&fake);
        // Another registry's name; it is never contacted (and is loopback if it were).
        let elsewhere = [("127.0.0.1:1", "base")];
        let mut p = push(&fake, &img, "1", &elsewhere);
        p.no_copy = true;
        let err = fake.client().push(&p).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("another registry"), "{msg}");
        assert!(msg.contains("cannot be mounted across registries"), "{msg}");
        assert!(msg.contains("127.0.0.1:1/base"), "{msg}");
        assert!(
            msg.contains(&format!(
                "making layer {} present in {}/app",
                img.layer,
                fake.addr()
            )),
            "{msg}"
        );
        let writes: Vec<Request> = fake
            .requests()
            .into_iter()
            .filter(Request::writes)
            .collect();
        assert!(writes.is_empty(), "{writes:#?}");
    }

    #[test]
    fn with_no_copy_a_registry_that_refuses_mounts_gives_the_did_not_mount_it_error() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.refuse_mounts(true);
        let mut p = push(&fake, &img, "1", &from_base(&fake));
        p.no_copy = true;
        let err = fake.client().push(&p).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("did not mount it from base"), "{msg}");
        let log = api_requests(&fake);
        // The session the refused mount opened is cancelled; the blob is looked for.
        assert_eq!(
            log.iter().filter(|r| r.method == "DELETE").count(),
            1,
            "{log:#?}"
        );
        assert_eq!(
            fake.count("HEAD", &format!("/v2/app/blobs/{}", img.layer)),
            1
        );
        assert!(!log.iter().any(is_manifest_put), "{log:#?}");
        assert!(
            !log.iter().any(|r| is_upload_put(r) && r.names(&img.layer)),
            "no layer data is uploaded: {log:#?}"
        );
        assert_eq!(fake.manifest("app", "1"), None);
    }

    #[test]
    fn a_refused_mount_of_a_blob_the_target_has_already_finds_it_present() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.refuse_mounts(true);
        fake.put_blob("app", b"the base layer");
        let report = fake
            .client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        assert_eq!(report.blobs[0], (img.layer.clone(), Placed::Present));
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
    }

    /// A dry run's answers are kept apart from what is placed: a real push on the same
    /// client afterwards still mounts and uploads.
    #[test]
    fn a_real_push_after_a_dry_run_on_one_client_still_places_the_blobs() {
        let fake = Fake::start();
        let img = image(&fake);
        let client = fake.client();
        let mut dry = push(&fake, &img, "1", &from_base(&fake));
        dry.dry_run = true;
        client.push(&dry).unwrap();
        let report = client
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        assert_eq!(
            report.blobs,
            vec![
                (img.layer.clone(), Placed::Mounted),
                (img.config_digest.clone(), Placed::Uploaded)
            ]
        );
        assert_eq!(
            fake.count("PUT", "/v2/app/manifests/1"),
            1,
            "no retry needed"
        );
    }

    /// `img`'s layer is in `source`'s `base` only: the push to `target` must copy it.
    fn elsewhere(source: &Fake) -> [(&str, &str); 1] {
        [(source.addr(), "base")]
    }

    fn layer_gets(f: &Fake, img: &Image) -> usize {
        f.count("GET", &format!("/v2/base/blobs/{}", img.layer))
    }

    #[test]
    fn a_layer_only_on_another_registry_is_copied_from_it_and_reported_with_its_bytes() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        let report = target
            .client()
            .push(&push(&target, &img, "1", &elsewhere(&source)))
            .unwrap();
        assert_eq!(
            report.blobs[0],
            (
                img.layer.clone(),
                Placed::Copied(Copied {
                    bytes: 14,
                    from: source.addr().to_string(),
                    why: Why::OtherRegistry
                })
            )
        );
        assert!(target.has_blob("app", &img.layer));
        assert_eq!(target.manifest("app", "1"), Some(img.manifest.clone()));
        assert_eq!(layer_gets(&source, &img), 1);
        let writes: Vec<Request> = source
            .requests()
            .into_iter()
            .filter(Request::writes)
            .collect();
        assert!(writes.is_empty(), "the source is only read: {writes:#?}");
    }

    #[test]
    fn a_layer_crosses_into_a_registry_once_per_run_and_other_repositories_mount_it() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        let client = target.client();
        let first = client
            .push(&push(&target, &img, "1", &elsewhere(&source)))
            .unwrap();
        let mut p = push(&target, &img, "1", &elsewhere(&source));
        p.repository = "app2";
        let second = client.push(&p).unwrap();
        assert!(matches!(first.blobs[0].1, Placed::Copied(_)), "{first:?}");
        assert_eq!(second.blobs[0].1, Placed::Mounted, "{second:?}");
        assert_eq!(layer_gets(&source, &img), 1, "read from the source once");
        let mounts: Vec<Request> = target
            .requests()
            .into_iter()
            .filter(|r| r.param("mount").is_some())
            .collect();
        assert_eq!(mounts.len(), 1, "{mounts:#?}");
        assert_eq!(mounts[0].param("from").as_deref(), Some("app"));
        assert!(target.has_blob("app2", &img.layer));
        assert_eq!(target.manifest("app2", "1"), Some(img.manifest.clone()));
    }

    #[test]
    fn a_source_whose_bytes_do_not_match_the_digest_fails_the_copy_and_nothing_is_written() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        // Same length, other bytes.
        source.put_blob_raw("base", &img.layer, b"the bad layer!");
        let err = target
            .client()
            .push(&push(&target, &img, "1", &elsewhere(&source)))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("not to {}", img.layer)), "{msg}");
        assert!(
            msg.contains(&format!(
                "copying it (14 bytes) from {}/base",
                source.addr()
            )),
            "{msg}"
        );
        assert!(!target.has_blob("app", &img.layer));
        assert_eq!(target.manifest("app", "1"), None);
        assert_eq!(layer_gets(&source, &img), 1, "a lie is not asked again");
    }

    #[test]
    fn a_source_that_serves_another_size_than_the_descriptor_is_refused() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        source.put_blob_raw("base", &img.layer, b"a longer layer than said");
        let err = target
            .client()
            .push(&push(&target, &img, "1", &elsewhere(&source)))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("serves it as 24 bytes, but the manifest says it is 14"),
            "{msg}"
        );
        assert_eq!(target.manifest("app", "1"), None);
    }

    #[test]
    fn a_dry_run_reports_the_copy_with_its_bytes_and_reads_no_layer() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        let mut p = push(&target, &img, "1", &elsewhere(&source));
        p.dry_run = true;
        let report = target.client().push(&p).unwrap();
        assert!(
            matches!(&report.blobs[0].1, Placed::Copied(c) if c.bytes == 14),
            "{report:?}"
        );
        assert_eq!(layer_gets(&source, &img), 0);
        for f in [&target, &source] {
            let writes: Vec<Request> = f.requests().into_iter().filter(Request::writes).collect();
            assert!(writes.is_empty(), "{writes:#?}");
        }
    }

    #[test]
    fn a_registry_that_refuses_mounts_gets_a_copy_in_the_upload_session_the_mount_opened() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.refuse_mounts(true);
        let report = fake
            .client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap();
        assert_eq!(
            report.blobs[0].1,
            Placed::Copied(Copied {
                bytes: 14,
                from: fake.addr().to_string(),
                why: Why::MountRefused
            })
        );
        assert_eq!(fake.manifest("app", "1"), Some(img.manifest.clone()));
        let log = api_requests(&fake);
        assert!(!log.iter().any(|r| r.method == "DELETE"), "{log:#?}");
        // The mount's POST and the config's: no other upload start.
        assert_eq!(
            log.iter()
                .filter(|r| r.method == "POST" && r.path == "/v2/app/blobs/uploads/")
                .count(),
            2,
            "{log:#?}"
        );
        assert_eq!(
            fake.count("GET", &format!("/v2/base/blobs/{}", img.layer)),
            1
        );
    }

    #[test]
    fn several_layers_copy_at_once_and_the_report_keeps_their_order() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        let layers: Vec<(Digest, usize)> = (0..6)
            .map(|i| {
                let bytes = format!("layer number {i}").into_bytes();
                (source.put_blob("base", &bytes), bytes.len())
            })
            .collect();
        let mut p = push(&target, &img, "1", &elsewhere(&source));
        let mut layers = layers;
        layers.insert(0, (img.layer.clone(), 14));
        p.blobs = layers
            .iter()
            .map(|(d, n)| Blob {
                digest: d.clone(),
                size: *n as u64,
                what: "layer",
                sources: vec![(source.addr().to_string(), "base".to_string())],
            })
            .collect();
        let report = target.client().push(&p).unwrap();
        for (d, _) in &layers {
            assert!(target.has_blob("app", d));
        }
        let order: Vec<&Digest> = report.blobs.iter().map(|(d, _)| d).collect();
        let want: Vec<&Digest> = layers
            .iter()
            .map(|(d, _)| d)
            .chain([&img.config_digest])
            .collect();
        assert_eq!(order, want);
    }

    #[test]
    fn a_copied_layer_lost_before_the_manifest_put_is_copied_again() {
        let (target, source) = (Fake::start(), Fake::start());
        let img = image(&source);
        target.lose_blob_on_next("PUT", "/v2/app/manifests/", "app", &img.layer);
        target
            .client()
            .push(&push(&target, &img, "1", &elsewhere(&source)))
            .unwrap();
        assert_eq!(target.manifest("app", "1"), Some(img.manifest.clone()));
        assert_eq!(layer_gets(&source, &img), 2);
    }
}
