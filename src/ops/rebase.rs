//! The porcelain `rebase`: the plumbing steps in one process, on one document, with the
//! same functions the plumbing commands call.

use crate::document::{Document, Pushed, Role};
use crate::error::NotBased;
use crate::image::detect::{self, View};
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_tag};
use crate::ops::{
    PushOptions, SplitOptions, contract, fetch_config, fetch_manifest, put_manifest, splice,
    split_history,
};
use crate::registry::{Ahead, Client, MAX_JSON_BYTES};
use anyhow::{Result, bail};
use std::sync::Arc;

/// One image to rebase, with its options parsed.
pub struct Spec {
    pub image: Reference,
    pub old_base: Option<Reference>,
    pub new_base: Option<Reference>,
    pub platforms: Vec<Platform>,
    pub split: SplitOptions,
    pub push: PushOptions,
    /// `--require-same-label`: labels that must be the same on the old and the new base.
    pub same_labels: Vec<String>,
    /// The digest the image's tag must still hold (`find` saw it there); else the image
    /// is skipped as moved.
    pub found: Option<Digest>,
    /// Open the config's upload session with the first requests, before anything shows
    /// that an upload will come (cancelled when none does): a single rebase, whose
    /// connections are all new, gets one more to use for the next requests. A fleet,
    /// whose connections are warm and whose re-runs upload nothing, opens it once the
    /// bases' manifests show an upload will come.
    pub open_early: bool,
}

impl Spec {
    /// The registries this spec names (where --username credentials may go).
    pub fn named_hosts(&self) -> Vec<String> {
        [
            Some(&self.image),
            self.old_base.as_ref(),
            self.new_base.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|r| r.registry.clone())
        .chain(self.push.to.iter().map(|(registry, _)| registry.clone()))
        .collect()
    }
}

/// Rebases one image: every step; the whole document back. Notes for the user are added
/// to `notes` as they come, so that those before an error are not lost.
///
/// Precedence: --old-base/--new-base given explicitly; else --layers for the split;
/// else the OCI base annotations on the image's manifest (or index); else the label.
pub fn rebase(client: &Client, spec: &Spec, notes: &mut Vec<String>) -> Result<Document> {
    if let Some(template) = &spec.push.tag {
        check_template(template)?;
    }
    let ahead = Arc::new(ahead_for(spec));
    declare_scopes(client, spec, &ahead)?;
    let done = rebase_with(client, spec, &ahead, notes);
    client.cancel_ahead(&ahead);
    done
}

/// Tells the client every right the rebase will ask of each registry it names, so that
/// the first token it fetches covers them all (one token a registry and run): pull,push
/// on the target (pull only for a dry run), pull on the image's and the bases'
/// repositories. Bases that only the image names are asked for as they come.
fn declare_scopes(client: &Client, spec: &Spec, ahead: &Ahead) -> Result<()> {
    let (registry, repository) = ahead.target_repository();
    let actions = if spec.push.dry_run {
        "pull"
    } else {
        "pull,push"
    };
    let sources = [
        Some(&spec.image),
        spec.old_base.as_ref(),
        spec.new_base.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| (r.registry.as_str(), r.repository.as_str()));
    client.want_push(registry, repository, actions, sources)
}

/// What can be sent ahead for the push before anything is fetched: the target is known
/// from the command line (but for a `{digest}` template), and a HEAD of its tag is needed
/// unless it is the image's own tag, which the image's fetch reads anyway.
fn ahead_for(spec: &Spec) -> Ahead {
    let image = &spec.image;
    let (registry, repository) = spec
        .push
        .to
        .clone()
        .unwrap_or_else(|| (image.registry.clone(), image.repository.clone()));
    let tag = match &spec.push.tag {
        Some(t) if t.contains("{digest}") => None,
        Some(t) if t.contains("{tag}") => image.tag.as_ref().map(|own| t.replace("{tag}", own)),
        Some(t) => Some(t.clone()),
        None => None,
    };
    let own = spec.push.to.is_none() && tag == image.tag;
    Ahead::new(&registry, &repository, tag.as_deref().filter(|_| !own))
}

