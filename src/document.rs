//! The JSON document that flows between the plumbing commands. Each step adds or
//! replaces its own section and passes every other field through untouched, so users
//! can inspect and edit it with jq between steps. Documented in image-rebase(1).

pub use crate::image::detect::FoundBy;
pub use crate::image::split::{Method, Split};
use crate::json;
use crate::oci::digest::Digest;
use crate::oci::platform::Platform;
use crate::oci::reference::{Reference, check_registry, check_repository, check_tag};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Version of the document format; bumped on incompatible changes.
pub const VERSION: u64 = 1;

/// The document. For a single image its sections are at the top level; for a
/// multi-platform index, `index` holds the index and `platforms` one entry per rebased
/// platform, each with the same sections.
#[derive(Debug, Serialize, Deserialize)]
pub struct Document {
    /// Format version (`1`).
    pub image_rebase: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformUnit>,
    /// What the steps learnt of each registry they talked to, by registry name, so that
    /// later steps do not try it out again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, RegistryNote>,
    #[serde(flatten, skip_deserializing)]
    pub unit: Unit,
    /// Fields of other tools or later versions: kept as they are.
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

impl Default for Document {
    fn default() -> Self {
        Document {
            image_rebase: VERSION,
            index: None,
            platforms: vec![],
            registries: BTreeMap::new(),
            unit: Unit::default(),
            extra: Map::new(),
        }
    }
}

/// What a step learnt of a registry. Never a credential or a token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryNote {
    /// `https` or `http`.
    pub scheme: String,
    /// The authentication the registry asked for: `none` (so far), `basic` or `bearer`.
    pub auth: String,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

/// The sections of one single-platform rebase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Unit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_base: Option<ImageSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_base: Option<ImageSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
}

/// One platform of a multi-platform image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlatformUnit {
    pub platform: Platform,
    #[serde(flatten, skip_deserializing)]
    pub unit: Unit,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

/// A multi-platform image: the index as fetched, and (after put-manifest) the new one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexSection {
    pub reference: String,
    pub registry: String,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The index as the registry served it.
    pub manifest: Value,
    /// Entries left out of `platforms` and why (`attestation`, `excluded by --platform`).
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

/// An entry of an index that is not rebased.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub reason: SkipReason,
}

/// The sections of a unit in the order the steps fill them; each is derived from the
/// ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The image and its bases (fetch-manifest, fetch-config).
    Fetched,
    Split,
    Result,
}

/// Why an index entry is not rebased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// An attestation (it describes the old image).
    #[serde(rename = "attestation")]
    Attestation,
    #[serde(rename = "no platform")]
    NoPlatform,
    #[serde(rename = "excluded by --platform")]
    ExcludedByPlatform,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::Attestation => "attestation",
            SkipReason::NoPlatform => "no platform",
            SkipReason::ExcludedByPlatform => "excluded by --platform",
        })
    }
}

/// The three images a rebase reads, by the role they play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Image,
    OldBase,
    NewBase,
}

impl Role {
    /// The section's name in the document.
    pub fn key(self) -> &'static str {
        match self {
            Role::Image => "image",
            Role::OldBase => "old_base",
            Role::NewBase => "new_base",
        }
    }

    /// The option that fills the section (for messages).
    pub fn producer(self) -> &'static str {
        match self {
            Role::Image => "image-rebase fetch-manifest IMAGE",
            Role::OldBase => "image-rebase fetch-manifest --as old-base REF",
            Role::NewBase => "image-rebase fetch-manifest --as new-base REF",
        }
    }
}

/// One fetched image: where it is, its manifest and (after fetch-config) its config.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageSection {
    /// Normalised reference as given, e.g. `127.0.0.1:5000/app:1`.
    pub reference: String,
    pub registry: String,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Digest of the manifest bytes as the registry served them.
    pub digest: Digest,
    pub media_type: String,
    /// Size of the manifest bytes.
    pub size: u64,
    pub manifest: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// How the reference was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_by: Option<FoundBy>,
    /// The digest of the multi-platform index this manifest was picked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

