//! End-to-end rebases against a real registry, with fixtures built by umoci and skopeo and
//! results checked by skopeo + umoci.

mod common;

use common::*;
use serde_json::Value;

/// Sample images: base v1, base v2, an app on v1 and the same app built on v2 (what a
/// rebase must produce), pushed in `format` ("" for OCI, "v2s2" for Docker schema 2).
struct Fixture {
    reg: Registry,
    _work: TempDir,
}

const BUILD: &str = r#"
mkdir -p v1/etc v2/etc app/app
echo 'base v1' > v1/etc/os-release; echo 1 > v1/etc/base-v1-only
echo 'base v2' > v2/etc/os-release; echo 2 > v2/etc/base-v2-only
echo hello > app/app/hello.txt
build_image layout base-v1 --env PATH=/usr/bin:/bin --env BASE_VERSION=1 v1
build_image layout base-v2 --env PATH=/usr/bin:/bin --env BASE_VERSION=2 v2
build_image layout app --from base-v1 --env APP=1 app
build_image layout app-on-v2 --from base-v2 --env APP=1 app
"#;

fn fixture(format: &str, app_repo: &str) -> Fixture {
    let reg = Registry::start();
    let work = TempDir::new("fixture");
    sh(
        &reg,
        work.path(),
        &format!(
            "{BUILD}
            push_image layout base-v1 $REGISTRY/library/base:v1 {format}
            push_image layout base-v2 $REGISTRY/library/base:v2 {format}
            push_image layout app $REGISTRY/{app_repo}:1 {format}
            push_image layout app-on-v2 $REGISTRY/expected/app:1 {format}"
        ),
    );
    Fixture { reg, _work: work }
}

fn rebase_args<'a>(reg: &'a Registry, refs: &'a [String; 3], tag: &'a str) -> Vec<&'a str> {
    let _ = reg;
    vec![
        "rebase",
        &refs[0],
        "--old-base",
        &refs[1],
        "--new-base",
        &refs[2],
        "--tag",
        tag,
    ]
}

/// The rebased image has exactly the layers, diff_ids and history of the app built on
/// the new base, and skopeo + umoci find the right files in it.
fn assert_rebased_like_expected(reg: &Registry, rebased: &str) {
    let (_, got) = reg.manifest(rebased).expect("the rebased image exists");
    let (_, want) = reg.manifest("expected/app:1").unwrap();
    assert_eq!(layer_digests(&got), layer_digests(&want));
    let (got_config, want_config) = (reg.config(rebased), reg.config("expected/app:1"));
    assert_eq!(got_config["rootfs"], want_config["rootfs"]);
    assert_eq!(got_config["history"], want_config["history"]);
    let files = unpack(reg, rebased);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"etc/base-v2-only"), "{names:?}");
    assert!(names.contains(&"app/hello.txt"), "{names:?}");
    assert!(!names.contains(&"etc/base-v1-only"), "{names:?}");
    assert!(
        files.contains(&("etc/os-release".into(), "base v2\n".into())),
        "{files:?}"
    );
}

fn refs(reg: &Registry, app: &str) -> [String; 3] {
    [
        reg.r(app),
        reg.r("library/base:v1"),
        reg.r("library/base:v2"),
    ]
}

#[test]
fn oci_rebase_mounts_across_repositories_and_matches_the_pipeline() {
    let f = fixture("", "team/app");
    let reg = &f.reg;
    let refs = refs(reg, "team/app:1");
    let before: Vec<String> = [("team/app:1"), ("library/base:v1"), ("library/base:v2")]
        .iter()
        .flat_map(|r| layer_digests(&reg.manifest(r).unwrap().1))
        .collect();

    let mark = reg.mark();
    let out = ok(&rebase_args(reg, &refs, "rebased"), None);
    let printed = out.trim();
    assert!(
        printed.starts_with(&format!("{}/team/app@sha256:", reg.addr)),
        "{printed}"
    );
    assert_no_layer_traffic(reg, mark, &before);
    // The tag points at what was printed.
    let (bytes, manifest) = reg.manifest("team/app:rebased").unwrap();
    let digest = printed.split('@').nth(1).unwrap();
    assert_eq!(
        image_rebase::oci::digest::Digest::of(&bytes).as_str(),
        digest
    );
    assert_eq!(
        manifest["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    for l in manifest["layers"].as_array().unwrap() {
        assert!(
            l["mediaType"]
                .as_str()
                .unwrap()
                .starts_with("application/vnd.oci."),
            "{l}"
        );
    }
    assert_rebased_like_expected(reg, "team/app:rebased");

    // The pipeline pushes the same bytes.
    let doc = pipeline(&[
        &["fetch-manifest", &refs[0]],
        &["fetch-manifest", "--as", "old-base", &refs[1]],
        &["fetch-manifest", "--as", "new-base", &refs[2]],
        &["fetch-config"],
        &["split-history"],
        &["splice"],
        &["put-manifest", "--tag", "rebased-pipeline"],
    ]);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["pushed"]["reference"], printed);
    assert_eq!(doc["split"]["base_layers"], 1);
    assert_eq!(doc["split"]["top_layers"], 1);
    assert_eq!(reg.manifest("team/app:rebased-pipeline").unwrap().0, bytes);

    // Deterministic, and the second run finds every blob present already.
    assert_eq!(
        ok(&rebase_args(reg, &refs, "rebased"), None).trim(),
        printed
    );
}

