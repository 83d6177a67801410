//! Safe rollout against a real registry: a fleet staged to side tags, promoted (a tag that
//! moved meanwhile is skipped), rolled back, and an in-place run rolled back; each checked
//! by the digests the tags hold. Also `rebase --json`, the refusal of a fixed tag for
//! several images of one repository, contract labels and shell completions.

mod common;

use common::own::*;
use common::*;
use image_rebase::oci::digest::Digest;
use serde_json::{Value, json};
use std::process::Output;

struct Fleet {
    reg: Registry,
    /// The apps, as `repository:tag`.
    apps: Vec<&'static str>,
    app_layer: Layer,
    v1: Layer,
    _work: TempDir,
}

const APPS: [&str; 3] = ["team/app:1", "team/app:2", "other/app:1"];

/// base:v1 and base:v2, three apps on base:v1.
fn fleet() -> Fleet {
    let reg = Registry::start();
    let work = TempDir::new("rollout");
    let v1 = layer(&reg, &[("etc/v1", "1\n")], "ADD v1 /");
    let v2 = layer(&reg, &[("etc/v2", "2\n")], "ADD v2 /");
    let app_layer = layer(&reg, &[("app/a", "a\n")], "COPY app /app");
    push(&reg, "base", "v1", &[&v1], &["PATH=/bin"]);
    push(&reg, "base", "v2", &[&v2], &["PATH=/bin"]);
    for app in APPS {
        let (repo, tag) = app.split_once(':').unwrap();
        push(&reg, repo, tag, &[&v1, &app_layer], &["PATH=/bin", app]);
    }
    Fleet {
        reg,
        apps: APPS.to_vec(),
        app_layer,
        v1,
        _work: work,
    }
}

/// The digest `repo_ref` holds now (None: no such tag).
fn digest(reg: &Registry, repo_ref: &str) -> Option<String> {
    reg.manifest(repo_ref)
        .map(|(bytes, _)| Digest::of(&bytes).to_string())
}

/// Runs the binary with `args` and `stdin`: exit status and the JSON lines it printed.
fn run_lines(args: &[&str], stdin: Option<&[u8]>) -> (Option<i32>, Vec<Value>, Output) {
    let out = run(args, stdin);
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (out.status.code(), lines, out)
}

/// The line for `image` (as the list or report names it).
fn line_of<'a>(lines: &'a [Value], image: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["image"] == image)
        .unwrap_or_else(|| panic!("no line for {image} in {lines:#?}"))
}

/// The digest part of a `registry/repository@digest` result.
fn result_digest(line: &Value) -> String {
    let r = line["result"].as_str().expect("a result");
    r.split_once('@').unwrap().1.to_string()
}

/// rebase --from-file of the fleet onto base:v2, with `extra` options; the report.
fn rebase_fleet(f: &Fleet, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let list: String = f.apps.iter().map(|a| format!("{}\n", f.reg.r(a))).collect();
    let (old, new) = (f.reg.r("base:v1"), f.reg.r("base:v2"));
    let mut args = vec![
        "rebase",
        "--from-file",
        "-",
        "--old-base",
        &old,
        "--new-base",
        &new,
    ];
    args.extend_from_slice(extra);
    let (code, lines, out) = run_lines(&args, Some(list.as_bytes()));
    let report = String::from_utf8(out.stdout).unwrap();
    (code, lines, report)
}

