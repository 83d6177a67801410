//! image-rebase: rebase container images in a registry by writing only a new config and
//! manifest. The binary's subcommands are thin wrappers around `cmd`; the pure logic
//! lives in `split`, `splice` and `image`, the wire in `registry`.

pub mod cli;
pub mod cmd;
pub mod detect;
pub mod digest;
pub mod doc;
pub mod error;
pub mod history;
pub mod image;
pub mod index;
pub mod io;
pub mod json;
pub mod media;
pub mod merge;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod splice;
pub mod split;