impl ImageSection {
    /// `registry/repository`, the name blobs are mounted from.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest`.
    pub fn pinned(&self) -> String {
        format!("{}@{}", self.name(), self.digest)
    }

    /// The config, or an error saying which step provides it.
    pub fn config(&self, role: Role) -> Result<&Value> {
        self.config.as_ref().with_context(|| {
            format!(
                "the document's \"{}\" section has no config: run image-rebase fetch-config first",
                role.key()
            )
        })
    }

    pub fn as_reference(&self) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: Some(self.digest.clone()),
        }
    }
}

/// Where a manifest is to be written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub registry: String,
    pub repository: String,
    /// Tag to write; without one the manifest is pushed by digest only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

/// The rebased image, before it is pushed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultSection {
    pub target: Target,
    pub media_type: String,
    /// The new manifest. Its config descriptor is recomputed from `config` when pushed.
    pub manifest: Value,
    pub config: Value,
    /// The image is already on the new base: `manifest` and `config` are the image's own,
    /// and put-manifest writes its original bytes (only when the target is another tag).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub up_to_date: bool,
    /// Fields whose value now comes from the new base and differs from the image's
    /// (`os`, `config.Env.PATH`, `config.Labels.version`, ...).
    #[serde(default)]
    pub from_new_base: Vec<String>,
    /// Fields the image's history could not attribute to the image or its old base; the
    /// image's value was kept.
    #[serde(default)]
    pub unattributed: Vec<String>,
    /// Things the user should know (printed on stderr by splice and rebase).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

/// What put-manifest wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pushed {
    /// `registry/repository@digest` of the written manifest.
    pub reference: String,
    pub registry: String,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub config_digest: Digest,
    /// Blobs made present by a cross-repository mount.
    pub mounted: Vec<Digest>,
    /// Blobs that were already in the target repository.
    pub present: Vec<Digest>,
    /// Blobs uploaded (the config).
    pub uploaded: Vec<Digest>,
    /// Blobs whose bytes were copied from where they were, because no mount could do
    /// (another registry, or a registry that does not mount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copied: Vec<Digest>,
    /// How many bytes those copies moved.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub copied_bytes: u64,
    /// Nothing needed writing: the target already held this manifest.
    #[serde(default)]
    pub unchanged: bool,
    /// What the target tag held before the write (absent: the tag was new, or the
    /// manifest was put by digest). A rollback puts it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Digest>,
    /// A dry run: `mounted` and `uploaded` list what would be done; nothing was written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(flatten, skip_deserializing)]
    pub extra: Map<String, Value>,
}

impl Unit {
    /// The unit's sections in `input`, unknown fields included (see `json`).
    fn from_value(input: &Value) -> Result<Unit> {
        let mut unit: Unit = serde_json::from_value(input.clone())?;
        for role in [Role::Image, Role::OldBase, Role::NewBase] {
            if let Some(s) = unit.section_mut(role).as_mut() {
                s.extra = json::unknown::<ImageSection>(&input[role.key()], &[]);
            }
        }
        if let Some(s) = unit.split.as_mut() {
            s.extra = json::unknown::<Split>(&input["split"], &[]);
        }
        if let Some(r) = unit.result.as_mut() {
            r.extra = json::unknown::<ResultSection>(&input["result"], &[]);
            r.target.extra = json::unknown::<Target>(&input["result"]["target"], &[]);
        }
        if let Some(p) = unit.pushed.as_mut() {
            p.extra = json::unknown::<Pushed>(&input["pushed"], &[]);
        }
        Ok(unit)
    }

    /// Puts a fetched section in place and drops what was derived from the old one.
    pub fn set_section(&mut self, role: Role, section: ImageSection) {
        *self.section_mut(role) = Some(section);
        self.invalidate_after(Stage::Fetched);
    }

    /// Puts the split in place and drops what was derived from the old one.
    pub fn set_split(&mut self, split: Split) {
        self.split = Some(split);
        self.invalidate_after(Stage::Split);
    }

