//! Finding the base by itself (label, annotations, layer count), safe re-runs, tag
//! safety and the config merge, against a real registry.

mod common;

use common::*;
use serde_json::{Value, json};

/// base:v1 and base:v2 (v2 changes PATH, adds JAVA_HOME... and a version label), and
/// base:latest = v1; `app_args` builds the app from base-v1.
fn fixture(app_args: &str) -> (Registry, TempDir) {
    let reg = Registry::start();
    let work = TempDir::new("detect");
    sh(
        &reg,
        work.path(),
        &format!(
            "mkdir -p v1/etc v2/etc v3/etc app/app
            echo 1 > v1/etc/v1; echo 2 > v2/etc/v2; echo 3 > v3/etc/v3; echo a > app/app/a
            build_image layout base-v1 --env PATH=/usr/bin:/bin --env JAVA_HOME=/opt/java1 --label version=1 --label vendor=acme v1
            build_image layout base-v2 --env PATH=/usr/local/bin:/usr/bin:/bin --env JAVA_HOME=/opt/java2 --label version=2 --label vendor=acme v2
            build_image layout base-v3 --env PATH=/usr/local/bin:/usr/bin:/bin --env JAVA_HOME=/opt/java3 --label version=3 --label vendor=acme v3
            push_image layout base-v1 $REGISTRY/base:v1
            push_image layout base-v1 $REGISTRY/base:latest
            push_image layout base-v2 $REGISTRY/base:v2
            push_image layout base-v3 $REGISTRY/base:v3
            {app_args}"
        ),
    );
    (reg, work)
}

fn retag(reg: &Registry, from: &str, to: &str) {
    let (bytes, m) = reg.manifest(from).unwrap();
    let (repo, tag) = to.rsplit_once(':').unwrap();
    let media_type = m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    ureq::put(&format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr))
        .set("Content-Type", media_type)
        .send_bytes(&bytes)
        .unwrap();
}

fn files_of(reg: &Registry, r: &str) -> Vec<String> {
    unpack(reg, r).into_iter().map(|(n, _)| n).collect()
}

