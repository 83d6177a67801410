//! The command line: global options and one subcommand per step.

use crate::document::Role;
use crate::ops::{PushOptions, SplitOptions};
use clap::{Args, Parser, Subcommand};

/// The headings `--help` groups options under.
const GLOBAL: &str = "Global options";
const REGISTRY: &str = "Registry access";
const BASES: &str = "Base detection";
const TARGET: &str = "Target";
const FLEET: &str = "Fleet";

#[derive(Debug, Parser)]
#[command(
    name = "image-rebase",
    version,
    about = "Rebase container images in a registry onto a new base, writing only a new config and manifest",
    after_help = "Exit status: 0 done (or already up to date), 1 the image is not based on the given old base, \
                  cannot be split or is refused by a contract label, 2 any other error.\n\
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
    /// Log every registry request (method, URL, status) and every retry to stderr
    #[arg(help_heading = GLOBAL, short, long, global = true)]
    pub verbose: bool,
    /// Allow plain HTTP, and accept any TLS certificate, for every registry
    #[arg(help_heading = REGISTRY, long, global = true)]
    pub insecure: bool,
    /// Speak only HTTPS, to loopback registries too (they are asked in plain HTTP first)
    #[arg(help_heading = REGISTRY, long, global = true)]
    pub https: bool,
    /// Default registry for references without a registry host (instead of docker.io)
    #[arg(help_heading = REGISTRY, long, global = true, value_name = "HOST[:PORT]")]
    pub registry: Option<String>,
    /// Trust the CA certificates in this PEM file too (registries with a private CA)
    #[arg(help_heading = REGISTRY, long, global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Seconds to wait for a connection or a response before giving up on a request
    #[arg(help_heading = REGISTRY,
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 30,
        allow_negative_numbers = true
    )]
    pub timeout: u64,
    /// User name for the registries named on the command line (password from --password-stdin or
    /// IMAGE_REBASE_PASSWORD); otherwise credentials come from docker's and podman's files
    #[arg(help_heading = REGISTRY,
        long,
        global = true,
        value_name = "USER",
        env = "IMAGE_REBASE_USERNAME"
    )]
    pub username: Option<String>,
    /// Read the password (or token) for --username from the first line of stdin (rebase and find only)
    #[arg(help_heading = REGISTRY, long, global = true)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch an image's manifest into the document (plumbing)
    FetchManifest(FetchManifestArgs),
    /// Fetch the config of every image in the document (plumbing)
    FetchConfig,
    /// Find where the image divides into its base and its own part (plumbing)
    SplitHistory(SplitArgs),
    /// Build the rebased manifest and config (plumbing)
    Splice,
    /// Push the rebased image: mount blobs, upload the config, put the manifest (plumbing)
    PutManifest(PutArgs),
    /// Rebase an image onto a new base in one step (porcelain)
    Rebase(RebaseArgs),
    /// Point each image's own tag at its rebased image staged under a side tag (porcelain)
    Promote(RolloutArgs),
    /// Put back what each tag moved by a rebase, promote or rollback held before (porcelain)
    Rollback(RolloutArgs),
    /// Print the shell completion script for bash, zsh or fish
    Completions(CompletionsArgs),
    /// List the images in registries that are built on a base, as rebase --from-file reads them
    Find(FindArgs),
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// Where to look: a registry (HOST[:PORT], every repository of its catalog) or a
    /// repository prefix (HOST[:PORT]/team-a)
    #[arg(value_name = "WHERE", required_unless_present = "repositories")]
    pub places: Vec<String>,
    /// The base: [registry/]repository[:tag][@sha256:digest]; repeat it for the base's
    /// past versions. Without it: images whose base annotations or label name a base
    #[arg(long = "base", value_name = "REF")]
    pub bases: Vec<String>,
    /// Look in the repositories listed in this file ([registry/]repository, one a line;
    /// "-" reads stdin), for registries whose catalog is off
    #[arg(long, value_name = "FILE")]
    pub repositories: Option<String>,
    /// Without --base: the label that names the base
    #[arg(long, value_name = "NAME", default_value = "FROM")]
    pub label: String,
    /// How many requests to have in flight at once
    #[arg(help_heading = FLEET, long, value_name = "N", default_value_t = 8)]
    pub jobs: usize,
    /// Take only the I-th of N deterministic slices of the repositories (0 <= I < N)
    #[arg(help_heading = FLEET, long, value_name = "I/N")]
    pub shard: Option<String>,
    /// One line per manifest and repository (repository@digest) instead of one per tag
    #[arg(long)]
    pub by_digest: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    pub shell: ShellArg,
}

/// The shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

