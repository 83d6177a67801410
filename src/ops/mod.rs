//! The operations: one per step, each a function on the document that the plumbing
//! command and the `rebase` porcelain both call. They take their own option structs and
//! a registry client, return notes for the user as values, and never see the command
//! line, stdin, stdout or the terminal.

pub mod contract;
pub mod fetch_config;
pub mod fetch_manifest;
pub mod find;
pub mod fleet;
pub mod put_manifest;
pub mod rebase;
pub mod rollout;
pub mod splice;
pub mod split_history;

use crate::oci::reference::{Reference, check_tag};
use anyhow::{Context, Result, bail};

/// How split-history finds the split when the document has no old base.
#[derive(Clone, Debug)]
pub struct SplitOptions {
    /// Split at the history entry that set this label (the `FROM` convention).
    pub label: String,
    /// Keep the top N history entries and replace the rest.
    pub layers: Option<usize>,
}

/// Where and whether put-manifest writes.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// The tag to write instead of the document's.
    pub tag: Option<String>,
    /// The registry and repository to write to instead of the document's (`--tag` given
    /// as a whole reference): layers not on that registry are copied there.
    pub to: Option<(String, String)>,
    /// Overwrite a tag that holds an unrelated image.
    pub force: bool,
    /// Look only: mount, copy, upload and put nothing.
    pub dry_run: bool,
    /// Never copy layer data: refuse where a mount cannot do.
    pub no_copy: bool,
    /// A multi-platform image with one platform left: write only its manifest.
    pub single: bool,
    /// Keep attestation entries in the new index.
    pub keep_attestations: bool,
    /// The image's manifest was fetched by this process moments ago, so its own tag is
    /// known to hold it (the porcelain). A document from stdin may be stale: then
    /// put-manifest asks the registry what the tag holds now.
    pub image_is_current: bool,
    /// What the porcelain sent ahead for this push: a HEAD of the target tag, an upload
    /// session. Cancelled when the step ends, if unused.
    pub ahead: Option<std::sync::Arc<crate::registry::Ahead>>,
}

impl PushOptions {
    /// Takes `--tag`: a tag, or a whole reference `[registry/]repository:tag` (a tag
    /// never holds `/` or `:`) naming another repository, on this registry or another, to
    /// write to; a reference without a registry host is on `default_registry` (else
    /// docker.io), as every reference is.
    pub fn set_tag(&mut self, tag: &str, default_registry: Option<&str>) -> Result<()> {
        if tag.contains(['{', '}']) {
            // A template: its tag part is filled in per image (`{tag}`, `{digest}`).
            let (name, template) = match tag.rsplit_once(':') {
                Some((name, template)) => (Some(name), template),
                None => (None, tag),
            };
            crate::ops::rebase::check_template(template)?;
            if let Some(name) = name {
                let r = Reference::parse_with_default(&format!("{name}:t"), default_registry)
                    .with_context(|| {
                        format!(
                            "invalid --tag {tag:?}: expected a tag or [registry/]repository:tag"
                        )
                    })?;
                self.to = Some((r.registry, r.repository));
            }
            self.tag = Some(template.to_string());
            return Ok(());
        }
        if !tag.contains('/') && !tag.contains(':') {
            check_tag(tag)?;
            self.tag = Some(tag.to_string());
            return Ok(());
        }
        let r = Reference::parse_with_default(tag, default_registry).with_context(|| {
            format!("invalid --tag {tag:?}: expected a tag or [registry/]repository:tag")
        })?;
        if r.digest.is_some() {
            bail!("invalid --tag {tag:?}: a target is written under a tag, not a digest");
        }
        self.tag = r.tag;
        self.to = Some((r.registry, r.repository));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_a_tag_or_a_whole_reference_naming_another_repository() {
        let mut o = PushOptions::default();
        o.set_tag("v2", Some("127.0.0.1:5000")).unwrap();
        assert_eq!((o.tag.as_deref(), o.to.clone()), (Some("v2"), None));
        for (given, registry, repository, tag) in [
            ("other:5000/team/app:1", "other:5000", "team/app", "1"),
            ("team/app:1", "127.0.0.1:5000", "team/app", "1"),
            ("app:1", "127.0.0.1:5000", "app", "1"),
            ("other:5000/team/app", "other:5000", "team/app", "latest"),
        ] {
            let mut o = PushOptions::default();
            o.set_tag(given, Some("127.0.0.1:5000")).unwrap();
            assert_eq!(o.tag.as_deref(), Some(tag), "{given}");
            assert_eq!(
                o.to,
                Some((registry.to_string(), repository.to_string())),
                "{given}"
            );
        }
        for bad in ["x/../y:1", "other:5000/app@sha256:abc", "a b"] {
            assert!(PushOptions::default().set_tag(bad, None).is_err(), "{bad}");
        }
        let digest = format!("other:5000/app@{}", crate::oci::digest::Digest::of(b""));
        let err = PushOptions::default().set_tag(&digest, None).unwrap_err();
        assert!(format!("{err:#}").contains("not a digest"), "{err:#}");
    }
}