    /// Puts the result in place and drops what was pushed of the old one.
    pub fn set_result(&mut self, result: ResultSection) {
        self.result = Some(result);
        self.invalidate_after(Stage::Result);
    }

    /// Drops every section derived from `stage`'s: the rule "a changed section drops what
    /// was derived from it", in one place.
    fn invalidate_after(&mut self, stage: Stage) {
        if stage < Stage::Split {
            self.split = None;
        }
        if stage < Stage::Result {
            self.result = None;
        }
        self.pushed = None;
    }

    pub fn section(&self, role: Role) -> Option<&ImageSection> {
        match role {
            Role::Image => self.image.as_ref(),
            Role::OldBase => self.old_base.as_ref(),
            Role::NewBase => self.new_base.as_ref(),
        }
    }

    pub fn section_mut(&mut self, role: Role) -> &mut Option<ImageSection> {
        match role {
            Role::Image => &mut self.image,
            Role::OldBase => &mut self.old_base,
            Role::NewBase => &mut self.new_base,
        }
    }

    /// The section for `role`, or an error naming the command that provides it.
    pub fn require(&self, role: Role) -> Result<&ImageSection> {
        self.section(role).with_context(|| {
            format!(
                "the document has no \"{}\" section: add it with `{}`",
                role.key(),
                role.producer()
            )
        })
    }
}

impl Document {
    /// A unit changed: the index's push record, derived from every unit, no longer holds.
    pub fn invalidate_index_push(&mut self) {
        if let Some(ix) = self.index.as_mut() {
            ix.pushed = None;
        }
    }

    /// Whether the document is for a multi-platform index.
    pub fn is_index(&self) -> bool {
        self.index.is_some()
    }

    /// Runs `f` on each unit: every platform's (an error names the platform), or the
    /// single image's (which must be in the document).
    pub fn for_each_unit(&mut self, mut f: impl FnMut(&mut Unit) -> Result<()>) -> Result<()> {
        if self.index.is_none() {
            self.unit.require(Role::Image)?;
            return f(&mut self.unit);
        }
        for p in self.platforms.iter_mut() {
            f(&mut p.unit).with_context(|| format!("platform {}", p.platform))?;
        }
        Ok(())
    }

    /// The units to work on: each platform's, or the single one.
    pub fn units_mut(&mut self) -> Vec<(Option<String>, &mut Unit)> {
        if self.index.is_some() {
            self.platforms
                .iter_mut()
                .map(|p| (Some(p.platform.to_string()), &mut p.unit))
                .collect()
        } else {
            vec![(None, &mut self.unit)]
        }
    }

