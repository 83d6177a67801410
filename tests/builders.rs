//! Images from real builders: docker with BuildKit and classic (Docker schema 2), buildah
//! without and with its layer cache (OCI, Docker), podman with its layer cache (OCI), a
//! squashed build, `podman commit`, and an app with no layers of its own. Each app is
//! also rebuilt on the new base: a rebase must give exactly that rebuild (layers,
//! diff_ids, history, config, files, and what it prints when run), or refuse.
//!
//! One test: the fixtures are built once by scripts/builders.sh (about a minute), the
//! cases share them, and the registry and dockerd are stopped by PID when it ends.

mod common;

use common::*;
use serde_json::Value;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// Builders whose app is rebased by detection and compared with its rebuild.
const BUILDERS: &[&str] = &["buildkit", "classic", "buildah", "buildah-layers", "podman"];

/// For each builder: base v1 and v2, base:latest = v1, the app FROM base:latest (with
/// `LABEL FROM=<builder>/base:latest`) as app:1, and the same app FROM v2 as app:rebuilt.
const BUILD: &str = r#"
source "$ROOT/scripts/builders.sh"
builders_init builders "$RUNROOT"
trap stop_dockerd EXIT
start_dockerd
base_context base1 1
base_context base2 2
for b in buildkit classic buildah buildah-layers podman podman-squash; do
    build_push $b base1 $REGISTRY/$b/base:v1
    build_push $b base2 $REGISTRY/$b/base:v2
    retag $REGISTRY/$b/base:v1 $REGISTRY/$b/base:latest
    app_context app-$b $b/base:latest
    build_push $b app-$b $REGISTRY/$b/app:1 BASE=$REGISTRY/$b/base:latest
    [[ $b == podman-squash ]] ||
        build_push $b app-$b $REGISTRY/$b/app:rebuilt BASE=$REGISTRY/$b/base:v2
done
# An app with no layers of its own.
app_context app-none buildkit/base:latest --no-layers
build_push buildkit app-none $REGISTRY/buildkit/none:1 BASE=$REGISTRY/buildkit/base:latest
build_push buildkit app-none $REGISTRY/buildkit/none:rebuilt BASE=$REGISTRY/buildkit/base:v2
# podman commit of a container of the BuildKit app, with a change of its own.
podman_commit $REGISTRY/buildkit/app:1 $REGISTRY/commit/app:1 'ENV COMMITTED=1'
# podman with its layer cache and no FROM label.
mkdir -p nolabel
printf 'ARG BASE\nFROM $BASE\nENV X=1\nRUN echo x >/x\n' >nolabel/Dockerfile
build_push podman nolabel $REGISTRY/podman/nolabel:1 BASE=$REGISTRY/podman/base:latest
stop_dockerd
"#;

struct Fixture {
    reg: Registry,
    work: TempDir,
    /// podman's run root: a short path.
    runroot: TempDir,
}

impl Fixture {
    /// `podman run` of `repo_ref`: what it prints.
    fn run_image(&self, repo_ref: &str) -> String {
        sh(
            &self.reg,
            self.work.path(),
            &format!(
                "source {}/scripts/builders.sh; builders_init builders {}; podman_run {} 2>/dev/null",
                root().display(),
                self.runroot.path().display(),
                self.reg.r(repo_ref)
            ),
        )
    }

    /// Runs the binary; (exit status, stdout, stderr).
    fn rebase(&self, args: &[&str]) -> (i32, String, String) {
        let out = run(args, None);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Checks that `result` is `rebuilt`: the same layers, diff_ids, history (but for the
    /// times of its entries and the builder's own `FROM <id>` comments), runtime config,
    /// files, and output when run.
    fn assert_is_rebuild(&self, result: &str, rebuilt: &str) {
        let reg = &self.reg;
        let (_, m) = reg.manifest(result).expect("the result exists");
        let (_, t) = reg.manifest(rebuilt).unwrap();
        assert_eq!(m["mediaType"], t["mediaType"], "{result}: media type");
        assert_eq!(m["layers"], t["layers"], "{result}: layers");
        let (c, tc) = (reg.config(result), reg.config(rebuilt));
        assert_eq!(c["rootfs"], tc["rootfs"], "{result}: diff_ids");
        assert_eq!(history(&c), history(&tc), "{result}: history");
        assert_eq!(runtime(&c), runtime(&tc), "{result}: config");
        for key in ["os", "architecture"] {
            assert_eq!(c[key], tc[key], "{result}: {key}");
        }
        let files = unpack(reg, result);
        assert!(
            files
                .iter()
                .any(|(f, text)| f == "etc/os-release" && text.contains("VERSION_ID=2")),
            "{result}: os-release of v2"
        );
        assert!(!files.iter().any(|(f, _)| f == "etc/only-v1"), "{result}");
        assert!(files == unpack(reg, rebuilt), "{result}: files");
        let printed = self.run_image(result);
        assert!(
            printed.contains("VERSION_ID=2"),
            "{result} prints {printed}"
        );
        assert_eq!(printed, self.run_image(rebuilt), "{result}: output");
    }
}

/// History entries without their times, and without the `FROM <image>` comments buildah
/// writes (they name the base or a local intermediate image).
fn history(config: &Value) -> Vec<Value> {
    config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let mut h = h.clone();
            let o = h.as_object_mut().unwrap();
            o.shift_remove("created");
            if o.get("comment")
                .and_then(Value::as_str)
                .is_some_and(|c| c.starts_with("FROM "))
            {
                o.shift_remove("comment");
            }
            h
        })
        .collect()
}