fn rebase_with(
    client: &Client,
    spec: &Spec,
    ahead: &Arc<Ahead>,
    notes: &mut Vec<String>,
) -> Result<Document> {
    let opts = fetch_manifest::Options {
        label: &spec.split.label,
        platforms: &spec.platforms,
        annotation_failed: None,
    };
    let mut annotation_failed = None;
    let mut doc = Document::default();
    fetch_image(client, spec, ahead, &mut doc, &opts)?;
    notes.extend(doc.skipped_notes());
    let tag = target_tag(spec, &doc)?;
    match &spec.old_base {
        Some(r) => notes.extend(fetch_manifest::step(
            client,
            &mut doc,
            Role::OldBase,
            Some(r),
            &opts,
        )?),
        None if spec.split.layers.is_some() => {}
        // The annotations' old base, when it is there and a prefix of the image; else the
        // label takes over.
        None => {
            if let Some(Err(why)) = fetch_manifest::annotated_old_base(client, &mut doc)? {
                notes.push(format!(
                    "{why}; falling back to the {:?} label",
                    spec.split.label
                ));
                annotation_failed = Some(why);
            }
        }
    }
    let opts = fetch_manifest::Options {
        annotation_failed: annotation_failed.as_deref(),
        ..opts
    };
    notes.extend(fetch_manifest::step(
        client,
        &mut doc,
        Role::NewBase,
        spec.new_base.as_ref(),
        &opts,
    )?);
    fetch_config::step(client, &mut doc)?;
    split_history::step(&mut doc, &spec.split)?;
    splice::step(&mut doc)?;
    notes.extend(doc.result_notes());
    contract::check(&doc, &spec.same_labels, spec.push.force)?;
    let push = PushOptions {
        image_is_current: true,
        tag,
        ahead: Some(ahead.clone()),
        ..spec.push.clone()
    };
    notes.extend(put_manifest::step(client, &mut doc, &push)?);
    Ok(doc)
}

/// Fetches the image and its config while, on other connections, the bases' manifests
/// and configs are fetched into the client's per-run memo, where the steps that need
/// them find them: the bases the command line names at once, the old base the image's
/// annotations name as soon as the image is there. Requests that do not depend on one
/// another go out together instead of one after another. A base that fails here is
/// fetched again, and its error reported, by the step that needs it.
fn fetch_image(
    client: &Client,
    spec: &Spec,
    ahead: &Ahead,
    doc: &mut Document,
    opts: &fetch_manifest::Options,
) -> Result<()> {
    let prefetch = |r: Reference| {
        move || {
            let _ = prefetch_base(client, &r);
        }
    };
    std::thread::scope(|scope| {
        for r in [&spec.old_base, &spec.new_base].into_iter().flatten() {
            scope.spawn(prefetch(r.clone()));
        }
        if ahead.asks_head() {
            scope.spawn(|| client.head_ahead(ahead));
        }
        if spec.open_early && !spec.push.dry_run {
            scope.spawn(|| client.open_ahead(ahead));
        }
        let sent = std::time::Instant::now();
        let fetched = fetch_manifest::step(client, doc, Role::Image, Some(&spec.image), opts);
        let answered = std::time::Instant::now();
        if let Some(want) = &spec.found {
            unmoved(&spec.image, want, doc, fetched.as_ref().err())?;
        }
        fetched?;
        // The requests that waited for the image go out together, on the connections
        // of the answers that came with it (a fleet's connections are warm already).
        if spec.open_early {
            client.settle(&spec.image.registry, sent, answered);
        }
        // The bases the image's annotations name, both at once.
        let view = fetch_manifest::detection_view(doc).ok();
        let annotated = |wanted: bool, base: fn(&View) -> Result<Option<Reference>>| {
            view.as_ref()
                .filter(|_| wanted)
                .and_then(|v| base(v).ok().flatten())
        };
        let old = spec.old_base.is_none() && spec.split.layers.is_none();
        let bases = [
            annotated(old, detect::old_base),
            annotated(spec.new_base.is_none(), detect::annotated_new_base),
        ];
        let old_base = spec.old_base.clone().or_else(|| bases[0].clone());
        let new_base = spec.new_base.clone().or_else(|| bases[1].clone());
        for r in bases.into_iter().flatten() {
            scope.spawn(prefetch(r));
        }
        // The config's upload session, opened while the configs are fetched, once the
        // bases' manifests show there will be an upload.
        let image = doc.unit.image.as_ref().filter(|_| !doc.is_index());
        let image_layers = image.and_then(|i| layer_digests(&i.manifest));
        let later = !spec.open_early && !spec.push.dry_run;
        if let (Some(image), Some(new_base), true) = (image_layers, new_base, later) {
            scope.spawn(move || {
                if will_upload(client, &image, old_base.as_ref(), &new_base)
                    && !client.tag_held(ahead)
                {
                    client.open_ahead(ahead);
                }
            });
        }
        fetch_config::step(client, doc)
    })
}

