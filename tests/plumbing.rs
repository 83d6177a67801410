//! The plumbing commands: the document as a contract between steps, edits with jq, and
//! the errors a user meets when the pipe is wrong.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};

fn fixture() -> (Registry, TempDir) {
    let reg = Registry::start();
    let work = TempDir::new("plumbing");
    sh(
        &reg,
        work.path(),
        "mkdir -p v1/etc v2/etc app/app
        echo 1 > v1/etc/v1; echo 2 > v2/etc/v2; echo a > app/app/a
        build_image layout base-v1 v1
        build_image layout base-v2 v2
        build_image layout app --from base-v1 --label org.example.team=core --annotation org.example.note=kept app
        push_image layout base-v1 $REGISTRY/base:v1
        push_image layout base-v2 $REGISTRY/base:v2
        push_image layout app $REGISTRY/app:1",
    );
    (reg, work)
}

fn up_to_splice(reg: &Registry) -> String {
    pipeline(&[
        &["fetch-manifest", &reg.r("app:1")],
        &["fetch-manifest", "--as", "old-base", &reg.r("base:v1")],
        &["fetch-manifest", "--as", "new-base", &reg.r("base:v2")],
        &["fetch-config"],
        &["split-history"],
        &["splice"],
    ])
}

fn jq(filter: &str, input: &str) -> String {
    let out = Command::new("jq")
        .args(["-c", filter])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .expect("jq is installed (scripts/install-deps.sh installs it)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn edits_made_with_jq_between_steps_are_honoured() {
    let (reg, _w) = fixture();
    let doc = up_to_splice(&reg);
    let edited = jq(
        r#".result.target.tag = "edited" | .result.config.config.Labels["org.example.team"] = "platform""#,
        &doc,
    );
    let out: Value = serde_json::from_str(&ok(&["put-manifest"], Some(edited.as_bytes()))).unwrap();
    assert_eq!(out["pushed"]["tag"], "edited");
    let config = reg.config("app:edited");
    assert_eq!(config["config"]["Labels"]["org.example.team"], "platform");
    // The manifest points at exactly the config that was pushed.
    let (bytes, manifest) = reg.manifest("app:edited").unwrap();
    assert_eq!(manifest["config"]["digest"], out["pushed"]["config_digest"]);
    assert_eq!(
        image_rebase::oci::digest::Digest::of(&bytes).as_str(),
        out["pushed"]["digest"]
    );
    // Manifest annotations survive the rebase.
    assert_eq!(manifest["annotations"]["org.example.note"], "kept");
    // --tag wins over the document.
    let out: Value = serde_json::from_str(&ok(
        &["put-manifest", "-t", "flag"],
        Some(edited.as_bytes()),
    ))
    .unwrap();
    assert_eq!(out["pushed"]["tag"], "flag");
    assert!(reg.manifest("app:flag").is_some());
}

#[test]
fn unknown_fields_in_the_document_survive_every_step() {
    let (reg, _w) = fixture();
    let doc = ok(&["fetch-manifest", &reg.r("app:1")], None);
    let doc = jq(r#".mine = {"a": 1} | .image.note = "x""#, &doc);
    // jq itself rounds big numbers: this one is added as text.
    let doc = doc.replacen('{', r#"{"big":123456789012345678901234567890,"f":1.50,"#, 1);
    let doc = pipeline_from(
        &doc,
        &[
            &["fetch-manifest", "--as", "old-base", &reg.r("base:v1")],
            &["fetch-manifest", "--as", "new-base", &reg.r("base:v2")],
            &["fetch-config"],
            &["split-history"],
            &["splice"],
            &["put-manifest", "--tag", "t"],
        ],
    );
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["mine"]["a"], 1);
    assert_eq!(doc["image"]["note"], "x");
    for kept in [r#""big":123456789012345678901234567890"#, r#""f":1.50"#] {
        assert!(doc.to_string().contains(kept), "{kept}: {doc}");
    }
    assert_eq!(doc["image_rebase"], 1);
    assert!(doc["pushed"]["uploaded"].as_array().unwrap().len() == 1);
    assert!(
        !doc["pushed"]["mounted"].as_array().unwrap().is_empty(),
        "the new base's layer was mounted"
    );
}

#[test]
fn each_step_writes_one_line_of_json() {
    let (reg, _w) = fixture();
    let doc = up_to_splice(&reg);
    assert_eq!(doc.lines().count(), 1);
    let v: Value = serde_json::from_str(&doc).unwrap();
    for key in ["image", "old_base", "new_base", "split", "result"] {
        assert!(v.get(key).is_some(), "{key} in {doc}");
    }
    assert_eq!(v["image"]["registry"], reg.addr.as_str());
    assert_eq!(v["image"]["repository"], "app");
    assert_eq!(v["image"]["tag"], "1");
    assert_eq!(v["split"]["method"], "old-base");
    assert_eq!(v["result"]["target"]["repository"], "app");
}

#[test]
fn bad_input_is_named_and_prints_nothing_on_stdout() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["split-history"], "", "stdin was empty"),
        (&["splice"], "{", "not valid JSON"),
        (&["splice"], "{}", "not an image-rebase document"),
        (
            &["splice"],
            r#"{"image_rebase":7}"#,
            "unsupported document version 7",
        ),
        (&["splice"], r#"{"image_rebase":1}"#, "no \"image\" section"),
        (
            &["fetch-config"],
            r#"{"image_rebase":1}"#,
            "no \"image\" section",
        ),
        (
            &["put-manifest"],
            r#"{"image_rebase":1}"#,
            "no \"result\" section: run image-rebase splice first",
        ),
        (
            &["fetch-manifest", "UPPER/case"],
            "",
            "invalid image reference \"UPPER/case\"",
        ),
        // Every argument is checked before any request (these names would go to Docker Hub).
        (
            &[
                "rebase",
                "app",
                "--old-base",
                "x@sha256:12",
                "--new-base",
                "y",
            ],
            "",
            "invalid digest",
        ),
        (
            &[
                "rebase",
                "app",
                "--old-base",
                "x",
                "--new-base",
                "y",
                "--tag=b@d",
            ],
            "",
            "invalid tag",
        ),
    ];
    for (args, stdin, want) in cases {
        let out = run(args, Some(stdin.as_bytes()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            err.contains(want),
            "{args:?}: {err:?} should contain {want:?}"
        );
        assert_eq!(err.lines().count(), 1, "one message: {err}");
    }
}

#[test]
fn missing_base_sections_name_the_command_that_adds_them() {
    let (reg, _w) = fixture();
    // No old base, and no FROM label: the base cannot be found.
    let doc = pipeline(&[&["fetch-manifest", &reg.r("app:1")], &["fetch-config"]]);
    let err = fails(&["split-history"], Some(doc.as_bytes()), 1);
    assert!(
        err.contains("sets the label \"FROM\"")
            && err.contains("--old-base")
            && err.contains("--layers"),
        "{err}"
    );
    let out = run(&["splice"], Some(doc.as_bytes()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fetch-manifest --as new-base"));
    let doc = pipeline(&[
        &["fetch-manifest", &reg.r("app:1")],
        &["fetch-manifest", "--as", "old-base", &reg.r("base:v1")],
    ]);
    let out = run(&["split-history"], Some(doc.as_bytes()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run image-rebase fetch-config first"));
}

#[test]
fn a_terminal_on_stdin_is_refused_not_waited_on() {
    // `script` gives the command a pseudo-terminal as stdin.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{} splice", env!("CARGO_BIN_EXE_image-rebase")),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("stdin is a terminal"), "{text}");
}

#[test]
fn a_closed_pipe_downstream_is_not_an_error() {
    let (reg, _w) = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_image-rebase"))
        .args(["fetch-manifest", &reg.r("app:1")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_document_notes_each_registry_and_no_step_pings_it() {
    let (reg, _w) = fixture();
    let mark = reg.mark();
    let doc = pipeline_from(&up_to_splice(&reg), &[&["put-manifest", "--tag", "t"]]);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(
        doc["registries"][&reg.addr],
        serde_json::json!({"scheme": "http", "auth": "none"}),
        "{doc}"
    );
    let requests = reg.requests_since(mark);
    assert!(
        !requests
            .iter()
            .any(|(m, uri, _)| m == "GET" && uri == "/v2/"),
        "no ping: {requests:?}"
    );
}

#[test]
fn verbose_logs_every_request() {
    let (reg, _w) = fixture();
    let out = run(&["-v", "fetch-manifest", &reg.r("app:1")], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "GET http://{}/v2/app/manifests/1 -> 200",
            reg.addr
        )),
        "{err}"
    );
    let out = run(&["fetch-manifest", &reg.r("app:1")], None);
    assert!(out.stderr.is_empty());
}

#[test]
fn a_manifest_or_config_over_4_mib_is_refused() {
    let (reg, _w) = fixture();
    let client = image_rebase::registry::Client::new(Default::default()).unwrap();
    // A config blob just over the limit, referenced by a manifest.
    let mut big = br#"{"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 4 * 1024 * 1024));
    big.extend(br#""}"#);
    let digest = image_rebase::oci::digest::Digest::of(&big);
    client.upload_blob(&reg.addr, "big", &digest, &big).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": big.len()},
        "layers": []
    });
    client
        .put_manifest(
            &reg.addr,
            "big",
            "1",
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
    let doc = ok(&["fetch-manifest", &reg.r("big:1")], None);
    let err = fails(&["fetch-config"], Some(doc.as_bytes()), 2);
    assert!(
        err.contains("more than the 4194304 bytes accepted"),
        "{err}"
    );
}

#[test]
fn a_stale_document_does_not_overwrite_what_the_tag_holds_now() {
    let (reg, work) = fixture();
    let doc = up_to_splice(&reg);
    // Meanwhile somebody pushes another image to the tag.
    sh(
        &reg,
        work.path(),
        "push_image layout base-v2 $REGISTRY/app:1",
    );
    let (_, theirs) = reg.manifest("app:1").unwrap();
    let mark = reg.mark();
    let out = run(&["put-manifest"], Some(doc.as_bytes()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already holds") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        reg.manifest("app:1").unwrap().1,
        theirs,
        "the tag did not move"
    );
    // The upload session opened while the tag was checked is cancelled.
    reg.assert_nothing_written_since(mark);
    // --force overwrites it.
    let out: Value =
        serde_json::from_str(&ok(&["put-manifest", "--force"], Some(doc.as_bytes()))).unwrap();
    let (_, now) = reg.manifest("app:1").unwrap();
    assert_ne!(now, theirs);
    assert_eq!(
        out["pushed"]["digest"],
        image_rebase::oci::digest::Digest::of(&reg.manifest("app:1").unwrap().0).as_str()
    );
}

#[test]
fn names_edited_into_a_document_are_checked_before_any_request() {
    let (reg, _w) = fixture();
    let doc = up_to_splice(&reg);
    for (filter, dry_run, needle) in [
        (r#".result.target.tag = "x/../rel""#, false, "invalid tag"),
        (r#".result.target.tag = "a/b""#, true, "invalid tag"),
        (
            r#".result.target.repository = "app/../app2""#,
            false,
            "invalid repository name",
        ),
        (
            r#".new_base.registry = "evil.example/x?""#,
            false,
            "invalid registry host",
        ),
        (r#".image.tag = "..""#, false, "invalid tag"),
    ] {
        let edited = jq(filter, &doc);
        let mark = reg.mark();
        let args: &[&str] = if dry_run {
            &["put-manifest", "--dry-run"]
        } else {
            &["put-manifest"]
        };
        let out = run(args, Some(edited.as_bytes()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{filter}: {stderr}");
        assert!(
            stderr.contains(needle) && stderr.contains("the document's"),
            "{filter}: {stderr}"
        );
        let requests = reg.requests_since(mark);
        assert!(requests.is_empty(), "{filter}: no request: {requests:?}");
    }
    for tag in ["rel", "app2"] {
        assert!(reg.manifest(&format!("app:{tag}")).is_none());
    }
    assert!(reg.manifest("app2:1").is_none());
}

#[test]
fn usage_errors_are_one_error_line_and_a_hint() {
    for (args, needle, hint) in [
        (
            &["frobnicate"][..],
            "unrecognized subcommand 'frobnicate'",
            "image-rebase --help",
        ),
        (
            &["--timeout", "-1", "fetch-config"][..],
            "invalid value '-1' for '--timeout <SECONDS>'",
            "image-rebase fetch-config --help",
        ),
        (
            &["rebase", "--bogus", "x"][..],
            "unexpected argument '--bogus'",
            "image-rebase rebase --help",
        ),
    ] {
        let out = run(args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("image-rebase: error: ") && lines[0].contains(needle),
            "{args:?}: {stderr}"
        );
        assert_eq!(lines[1], format!("image-rebase: see '{hint}'"));
        assert!(out.stdout.is_empty());
    }
    // Help and version are not errors.
    for args in [&["--help"][..], &["rebase", "--help"], &["--version"]] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}
