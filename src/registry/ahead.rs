//! Requests sent ahead of need, so that they have their answers when a push gets to
//! them: what the target tag holds (a HEAD) and an upload session for the new config (a
//! POST), sent while the manifests and configs are still being fetched. Both only read
//! or open: the tag still moves only by the final manifest PUT, and a session never used
//! is cancelled.

use super::Client;
use crate::oci::digest::Digest;
use crate::oci::reference::Reference;
use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// What was asked ahead for one push to a repository.
#[derive(Debug)]
pub struct Ahead {
    registry: String,
    repository: String,
    /// The tag whose manifest the HEAD asked about.
    tag: Option<String>,
    /// The HEAD's answer (what the tag holds: a digest, or nothing there); `None` when it
    /// failed or was never sent: then the push asks itself, and reports any error.
    head: OnceLock<Option<Option<Digest>>>,
    /// The upload session's location; `None` when the POST failed or was never sent.
    session: OnceLock<Option<String>>,
    /// Why the POST failed: the upload reports it rather than sending another (a POST is
    /// not sent twice).
    failed: Mutex<Option<anyhow::Error>>,
    taken: AtomicBool,
}

impl Ahead {
    /// For a push to `registry/repository`, asking what `tag` holds when there is one.
    pub fn new(registry: &str, repository: &str, tag: Option<&str>) -> Ahead {
        Ahead {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            head: OnceLock::new(),
            session: OnceLock::new(),
            failed: Mutex::new(None),
            taken: AtomicBool::new(false),
        }
    }

    /// The registry and repository the push goes to.
    pub fn target_repository(&self) -> (&str, &str) {
        (&self.registry, &self.repository)
    }

    /// Whether a HEAD of a tag is to be sent (see `Client::head_ahead`).
    pub fn asks_head(&self) -> bool {
        self.tag.is_some()
    }

    /// Whether this was sent for a push to `registry/repository`.
    pub fn is_for(&self, registry: &str, repository: &str) -> bool {
        self.registry == registry && self.repository == repository
    }

    fn target(&self, tag: &str) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }
}

impl Client {
    /// HEADs the tag `ahead` is for (nothing without one). A failure is kept as no
    /// answer: the push asks again and says what went wrong.
    pub fn head_ahead(&self, ahead: &Ahead) {
        if let Some(tag) = &ahead.tag {
            ahead
                .head
                .get_or_init(|| self.head_manifest(&ahead.target(tag)).ok());
        }
    }

    /// What `r` holds as asked ahead, waiting for a HEAD still on its way; `None` when
    /// nothing was asked about `r` (or the HEAD failed): the caller asks itself.
    pub fn head_asked(&self, ahead: &Ahead, r: &Reference) -> Option<Option<Digest>> {
        let asked = r.digest.is_none()
            && ahead.is_for(&r.registry, &r.repository)
            && ahead.tag.is_some()
            && ahead.tag == r.tag;
        if !asked {
            return None;
        }
        ahead.head.get_or_init(|| None).clone()
    }

    /// Whether the HEAD sent ahead found the tag holding a manifest (waiting for it when
    /// it is on its way): then the push may well write nothing (a re-run), and opens no
    /// session ahead.
    pub fn tag_held(&self, ahead: &Ahead) -> bool {
        ahead.tag.is_some() && matches!(ahead.head.get_or_init(|| None), Some(Some(_)))
    }

    /// Opens an upload session in the repository `ahead` is for. A failure is kept for
    /// the upload, which reports it.
    pub fn open_ahead(&self, ahead: &Ahead) {
        ahead.session.get_or_init(
            || match self.start_upload(&ahead.registry, &ahead.repository) {
                Ok(location) => Some(location),
                Err(e) => {
                    *ahead.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    None
                }
            },
        );
    }