/// Whether a single image (its layers: `image`) will get a new config: it is on the old
/// base (when there is one) and not on the new base yet, as far as the bases' manifests
/// (fetched once a run) tell. Not when that cannot be told: the push then opens the
/// session itself.
fn will_upload(
    client: &Client,
    image: &[String],
    old_base: Option<&Reference>,
    new_base: &Reference,
) -> bool {
    let layers = |r: &Reference| {
        let fetched = client.fetch_base_manifest(r).ok()?;
        layer_digests(&serde_json::from_slice(&fetched.bytes).ok()?)
    };
    let Some(new) = layers(new_base) else {
        return false;
    };
    let on_old = old_base
        .and_then(layers)
        .is_none_or(|old| image.starts_with(&old));
    on_old && !image.starts_with(&new)
}

/// A manifest's layer digests, in order.
fn layer_digests(manifest: &serde_json::Value) -> Option<Vec<String>> {
    let digests = crate::image::layer_digests(manifest).ok()?;
    Some(digests.into_iter().map(str::to_string).collect())
}

/// Refuses (as not based: skipped) an image whose tag no longer holds the digest `find`
/// saw there, or no longer exists. Checked on the manifest the rebase reads, so no
/// request is added and nothing can move between the check and the read.
fn unmoved(
    image: &Reference,
    want: &Digest,
    doc: &Document,
    fetch_error: Option<&anyhow::Error>,
) -> Result<()> {
    let gone = fetch_error.is_some_and(|e| {
        e.chain()
            .filter_map(|c| c.downcast_ref::<crate::registry::RegistryError>())
            .any(|r| r.status == 404)
    });
    let now = match source_of(doc) {
        Some((_, now)) if now == *want => return Ok(()),
        Some((_, now)) => format!("it holds {now} now"),
        None if gone => "it holds nothing now".to_string(),
        // Another error: reported as it is.
        None => return Ok(()),
    };
    Err(NotBased(format!(
        "{image} moved since it was found: it held {want}, {now}; find it again"
    ))
    .into())
}

/// A base's manifest and, for a single image, its config, into the client's memo.
fn prefetch_base(client: &Client, r: &Reference) -> Result<()> {
    let fetched = client.fetch_base_manifest(r)?;
    let manifest: serde_json::Value = serde_json::from_slice(&fetched.bytes)?;
    if let Ok((config, _)) = crate::image::config_descriptor(&manifest) {
        let digest = config.parse()?;
        client.fetch_base_blob(&r.registry, &r.repository, &digest, MAX_JSON_BYTES)?;
    }
    Ok(())
}