    /// The notes of every result of the document (each platform's, prefixed with it).
    pub fn result_notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .unit
            .result
            .iter()
            .flat_map(|r| r.notes.clone())
            .collect();
        for p in &self.platforms {
            for note in p.unit.result.iter().flat_map(|r| &r.notes) {
                notes.push(format!("{}: {note}", p.platform));
            }
        }
        notes
    }

    /// Which entries of an index are not rebased, and why (attestations left out:
    /// put-manifest reports those when it leaves them out of the new index).
    pub fn skipped_notes(&self) -> Vec<String> {
        self.index
            .iter()
            .flat_map(|ix| &ix.skipped)
            .filter(|s| s.reason != SkipReason::Attestation)
            .map(|s| {
                let what = s.platform.as_deref().unwrap_or("an entry");
                format!("not rebasing {what} ({}): {}", s.digest, s.reason)
            })
            .collect()
    }

    /// The registries the user named: the image's, the bases given as arguments, and the
    /// targets. --username credentials go to these only, never to a registry that a label
    /// or annotation inside an image points at.
    pub fn named_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.index.iter().map(|ix| ix.registry.clone()).collect();
        for unit in std::iter::once(&self.unit).chain(self.platforms.iter().map(|p| &p.unit)) {
            hosts.extend(unit.image.iter().map(|s| s.registry.clone()));
            for s in [&unit.old_base, &unit.new_base].into_iter().flatten() {
                if s.found_by == Some(FoundBy::Argument) {
                    hosts.push(s.registry.clone());
                }
            }
            hosts.extend(unit.result.iter().map(|r| r.target.registry.clone()));
        }
        hosts
    }

    /// Parses a document, checking its version.
    pub fn from_json(text: &str) -> Result<Document> {
        let value: Value = serde_json::from_str(text).context("the input is not valid JSON")?;
        match value.get("image_rebase").map(|v| v.as_u64()) {
            None => bail!(
                "the input is JSON but not an image-rebase document (no \"image_rebase\" version field)"
            ),
            Some(Some(VERSION)) => {}
            Some(other) => bail!(
                "unsupported document version {}: this image-rebase reads version {VERSION}",
                other
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(not a number)".into())
            ),
        }
        let mut doc: Document = serde_json::from_value(value.clone())
            .context("the input is not a valid image-rebase document")?;
        doc.keep_unknown(&value)
            .context("the input is not a valid image-rebase document")?;
        doc.check_locations()?;
        Ok(doc)
    }

    /// Checks every registry, repository and tag the document names, as references on
    /// the command line are checked: a document edited by hand is input like any other,
    /// and request URLs are built from these parts.
    fn check_locations(&self) -> Result<()> {
        let check = |at: String, registry: &str, repository: &str, tag: Option<&String>| {
            check_registry(registry)
                .and_then(|()| check_repository(repository))
                .and_then(|()| tag.map_or(Ok(()), |t| check_tag(t)))
                .with_context(|| format!("the document's \"{at}\" section"))
        };
        for name in self.registries.keys() {
            check_registry(name)
                .with_context(|| format!("the document's \"registries\" entry {name:?}"))?;
        }
        if let Some(ix) = &self.index {
            check(
                "index".into(),
                &ix.registry,
                &ix.repository,
                ix.tag.as_ref(),
            )?;
            if let Some(p) = &ix.pushed {
                check(
                    "index.pushed".into(),
                    &p.registry,
                    &p.repository,
                    p.tag.as_ref(),
                )?;
            }
        }
        let units = std::iter::once((String::new(), &self.unit)).chain(
            self.platforms
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("platforms[{i}]."), &p.unit)),
        );
        for (at, unit) in units {
            for role in [Role::Image, Role::OldBase, Role::NewBase] {
                if let Some(s) = unit.section(role) {
                    let at = format!("{at}{}", role.key());
                    check(at, &s.registry, &s.repository, s.tag.as_ref())?;
                }
            }
            if let Some(r) = &unit.result {
                let t = &r.target;
                let at = format!("{at}result.target");
                check(at, &t.registry, &t.repository, t.tag.as_ref())?;
            }
            if let Some(p) = &unit.pushed {
                check(
                    format!("{at}pushed"),
                    &p.registry,
                    &p.repository,
                    p.tag.as_ref(),
                )?;
            }
        }
        Ok(())
    }

    /// Fills what `flatten` leaves out on input (see `json`): the units, and the unknown
    /// fields of every section, exactly as written.
    fn keep_unknown(&mut self, input: &Value) -> Result<()> {
        let unit_fields = json::fields::<Unit>();
        self.unit = Unit::from_value(input)?;
        self.extra = json::unknown::<Document>(input, unit_fields);
        if let Some(ix) = self.index.as_mut() {
            let v = &input["index"];
            ix.extra = json::unknown::<IndexSection>(v, &[]);
            if let Some(p) = ix.pushed.as_mut() {
                p.extra = json::unknown::<Pushed>(&v["pushed"], &[]);
            }
        }
        for (name, note) in self.registries.iter_mut() {
            note.extra = json::unknown::<RegistryNote>(&input["registries"][name], &[]);
        }
        let inputs = input["platforms"].as_array().into_iter().flatten();
        for (p, v) in self.platforms.iter_mut().zip(inputs) {
            p.unit = Unit::from_value(v)?;
            p.extra = json::unknown::<PlatformUnit>(v, unit_fields);
            p.platform.extra = json::unknown::<Platform>(&v["platform"], &[]);
        }
        Ok(())
    }

    /// Notes what `learnt` (registry, scheme, authentication) tells; an authentication
    /// already noted is not forgotten because a step saw none.
    pub fn note_registries<'a>(
        &mut self,
        learnt: impl IntoIterator<Item = (String, &'a str, &'a str)>,
    ) {
        for (name, scheme, auth) in learnt {
            let note = self.registries.entry(name).or_default();
            note.scheme = scheme.to_string();
            if auth != "none" || note.auth.is_empty() {
                note.auth = auth.to_string();
            }
        }
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a document always serialises")
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = r#"{"image_rebase":1,"mine":{"a":1},"split":{"method":"old-base","base_layers":1,"base_history":2,"top_layers":1,"top_history":1,"note":"x"}}"#;
        let doc = Document::from_json(text).unwrap();
        let back: Value = serde_json::from_str(&doc.to_json()).unwrap();
        assert_eq!(back["mine"]["a"], 1);
        assert_eq!(back["split"]["note"], "x");
    }

    #[test]
    fn registries_round_trip_with_their_unknown_fields_and_keep_what_was_learnt() {
        let text = r#"{"image_rebase":1,"registries":{"127.0.0.1:5000":{"scheme":"http","auth":"bearer","x":1.50}}}"#;
        let mut doc = Document::from_json(text).unwrap();
        assert_eq!(doc.registries["127.0.0.1:5000"].scheme, "http");
        doc.note_registries([
            ("127.0.0.1:5000".to_string(), "http", "none"),
            ("r.example".to_string(), "https", "none"),
        ]);
        let back = doc.to_json();
        assert!(
            back.contains(r#""127.0.0.1:5000":{"scheme":"http","auth":"bearer","x":1.50}"#),
            "a step that saw no challenge forgets none: {back}"
        );
        assert!(
            back.contains(r#""r.example":{"scheme":"https","auth":"none"}"#),
            "{back}"
        );
        let bad = r#"{"image_rebase":1,"registries":{"a/b":{"scheme":"http","auth":"none"}}}"#;
        assert!(Document::from_json(bad).is_err());
    }

    #[test]
    fn numbers_in_unknown_fields_are_kept_exactly_as_written() {
        let text = r#"{"image_rebase":1,"big":123456789012345678901234567890,"f":1.50,"split":{"method":"layers","base_layers":1,"base_history":2,"top_layers":1,"top_history":1,"n":-0.0}}"#;
        let doc = Document::from_json(text).unwrap();
        assert_eq!(doc.unit.split.as_ref().unwrap().base_history, 2);
        let out = doc.to_json();
        for kept in [
            r#""big":123456789012345678901234567890"#,
            r#""f":1.50"#,
            r#""n":-0.0"#,
        ] {
            assert!(out.contains(kept), "{kept} in {out}");
        }
    }

    #[test]
    fn enums_read_as_the_document_writes_them() {
        crate::json::assert_names(&[
            (SkipReason::Attestation, "attestation"),
            (SkipReason::NoPlatform, "no platform"),
            (SkipReason::ExcludedByPlatform, "excluded by --platform"),
        ]);
        crate::json::assert_names(&[
            (Method::OldBase, "old-base"),
            (Method::Label, "label"),
            (Method::Layers, "layers"),
        ]);
        crate::json::assert_names(&[
            (FoundBy::Argument, "argument"),
            (FoundBy::Annotation, "annotation"),
            (FoundBy::Label, "label"),
            (
                FoundBy::LabelAfterAnnotation,
                "label (the annotated old base cannot be used)",
            ),
            (FoundBy::Index, "index"),
        ]);
    }

    #[test]
    fn version_and_shape_are_checked() {
        assert!(
            Document::from_json("{")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        assert!(
            Document::from_json("{}")
                .unwrap_err()
                .to_string()
                .contains("not an image-rebase document")
        );
        assert!(
            Document::from_json(r#"{"image_rebase":9}"#)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
        let err = format!(
            "{:#}",
            Document::from_json(r#"{"image_rebase":1,"split":{"method":1}}"#).unwrap_err()
        );
        assert!(err.contains("not a valid image-rebase document"), "{err}");
    }
}
