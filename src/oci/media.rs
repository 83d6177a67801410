//! Media types of manifests, configs and layers, and conversion between the Docker and
//! OCI families (one manifest never mixes the two).

use anyhow::{Result, bail};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The Accept header for manifest requests: every manifest kind we understand.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Layer media types as pairs (Docker, OCI) that mean the same thing.
const LAYER_PAIRS: &[(&str, &str)] = &[
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ),
];

/// The two families of image media types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Docker,
    Oci,
}

impl Family {
    /// The family of a single-image manifest media type.
    pub fn of_manifest(media_type: &str) -> Result<Family> {
        match media_type {
            OCI_MANIFEST => Ok(Family::Oci),
            DOCKER_MANIFEST => Ok(Family::Docker),
            OCI_INDEX | DOCKER_LIST => bail!(
                "{media_type} is a multi-platform index, not a single image manifest; \
                 name one platform's manifest by its digest"
            ),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => bail!(
                "Docker schema 1 manifests are not supported; convert the image with \
                 `skopeo copy --format v2s2` first"
            ),
            other => bail!("unsupported manifest media type {other:?}"),
        }
    }

    pub fn config_type(self) -> &'static str {
        match self {
            Family::Docker => DOCKER_CONFIG,
            Family::Oci => OCI_CONFIG,
        }
    }

    /// The media type in this family that means the same as layer type `media_type`.
    pub fn layer_type(self, media_type: &str) -> Result<String> {
        for (docker, oci) in LAYER_PAIRS {
            if media_type == *docker || media_type == *oci {
                return Ok(match self {
                    Family::Docker => docker,
                    Family::Oci => oci,
                }
                .to_string());
            }
        }
        let foreign_family = if media_type.starts_with("application/vnd.docker.") {
            Some(Family::Docker)
        } else if media_type.starts_with("application/vnd.oci.") {
            Some(Family::Oci)
        } else {
            None
        };
        if foreign_family == Some(self) || foreign_family.is_none() && self == Family::Oci {
            // Same family (e.g. OCI zstd into OCI), or a type OCI allows verbatim.
            return Ok(media_type.to_string());
        }
        bail!(
            "layer media type {media_type:?} has no equivalent in the {} manifest format; \
             the image and the new base would have to be in the same format",
            self.name()
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Docker => "Docker schema 2",
            Family::Oci => "OCI",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_types_convert_between_families() {
        let cases = [
            (
                Family::Oci,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some("application/vnd.oci.image.layer.v1.tar+gzip"),
            ),
            (
                Family::Docker,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            ),
            (
                Family::Docker,
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            ),
            (
                Family::Oci,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some("application/vnd.oci.image.layer.v1.tar+zstd"),
            ),
            (
                Family::Docker,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                None,
            ),
            (
                Family::Docker,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            ),
            // A type of neither family: OCI allows any layer type, Docker does not.
            (
                Family::Oci,
                "application/x-example.layer",
                Some("application/x-example.layer"),
            ),
            (Family::Docker, "application/x-example.layer", None),
        ];
        for (family, input, want) in cases {
            let got = family.layer_type(input).ok();
            assert_eq!(got.as_deref(), want, "{family:?} {input}");
        }
    }

    #[test]
    fn manifest_families() {
        assert_eq!(Family::of_manifest(OCI_MANIFEST).unwrap(), Family::Oci);
        assert_eq!(
            Family::of_manifest(DOCKER_MANIFEST).unwrap(),
            Family::Docker
        );
        assert!(
            Family::of_manifest(OCI_INDEX)
                .unwrap_err()
                .to_string()
                .contains("index")
        );
        assert!(Family::of_manifest(DOCKER_SCHEMA1_SIGNED).is_err());
        assert_eq!(Family::Oci.name(), "OCI");
        assert_eq!(Family::Docker.name(), "Docker schema 2");
    }
}