/// What was written last: the index, or the single image (or platform with --single).
pub fn final_pushed(doc: &Document) -> &Pushed {
    if let Some(p) = doc.index.as_ref().and_then(|ix| ix.pushed.as_ref()) {
        return p;
    }
    doc.platforms
        .iter()
        .find_map(|p| p.unit.pushed.as_ref())
        .or(doc.unit.pushed.as_ref())
        .expect("put-manifest fills the pushed section")
}

/// `--tag` with its template filled in for the image the document read.
fn target_tag(spec: &Spec, doc: &Document) -> Result<Option<String>> {
    let Some(template) = &spec.push.tag else {
        return Ok(None);
    };
    let (own, digest) = source_of(doc).expect("fetch-manifest filled the image");
    expand_tag(template, own.as_deref(), &digest).map(Some)
}

/// The image the document read: its own tag and the digest of its manifest (or index).
pub fn source_of(doc: &Document) -> Option<(Option<String>, Digest)> {
    match (&doc.index, &doc.unit.image) {
        (Some(ix), _) => Some((ix.tag.clone(), ix.digest.clone())),
        (None, Some(image)) => Some((image.tag.clone(), image.digest.clone())),
        (None, None) => None,
    }
}

/// `--tag` as a template: `{tag}` is the image's own tag, `{digest}` the first 12 hex
/// digits of its manifest's (or index's) digest. A tag without braces is itself.
pub fn expand_tag(template: &str, own: Option<&str>, digest: &Digest) -> Result<String> {
    let hex = digest.as_str().split_once(':').map_or("", |(_, h)| h);
    let short = &hex[..hex.len().min(12)];
    let tag = if template.contains("{tag}") {
        let Some(own) = own else {
            bail!(
                "--tag {template:?} uses {{tag}}, but the image was named by digest and has no tag: \
                 name it by tag, or use {{digest}} instead"
            );
        };
        template.replace("{tag}", own)
    } else {
        template.to_string()
    };
    let tag = tag.replace("{digest}", short);
    check_tag(&tag).map_err(|e| anyhow::anyhow!("--tag {template:?} gives {tag:?}: {e:#}"))?;
    Ok(tag)
}

