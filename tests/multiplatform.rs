//! Multi-platform images: every platform of an index rebased onto the new base's manifest
//! for the same platform. Fixtures are built per platform with umoci, indexed by hand
//! and pushed with `skopeo copy --all`; results are copied out per platform by skopeo
//! and unpacked by umoci.

mod common;

use common::*;
use serde_json::Value;

const ARCHES: [(&str, &str); 3] = [
    ("amd64", "linux/amd64"),
    ("arm64", "linux/arm64"),
    ("arm", "linux/arm/v7"),
];

/// Per architecture: base1-ARCH, base2-ARCH, app-ARCH (on base1) and expected-ARCH (the
/// app built on base2), each with files naming its platform.
fn build(reg: &Registry, work: &std::path::Path) {
    let mut script = String::from("L=layout\n");
    for (arch, _) in ARCHES {
        script.push_str(&format!(
            "for v in 1 2; do mkdir -p b$v-{arch}/etc; echo \"base v$v {arch}\" > b$v-{arch}/etc/os-release; echo x > b$v-{arch}/etc/only-v$v; done
            mkdir -p app-{arch}/app; echo 'app {arch}' > app-{arch}/app/hello
            for v in 1 2; do
              build_image $L base$v-{arch} --env PATH=/bin --env V=$v b$v-{arch}
              umoci config --image $L:base$v-{arch} --no-history --created 2020-01-01T00:00:00Z --architecture {arch}
            done
            build_image $L app-{arch} --from base1-{arch} --env APP=1 app-{arch}
            build_image $L expected-{arch} --from base2-{arch} --env APP=1 app-{arch}
            "
        ));
    }
    sh(reg, work, &script);
}

fn index_spec(prefix: &str, arches: &[(&str, &str)]) -> String {
    arches
        .iter()
        .map(|(a, p)| format!("{prefix}-{a}={p}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A registry and a work folder with the OCI layouts `build` makes.
fn fixture(name: &str) -> (Registry, TempDir) {
    let reg = Registry::start();
    let work = TempDir::new(name);
    build(&reg, work.path());
    (reg, work)
}

/// Pushes indexes of base v1 (on `arches`), base v2 (on `base2`) and the app (on
/// `arches`, built with `app_flags`) to library/base:v1, library/base:v2 and `app`, then
/// runs the script lines `more`.
fn push_indexes(
    reg: &Registry,
    work: &std::path::Path,
    arches: &[(&str, &str)],
    base2: &[(&str, &str)],
    app_flags: &str,
    app: &str,
    more: &str,
) {
    sh(
        reg,
        work,
        &format!(
            "build_index layout base1 {}; build_index layout base2 {}; build_index layout app {app_flags} {}
            push_index layout base1 $REGISTRY/library/base:v1
            push_index layout base2 $REGISTRY/library/base:v2
            push_index layout app $REGISTRY/{app}
            {more}",
            index_spec("base1", arches),
            index_spec("base2", base2),
            index_spec("app", arches)
        ),
    );
}

fn index(reg: &Registry, r: &str) -> Value {
    reg.manifest(r).unwrap_or_else(|| panic!("{r} exists")).1
}

fn child<'a>(index: &'a Value, platform: &str) -> &'a Value {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            let p = &d["platform"];
            let s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            let s = match p["variant"].as_str() {
                Some(v) => format!("{s}/{v}"),
                None => s,
            };
            s == platform
        })
        .unwrap_or_else(|| panic!("{platform} in {index}"))
}