fn env(config: &Value) -> Vec<String> {
    config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn label_mode_with_buildkit_history_follows_the_tag_and_merges_the_config() {
    let (reg, _w) = fixture(
        "build_image layout app --from base-v1 --label FROM=base:latest --env APP=1 --label vendor=me app
        push_image layout app $REGISTRY/app:1",
    );
    // The patched base is published under the same tag; the old one is gone.
    retag(&reg, "base:v2", "base:latest");
    let out = run(&["rebase", &reg.r("app:1"), "--tag", "rebased"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = files_of(&reg, "app:rebased");
    assert!(
        files.contains(&"etc/v2".into())
            && files.contains(&"app/a".into())
            && !files.contains(&"etc/v1".into()),
        "{files:?}"
    );

    let config = reg.config("app:rebased");
    assert_eq!(
        env(&config),
        [
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "JAVA_HOME=/opt/java2",
            "APP=1"
        ]
    );
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["version"], "2",
        "the new base's label reaches the image"
    );
    assert_eq!(labels["vendor"], "me", "the app's own label stays");
    assert_eq!(
        labels["FROM"], "base:latest",
        "the label convention keeps working"
    );
    // The OCI result records its base.
    let (_, m) = reg.manifest("app:rebased").unwrap();
    let (v2, _) = reg.manifest("base:v2").unwrap();
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.name"],
        reg.r("base:latest")
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.base.digest"],
        image_rebase::oci::digest::Digest::of(&v2).as_str()
    );
}

#[test]
fn label_mode_with_classic_docker_history() {
    use common::own::*;
    let reg = Registry::start();
    let l1 = layer(
        &reg,
        &[("etc/old", "o\n")],
        "/bin/sh -c #(nop) ADD file:old in / ",
    );
    let l2 = layer(
        &reg,
        &[("etc/new", "n\n")],
        "/bin/sh -c #(nop) ADD file:new in / ",
    );
    let la = layer(
        &reg,
        &[("app/run", "r\n")],
        "/bin/sh -c #(nop) COPY file:app in /app ",
    );
    push(&reg, "base", "old", &[&l1], &["PATH=/bin", "BASE=old"]);
    push(
        &reg,
        "base",
        "latest",
        &[&l2],
        &["PATH=/usr/bin:/bin", "BASE=new"],
    );
    push_with(
        &reg,
        "app",
        "1",
        &[&l1, &la],
        &[
            (0, "/bin/sh -c #(nop)  LABEL FROM=base:latest"),
            (0, "/bin/sh -c #(nop)  ENV APP=yes"),
        ],
        &["PATH=/bin", "BASE=old", "APP=yes"],
        json!({"FROM": "base:latest"}),
    );
    let out = ok(&["rebase", &reg.r("app:1"), "-t", "rebased"], None);
    assert!(out.starts_with(&reg.r("app@sha256:")));
    let files = files_of(&reg, "app:rebased");
    assert_eq!(files, ["app/run", "etc/new"]);
    let config = reg.config("app:rebased");
    assert_eq!(env(&config), ["PATH=/usr/bin:/bin", "BASE=new", "APP=yes"]);
    // Docker schema 2: no annotations, and the user is told.
    let (_, m) = reg.manifest("app:rebased").unwrap();
    assert!(m.get("annotations").is_none());
}

#[test]
fn no_label_and_no_base_says_what_to_give() {
    let (reg, _w) =
        fixture("build_image layout app --from base-v1 app; push_image layout app $REGISTRY/app:1");
    let err = fails(&["rebase", &reg.r("app:1")], None, 2);
    assert!(
        err.contains("--new-base") && err.contains("annotation"),
        "{err}"
    );
    let err = fails(
        &["rebase", &reg.r("app:1"), "--new-base", &reg.r("base:v2")],
        None,
        1,
    );
    assert!(
        err.contains("--old-base") && err.contains("--layers"),
        "{err}"
    );
}

#[test]
fn annotations_written_by_another_tool_then_by_us() {
    let reg = Registry::start();
    let work = TempDir::new("annotations");
    sh(
        &reg,
        work.path(),
        "mkdir -p v1/etc v2/etc v3/etc app/app
        echo 1 > v1/etc/v1; echo 2 > v2/etc/v2; echo 3 > v3/etc/v3; echo a > app/app/a
        build_image layout base-v1 v1; build_image layout base-v2 v2; build_image layout base-v3 v3
        push_image layout base-v1 $REGISTRY/library/base:stable",
    );
    let (v1, _) = reg.manifest("library/base:stable").unwrap();
    let v1_digest = image_rebase::oci::digest::Digest::of(&v1);
    sh(
        &reg,
        work.path(),
        &format!(
            "build_image layout app --from base-v1 --env APP=1 \
               --annotation org.opencontainers.image.base.name=$REGISTRY/library/base:stable \
               --annotation org.opencontainers.image.base.digest={v1_digest} app
            push_image layout app $REGISTRY/team/app:1
            push_image layout base-v2 $REGISTRY/library/base:stable"
        ),
    );
    // The old base is found by digest, the new one is what base.name points to now.
    let mark = reg.mark();
    let out = run(&["rebase", &reg.r("team/app:1"), "--dry-run"], None);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        plan.contains(&format!(
            "old base:   {}/library/base@{v1_digest}",
            reg.addr
        )),
        "{plan}"
    );
    assert!(plan.contains("from annotation"), "{plan}");
    assert!(plan.contains("mount:      sha256:"), "{plan}");
    assert!(plan.contains("would be written"), "{plan}");
    for (method, uri, _) in reg.requests_since(mark) {
        assert!(
            method == "GET" || method == "HEAD",
            "a dry run writes nothing, and opens no upload session: {method} {uri}"
        );
    }

    let first = ok(&["rebase", &reg.r("team/app:1")], None);
    assert_eq!(files_of(&reg, "team/app:1"), ["app/a", "etc/v2"]);
    // Our own annotations let the next rebase find its base.
    sh(
        &reg,
        work.path(),
        "push_image layout base-v3 $REGISTRY/library/base:stable",
    );
    let second = ok(&["rebase", &reg.r("team/app:1")], None);
    assert_ne!(first, second);
    assert_eq!(files_of(&reg, "team/app:1"), ["app/a", "etc/v3"]);
}