/// Checks a `--tag` template before any request: only `{tag}` and `{digest}` between
/// braces, and a valid tag when they are filled in.
pub fn check_template(template: &str) -> Result<()> {
    let rest = template.replace("{tag}", "").replace("{digest}", "");
    if rest.contains(['{', '}']) {
        bail!(
            "invalid --tag {template:?}: a template knows only {{tag}} (the image's own tag) \
             and {{digest}} (the first 12 hex digits of its digest)"
        );
    }
    expand_tag(template, Some("tag"), &Digest::of(b"")).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_CONFIG, OCI_MANIFEST};
    use crate::registry::fake::Fake;
    use serde_json::{Value, json};

    /// Stores an image of these layers (one history entry each) under `repository:tag`,
    /// with `annotations` on its manifest; its digest.
    fn image(fake: &Fake, name: &str, layers: &[&str], annotations: Value) -> Digest {
        let (repository, tag) = name.split_once(':').unwrap();
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| Digest::of(format!("diff {l}").as_bytes())).collect::<Vec<_>>()},
            "history": layers.iter().map(|l| json!({"created_by": format!("ADD {l}")})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": fake.put_blob(repository, &config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": fake.put_blob(repository, format!("layer {l}").as_bytes()), "size": 1,
            })).collect::<Vec<_>>(),
            "annotations": annotations,
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        fake.put_manifest(repository, Some(tag), OCI_MANIFEST, &bytes)
    }

    /// Stores base:v1 (one layer, b1) and base:v2 (b2); base:v1's digest.
    fn bases(fake: &Fake) -> Digest {
        let v1 = image(fake, "base:v1", &["b1"], json!({}));
        image(fake, "base:v2", &["b2"], json!({}));
        v1
    }

    fn spec(fake: &Fake, old_base: Option<&str>) -> Spec {
        Spec {
            image: fake.r("app:1"),
            old_base: old_base.map(|r| fake.r(r)),
            new_base: Some(fake.r("base:v2")),
            platforms: vec![],
            split: SplitOptions {
                label: "FROM".into(),
                layers: None,
            },
            push: PushOptions {
                tag: Some("rebased".into()),
                ..PushOptions::default()
            },
            same_labels: vec![],
            found: None,
            open_early: false,
        }
    }

    /// Rebases app:1 (on base:v1, which its annotations name) onto base:v2 at the tag
    /// "rebased", with every request 50 ms away; the fake registry, which knows each
    /// request's level (how many answers it waited for, one after another).
    fn rebased(old_base: Option<&str>, open_early: bool) -> Fake {
        let fake = Fake::start();
        let v1 = bases(&fake);
        let annotations = json!({
            "org.opencontainers.image.base.name": format!("{}/base:v1", fake.addr()),
            "org.opencontainers.image.base.digest": v1,
        });
        image(&fake, "app:1", &["b1", "app"], annotations);
        fake.clear_requests();
        fake.delay(crate::registry::fake::AWAY);
        let client = fake.run_client();
        let spec = Spec {
            open_early,
            ..spec(&fake, old_base)
        };
        let doc = rebase(&client, &spec, &mut vec![]).unwrap();
        let written = fake
            .manifest("app", "rebased")
            .expect("the result is written");
        assert_eq!(Digest::of(&written), final_pushed(&doc).digest);
        // The first request teaches the registry's scheme: no ping, no HTTPS attempt.
        let pings = fake.count("GET", "/v2/");
        assert_eq!(
            (pings, fake.tls_attempts()),
            (0, 0),
            "{:#?}",
            fake.requests()
        );
        assert_eq!(fake.open_uploads(), 0);
        fake
    }

    fn fake_digest(fake: &Fake, repository: &str, tag: &str) -> Digest {
        Digest::of(&fake.manifest(repository, tag).expect("a manifest"))
    }

    /// The level of the upload's POST (not a mount) and of its PUT.
    fn upload_levels(fake: &Fake) -> (Option<usize>, Option<usize>) {
        let levels = fake.levels();
        let find = |method: &str| {
            levels
                .iter()
                .find(|(r, _)| {
                    r.method == method
                        && r.path.starts_with("/v2/app/blobs/uploads/")
                        && r.param("mount").is_none()
                })
                .map(|(_, l)| *l)
        };
        (find("POST"), find("PUT"))
    }

    #[test]
    fn an_explicit_rebase_waits_for_four_answers_one_after_another() {
        // 1: the three manifests, the target tag's HEAD and the config's upload session;
        // 2: the three configs; 3: the mount and the config's PUT; 4: the manifest PUT.
        let fake = rebased(Some("base:v1"), true);
        assert_eq!(fake.depth(), 4, "{:#?}", fake.levels());
        assert_eq!(fake.level_of("HEAD", "/v2/app/manifests/rebased"), Some(1));
        assert_eq!(upload_levels(&fake), (Some(1), Some(3)));
        assert_eq!(fake.level_of("PUT", "/v2/app/manifests/rebased"), Some(4));
        // Opened once the manifests show an upload will come: with the configs.
        let fake = rebased(Some("base:v1"), false);
        assert_eq!(fake.depth(), 4, "{:#?}", fake.levels());
        assert_eq!(upload_levels(&fake), (Some(2), Some(3)));
    }

    #[test]
    fn an_annotated_rebase_waits_for_one_answer_more() {
        // The old base the image's annotations name is asked for once the image is
        // there, along with the image's config and the new base's.
        let fake = rebased(None, true);
        assert_eq!(fake.depth(), 5, "{:#?}", fake.levels());
        let old = fake
            .levels()
            .into_iter()
            .find(|(r, _)| r.path.starts_with("/v2/base/manifests/sha256:"))
            .map(|(_, l)| l);
        assert_eq!(old, Some(2));
        assert_eq!(upload_levels(&fake), (Some(1), Some(4)));
        // Opened later, the session waits for the old base's manifest (the image must be
        // on it), and is there before the old base's config.
        let fake = rebased(None, false);
        assert_eq!(fake.depth(), 5, "{:#?}", fake.levels());
        assert_eq!(upload_levels(&fake), (Some(3), Some(4)));
    }

    #[test]
    fn a_session_opened_with_the_first_requests_is_cancelled_when_nothing_is_uploaded() {
        let fake = Fake::start();
        bases(&fake);
        image(&fake, "app:1", &["b2", "app"], json!({}));
        let spec = Spec {
            open_early: true,
            ..spec(&fake, Some("base:v1"))
        };
        let doc = rebase(&fake.run_client(), &spec, &mut vec![]).unwrap();
        // Already on the new base: its tag "rebased" gets the image as it is.
        assert_eq!(final_pushed(&doc).digest, fake_digest(&fake, "app", "1"));
        assert_eq!(fake.count("POST", "/v2/app/blobs/uploads/"), 1);
        assert_eq!(fake.count_method("DELETE"), 1, "{:#?}", fake.requests());
        assert_eq!(fake.open_uploads(), 0);
    }

    #[test]
    fn the_upload_session_is_opened_with_the_config_s_fetch_and_only_when_needed() {
        let fake = Fake::start();
        bases(&fake);
        image(&fake, "app:1", &["b1", "app"], json!({}));
        image(&fake, "app:2", &["b1", "app two"], json!({}));
        image(&fake, "app:3", &["b2", "app three"], json!({}));
        let client = fake.run_client();
        let fleet = |tag: &str| Spec {
            image: fake.r(&format!("app:{tag}")),
            push: PushOptions::default(),
            ..spec(&fake, Some("base:v1"))
        };
        rebase(&client, &fleet("1"), &mut vec![]).unwrap();
        // The bases are known now, as for every image of a fleet but the first.
        fake.clear_requests();
        fake.delay(crate::registry::fake::AWAY);
        rebase(&client, &fleet("2"), &mut vec![]).unwrap();
        // Manifest; config and upload session; config PUT; manifest PUT.
        assert_eq!(fake.depth(), 4, "{:#?}", fake.levels());
        assert_eq!(upload_levels(&fake), (Some(2), Some(3)));
        // An image on the new base already uploads nothing, and opens no session.
        fake.clear_requests();
        let doc = rebase(&client, &fleet("3"), &mut vec![]).unwrap();
        assert!(final_pushed(&doc).unchanged);
        assert_eq!(upload_levels(&fake), (None, None), "{:#?}", fake.levels());
        assert_eq!(fake.open_uploads(), 0);
    }

    #[test]
    fn no_session_is_opened_ahead_for_a_tag_that_holds_something_or_an_image_not_on_the_old_base() {
        let fake = Fake::start();
        bases(&fake);
        image(&fake, "app:1", &["b1", "app"], json!({}));
        // The target tag holds something else (a re-run's result, or here another
        // image: the rebase is refused): the push decides, after its check.
        image(&fake, "app:rebased", &["other"], json!({}));
        fake.clear_requests();
        let err = rebase(
            &fake.run_client(),
            &spec(&fake, Some("base:v1")),
            &mut vec![],
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("--force"));
        assert_eq!(fake.count("POST", "/v2/app/blobs/uploads/"), 0);
        // Not on the old base: refused before the push, and no session opened.
        fake.clear_requests();
        let spec = Spec {
            old_base: Some(fake.r("base:v2")),
            ..spec(&fake, None)
        };
        assert!(rebase(&fake.run_client(), &spec, &mut vec![]).is_err());
        assert_eq!(fake.count("POST", "/v2/app/blobs/uploads/"), 0);
    }

    #[test]
    fn with_no_base_given_both_annotated_bases_are_fetched_while_the_image_s_config_is() {
        let fake = Fake::start();
        let v1 = bases(&fake);
        let v2 = fake.manifest("base", "v2").expect("base:v2");
        fake.put_manifest("base", Some("stable"), OCI_MANIFEST, &v2);
        let annotations = json!({
            "org.opencontainers.image.base.name": format!("{}/base:stable", fake.addr()),
            "org.opencontainers.image.base.digest": v1,
        });
        image(&fake, "app:1", &["b1", "app"], annotations);
        fake.delay(crate::registry::fake::AWAY);
        // The target's HEAD and the upload session answer a little after the image.
        fake.slower("HEAD", std::time::Duration::from_millis(10));
        fake.slower("POST", std::time::Duration::from_millis(10));
        let spec = Spec {
            new_base: None,
            open_early: true,
            ..spec(&fake, None)
        };
        let doc = rebase(&fake.run_client(), &spec, &mut vec![]).unwrap();
        let written = fake.manifest("app", "rebased").expect("written");
        assert_eq!(Digest::of(&written), final_pushed(&doc).digest);
        // The image's config, the old base's manifest and the new base's at once.
        assert!(fake.most_in_flight() >= 3, "{}", fake.most_in_flight());
        assert_eq!(fake.depth(), 5, "{:#?}", fake.levels());
        assert_eq!(upload_levels(&fake), (Some(1), Some(4)));
        // On the three connections the first requests opened (the image's manifest, the
        // target's HEAD, the upload session): the requests that waited for the image wait
        // for the other two to come back too, rather than open more.
        assert_eq!(fake.connections(), 3);
    }

    #[test]
    fn the_rights_of_the_whole_run_are_declared_before_the_first_request() {
        let fake = Fake::start();
        let client = fake.client();
        let elsewhere = Spec {
            push: PushOptions {
                to: Some(("other.example".into(), "team/app".into())),
                ..PushOptions::default()
            },
            ..spec(&fake, Some("base:v1"))
        };
        declare_scopes(&client, &elsewhere, &ahead_for(&elsewhere)).unwrap();
        assert_eq!(
            client.wanted("other.example"),
            ["repository:team/app:pull,push"]
        );
        // The sources, each asked for as it came (the newest first).
        assert_eq!(
            client.wanted(fake.addr()),
            ["repository:base:pull", "repository:app:pull"]
        );
        // On the image's own registry, the target first; a dry run asks for pull only.
        let client = fake.client();
        let dry = Spec {
            push: PushOptions {
                dry_run: true,
                ..PushOptions::default()
            },
            ..spec(&fake, Some("base:v1"))
        };
        declare_scopes(&client, &dry, &ahead_for(&dry)).unwrap();
        assert_eq!(
            client.wanted(fake.addr()),
            ["repository:app:pull", "repository:base:pull"]
        );
        assert_eq!(fake.requests(), []);
    }

    #[test]
    fn tag_templates() {
        let d = Digest::of(b"x");
        let short = &d.as_str()[7..19];
        assert_eq!(
            expand_tag("{tag}-rebased", Some("1.2"), &d).unwrap(),
            "1.2-rebased"
        );
        assert_eq!(
            expand_tag("{tag}-{digest}", Some("v1"), &d).unwrap(),
            format!("v1-{short}")
        );
        assert_eq!(expand_tag("fixed", None, &d).unwrap(), "fixed");
        assert!(expand_tag("{tag}-x", None, &d).is_err(), "no own tag");
        for bad in ["{tga}", "{tag", "-{tag}", "a b"] {
            assert!(check_template(bad).is_err(), "{bad}");
        }
        check_template("{tag}-rebased").unwrap();
    }
}