#[test]
fn docker_schema2_rebase_keeps_docker_media_types() {
    let f = fixture("v2s2", "app");
    let reg = &f.reg;
    let refs = refs(reg, "app:1");
    let (_, source) = reg.manifest("app:1").unwrap();
    assert_eq!(
        source["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let mark = reg.mark();
    let out = ok(&rebase_args(reg, &refs, "rebased"), None);
    assert!(out.trim().starts_with(&format!("{}/app@sha256:", reg.addr)));
    let layers: Vec<String> = ["app:1", "library/base:v1", "library/base:v2"]
        .iter()
        .flat_map(|r| layer_digests(&reg.manifest(r).unwrap().1))
        .collect();
    assert_no_layer_traffic(reg, mark, &layers);
    let (_, m) = reg.manifest("app:rebased").unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    assert_rebased_like_expected(reg, "app:rebased");
}

#[test]
fn docker_app_on_oci_bases_gets_no_mixed_media_types() {
    let reg = Registry::start();
    let work = TempDir::new("mixed");
    sh(
        &reg,
        work.path(),
        &format!(
            "{BUILD}
            push_image layout base-v1 $REGISTRY/library/base:v1
            push_image layout base-v2 $REGISTRY/library/base:v2
            push_image layout app $REGISTRY/app:1 v2s2"
        ),
    );
    let refs = refs(&reg, "app:1");
    ok(&rebase_args(&reg, &refs, "rebased"), None);
    let (_, m) = reg.manifest("app:rebased").unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "{m}"
        );
    }
    let names: Vec<String> = unpack(&reg, "app:rebased")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"etc/base-v2-only".to_string())
            && names.contains(&"app/hello.txt".to_string())
    );
}

#[test]
fn three_level_chain_rebases_the_bottom_base() {
    let reg = Registry::start();
    let work = TempDir::new("chain");
    sh(
        &reg,
        work.path(),
        &format!(
            "{BUILD}
            mkdir -p mid/opt; echo mid > mid/opt/mid.txt
            build_image layout mid --from base-v1 --env MID=1 mid
            build_image layout top --from mid --env TOP=1 app
            build_image layout mid2 --from base-v2 --env MID=1 mid
            build_image layout top2 --from mid2 --env TOP=1 app
            push_image layout base-v1 $REGISTRY/library/base:v1
            push_image layout base-v2 $REGISTRY/library/base:v2
            push_image layout mid $REGISTRY/mid:1
            push_image layout top $REGISTRY/app:1
            push_image layout top2 $REGISTRY/expected/app:1"
        ),
    );
    let refs = refs(&reg, "app:1");
    ok(&rebase_args(&reg, &refs, "rebased"), None);
    assert_rebased_like_expected(&reg, "app:rebased");
    let names: Vec<String> = unpack(&reg, "app:rebased")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"opt/mid.txt".to_string()), "{names:?}");
}