    /// The session opened ahead for an upload to `registry/repository`, once: it waits
    /// for a POST still on its way; `None` when none was opened (the upload opens its
    /// own) or it was used already; the POST's error when it failed.
    pub(super) fn take_session(
        &self,
        ahead: Option<&Ahead>,
        registry: &str,
        repository: &str,
    ) -> Result<Option<String>> {
        let Some(ahead) = ahead.filter(|a| a.is_for(registry, repository)) else {
            return Ok(None);
        };
        let location = ahead.session.get_or_init(|| None).clone();
        if ahead.taken.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        match ahead
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(location),
        }
    }

    /// Cancels (DELETE) the session opened ahead when no upload used it, so that no
    /// empty upload is left behind. Best effort: a registry that does not cancel uploads
    /// drops them in time.
    pub fn cancel_ahead(&self, ahead: &Ahead) {
        if let Some(Some(location)) = ahead.session.get()
            && !ahead.taken.swap(true, Ordering::SeqCst)
            && let Ok(resp) = self
                .transport
                .send(&ahead.registry, "DELETE", location, &[], None)
        {
            super::http::drain(resp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::Fake;

    #[test]
    fn a_session_opened_ahead_is_used_once_or_cancelled() {
        let fake = Fake::start();
        let client = fake.client();
        let digest = Digest::of(b"config");
        // Used by the upload: nothing left to cancel.
        let ahead = Ahead::new(fake.addr(), "app", None);
        client.open_ahead(&ahead);
        assert_eq!(fake.open_uploads(), 1);
        client
            .upload_blob_into(Some(&ahead), fake.addr(), "app", &digest, b"config")
            .unwrap();
        client.cancel_ahead(&ahead);
        assert_eq!(fake.count("POST", "/v2/app/blobs/uploads/"), 1);
        assert!(fake.has_blob("app", &digest));
        assert_eq!(fake.count_method("DELETE"), 0);
        // A second upload opens a session of its own.
        let other = Digest::of(b"other");
        client
            .upload_blob_into(Some(&ahead), fake.addr(), "app", &other, b"other")
            .unwrap();
        assert_eq!(fake.count("POST", "/v2/app/blobs/uploads/"), 2);
        // Unused: cancelled, and only once.
        let unused = Ahead::new(fake.addr(), "app", None);
        client.open_ahead(&unused);
        client.cancel_ahead(&unused);
        client.cancel_ahead(&unused);
        assert_eq!(fake.open_uploads(), 0);
        assert_eq!(fake.count_method("DELETE"), 1);
        // For another repository: not used.
        let elsewhere = Ahead::new(fake.addr(), "other", None);
        client.open_ahead(&elsewhere);
        client
            .upload_blob_into(Some(&elsewhere), fake.addr(), "app", &digest, b"config")
            .unwrap();
        assert_eq!(fake.open_uploads(), 1);
        client.cancel_ahead(&elsewhere);
        assert_eq!(fake.open_uploads(), 0);
    }

    #[test]
    fn a_failed_post_ahead_is_the_upload_s_error_and_is_not_sent_again() {
        let fake = Fake::start();
        let client = fake.client();
        fake.fail_next("POST", "/v2/app/blobs/uploads/", 503, "UNAVAILABLE");
        let ahead = Ahead::new(fake.addr(), "app", None);
        client.open_ahead(&ahead);
        let err = client
            .upload_blob_into(Some(&ahead), fake.addr(), "app", &Digest::of(b"c"), b"c")
            .unwrap_err();
        assert!(format!("{err:#}").contains("503"), "{err:#}");
        assert_eq!(fake.count("POST", "/v2/app/blobs/uploads/"), 1);
    }

    #[test]
    fn what_a_tag_held_is_asked_once_and_only_for_that_tag() {
        let fake = Fake::start();
        let client = fake.client();
        let ahead = Ahead::new(fake.addr(), "app", Some("t"));
        client.head_ahead(&ahead);
        assert!(!client.tag_held(&ahead));
        let at = |tag: &str| Reference {
            registry: fake.addr().to_string(),
            repository: "app".into(),
            tag: Some(tag.into()),
            digest: None,
        };
        assert_eq!(client.head_asked(&ahead, &at("t")), Some(None));
        assert_eq!(client.head_asked(&ahead, &at("u")), None);
        assert_eq!(fake.count("HEAD", "/v2/app/manifests/t"), 1);
    }
}