impl From<ShellArg> for clap_complete::Shell {
    fn from(s: ShellArg) -> clap_complete::Shell {
        match s {
            ShellArg::Bash => clap_complete::Shell::Bash,
            ShellArg::Zsh => clap_complete::Shell::Zsh,
            ShellArg::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The report of the run: the JSON lines of rebase --from-file, rebase --json, promote
    /// or rollback ("-" reads stdin)
    #[arg(help_heading = FLEET, long, value_name = "FILE", required = true)]
    pub from_file: String,
    /// How many tags to move at once
    #[arg(help_heading = FLEET, long, value_name = "N", default_value_t = 8)]
    pub jobs: usize,
    /// Take only the I-th of N deterministic slices of the report (0 <= I < N)
    #[arg(help_heading = FLEET, long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Check every tag, write nothing
    #[arg(help_heading = FLEET, long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct FetchManifestArgs {
    /// The image reference: [registry/]repository[:tag][@sha256:digest]. For --as old-base
    /// and --as new-base it may be left out: it is then found in the image (annotations,
    /// then the label)
    pub reference: Option<String>,
    /// The role of this image in the rebase
    #[arg(long = "as", value_enum, default_value = "image")]
    pub role: RoleArg,
    /// The label that names the new base when no reference is given
    #[arg(help_heading = BASES, long, value_name = "NAME", default_value = "FROM")]
    pub label: String,
    /// For a multi-platform image: rebase only these platforms (os/arch[/variant];
    /// repeat the option or separate with commas)
    #[arg(help_heading = BASES, long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct SplitArgs {
    /// Without an old base: split at the history entry that set this label
    #[arg(help_heading = BASES, long, value_name = "NAME", default_value = "FROM")]
    pub label: String,
    /// Keep the top N history entries (as docker history counts them) and replace the rest
    #[arg(help_heading = BASES, long, value_name = "N")]
    pub layers: Option<usize>,
}

#[derive(Debug, Args, Clone)]
pub struct PushArgs {
    /// Tag to write (default: the image's own tag; by digest only when it was given by digest);
    /// or [registry/]repository:tag to write to another repository or registry
    #[arg(help_heading = TARGET, short, long)]
    pub tag: Option<String>,
    /// Overwrite a tag that holds an image which is neither this image nor a rebase of it
    #[arg(help_heading = TARGET, short, long)]
    pub force: bool,
    /// Do everything but write: check which blobs are present, mount, copy and upload nothing
    #[arg(help_heading = TARGET, long)]
    pub dry_run: bool,
    /// Never copy layer data between registries (or into a registry that does not mount):
    /// refuse where a cross-repository mount cannot do
    #[arg(help_heading = TARGET, long)]
    pub no_copy: bool,
    /// Multi-platform image with one platform left: push only that platform's rebased
    /// manifest under the tag, no index
    #[arg(help_heading = TARGET, long)]
    pub single: bool,
    /// Keep attestation entries of the index (they describe the old image) in the new index
    #[arg(help_heading = TARGET, long)]
    pub keep_attestations: bool,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub push: PushArgs,
}

#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The image to rebase: [registry/]repository[:tag][@sha256:digest]
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub image: Option<String>,
    /// The base the image is built on now (default: none with --layers, else from the
    /// image's annotations, else the split is found by label)
    #[arg(help_heading = BASES,
        long,
        visible_alias = "from-base",
        alias = "old_base",
        value_name = "REF"
    )]
    pub old_base: Option<String>,
    /// The base to put under the image (default: the annotation base.name, else the label)
    #[arg(help_heading = BASES,
        long,
        visible_alias = "to-base",
        alias = "new_base",
        value_name = "REF"
    )]
    pub new_base: Option<String>,
    /// For a multi-platform image: rebase only these platforms (os/arch[/variant];
    /// repeat the option or separate with commas)
    #[arg(help_heading = BASES, long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<String>,
    /// Refuse (exit 1; skipped in a fleet) an image whose old and new base differ in this
    /// label; repeatable. An image labelled io.buildpacks.rebasable=false is refused unless
    /// --force
    #[arg(help_heading = BASES, long, value_name = "KEY")]
    pub require_same_label: Vec<String>,
    #[command(flatten)]
    pub split: SplitArgs,
    #[command(flatten)]
    pub push: PushArgs,
    /// Print the outcome as one JSON object, the one a --from-file run prints per image
    #[arg(help_heading = TARGET, long)]
    pub json: bool,
    /// Rebase many images: one reference per line, or JSON Lines objects with per-image
    /// options ("-" reads stdin); prints one JSON line per image
    #[arg(help_heading = FLEET, long, value_name = "FILE")]
    pub from_file: Option<String>,
    /// With --from-file: how many images to rebase at once
    #[arg(help_heading = FLEET, long, value_name = "N", default_value_t = 8, requires = "from_file")]
    pub jobs: usize,
    /// With --from-file: take only the I-th of N deterministic slices of the list
    /// (0 <= I < N; e.g. --shard $JOB_COMPLETION_INDEX/N)
    #[arg(help_heading = FLEET, long, value_name = "I/N", requires = "from_file")]
    pub shard: Option<String>,
}

/// `--as`: the role of a fetched image (the document's `Role`, as the command line spells it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    Image,
    OldBase,
    NewBase,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Image => Role::Image,
            RoleArg::OldBase => Role::OldBase,
            RoleArg::NewBase => Role::NewBase,
        }
    }
}

impl From<&SplitArgs> for SplitOptions {
    fn from(a: &SplitArgs) -> SplitOptions {
        SplitOptions {
            label: a.label.clone(),
            layers: a.layers,
        }
    }
}

impl PushArgs {
    /// The push options; `registry` is `--registry`, for a `--tag` given as a reference.
    pub fn options(&self, registry: Option<&str>) -> anyhow::Result<PushOptions> {
        let mut o = PushOptions::from(self);
        if let Some(t) = &self.tag {
            o.set_tag(t, registry)?;
        }
        Ok(o)
    }
}

impl From<&PushArgs> for PushOptions {
    fn from(a: &PushArgs) -> PushOptions {
        PushOptions {
            tag: a.tag.clone(),
            to: None,
            force: a.force,
            dry_run: a.dry_run,
            no_copy: a.no_copy,
            single: a.single,
            keep_attestations: a.keep_attestations,
            image_is_current: false,
            ahead: None,
        }
    }
}
