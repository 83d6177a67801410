//! The operations: one per step, each a function on the document that the plumbing
//! command and the `rebase` porcelain both call. They take their own option structs and
//! a registry client, return notes for the user as values, and never see the command
//! line, stdin, stdout or the terminal.

pub mod fetch_config;
pub mod fetch_manifest;
pub mod fleet;
pub mod put_manifest;
pub mod rebase;
pub mod splice;
pub mod split_history;

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
}