/// Runs promote or rollback on `report` (given on stdin); exit status, lines, and the
/// report it wrote.
fn rollout(command: &str, report: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let mut args = vec![command, "--from-file", "-"];
    args.extend_from_slice(extra);
    let (code, lines, out) = run_lines(&args, Some(report.as_bytes()));
    assert!(
        out.stderr.is_empty() || code != Some(0),
        "no noise on success: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, lines, String::from_utf8(out.stdout).unwrap())
}

#[test]
fn staged_fleet_promoted_with_a_moved_tag_skipped_then_rolled_back() {
    let f = fleet();
    let reg = &f.reg;
    let before: Vec<String> = f.apps.iter().map(|a| digest(reg, a).unwrap()).collect();

    // Stage: every image beside its original; the originals do not move.
    let (code, staged, report) = rebase_fleet(&f, &["--tag", "{tag}-rebased"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(staged.len(), 3);
    for (app, was) in f.apps.iter().zip(&before) {
        let l = line_of(&staged, &reg.r(app));
        assert_eq!(l["outcome"], "rebased", "{l}");
        assert_eq!(l["source"], was.as_str(), "the digest the rebase read");
        assert_eq!(l["target"], reg.r(&format!("{app}-rebased")));
        assert!(l["previous"].is_null(), "the side tag was new: {l}");
        assert_eq!(
            digest(reg, app).as_deref(),
            Some(was.as_str()),
            "{app} stays"
        );
        assert_eq!(
            digest(reg, &format!("{app}-rebased")),
            Some(result_digest(l)),
            "{app}-rebased holds the result"
        );
    }

    // Meanwhile team/app:2 is rebuilt and pushed again.
    let rebuilt = layer(reg, &[("app/a", "rebuilt\n")], "COPY app /app");
    push(reg, "team/app", "2", &[&f.v1, &rebuilt], &["PATH=/bin"]);
    let moved = digest(reg, "team/app:2").unwrap();
    assert_ne!(moved, before[1]);

    // A dry run writes nothing.
    let (code, dry, _) = rollout("promote", &report, &["--dry-run"]);
    assert_eq!(code, Some(0));
    assert_eq!(line_of(&dry, &reg.r("team/app:1"))["outcome"], "promoted");
    assert_eq!(digest(reg, "team/app:1").unwrap(), before[0], "dry run");

    // Promote: the moved tag is skipped and reported, the others move to the results.
    let (code, promoted, promote_report) = rollout("promote", &report, &[]);
    assert_eq!(code, Some(0), "{promote_report}");
    assert_eq!(promoted.len(), 3);
    for (i, app) in f.apps.iter().enumerate() {
        let l = line_of(&promoted, &reg.r(app));
        let staged_line = line_of(&staged, &reg.r(app));
        if *app == "team/app:2" {
            assert_eq!(l["outcome"], "skipped", "{l}");
            assert!(l["error"].as_str().unwrap().contains("moved since"), "{l}");
            assert_eq!(l["previous"], moved.as_str(), "what it holds now");
            assert_eq!(digest(reg, app).unwrap(), moved, "never clobbered");
        } else {
            assert_eq!(l["outcome"], "promoted", "{l}");
            assert_eq!(l["target"], reg.r(app));
            assert_eq!(l["previous"], before[i].as_str());
            assert_eq!(result_digest(l), result_digest(staged_line));
            assert_eq!(digest(reg, app).unwrap(), result_digest(staged_line));
        }
    }
    // Promoting again finds the tags there already.
    let (_, again, _) = rollout("promote", &report, &[]);
    assert_eq!(
        line_of(&again, &reg.r("team/app:1"))["outcome"],
        "up-to-date"
    );

    // Roll the promotion back: the promoted tags hold the originals again.
    let (code, rolled, rollback_report) = rollout("rollback", &promote_report, &[]);
    assert_eq!(code, Some(0), "{rollback_report}");
    assert_eq!(rolled.len(), 2, "only the moved tags: {rolled:#?}");
    for (i, app) in f.apps.iter().enumerate() {
        if *app != "team/app:2" {
            assert_eq!(line_of(&rolled, &reg.r(app))["outcome"], "rolled-back");
            assert_eq!(digest(reg, app).unwrap(), before[i], "{app} rolled back");
        }
    }
    assert_eq!(digest(reg, "team/app:2").unwrap(), moved);

    // Rolling back the rollback re-applies the promotion.
    let (code, _, _) = rollout("rollback", &rollback_report, &[]);
    assert_eq!(code, Some(0));
    let staged_result = result_digest(line_of(&staged, &reg.r("team/app:1")));
    assert_eq!(digest(reg, "team/app:1").unwrap(), staged_result);

    // Rolling back the staging run: the side tags were new, so they are left (and said so).
    let (code, side, _) = rollout("rollback", &report, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(side.len(), 3);
    for l in &side {
        assert_eq!(l["outcome"], "skipped", "{l}");
        assert!(l["error"].as_str().unwrap().contains("was new"), "{l}");
    }
}

#[test]
fn in_place_run_rolled_back_and_a_tag_moved_since_left_alone() {
    let f = fleet();
    let reg = &f.reg;
    let before: Vec<String> = f.apps.iter().map(|a| digest(reg, a).unwrap()).collect();
    let (code, rebased, report) = rebase_fleet(&f, &[]);
    assert_eq!(code, Some(0), "{report}");
    for (app, was) in f.apps.iter().zip(&before) {
        let l = line_of(&rebased, &reg.r(app));
        assert_eq!(l["outcome"], "rebased");
        assert_eq!(
            l["previous"],
            was.as_str(),
            "in place: the tag held the source"
        );
        assert_eq!(l["source"], was.as_str());
        assert_eq!(digest(reg, app).unwrap(), result_digest(l));
    }
    // other/app:1 is pushed again after the run.
    push(reg, "other/app", "1", &[&f.v1, &f.app_layer], &["NEW=1"]);
    let moved = digest(reg, "other/app:1").unwrap();

    let (code, rolled, _) = rollout("rollback", &report, &["--jobs", "1"]);
    assert_eq!(code, Some(0));
    assert_eq!(digest(reg, "team/app:1").unwrap(), before[0]);
    assert_eq!(digest(reg, "team/app:2").unwrap(), before[1]);
    assert_eq!(digest(reg, "other/app:1").unwrap(), moved, "left alone");
    let l = line_of(&rolled, &reg.r("other/app:1"));
    assert_eq!(l["outcome"], "skipped", "{l}");

    // A report line that cannot be read fails the run (exit 2); the others still move.
    let broken = format!("{report}not json\n");
    let (code, rolled, _) = rollout("rollback", &broken, &[]);
    assert_eq!(code, Some(2));
    assert!(rolled.iter().any(|l| l["outcome"] == "failed"));
    assert!(rolled.iter().any(|l| l["outcome"] == "up-to-date"));
}

#[test]
fn rebase_json_prints_one_fleet_line() {
    let f = fleet();
    let reg = &f.reg;
    let was = digest(reg, "team/app:1").unwrap();
    let (image, old, new) = (reg.r("team/app:1"), reg.r("base:v1"), reg.r("base:v2"));
    let args = [
        "rebase",
        &image,
        "--old-base",
        &old,
        "--new-base",
        &new,
        "--json",
    ];
    let (code, lines, out) = run_lines(&args, None);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let [l] = lines.as_slice() else {
        panic!("one object: {lines:?}")
    };
    assert_eq!(l["line"], 1);
    assert_eq!(l["outcome"], "rebased");
    assert_eq!(l["source"], was.as_str());
    assert_eq!(l["previous"], was.as_str());
    assert_eq!(l["target"], image.as_str());
    assert_eq!(digest(reg, "team/app:1").unwrap(), result_digest(l));
    // The same report rolls it back.
    let report = String::from_utf8(out.stdout).unwrap();
    let (code, _, _) = rollout("rollback", &report, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(digest(reg, "team/app:1").unwrap(), was);

    // Not based on the given old base: exit 1, still one object.
    let (code, lines, _) = run_lines(
        &[
            "rebase",
            &image,
            "--old-base",
            &new,
            "--new-base",
            &new,
            "--json",
        ],
        None,
    );
    assert_eq!(code, Some(1));
    assert_eq!(lines[0]["outcome"], "skipped");
}

#[test]
fn a_fixed_tag_for_several_images_of_one_repository_is_refused_before_any_request() {
    let f = fleet();
    let mark = f.reg.mark();
    let (code, lines, _) = rebase_fleet(&f, &["--tag", "staged"]);
    assert_eq!(code, Some(2));
    assert!(lines.is_empty());
    assert!(f.reg.requests_since(mark).is_empty(), "no request was made");
    // One image per repository may share a fixed tag name.
    let list = format!("{}\n", f.reg.r("other/app:1"));
    let (old, new) = (f.reg.r("base:v1"), f.reg.r("base:v2"));
    let args = [
        "rebase",
        "--from-file",
        "-",
        "--old-base",
        &old,
        "--new-base",
        &new,
        "--tag",
        "staged",
    ];
    let (code, lines, _) = run_lines(&args, Some(list.as_bytes()));
    assert_eq!(code, Some(0));
    assert_eq!(lines[0]["target"], f.reg.r("other/app:staged"));
    assert_eq!(
        digest(&f.reg, "other/app:staged"),
        Some(result_digest(&lines[0]))
    );
}

#[test]
fn contract_labels_refuse_and_pass() {
    let reg = Registry::start();
    let v1 = layer(&reg, &[("etc/v1", "1\n")], "ADD v1 /");
    let v2 = layer(&reg, &[("etc/v2", "2\n")], "ADD v2 /");
    let app = layer(&reg, &[("app/a", "a\n")], "COPY app /app");
    let release = |r: &str| json!({"distro.release": r, "maintainer": r});
    push_with(&reg, "base", "v1", &[&v1], &[], &[], release("12"));
    push_with(&reg, "base", "v2", &[&v2], &[], &[], release("13"));
    push_with(
        &reg,
        "base",
        "v2-same",
        &[&v2],
        &[],
        &[],
        json!({"distro.release": "12"}),
    );
    push(&reg, "app", "1", &[&v1, &app], &[]);
    let pinned_labels = json!({"io.buildpacks.rebasable": "false"});
    push_with(&reg, "pinned", "1", &[&v1, &app], &[], &[], pinned_labels);
    let was = digest(&reg, "app:1").unwrap();
    let old = reg.r("base:v1");
    let rebase = |image: &str, new: &str, extra: &[&str]| {
        let (image, new) = (reg.r(image), reg.r(new));
        let mut args = vec!["rebase", &image, "--old-base", &old, "--new-base", &new];
        args.extend_from_slice(extra);
        run(&args, None)
    };
    let same = ["--require-same-label", "distro.release"];

    // The release label differs: refused, exit 1, nothing written.
    let out = rebase("app:1", "base:v2", &same);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("distro.release"), "{stderr}");
    assert_eq!(digest(&reg, "app:1").unwrap(), was);
    // In a fleet: skipped, exit 0.
    let list = format!("{}\n", reg.r("app:1"));
    let new = reg.r("base:v2");
    let mut args = vec!["rebase", "--from-file", "-", "--old-base", &old];
    args.extend(["--new-base", &new]);
    args.extend(same);
    let (code, lines, _) = run_lines(&args, Some(list.as_bytes()));
    assert_eq!(code, Some(0));
    assert_eq!(lines[0]["outcome"], "skipped", "{}", lines[0]);
    // A label not required to stay (maintainer) does not matter; the same release passes.
    let out = rebase("app:1", "base:v2-same", &same);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(digest(&reg, "app:1").unwrap(), was, "rebased");
    // Without the option, a differing label is no reason to refuse.
    let out = rebase("app:1", "base:v2", &["--tag", "other"]);
    assert_eq!(out.status.code(), Some(0));

    // An image that says it must not be rebased: refused unless --force.
    let pinned = digest(&reg, "pinned:1").unwrap();
    let out = rebase("pinned:1", "base:v2", &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("io.buildpacks.rebasable=false"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(digest(&reg, "pinned:1").unwrap(), pinned);
    let out = rebase("pinned:1", "base:v2", &["--force"]);
    assert_eq!(out.status.code(), Some(0));
    assert_ne!(digest(&reg, "pinned:1").unwrap(), pinned);
}

/// Completes `words` (the last one being completed) with the bash script the binary
/// prints, the way bash calls a `complete -F` function.
fn bash_complete(words: &[&str]) -> String {
    let script = format!(
        "source <('{}' completions bash)\n\
         complete -p image-rebase\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _image__rebase image-rebase \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        env!("CARGO_BIN_EXE_image-rebase"),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completions_are_generated_and_complete() {
    let out = bash_complete(&["image-rebase", "pro"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("complete -o bashdefault -o default -o nosort -F _image__rebase image-rebase"),
        "the script registers itself: {out}"
    );
    assert_eq!(lines.collect::<Vec<_>>(), ["promote"]);
    // A subcommand's own options (the hyphen in the program's name must not break them).
    let out = bash_complete(&["image-rebase", "rollback", "--"]);
    assert!(out.lines().any(|l| l == "--from-file"), "{out}");
    let out = bash_complete(&["image-rebase", "rebase", "--require"]);
    assert!(out.lines().any(|l| l == "--require-same-label"), "{out}");
    let out = bash_complete(&["image-rebase", "completions", "z"]);
    assert!(out.lines().any(|l| l == "zsh"), "{out}");
    for shell in ["zsh", "fish"] {
        let script = ok(&["completions", shell], None);
        assert!(script.contains("image-rebase"), "{shell}: {script}");
    }
}

#[test]
fn help_groups_options_under_headings() {
    let help = ok(&["rebase", "--help"], None);
    let headings: Vec<&str> = help
        .lines()
        .filter(|l| l.ends_with(':') && !l.starts_with(' '))
        .collect();
    assert_eq!(
        headings,
        [
            "Arguments:",
            "Options:",
            "Base detection:",
            "Target:",
            "Fleet:",
            "Global options:",
            "Registry access:"
        ],
        "{help}"
    );
    let under = |heading: &str| -> String {
        let start = help.find(&format!("\n{heading}:\n")).unwrap();
        let rest = &help[start + heading.len() + 3..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    assert!(under("Base detection").contains("--old-base"));
    assert!(under("Target").contains("--tag"));
    assert!(under("Fleet").contains("--from-file"));
    assert!(under("Registry access").contains("--insecure"));
}