/// Checks one platform of a rebased index: the layers of the app built on base v2 for
/// that platform, and the right files when skopeo + umoci unpack it.
fn assert_platform(
    reg: &Registry,
    work: &std::path::Path,
    repo_tag: &str,
    arch: &str,
    platform: &str,
) {
    let idx = index(reg, repo_tag);
    let digest = child(&idx, platform)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (repo, _) = repo_tag.split_once(':').unwrap();
    let got = layer_digests(&reg.manifest(&format!("{repo}@{digest}")).unwrap().1);
    let want = sh(
        reg,
        work,
        &format!(
            "jq -r '.layers[].digest' layout/blobs/sha256/$(jq -r '.manifests[] | select(.annotations[\"org.opencontainers.image.ref.name\"] == \"expected-{arch}\") | .digest[7:]' layout/index.json)"
        ),
    );
    assert_eq!(
        got,
        want.lines().map(str::to_string).collect::<Vec<_>>(),
        "{platform}"
    );
    let out = format!("out-{arch}");
    sh(
        reg,
        work,
        &format!(
            "rm -rf {out}; unpack_platform {} {platform} {out}",
            reg.r(repo_tag)
        ),
    );
    let root = work.join(&out).join("bundle/rootfs");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/os-release")).unwrap(),
        format!("base v2 {arch}\n"),
        "{platform}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("app/hello")).unwrap(),
        format!("app {arch}\n"),
        "{platform}"
    );
    assert!(
        !root.join("etc/only-v1").exists() && root.join("etc/only-v2").exists(),
        "{platform}"
    );
}

fn rebase<'a>(reg: &'a Registry, app: &'a str, extra: &[&'a str]) -> std::process::Output {
    let (a, o, n) = (
        reg.r(app),
        reg.r("library/base:v1"),
        reg.r("library/base:v2"),
    );
    let mut args: Vec<String> = vec![
        "rebase".into(),
        a,
        "--old-base".into(),
        o,
        "--new-base".into(),
        n,
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args, None)
}

