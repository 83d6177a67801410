//! promote and rollback on the command line: read the report (a file or stdin), take this
//! shard of it, move the tags with `ops::rollout`, print one JSON line per tag through the
//! fleet machinery.

use super::args::{Global, RolloutArgs};
use super::fleet::{numbered, parse_shard, read_list, report};
use super::{client, explicit_credential};
use crate::ops::fleet::run_all;
use crate::ops::rollout::{self, Kind};
use anyhow::{Result, bail};
use std::io::Write;

/// `promote` or `rollback`. The error returned when any line failed carries exit status 2.
pub fn run(
    g: &Global,
    kind: Kind,
    args: &RolloutArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    // The report may come on stdin: then the password cannot.
    let explicit = explicit_credential(g, args.from_file != "-")?;
    let text = read_list(&args.from_file, "--from-file", "the report")?;
    let tasks = rollout::read_report(kind, &numbered(&text, shard));
    let client = client(g, explicit, rollout::named_hosts(&tasks), false)?;
    report(tasks.len(), "tags", out, err, |each| {
        run_all(
            &tasks,
            args.jobs,
            |t| rollout::apply(&client, kind, t, args.dry_run),
            each,
        )
    })
}