#[test]
fn wrong_old_base_exits_1_and_pushes_nothing() {
    let f = fixture("", "app");
    let reg = &f.reg;
    // base v2 is not the app's base.
    let mark = reg.mark();
    let out = run(
        &[
            "rebase",
            &reg.r("app:1"),
            "--old-base",
            &reg.r("library/base:v2"),
            "--new-base",
            &reg.r("library/base:v2"),
            "--tag",
            "rebased",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not based on the old base: layer 1 differs"),
        "{err}"
    );
    assert!(err.contains(&reg.r("library/base:v2")), "{err}");
    // Nothing is written (the upload session opened with the first requests is
    // cancelled).
    reg.assert_nothing_written_since(mark);
    assert!(reg.manifest("app:rebased").is_none());

    // split-history alone says the same with exit status 1.
    let doc = pipeline(&[
        &["fetch-manifest", &reg.r("app:1")],
        &[
            "fetch-manifest",
            "--as",
            "old-base",
            &reg.r("library/base:v2"),
        ],
        &["fetch-config"],
    ]);
    let out = run(&["split-history"], Some(doc.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn source_by_digest_is_pushed_by_digest_and_tag_defaults_to_the_image_tag() {
    let f = fixture("", "app");
    let reg = &f.reg;
    let (bytes, _) = reg.manifest("app:1").unwrap();
    let digest = image_rebase::oci::digest::Digest::of(&bytes);
    let by_digest = reg.r(&format!("app@{digest}"));
    let tags_before = tags(reg, "app");
    let out = ok(
        &[
            "rebase",
            &by_digest,
            "--old-base",
            &reg.r("library/base:v1"),
            "--new-base",
            &reg.r("library/base:v2"),
        ],
        None,
    );
    let printed = out.trim();
    assert!(
        reg.manifest(&format!("app@{}", printed.split('@').nth(1).unwrap()))
            .is_some()
    );
    assert_eq!(tags(reg, "app"), tags_before, "no tag was written");
    assert_eq!(
        reg.manifest("app:1").unwrap().0,
        bytes,
        "the source tag did not move"
    );

    // By tag and without --tag: the image's own tag moves to the rebased image.
    let out = ok(
        &[
            "rebase",
            &reg.r("app:1"),
            "--old-base",
            &reg.r("library/base:v1"),
            "--new-base",
            &reg.r("library/base:v2"),
        ],
        None,
    );
    assert_eq!(out.trim(), printed);
    let (now, _) = reg.manifest("app:1").unwrap();
    assert_eq!(
        image_rebase::oci::digest::Digest::of(&now).as_str(),
        printed.split('@').nth(1).unwrap()
    );
}

fn tags(reg: &Registry, repo: &str) -> Value {
    let resp = ureq::get(&format!("http://{}/v2/{repo}/tags/list", reg.addr))
        .call()
        .unwrap();
    let v: Value = serde_json::from_reader(resp.into_reader()).unwrap();
    v["tags"].clone()
}

#[test]
fn images_pushed_by_our_own_client_with_classic_history() {
    use common::own::*;
    let reg = Registry::start();
    let l1 = layer(
        &reg,
        &[("etc/os-release", "old\n"), ("etc/old-only", "x\n")],
        "/bin/sh -c #(nop) ADD file:old in / ",
    );
    let l2 = layer(
        &reg,
        &[("etc/os-release", "new\n"), ("etc/new-only", "y\n")],
        "/bin/sh -c #(nop) ADD file:new in / ",
    );
    let la = layer(
        &reg,
        &[("srv/app.sh", "echo app\n")],
        "/bin/sh -c #(nop) COPY file:app in /srv ",
    );
    push(&reg, "own/base", "old", &[&l1], &["PATH=/bin"]);
    push(&reg, "own/base", "new", &[&l2], &["PATH=/bin"]);
    push(&reg, "own/app", "1", &[&l1, &la], &["PATH=/bin"]);
    push(&reg, "own/expected", "1", &[&l2, &la], &["PATH=/bin"]);
    let mark = reg.mark();
    let out = ok(
        &[
            "rebase",
            &reg.r("own/app:1"),
            "--old-base",
            &reg.r("own/base:old"),
            "--new-base",
            &reg.r("own/base:new"),
            "-t",
            "rebased",
        ],
        None,
    );
    assert!(out.starts_with(&reg.r("own/app@sha256:")));
    let all_layers: Vec<String> = [&l1, &l2, &la]
        .iter()
        .map(|l| image_rebase::oci::digest::Digest::of(&l.gz).to_string())
        .collect();
    assert_no_layer_traffic(&reg, mark, &all_layers);
    let (_, got) = reg.manifest("own/app:rebased").unwrap();
    let (_, want) = reg.manifest("own/expected:1").unwrap();
    assert_eq!(layer_digests(&got), layer_digests(&want));
    assert_eq!(
        reg.config("own/app:rebased")["history"],
        reg.config("own/expected:1")["history"]
    );
    let files = unpack(&reg, "own/app:rebased");
    assert_eq!(
        files,
        vec![
            ("etc/new-only".to_string(), "y\n".to_string()),
            ("etc/os-release".to_string(), "new\n".to_string()),
            ("srv/app.sh".to_string(), "echo app\n".to_string()),
        ]
    );
}