/// The runtime config, without classic docker's `Image` (the ID of an intermediate
/// image of that build).
fn runtime(config: &Value) -> Value {
    let mut rt = config["config"].clone();
    if let Some(o) = rt.as_object_mut() {
        o.shift_remove("Image");
    }
    rt
}

fn retag(reg: &Registry, from: &str, to: &str) {
    let (bytes, m) = reg.manifest(from).unwrap();
    let (repo, tag) = to.rsplit_once(':').unwrap();
    ureq::put(&format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr))
        .set("Content-Type", m["mediaType"].as_str().unwrap())
        .send_bytes(&bytes)
        .unwrap();
}

/// Label or annotation mode, as a user runs it after the base moved on.
fn detected(fx: &Fixture, builder: &str) {
    let image = fx.reg.r(&format!("{builder}/app:1"));
    let (code, plan, err) = fx.rebase(&["rebase", &image, "--dry-run"]);
    assert_eq!(code, 0, "{builder}: {err}");
    let (code, _, err) = fx.rebase(&["rebase", &image, "--tag", "rebased"]);
    assert_eq!(code, 0, "{builder}: {err}");
    match builder {
        // The annotations name the base as the registry has it.
        "buildah" => {
            assert!(plan.contains("from annotation"), "{plan}");
            assert!(!err.contains("cannot be used"), "{err}");
        }
        // Its layer cache wrote the digest of a local intermediate image.
        "podman" => {
            assert!(
                err.contains("cannot be used") && err.contains("MANIFEST_UNKNOWN"),
                "{err}"
            );
            assert!(err.contains("falling back to the \"FROM\" label"), "{err}");
            assert!(
                plan.contains("from label (the annotated old base cannot be used)"),
                "{plan}"
            );
        }
        // Docker schema 2: no annotations, the label.
        _ => assert!(plan.contains("split:      by label"), "{plan}"),
    }
    fx.assert_is_rebuild(
        &format!("{builder}/app:rebased"),
        &format!("{builder}/app:rebuilt"),
    );
}

fn explicit_bases_classic(fx: &Fixture) {
    let r = |s: &str| fx.reg.r(s);
    ok(
        &[
            "rebase",
            &r("classic/app:1"),
            "--old-base",
            &r("classic/base:v1"),
            "--new-base",
            &r("classic/base:v2"),
            "--tag",
            "explicit",
        ],
        None,
    );
    let c = fx.reg.config("classic/app:explicit");
    assert_eq!(
        c["config"]["Volumes"],
        Value::Null,
        "classic docker's null stays null"
    );
    fx.assert_is_rebuild("classic/app:explicit", "classic/app:rebuilt");
}

fn layers_buildkit(fx: &Fixture) {
    // LABEL, COPY, RUN, ENV, CMD.
    ok(
        &[
            "rebase",
            &fx.reg.r("buildkit/app:1"),
            "--layers",
            "5",
            "--new-base",
            &fx.reg.r("buildkit/base:v2"),
            "--tag",
            "layers",
        ],
        None,
    );
    fx.assert_is_rebuild("buildkit/app:layers", "buildkit/app:rebuilt");
}

fn plumbing_podman(fx: &Fixture) {
    let image = fx.reg.r("podman/app:1");
    let doc = pipeline(&[
        &["fetch-manifest", &image],
        &["fetch-manifest", "--as", "old-base"],
        &["fetch-manifest", "--as", "new-base"],
        &["fetch-config"],
        &["split-history"],
        &["splice"],
        &["put-manifest", "--tag", "plumbed"],
    ]);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc.get("old_base").is_none(), "{doc}");
    assert_eq!(
        doc["new_base"]["found_by"],
        "label (the annotated old base cannot be used)"
    );
    assert_eq!(doc["split"]["method"], "label");
    fx.assert_is_rebuild("podman/app:plumbed", "podman/app:rebuilt");
}

