//! Fleet mode: a list of 1,000 images with mixed outcomes in one run, a re-run, shards,
//! and the requests the registry saw (bases fetched once, blobs mounted once per
//! repository).

mod common;

use common::own::*;
use common::*;
use image_rebase::oci::digest::Digest;
use image_rebase::registry::{Client, Options};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};

const REPOS: usize = 4;

/// Pushes an image of `layers` with a config unique to `id` to `repo:tag` with few
/// requests (the layers are uploaded once per repository beforehand).
fn push_app(client: &Client, reg: &Registry, repo: &str, tag: &str, layers: &[&Layer], id: &str) {
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", format!("ID={id}")]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "history": layers.iter().map(|l| json!({"created_by": l.created_by})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = Digest::of(&config);
    client
        .upload_blob(&reg.addr, repo, &config_digest, &config)
        .unwrap();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": Digest::of(&l.gz), "size": l.gz.len()})).collect::<Vec<_>>(),
    });
    client
        .put_manifest(
            &reg.addr,
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
}

fn upload(client: &Client, reg: &Registry, repo: &str, l: &Layer) {
    client
        .upload_blob(&reg.addr, repo, &Digest::of(&l.gz), &l.gz)
        .unwrap();
}

struct Fleet {
    reg: Registry,
    list: String,
    /// Expected outcome by line number.
    expected: BTreeMap<usize, &'static str>,
    v2_layer: String,
    _work: TempDir,
}

/// 1,000 entries in 4 repositories: 900 on base v1 (to be rebased), 50 already on v2, 25
/// on an unrelated base (skipped), 25 missing (failed).
fn fleet() -> Fleet {
    let reg = Registry::start();
    let work = TempDir::new("fleet");
    let client = Client::new(Options::default()).unwrap();
    let v1 = layer(&reg, &[("etc/v1", "1\n")], "ADD v1 /");
    let v2 = layer(&reg, &[("etc/v2", "2\n")], "ADD v2 /");
    let other = layer(&reg, &[("etc/other", "o\n")], "ADD other /");
    let app = layer(&reg, &[("app/a", "a\n")], "COPY app /app");
    push_app(&client, &reg, "base", "v1", &[], "none");
    for (tag, l) in [("v1", &v1), ("v2", &v2)] {
        upload(&client, &reg, "base", l);
        push_app(&client, &reg, "base", tag, &[l], "base");
    }
    for r in 0..REPOS {
        for l in [&v1, &v2, &other, &app] {
            upload(&client, &reg, &format!("team{r}/app"), l);
        }
    }
    let mut list = String::from("# a fleet\n\n");
    let mut expected = BTreeMap::new();
    for i in 0..1000 {
        let repo = format!("team{}/app", i % REPOS);
        let tag = format!("t{i}");
        let outcome = match i % 40 {
            0 => "failed",
            1 | 2 => "up-to-date",
            3 => "skipped",
            _ => "rebased",
        };
        match outcome {
            "failed" => {}
            "up-to-date" => push_app(&client, &reg, &repo, &tag, &[&v2, &app], &tag),
            "skipped" => push_app(&client, &reg, &repo, &tag, &[&other, &app], &tag),
            _ => push_app(&client, &reg, &repo, &tag, &[&v1, &app], &tag),
        }
        // Plain references and JSON Lines entries, mixed.
        if i % 2 == 0 {
            list.push_str(&format!("{}\n", reg.r(&format!("{repo}:{tag}"))));
        } else {
            list.push_str(&format!(
                "{}\n",
                json!({"image": reg.r(&format!("{repo}:{tag}"))})
            ));
        }
        expected.insert(i + 3, outcome);
    }
    let v2_layer = Digest::of(&v2.gz).to_string();
    Fleet {
        reg,
        list,
        expected,
        v2_layer,
        _work: work,
    }
}

