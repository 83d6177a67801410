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
        let key = format!("{}/{}@{digest}", p.registry, p.repository);
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