fn annotated_base_not_a_prefix(fx: &Fixture) {
    // The annotations name an old base that exists but is not under the image.
    let (_, mut m) = fx.reg.manifest("buildah/app:1").unwrap();
    let (v2, _) = fx.reg.manifest("buildah/base:v2").unwrap();
    m["annotations"]["org.opencontainers.image.base.digest"] =
        image_rebase::oci::digest::Digest::of(&v2)
            .to_string()
            .into();
    ureq::put(&format!(
        "http://{}/v2/buildah/app/manifests/wrong-base",
        fx.reg.addr
    ))
    .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    .send_bytes(&serde_json::to_vec(&m).unwrap())
    .unwrap();
    let (code, _, err) = fx.rebase(&[
        "rebase",
        &fx.reg.r("buildah/app:wrong-base"),
        "--tag",
        "from-wrong-base",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("cannot be used") && err.contains("is not based on the old base"),
        "{err}"
    );
    fx.assert_is_rebuild("buildah/app:from-wrong-base", "buildah/app:rebuilt");
}

fn squashed_is_refused(fx: &Fixture) {
    let (code, out, err) = fx.rebase(&[
        "rebase",
        &fx.reg.r("podman-squash/app:1"),
        "--tag",
        "rebased",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("no layer of the old base to replace") && err.contains("squash"),
        "{err}"
    );
    assert!(fx.reg.manifest("podman-squash/app:rebased").is_none());
}

fn no_layers_of_its_own(fx: &Fixture) {
    let (code, plan, err) = fx.rebase(&["rebase", &fx.reg.r("buildkit/none:1"), "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("keep 0 layers"), "{plan}");
    ok(
        &["rebase", &fx.reg.r("buildkit/none:1"), "--tag", "rebased"],
        None,
    );
    fx.assert_is_rebuild("buildkit/none:rebased", "buildkit/none:rebuilt");
}

fn podman_commit_keeps_what_no_history_explains(fx: &Fixture) {
    let image = fx.reg.r("commit/app:1");
    let (code, plan, err) = fx.rebase(&["rebase", &image, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let kept = plan
        .lines()
        .find(|l| l.contains("kept, origin unknown"))
        .unwrap_or_else(|| panic!("no unattributed fields listed: {plan}"));
    for key in [
        "config.Env.TERM",
        "config.Env.container",
        "config.Env.COMMITTED",
    ] {
        assert!(kept.contains(key), "{kept}");
    }
    let from_new = plan
        .lines()
        .find(|l| l.contains("from the new base"))
        .unwrap();
    assert!(!from_new.contains("TERM"), "{from_new}");
    ok(&["rebase", &image, "--tag", "rebased"], None);
    let env = fx.reg.config("commit/app:rebased")["config"]["Env"].clone();
    for e in [
        "TERM=xterm",
        "container=podman",
        "COMMITTED=1",
        "BASE_VERSION=2",
        "APP=1",
    ] {
        assert!(env.as_array().unwrap().iter().any(|v| v == e), "{e}: {env}");
    }
    let printed = fx.run_image("commit/app:rebased");
    assert!(
        printed.contains("VERSION_ID=2") && printed.contains("hello from the app"),
        "{printed}"
    );
}

fn no_method_left(fx: &Fixture) {
    let (code, out, err) = fx.rebase(&["rebase", &fx.reg.r("podman/nolabel:1")]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("tried its annotations") && err.contains("the label \"FROM\""),
        "{err}"
    );
}

#[test]
fn real_builders_right_or_refused() {
    let reg = Registry::start();
    let work = TempDir::new("builders");
    let runroot = TempDir::new("r");
    let started = Instant::now();
    sh(
        &reg,
        work.path(),
        &format!(
            "ROOT={}\nRUNROOT={}\n{BUILD}",
            root().display(),
            runroot.path().display()
        ),
    );
    eprintln!("builders: fixtures built in {:?}", started.elapsed());
    // The bases move on.
    for b in BUILDERS.iter().chain(&["podman-squash"]) {
        retag(&reg, &format!("{b}/base:v2"), &format!("{b}/base:latest"));
    }
    let fx = Fixture { reg, work, runroot };

    type Case = (&'static str, Box<dyn Fn(&Fixture)>);
    let mut cases: Vec<Case> = BUILDERS
        .iter()
        .map(|b| -> Case { (b, Box::new(move |fx: &Fixture| detected(fx, b))) })
        .collect();
    cases.extend([
        (
            "explicit bases, classic",
            Box::new(explicit_bases_classic) as Box<dyn Fn(&Fixture)>,
        ),
        ("--layers, buildkit", Box::new(layers_buildkit)),
        ("plumbing, podman", Box::new(plumbing_podman)),
        (
            "annotated base not a prefix",
            Box::new(annotated_base_not_a_prefix),
        ),
        ("squashed", Box::new(squashed_is_refused)),
        ("no layers of its own", Box::new(no_layers_of_its_own)),
        (
            "podman commit",
            Box::new(podman_commit_keeps_what_no_history_explains),
        ),
        ("no method left", Box::new(no_method_left)),
    ]);
    let mut failed = Vec::new();
    for (name, case) in &cases {
        let t = Instant::now();
        if catch_unwind(AssertUnwindSafe(|| case(&fx))).is_err() {
            failed.push(*name);
        }
        eprintln!("builders: {name}: {:?}", t.elapsed());
    }
    eprintln!("builders: all in {:?}", started.elapsed());
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