fn run_list(f: &Fleet, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
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
    let out = run(&args, Some(f.list.as_bytes()));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_thousand_images_mixed_outcomes_then_a_rerun() {
    let f = fleet();
    let mark = f.reg.mark();
    let (code, lines, err) = run_list(&f, &["--jobs", "8"]);
    assert_eq!(code, Some(2), "some failed on purpose: {err}");
    assert!(err.contains("25 of 1000 images failed"), "{err}");
    assert_eq!(lines.len(), 1000);
    let mut seen = HashSet::new();
    for l in &lines {
        let line = l["line"].as_u64().unwrap() as usize;
        assert!(seen.insert(line), "one line per image");
        let want = f.expected[&line];
        assert_eq!(l["outcome"], want, "{l}");
        match want {
            "failed" => assert!(
                l["error"].as_str().unwrap().contains("MANIFEST_UNKNOWN"),
                "{l}"
            ),
            "skipped" => assert!(
                l["error"]
                    .as_str()
                    .unwrap()
                    .contains("not based on the old base"),
                "{l}"
            ),
            _ => {
                let result = l["result"].as_str().unwrap();
                let (repo, digest) = result
                    .strip_prefix(&format!("{}/", f.reg.addr))
                    .unwrap()
                    .split_once('@')
                    .unwrap();
                let (_, m) = f.reg.manifest(&format!("{repo}@{digest}")).unwrap();
                assert_eq!(layer_digests(&m)[0], f.v2_layer, "{l}");
                if want == "rebased" {
                    assert!(
                        l["new_base"].as_str().unwrap().contains("/base@sha256:"),
                        "{l}"
                    );
                }
            }
        }
    }

    // Bases were fetched once each; each blob was mounted into each repository at most once.
    let requests = f.reg.requests_since(mark);
    let count = |method: &str, uri: &str| {
        requests
            .iter()
            .filter(|(m, u, _)| m == method && u == uri)
            .count()
    };
    assert_eq!(count("GET", "/v2/base/manifests/v1"), 1);
    assert_eq!(count("GET", "/v2/base/manifests/v2"), 1);
    let mounts: Vec<&String> = requests
        .iter()
        .filter(|(m, u, _)| m == "POST" && u.contains("mount="))
        .map(|(_, u, _)| u)
        .collect();
    let unique: HashSet<&&String> = mounts.iter().collect();
    assert_eq!(
        mounts.len(),
        unique.len(),
        "no blob mounted twice into a repository: {mounts:?}"
    );
    assert!(mounts.len() <= REPOS, "{mounts:?}");
    let pings: Vec<_> = requests
        .iter()
        .filter(|(m, u, _)| m == "GET" && u == "/v2/")
        .collect();
    assert_eq!(pings.len(), 0, "no ping: {pings:?}");

    // The re-run finds everything done.
    let mark = f.reg.mark();
    let (code, lines, _) = run_list(&f, &["--jobs", "4"]);
    assert_eq!(code, Some(2));
    for l in &lines {
        let want = match f.expected[&(l["line"].as_u64().unwrap() as usize)] {
            "rebased" | "up-to-date" => "up-to-date",
            // The skipped images are still not on base v1, and the failed ones still missing.
            other => other,
        };
        assert_eq!(l["outcome"], want, "{l}");
    }
    for (method, uri, _) in f.reg.requests_since(mark) {
        assert!(
            method == "GET" || method == "HEAD",
            "a re-run writes nothing: {method} {uri}"
        );
    }
}

/// A registry with base:v1 and base:v2 (one layer each, configs told apart by `id`), and
/// the layers v1, v2 and an app layer.
fn bases(id: &str) -> (Registry, Client, [Layer; 3]) {
    let reg = Registry::start();
    let client = Client::new(Options::default()).unwrap();
    let v1 = layer(&reg, &[("etc/v1", "1\n")], "ADD v1 /");
    let v2 = layer(&reg, &[("etc/v2", "2\n")], "ADD v2 /");
    let app = layer(&reg, &[("app/a", "a\n")], "COPY app /app");
    for l in [&v1, &v2] {
        upload(&client, &reg, "base", l);
    }
    push_app(&client, &reg, "base", "v1", &[&v1], id);
    push_app(&client, &reg, "base", "v2", &[&v2], id);
    (reg, client, [v1, v2, app])
}

#[test]
fn shards_split_the_list_exactly_and_entries_carry_their_own_options() {
    let (reg, client, [v1, v2, app]) = bases("b");
    upload(&client, &reg, "app", &v1);
    upload(&client, &reg, "app", &app);
    let mut list = String::new();
    for i in 0..10 {
        push_app(
            &client,
            &reg,
            "app",
            &format!("{i}"),
            &[&v1, &app],
            &format!("{i}"),
        );
        list.push_str(&format!(
            "{}\n",
            json!({"image": reg.r(&format!("app:{i}")), "tag": format!("r{i}"), "layers": 1})
        ));
    }
    let mut all = Vec::new();
    for shard in ["0/3", "1/3", "2/3"] {
        let out = run(
            &[
                "rebase",
                "--from-file",
                "-",
                "--new-base",
                &reg.r("base:v2"),
                "--shard",
                shard,
                "--jobs",
                "2",
            ],
            Some(list.as_bytes()),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["outcome"], "rebased", "{v}");
            all.push(v["line"].as_u64().unwrap());
        }
    }
    all.sort();
    assert_eq!(
        all,
        (1..=10).collect::<Vec<_>>(),
        "the shards cover the list once"
    );
    // The entry's own tag and --layers were used: the source tags did not move.
    let (_, m) = reg.manifest("app:r3").unwrap();
    assert_eq!(layer_digests(&m)[0], Digest::of(&v2.gz).to_string());
    let (_, src) = reg.manifest("app:3").unwrap();
    assert_eq!(layer_digests(&src)[0], Digest::of(&v1.gz).to_string());

    let out = run(
        &["rebase", "--from-file", "-", "--shard", "3/3"],
        Some(b"x"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --shard"));
    let bad = format!("{}\n", json!({"image": reg.r("app:1"), "tga": "x"}));
    let out = run(
        &[
            "rebase",
            "--from-file",
            "-",
            "--new-base",
            &reg.r("base:v2"),
        ],
        Some(bad.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["outcome"], "failed");
    assert!(
        v["error"].as_str().unwrap().contains("unknown field"),
        "{v}"
    );
}

/// 300 tags of one image in 3 repositories: every tag rebases to the same config. Puts
/// every tag back on base v1 (the same manifest each time) before a run.
struct SameImage {
    reg: Registry,
    manifest: Vec<u8>,
    tags: Vec<String>,
}

const SAME_REPOS: usize = 3;
const SAME_TAGS: usize = 100;

fn same_image() -> SameImage {
    let (reg, client, [v1, _, app]) = bases("base");
    let mut tags = Vec::new();
    for r in 0..SAME_REPOS {
        let repo = format!("same{r}/app");
        for l in [&v1, &app] {
            upload(&client, &reg, &repo, l);
        }
        push_app(&client, &reg, &repo, "orig", &[&v1, &app], "app");
        for t in 0..SAME_TAGS {
            tags.push(format!("{repo}:n{t}"));
        }
    }
    let (manifest, _) = reg.manifest("same0/app:orig").unwrap();
    SameImage {
        reg,
        manifest,
        tags,
    }
}

impl SameImage {
    fn reset(&self) {
        for t in &self.tags {
            let (repo, tag) = t.split_once(':').unwrap();
            ureq::put(&format!(
                "http://{}/v2/{repo}/manifests/{tag}",
                self.reg.addr
            ))
            .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send_bytes(&self.manifest)
            .unwrap();
        }
    }

    fn list(&self, tags: &[String]) -> String {
        tags.iter()
            .map(|t| format!("{}\n", self.reg.r(t)))
            .collect()
    }

    fn rebase(&self, list: &str) -> std::process::Child {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_image-rebase"))
            .args([
                "rebase",
                "--from-file",
                "-",
                "--old-base",
                &self.reg.r("base:v1"),
                "--new-base",
                &self.reg.r("base:v2"),
                "--jobs",
                "16",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, list.as_bytes()).unwrap();
        child
    }
}

/// Every line of a fleet run's output is `rebased`; the tags hold the rebased image.
fn assert_all_rebased(s: &SameImage, out: std::process::Output, want: usize) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.contains(r#""outcome":"rebased""#))
        .collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "{} of {want} not rebased: {failed:#?}\n{}",
        failed.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), want);
    for t in s.tags.iter().step_by(37) {
        let (_, m) = s.reg.manifest(t).unwrap();
        assert_ne!(m, s.reg.manifest("same0/app:orig").unwrap().1, "{t} moved");
    }
}

#[test]
fn many_tags_of_one_image_rebase_in_one_run_without_a_failure() {
    let s = same_image();
    let list = s.list(&s.tags);
    for _ in 0..5 {
        s.reset();
        let out = s.rebase(&list).wait_with_output().unwrap();
        assert_all_rebased(&s, out, s.tags.len());
    }
}

#[test]
fn two_processes_rebase_tags_of_one_image_at_once() {
    let s = same_image();
    // Interleaved halves: both processes write the same config into every repository.
    let half = |parity: usize| {
        let tags: Vec<String> = s.tags.iter().skip(parity).step_by(2).cloned().collect();
        s.list(&tags)
    };
    let (a, b) = (half(0), half(1));
    for _ in 0..3 {
        s.reset();
        let (pa, pb) = (s.rebase(&a), s.rebase(&b));
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        assert_all_rebased(&s, oa, s.tags.len() / 2);
        assert_all_rebased(&s, ob, s.tags.len() / 2);
    }
}

#[test]
fn a_list_over_the_size_limit_is_refused_before_it_is_read() {
    let work = TempDir::new("big-list");
    let list = work.path().join("list");
    // 300 MiB of nothing: a sparse file, over the 256 MiB limit.
    std::fs::File::create(&list)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_image-rebase");
    // Under a 160 MiB address-space limit, reading the list whole would fail.
    for redirect in ["--from-file \"$1\"", "--from-file - < \"$1\""] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -v 163840; exec \"$0\" rebase {redirect} --new-base 127.0.0.1:1/base:v2"
            ))
            .arg(bin)
            .arg(&list)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{redirect}: {stderr}");
        assert!(
            stderr.contains("the list is larger than 268435456 bytes"),
            "{redirect}: {stderr}"
        );
    }
}