#[test]
fn layer_count_mode_and_aliases() {
    let (reg, _w) = fixture(
        "build_image layout app --from base-v1 --env APP=1 app; push_image layout app $REGISTRY/app:1",
    );
    // Two history entries of the app's own: ENV APP=1 and the COPY.
    let out = ok(
        &[
            "rebase",
            &reg.r("app:1"),
            "--layers",
            "2",
            "--to-base",
            &reg.r("base:v2"),
            "-t",
            "by-count",
        ],
        None,
    );
    let out2 = ok(
        &[
            "rebase",
            &reg.r("app:1"),
            "--from-base",
            &reg.r("base:v1"),
            "--new_base",
            &reg.r("base:v2"),
            "-t",
            "by-base",
        ],
        None,
    );
    assert_eq!(files_of(&reg, "app:by-count"), ["app/a", "etc/v2"]);
    let (a, b) = (reg.config("app:by-count"), reg.config("app:by-base"));
    assert_eq!(a["rootfs"], b["rootfs"]);
    assert_eq!(a["history"], b["history"]);
    assert_eq!(
        env(&a),
        env(&b),
        "history-derived and three-way merges agree here"
    );
    let _ = (out, out2);
    let out = run(
        &[
            "rebase",
            &reg.r("app:1"),
            "--layers",
            "99",
            "--new-base",
            &reg.r("base:v2"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layers 99 is more than the image's"));
}

#[test]
fn a_second_run_pushes_nothing() {
    let (reg, _w) =
        fixture("build_image layout app --from base-v1 app; push_image layout app $REGISTRY/app:1");
    let args = [
        "rebase",
        &reg.r("app:1"),
        "--old_base",
        &reg.r("base:v1"),
        "--new-base",
        &reg.r("base:v2"),
    ];
    let first = ok(&args, None);
    let mark = reg.mark();
    let out = run(&args, None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        first,
        "prints the current repo@digest"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already on"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing is written (the upload session opened with the first requests is
    // cancelled).
    reg.assert_nothing_written_since(mark);
    // With --tag, the re-run finds the tag already holding the result.
    let args = [
        "rebase",
        &reg.r("app:1"),
        "--old-base",
        &reg.r("base:v2"),
        "--new-base",
        &reg.r("base:v3"),
        "-t",
        "t",
    ];
    let first = ok(&args, None);
    let mark = reg.mark();
    assert_eq!(ok(&args, None), first);
    // Nothing is written (the upload session opened with the first requests is
    // cancelled).
    reg.assert_nothing_written_since(mark);
}

#[test]
fn an_unrelated_tag_is_not_overwritten_without_force() {
    let (reg, _w) = fixture(
        "build_image layout app --from base-v1 app; push_image layout app $REGISTRY/app:1
        push_image layout base-v3 $REGISTRY/app:taken",
    );
    let args = [
        "rebase",
        &reg.r("app:1"),
        "--old-base",
        &reg.r("base:v1"),
        "--new-base",
        &reg.r("base:v2"),
        "-t",
        "taken",
    ];
    let before = reg.manifest("app:taken").unwrap().0;
    let err = fails(&args, None, 2);
    assert!(err.contains("neither") && err.contains("--force"), "{err}");
    assert_eq!(reg.manifest("app:taken").unwrap().0, before);
    let mut forced = args.to_vec();
    forced.push("--force");
    let printed = ok(&forced, None);
    // A tag holding an earlier rebase of the image may be replaced without --force.
    let out = ok(
        &[
            "rebase",
            &reg.r("app:1"),
            "--old-base",
            &reg.r("base:v1"),
            "--new-base",
            &reg.r("base:v3"),
            "-t",
            "taken",
        ],
        None,
    );
    assert_ne!(out, printed);
    assert_eq!(files_of(&reg, "app:taken"), ["app/a", "etc/v3"]);
}

#[test]
fn a_tag_holding_a_rebuild_is_not_a_rebase_of_the_image() {
    // The same Dockerfile built again with other files: the same history, other layers.
    let (reg, _w) = fixture(
        "build_image layout app --from base-v1 app; push_image layout app $REGISTRY/app:1
        echo b > app/app/a
        build_image layout rebuilt --from base-v2 app; push_image layout rebuilt $REGISTRY/app:rebuilt",
    );
    let last = |r: &str| reg.config(r)["history"].as_array().unwrap().last().cloned();
    assert_eq!(
        last("app:1"),
        last("app:rebuilt"),
        "the same history on top"
    );
    let before = reg.manifest("app:rebuilt").unwrap().0;
    let err = fails(
        &[
            "rebase",
            &reg.r("app:1"),
            "--old-base",
            &reg.r("base:v1"),
            "--new-base",
            &reg.r("base:v2"),
            "-t",
            "rebuilt",
        ],
        None,
        2,
    );
    assert!(err.contains("neither") && err.contains("--force"), "{err}");
    assert_eq!(reg.manifest("app:rebuilt").unwrap().0, before);
}

#[test]
fn default_registry_and_non_direct_bases() {
    let (reg, _w) = fixture(
        "mkdir -p mid/opt; echo m > mid/opt/m
        build_image layout mid --from base-v1 --label FROM=base:v1 mid
        build_image layout app --from mid --label FROM=mid:1 app
        push_image layout mid $REGISTRY/mid:1
        push_image layout app $REGISTRY/app:1",
    );
    // Like the Python tool: `image_rebase localhost:5000 myimage:mytag`.
    let out = ok(
        &[
            "--registry",
            &reg.addr,
            "rebase",
            "app:1",
            "--old-base",
            "base:v1",
            "--new-base",
            "base:v2",
            "-t",
            "r",
        ],
        None,
    );
    assert!(out.starts_with(&reg.r("app@sha256:")), "{out}");
    assert_eq!(files_of(&reg, "app:r"), ["app/a", "etc/v2", "opt/m"]);
    let out = run(&["--registry", "bad host", "rebase", "app:1"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--registry"));
}

#[test]
fn an_annotated_base_no_registry_has_falls_back_to_the_label() {
    // podman with its layer cache writes the digest of a local intermediate image.
    let local = image_rebase::oci::digest::Digest::of(b"a local intermediate image");
    let annotations = format!(
        "--annotation org.opencontainers.image.base.name=$REGISTRY/base:latest \
         --annotation org.opencontainers.image.base.digest={local}"
    );
    let (reg, _w) = fixture(&format!(
        "build_image layout app --from base-v1 --label FROM=base:latest --env APP=1 {annotations} app
        build_image layout nolabel --from base-v1 --env APP=1 {annotations} app
        push_image layout app $REGISTRY/app:1
        push_image layout nolabel $REGISTRY/nolabel:1"
    ));
    retag(&reg, "base:v2", "base:latest");

    let out = run(&["rebase", &reg.r("app:1"), "--dry-run"], None);
    let (plan, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}/base@{local}", reg.addr))
            && err.contains("cannot be used")
            && err.contains("MANIFEST_UNKNOWN")
            && err.contains("falling back to the \"FROM\" label"),
        "{err}"
    );
    assert!(plan.contains("old base:   none (split by label)"), "{plan}");
    assert!(
        plan.contains("from label (the annotated old base cannot be used)"),
        "{plan}"
    );
    ok(&["rebase", &reg.r("app:1")], None);
    assert_eq!(files_of(&reg, "app:1"), ["app/a", "etc/v2"]);

    // No label to fall back to: exit 1, naming what was tried, in the plumbing and in
    // rebase.
    let out = run(&["fetch-manifest", &reg.r("nolabel:1")], None);
    let doc = out.stdout;
    let err = fails(&["fetch-manifest", "--as", "old-base"], Some(&doc), 1);
    assert!(
        err.contains("tried its annotations") && err.contains("the label \"FROM\""),
        "{err}"
    );
    let out = run(&["rebase", &reg.r("nolabel:1")], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("tried its annotations"), "{err}");
}
