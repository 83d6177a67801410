//! The OCI and Docker vocabulary: content digests, image references, media types and
//! platforms. The ground floor: imports nothing of the crate but `json`.

pub mod digest;
pub mod media;
pub mod platform;
pub mod reference;
