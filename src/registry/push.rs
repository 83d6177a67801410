//! Putting an image into a repository, in the shape of go-containerregistry's
//! `remote.Write`: every blob the manifest lists is made present (already there, or
//! mounted from a repository of the same registry that has it), a new blob (the config)
//! is uploaded, and the manifest is put last, so that a failure part-way moves no tag.
//! Each blob is placed in a repository once per run, however many images need it. Which
//! tag to write, and whether it may be written, is the caller's decision.

use super::{Client, Mount, RegistryError};
use crate::oci::digest::Digest;
use anyhow::{Context, Result, bail};

/// A blob the manifest lists, and where it can be found.
pub struct Blob {
    pub digest: Digest,
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
    /// Only look: say what would be placed; mount, upload and put nothing.
    pub dry_run: bool,
}

/// How a blob came to be in the target repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// It was there already (or another image of this run put it there).
    Present,
    Mounted,
    Uploaded,
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
    /// Writes `p`: blobs first, the manifest last.
    pub fn push(&self, p: &Push) -> Result<PushReport> {
        let name = format!("{}/{}", p.registry, p.repository);
        let mut report = PushReport::default();
        for blob in &p.blobs {
            let placed = self.make_present(p, blob).with_context(|| {
                format!("making {} {} present in {name}", blob.what, blob.digest)
            })?;
            report.blobs.push((blob.digest.clone(), placed));
        }
        if let Some((digest, bytes)) = p.upload {
            let placed = self
                .upload_once(p, digest, bytes)
                .with_context(|| format!("uploading config {digest} to {name}"))?;
            report.blobs.push((digest.clone(), placed));
        }
        if !p.dry_run {
            self.put_checked(p)?;
        }
        Ok(report)
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
            if let Some((r, repo)) = blob.sources.iter().find(|(r, _)| r != registry) {
                bail!(
                    "it is only in {r}/{repo}, on another registry; a blob cannot be mounted across registries \
                     and image-rebase does not copy layer data: copy the new base into {registry} first \
                     (e.g. with skopeo copy) and name that copy as the new base"
                );
            }
            bail!(
                "it is in none of the document's other repositories, so there is nowhere to mount it from"
            );
        }
        self.once_per_blob(p, digest, || {
            if p.dry_run {
                // Reads only: what would be mounted.
                let there = self.blob_exists(registry, repository, digest)?;
                return Ok(if there { Placed::Present } else { Placed::Mounted });
            }
            // A mount of a blob the repository has already succeeds too: no HEAD first.
            for from in &same_registry {
                if self.mount_blob(registry, repository, digest, from)? == Mount::Mounted {
                    return Ok(Placed::Mounted);
                }
            }
            if self.blob_exists(registry, repository, digest)? {
                return Ok(Placed::Present);
            }
            bail!(
                "the registry did not mount it from {} (it is missing there, or the registry does not allow \
                 cross-repository mounts); image-rebase does not copy layer data",
                same_registry.join(", ")
            )
        })
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
            self.upload_blob(p.registry, p.repository, digest, bytes)?;
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

    /// Mounts or uploads again, bypassing the run's record, each blob the target lacks now.
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
            for (_, from) in blob
                .sources
                .iter()
                .filter(|(r, repo)| r == registry && repo != repository)
            {
                if self.mount_blob(registry, repository, &blob.digest, from)? == Mount::Mounted {
                    break;
                }
            }
        }
        Ok(())
    }
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
                what: "layer",
                sources: sources
                    .iter()
                    .map(|(r, repo)| (r.to_string(), repo.to_string()))
                    .collect(),
            }],
            upload: Some((&img.config_digest, &img.config)),
            dry_run: false,
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
    fn a_layer_only_on_another_registry_is_refused_with_a_message_saying_another_registry() {
        let fake = Fake::start();
        let img = image(&fake);
        // Another registry's name; it is never contacted (and is loopback if it were).
        let elsewhere = [("127.0.0.1:1", "base")];
        let err = fake
            .client()
            .push(&push(&fake, &img, "1", &elsewhere))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("another registry"), "{msg}");
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
    fn a_registry_that_refuses_mounts_gives_the_did_not_mount_it_error() {
        let fake = Fake::start();
        let img = image(&fake);
        fake.refuse_mounts(true);
        let err = fake
            .client()
            .push(&push(&fake, &img, "1", &from_base(&fake)))
            .unwrap_err();
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
            !log.iter().any(is_upload_put),
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
}