#[test]
fn three_platforms_with_an_attestation() {
    let (reg, work) = fixture("mp3");
    push_indexes(
        &reg,
        work.path(),
        &ARCHES,
        &ARCHES,
        "--attestation",
        "team/app:1",
        "",
    );
    let layers: Vec<String> = ["library/base:v1", "library/base:v2", "team/app:1"]
        .iter()
        .flat_map(|r| index(&reg, r)["manifests"].as_array().unwrap().clone())
        .filter_map(|d| {
            reg.manifest(&format!("{}@{}", "team/app", d["digest"].as_str().unwrap()))
                .or_else(|| {
                    reg.manifest(&format!("library/base@{}", d["digest"].as_str().unwrap()))
                })
        })
        .flat_map(|(_, m)| layer_digests(&m))
        .collect();
    let mark = reg.mark();
    let out = rebase(&reg, "team/app:1", &["-t", "rebased"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_no_layer_traffic(&reg, mark, &layers);
    assert!(
        err.contains("an attestation describes the old image"),
        "{err}"
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (bytes, idx) = reg.manifest("team/app:rebased").unwrap();
    assert_eq!(
        printed,
        format!(
            "{}/team/app@{}",
            reg.addr,
            image_rebase::oci::digest::Digest::of(&bytes)
        )
    );
    assert_eq!(idx["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["platform"].to_string())
        .collect();
    assert_eq!(platforms.len(), 3, "no attestation: {platforms:?}");
    assert!(
        platforms[0].contains("amd64")
            && platforms[1].contains("arm64")
            && platforms[2].contains("v7"),
        "order kept"
    );
    assert!(
        idx["annotations"]["org.opencontainers.image.base.name"]
            .as_str()
            .unwrap()
            .ends_with("library/base:v2")
    );
    for (arch, platform) in ARCHES {
        assert_platform(&reg, work.path(), "team/app:rebased", arch, platform);
    }
    // --keep-attestations keeps the attestation entry.
    let out = rebase(&reg, "team/app:1", &["-t", "kept", "--keep-attestations"]);
    assert!(out.status.success());
    let kept = index(&reg, "team/app:kept");
    assert_eq!(kept["manifests"].as_array().unwrap().len(), 4);
    assert_eq!(kept["manifests"][3]["platform"]["architecture"], "unknown");
    // The result names its base: a later rebase finds it by itself and has nothing to do.
    let out = run(&["rebase", &reg.r("team/app:rebased")], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), printed);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already on"));
}

#[test]
fn a_platform_missing_from_the_new_base_and_partial_rebases() {
    let (reg, work) = fixture("mp-missing");
    push_indexes(&reg, work.path(), &ARCHES, &ARCHES[..2], "", "app:1", "");
    let out = rebase(&reg, "app:1", &["-t", "r"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no manifest for linux/arm/v7") && err.contains("--platform"),
        "{err}"
    );
    assert!(reg.manifest("app:r").is_none(), "nothing written");

    // Excluded, it stays as it was; the others are rebased.
    let out = rebase(&reg, "app:1", &["-t", "r", "--platform", "linux/amd64"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("kept linux/arm64") && err.contains("kept linux/arm/v7"),
        "{err}"
    );
    let (old, partial) = (index(&reg, "app:1"), index(&reg, "app:r"));
    assert_ne!(
        child(&partial, "linux/amd64")["digest"],
        child(&old, "linux/amd64")["digest"]
    );
    assert_eq!(
        child(&partial, "linux/arm64")["digest"],
        child(&old, "linux/arm64")["digest"]
    );
    assert_platform(&reg, work.path(), "app:r", "amd64", "linux/amd64");

    // Rebasing the partly rebased index rebases only what is left.
    let out = run(
        &[
            "rebase",
            &reg.r("app:r"),
            "--new-base",
            &reg.r("library/base:v2"),
            "--old-base",
            &reg.r("library/base:v1"),
            "--platform",
            "linux/amd64,linux/arm64",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("linux/amd64: ") && err.contains("is already on"),
        "{err}"
    );
    let now = index(&reg, "app:r");
    assert_eq!(
        child(&now, "linux/amd64")["digest"],
        child(&partial, "linux/amd64")["digest"]
    );
    assert_platform(&reg, work.path(), "app:r", "arm64", "linux/arm64");

    // --single: just that platform's manifest under the tag.
    let out = rebase(
        &reg,
        "app:1",
        &["-t", "single", "--platform", "linux/arm64", "--single"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, m) = reg.manifest("app:single").unwrap();
    assert!(m.get("layers").is_some(), "a single manifest: {m}");
    let out = rebase(
        &reg,
        "app:1",
        &[
            "-t",
            "single",
            "--single",
            "--platform",
            "linux/amd64,linux/arm64",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--single pushes one platform"));
}

#[test]
fn index_app_on_single_manifest_bases_and_index_digest_old_base() {
    let (reg, work) = fixture("mp-single");
    sh(
        &reg,
        work.path(),
        &format!(
            "build_index layout base1 {}; build_index layout app {}
            push_index layout base1 $REGISTRY/library/base:index
            push_image layout base1-amd64 $REGISTRY/library/base:v1
            push_image layout base2-amd64 $REGISTRY/library/base:v2
            push_index layout app $REGISTRY/app:1",
            index_spec("base1", &ARCHES[..2]),
            index_spec("app", &ARCHES[..2])
        ),
    );
    // The single-image new base is amd64 only.
    let out = rebase(&reg, "app:1", &["-t", "r"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("platform linux/arm64") && err.contains("single image for linux/amd64"),
        "{err}"
    );
    let out = rebase(&reg, "app:1", &["-t", "r", "--platform", "linux/amd64"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_platform(&reg, work.path(), "app:r", "amd64", "linux/amd64");

    // The old base named by its index digest (as crane writes base.digest).
    let (ix, _) = reg.manifest("library/base:index").unwrap();
    let by_digest = reg.r(&format!(
        "library/base@{}",
        image_rebase::oci::digest::Digest::of(&ix)
    ));
    let out = run(
        &[
            "rebase",
            &reg.r("app:1"),
            "--old-base",
            &by_digest,
            "--new-base",
            &reg.r("library/base:v2"),
            "--platform",
            "linux/amd64",
            "-t",
            "r2",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        child(&index(&reg, "app:r2"), "linux/amd64")["digest"],
        child(&index(&reg, "app:r"), "linux/amd64")["digest"]
    );
}

#[test]
fn docker_manifest_list_stays_docker() {
    let (reg, work) = fixture("mp-docker");
    let two = &ARCHES[..2];
    sh(
        &reg,
        work.path(),
        &format!(
            "build_index layout base1 {}; build_index layout base2 {}; build_index layout app {}
            push_index layout base1 $REGISTRY/library/base:v1 v2s2
            push_index layout base2 $REGISTRY/library/base:v2 v2s2
            push_index layout app $REGISTRY/app:1 v2s2",
            index_spec("base1", two),
            index_spec("base2", two),
            index_spec("app", two)
        ),
    );
    assert_eq!(
        index(&reg, "app:1")["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let out = rebase(&reg, "app:1", &["-t", "r"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let idx = index(&reg, "app:r");
    assert_eq!(
        idx["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    for d in idx["manifests"].as_array().unwrap() {
        assert_eq!(
            d["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        let (_, m) = reg
            .manifest(&format!("app@{}", d["digest"].as_str().unwrap()))
            .unwrap();
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(
                l["mediaType"],
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            );
        }
    }
    for (arch, platform) in two {
        assert_platform(&reg, work.path(), "app:r", arch, platform);
    }
}

#[test]
fn plumbing_works_per_platform_and_jq_can_select() {
    let (reg, work) = fixture("mp-plumbing");
    let two = &ARCHES[..2];
    push_indexes(&reg, work.path(), two, two, "", "app:1", "");
    let doc = pipeline(&[
        &["fetch-manifest", &reg.r("app:1")],
        &[
            "fetch-manifest",
            "--as",
            "old-base",
            &reg.r("library/base:v1"),
        ],
        &[
            "fetch-manifest",
            "--as",
            "new-base",
            &reg.r("library/base:v2"),
        ],
        &["fetch-config"],
    ]);
    let mut v: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["platforms"].as_array().unwrap().len(), 2);
    assert_eq!(v["platforms"][1]["platform"]["architecture"], "arm64");
    assert!(v["platforms"][1]["new_base"]["config"]["architecture"] == "arm64");
    // Drop arm64 between steps, as `jq 'del(.platforms[1])'` would.
    v["platforms"].as_array_mut().unwrap().remove(1);
    let out = pipeline_from(
        &v.to_string(),
        &[
            &["split-history"],
            &["splice"],
            &["put-manifest", "-t", "amd64-only"],
        ],
    );
    let out: Value = serde_json::from_str(&out).unwrap();
    assert!(
        out["index"]["pushed"]["reference"]
            .as_str()
            .unwrap()
            .starts_with(&reg.r("app@sha256:"))
    );
    let (old, new) = (index(&reg, "app:1"), index(&reg, "app:amd64-only"));
    assert_eq!(
        child(&new, "linux/arm64")["digest"],
        child(&old, "linux/arm64")["digest"]
    );
    assert_platform(&reg, work.path(), "app:amd64-only", "amd64", "linux/amd64");
}

#[test]
fn index_targets_follow_the_tag_rules() {
    let (reg, work) = fixture("mp-tags");
    push_indexes(
        &reg,
        work.path(),
        &ARCHES,
        &ARCHES,
        "",
        "team/app:1",
        "push_index layout base2 $REGISTRY/team/app:other",
    );
    // A tag holding an unrelated index is not overwritten without --force.
    let other = reg.manifest("team/app:other").unwrap().0;
    let out = rebase(&reg, "team/app:1", &["-t", "other"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("already holds") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(reg.manifest("team/app:other").unwrap().0, other);
    let out = rebase(&reg, "team/app:1", &["-t", "other", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(reg.manifest("team/app:other").unwrap().0, other);

    // A tag holding a partial rebase of the image (one platform rebased) is replaced.
    let out = rebase(
        &reg,
        "team/app:1",
        &["-t", "moving", "--platform", "linux/amd64"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let partial = reg.manifest("team/app:moving").unwrap().0;
    let out = rebase(&reg, "team/app:1", &["-t", "moving"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = reg.manifest("team/app:moving").unwrap().0;
    assert_ne!(full, partial);
    assert_eq!(
        full,
        reg.manifest("team/app:other").unwrap().0,
        "same result"
    );

    // An index already on the new base, given another tag, is written under that tag.
    let out = run(&["rebase", &reg.r("team/app:moving"), "-t", "newtag"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("already on"), "{err}");
    assert_eq!(reg.manifest("team/app:newtag").unwrap().0, full);
}
