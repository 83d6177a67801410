//! fetch-config: the config blob of every image section that has none yet.

use crate::document::{Document, ImageSection, Role, Unit};
use crate::image;
use crate::oci::digest::Digest;
use crate::registry::{Client, MAX_JSON_BYTES};
use anyhow::{Context, Result};

/// Configs fetched at once, at most: a multi-platform image has three a platform.
const AT_ONCE: usize = 8;

/// Fetches the config blob of every image section that has none yet (of every platform
/// of an index), several at once: none depends on another, so they cost one round trip,
/// not one each.
pub fn step(client: &Client, doc: &mut Document) -> Result<()> {
    if doc.index.is_none() {
        doc.unit.require(Role::Image)?;
    }
    let mut wanted = Vec::new();
    for (platform, unit) in doc.units_mut() {
        wanted.extend(missing(unit).map(|s| (platform.clone(), s)));
    }
    for group in wanted.chunks_mut(AT_ONCE) {
        // The first on this thread, each other on one of its own.
        let (first, others) = group.split_first_mut().expect("chunks are not empty");
        std::thread::scope(|scope| {
            let fetches: Vec<_> = others
                .iter_mut()
                .map(|one| scope.spawn(move || fill_one(client, one)))
                .collect();
            let first = fill_one(client, first);
            fetches
                .into_iter()
                .map(|f| f.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .fold(first, Result::and)
        })?;
    }
    Ok(())
}

/// Fetches one section's config, naming its platform in an error.
fn fill_one(client: &Client, one: &mut (Option<String>, (Role, &mut ImageSection))) -> Result<()> {
    let (platform, (role, section)) = one;
    match platform {
        Some(p) => fill(client, *role, section).with_context(|| format!("platform {p}")),
        None => fill(client, *role, section),
    }
}

/// One unit's configs, one after another (fleet mode runs many units at once already).
pub fn unit_step(client: &Client, unit: &mut Unit) -> Result<()> {
    for (role, section) in missing(unit) {
        fill(client, role, section)?;
    }
    Ok(())
}

/// The unit's sections without a config yet, with their roles.
fn missing(unit: &mut Unit) -> impl Iterator<Item = (Role, &mut ImageSection)> {
    let Unit {
        image,
        old_base,
        new_base,
        ..
    } = unit;
    [
        (Role::Image, image),
        (Role::OldBase, old_base),
        (Role::NewBase, new_base),
    ]
    .into_iter()
    .filter_map(|(role, s)| s.as_mut().map(|s| (role, s)))
    .filter(|(_, s)| s.config.is_none())
}

/// Fetches a section's config into it.
fn fill(client: &Client, role: Role, section: &mut ImageSection) -> Result<()> {
    // Bases are shared by many images: their configs are fetched once per run.
    let config = fetch(client, section, role != Role::Image)
        .with_context(|| format!("fetching config of {}", section.reference))?;
    section.config = Some(config);
    Ok(())
}

pub fn fetch(client: &Client, section: &ImageSection, shared: bool) -> Result<serde_json::Value> {
    let (digest, _) = image::config_descriptor(&section.manifest)?;
    let digest: Digest = digest.parse()?;
    let (registry, repository) = (&section.registry, &section.repository);
    let bytes = if shared {
        client.fetch_base_blob(registry, repository, &digest, MAX_JSON_BYTES)?
    } else {
        client.fetch_blob(registry, repository, &digest, MAX_JSON_BYTES)?
    };
    serde_json::from_slice(&bytes).context("the config is not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{OCI_CONFIG, OCI_MANIFEST};
    use crate::ops::fetch_manifest;
    use crate::registry::fake::Fake;
    use serde_json::json;

    /// Stores a one-layer image under `name` (`repository:tag`).
    fn image(fake: &Fake, name: &str) {
        let (repository, tag) = name.split_once(':').unwrap();
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(name.as_bytes())]},
            "history": [{"created_by": format!("ADD {name}")}],
        });
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": fake.put_blob(repository, &config), "size": config.len()},
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": fake.put_blob(repository, name.as_bytes()), "size": name.len(),
            }],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        fake.put_manifest(repository, Some(tag), OCI_MANIFEST, &bytes);
    }

    #[test]
    fn the_three_configs_are_fetched_at_once() {
        let fake = Fake::start();
        let client = fake.client();
        let mut doc = Document::default();
        let opts = fetch_manifest::Options {
            label: "FROM",
            platforms: &[],
            annotation_failed: None,
        };
        for (role, name) in [
            (Role::Image, "app:1"),
            (Role::OldBase, "base:v1"),
            (Role::NewBase, "base:v2"),
        ] {
            image(&fake, name);
            fetch_manifest::step(&client, &mut doc, role, Some(&fake.r(name)), &opts).unwrap();
        }
        fake.clear_requests();
        fake.delay(crate::registry::fake::AWAY);
        step(&client, &mut doc).unwrap();
        let levels: Vec<usize> = fake.levels().into_iter().map(|(_, l)| l).collect();
        assert_eq!(levels, [1, 1, 1], "{:#?}", fake.levels());
        for role in [Role::Image, Role::OldBase, Role::NewBase] {
            let section = doc.unit.section(role).unwrap();
            assert_eq!(
                section.config.as_ref().unwrap()["history"][0]["created_by"]
                    .as_str()
                    .map(|s| s.starts_with("ADD ")),
                Some(true)
            );
        }
    }
}
