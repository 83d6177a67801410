//! The command line: global options and one subcommand per step.

use crate::doc::Role;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "image-rebase",
    version,
    about = "Rebase container images in a registry onto a new base, writing only a new config and manifest",
    after_help = "Exit status: 0 done, 1 the image is not based on the given old base, 2 any other error.\n\
                  See image-rebase(1) and image-rebase-<command>(1)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Log every registry request (method, URL, status) to stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Allow plain HTTP to registries that are not on loopback
    #[arg(long, global = true)]
    pub insecure: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch an image's manifest into the document (plumbing)
    FetchManifest(FetchManifestArgs),
    /// Fetch the config of every image in the document (plumbing)
    FetchConfig,
    /// Find where the image divides into its base and its own part (plumbing)
    SplitHistory,
    /// Build the rebased manifest and config (plumbing)
    Splice,
    /// Push the rebased image: mount blobs, upload the config, put the manifest (plumbing)
    PutManifest(PutManifestArgs),
    /// Rebase an image onto a new base in one step (porcelain)
    Rebase(RebaseArgs),
}

#[derive(Debug, Args)]
pub struct FetchManifestArgs {
    /// The image reference: [registry/]repository[:tag][@sha256:digest]
    pub reference: String,
    /// The role of this image in the rebase
    #[arg(long = "as", value_enum, default_value = "image")]
    pub role: Role,
}

#[derive(Debug, Args)]
pub struct PutManifestArgs {
    /// Tag to write (default: the image's own tag; by digest only when it has none)
    #[arg(short, long)]
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The image to rebase: [registry/]repository[:tag][@sha256:digest]
    pub image: String,
    /// The base the image is built on now
    #[arg(long)]
    pub old_base: String,
    /// The base to put under the image instead
    #[arg(long)]
    pub new_base: String,
    /// Tag to write (default: the image's own tag; by digest only when it has none)
    #[arg(short, long)]
    pub tag: Option<String>,
}
