//! image-rebase: rebase container images in a registry by writing only a new config and
//! manifest. The layers, top to bottom; each imports only from the layers below it:
//!
//! - `cli`: the command line: clap, stdin, stdout, stderr, the terminal.
//! - `ops`: one operation per step (fetch, split, splice, put, the porcelain, fleet mode).
//! - `document`: the JSON document that flows between the steps.
//! - `image` (pure image logic: split, splice, merge, the new index) and `registry` (the
//!   wire: sessions, auth, retries, the push engine).
//! - `oci` (digests, references, media types, platforms), `json`, `error`: the ground floor.

pub mod cli;
pub mod document;
pub mod error;
pub mod image;
pub mod json;
pub mod oci;
pub mod ops;
pub mod registry;
