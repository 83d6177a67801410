//! Registry access against real servers: the distribution registry with htpasswd (Basic)
//! auth, with token auth (and the test token service in tests/servers), and over HTTPS
//! with a test CA; credentials from every source. Every byte the binary prints is
//! checked for the test secrets.

mod common;

use base64::Engine;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ALICE_PW: &str = "alice-Pa55-w0rd";
const BOB_PW: &str = "bob-Pa55-w0rd";
const ROOT_PW: &str = "root-Pa55-w0rd";
const REFRESH: &str = "alice-refresh-t0ken";
/// The start of every JWT the token service issues (`{"typ":"JWT"`).
const JWT_PREFIX: &str = "eyJ0eXAi";

fn secrets() -> Vec<String> {
    let mut s: Vec<String> = [ALICE_PW, BOB_PW, ROOT_PW, REFRESH, JWT_PREFIX]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (u, p) in [("alice", ALICE_PW), ("bob", BOB_PW)] {
        s.push(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
    }
    s
}

/// Runs the binary with a clean environment (PATH, HOME and `env` only), asserting that
/// nothing it prints holds a secret.
fn run_env(args: &[&str], stdin: Option<&str>, env: &[(&str, String)], home: &Path) -> Output {
    let path = format!("{}:/usr/bin:/bin", home.join("bin").display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_image-rebase"));
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        // The command may exit without reading its input.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in secrets() {
        assert!(
            !printed.contains(&secret),
            "a secret leaked in the output of {args:?}:\n{printed}"
        );
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Builds base v1, base v2 and an app on v1 in an OCI layout, and pushes them with skopeo
/// (library/base:v1, library/base:v2, team/app:1), with `creds` and over `scheme`.
fn push_fixtures(reg: &Registry, work: &Path, creds: &str) {
    sh(
        reg,
        work,
        &format!(
            "mkdir -p v1/etc v2/etc app/app
            echo 1 > v1/etc/v1; echo 2 > v2/etc/v2; echo a > app/app/a
            build_image layout base-v1 v1; build_image layout base-v2 v2
            build_image layout app --from base-v1 app
            for p in 'base-v1 library/base:v1' 'base-v2 library/base:v2' 'app team/app:1'; do
              set -- $p
              skopeo copy --quiet --dest-tls-verify=false --dest-creds '{creds}' oci:layout:$1 docker://$REGISTRY/$2
            done"
        ),
    );
}

fn rebase_args(reg: &Registry, tag: &str) -> Vec<String> {
    [
        "-v",
        "rebase",
        &reg.r("team/app:1"),
        "--old-base",
        &reg.r("library/base:v1"),
        "--new-base",
        &reg.r("library/base:v2"),
        "-t",
        tag,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The layer digests of a manifest, read with skopeo (an independent client) and creds.
fn layers_with_skopeo(reg: &Registry, r: &str, creds: &str, extra: &str) -> Vec<String> {
    let out = sh(
        reg,
        Path::new("/"),
        &format!(
            "skopeo inspect --raw {extra} --creds '{creds}' docker://{}",
            reg.r(r)
        ),
    );
    let m: serde_json::Value = serde_json::from_str(&out).unwrap();
    layer_digests(&m)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A credential helper script `docker-credential-NAME` in HOME/bin that knows one server.
fn credential_helper(home: &Path, name: &str, server: &str, user: &str, secret: &str) {
    let path = home.join("bin").join(format!("docker-credential-{name}"));
    write(
        &path,
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread -r server\nif [ \"$server\" = '{server}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Prepares a HOME for one credential source: the environment, stdin and extra arguments.
type Setup<'a> =
    Box<dyn Fn(&Path) -> (Vec<(&'static str, String)>, Option<String>, Vec<String>) + 'a>;

/// A registry with htpasswd auth (users alice and root) holding the fixtures; it and
/// the new base's layers as skopeo lists them.
fn htpasswd_registry(work: &Path) -> (Registry, Vec<String>) {
    let htpasswd = work.join("htpasswd");
    let mut lines = String::new();
    for (u, p) in [("alice", ALICE_PW), ("root", ROOT_PW)] {
        let out = Command::new("htpasswd")
            .args(["-Bbn", u, p])
            .output()
            .expect("htpasswd (apache2-utils) is installed");
        lines.push_str(String::from_utf8_lossy(&out.stdout).trim());
        lines.push('\n');
    }
    std::fs::write(&htpasswd, lines).unwrap();
    let reg = Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
        htpasswd.display()
    ));
    push_fixtures(&reg, work, &format!("root:{ROOT_PW}"));
    let v2_layers = layers_with_skopeo(
        &reg,
        "library/base:v2",
        &format!("root:{ROOT_PW}"),
        "--tls-verify=false",
    );
    (reg, v2_layers)
}

#[test]
fn basic_auth_refuses_no_credentials_and_a_wrong_password_saying_where_they_came_from() {
    let work = TempDir::new("basic-refused");
    let (reg, _) = htpasswd_registry(work.path());
    // Anonymous: refused, saying where credentials were looked for.
    let home = TempDir::new("home-none");
    let out = run_env(&args(&rebase_args(&reg, "x")), None, &[], home.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("requires credentials and none were found")
            && err.contains(".docker/config.json"),
        "{err}"
    );

    // A wrong password: refused, naming the user and where the credentials came from.
    let home = TempDir::new("home-wrong");
    let env = [
        ("IMAGE_REBASE_USERNAME", "alice".to_string()),
        ("IMAGE_REBASE_PASSWORD", "wrong".to_string()),
    ];
    let out = run_env(&args(&rebase_args(&reg, "x")), None, &env, home.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did not accept user \"alice\" from the command line"),
        "{}",
        stderr(&out)
    );
}

/// Every place credentials can come from, each set up in a home folder: the environment,
/// stdin and arguments to run with.
fn credential_sources(host: &str) -> Vec<(&'static str, Setup<'_>)> {
    vec![
        (
            "auths-auth",
            Box::new(move |h: &Path| {
                write(
                    &h.join("cfg/config.json"),
                    &format!(
                        r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
                        b64(&format!("alice:{ALICE_PW}"))
                    ),
                );
                (
                    vec![("DOCKER_CONFIG", h.join("cfg").display().to_string())],
                    None,
                    vec![],
                )
            }),
        ),
        (
            "auths-fields",
            Box::new(move |h: &Path| {
                write(
                    &h.join(".docker/config.json"),
                    &format!(
                        r#"{{"auths":{{"http://{host}/v2/":{{"username":"alice","password":"{ALICE_PW}"}}}}}}"#
                    ),
                );
                (vec![], None, vec![])
            }),
        ),
        (
            "podman-auth-file",
            Box::new(move |h: &Path| {
                write(
                    &h.join("auth.json"),
                    &format!(
                        r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
                        b64(&format!("alice:{ALICE_PW}"))
                    ),
                );
                (
                    vec![(
                        "REGISTRY_AUTH_FILE",
                        h.join("auth.json").display().to_string(),
                    )],
                    None,
                    vec![],
                )
            }),
        ),
        (
            "cred-helper",
            Box::new(move |h: &Path| {
                credential_helper(h, "testhelper", host, "alice", ALICE_PW);
                write(
                    &h.join(".docker/config.json"),
                    &format!(r#"{{"credHelpers":{{"{host}":"testhelper"}}}}"#),
                );
                (vec![], None, vec![])
            }),
        ),
        (
            "creds-store",
            Box::new(move |h: &Path| {
                credential_helper(h, "teststore", host, "alice", ALICE_PW);
                write(
                    &h.join(".docker/config.json"),
                    r#"{"credsStore":"teststore","auths":{}}"#,
                );
                (vec![], None, vec![])
            }),
        ),
        (
            "env",
            Box::new(move |_: &Path| {
                (
                    vec![
                        ("IMAGE_REBASE_USERNAME", "alice".into()),
                        ("IMAGE_REBASE_PASSWORD", ALICE_PW.into()),
                    ],
                    None,
                    vec![],
                )
            }),
        ),
        (
            "password-stdin",
            Box::new(move |_: &Path| {
                (
                    vec![],
                    Some(format!("{ALICE_PW}\n")),
                    vec![
                        "--username".into(),
                        "alice".into(),
                        "--password-stdin".into(),
                    ],
                )
            }),
        ),
    ]
}

#[test]
fn basic_auth_with_credentials_from_every_source() {
    let work = TempDir::new("basic");
    let (reg, v2_layers) = htpasswd_registry(work.path());
    let cases = credential_sources(&reg.addr);
    for (name, setup) in cases {
        let home = TempDir::new(name);
        let (env, stdin, extra) = setup(home.path());
        let mut a = rebase_args(&reg, name);
        a.extend(extra);
        let out = run_env(&args(&a), stdin.as_deref(), &env, home.path());
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&reg.r("team/app@sha256:")),
            "{name}"
        );
        let got = layers_with_skopeo(
            &reg,
            &format!("team/app:{name}"),
            &format!("root:{ROOT_PW}"),
            "--tls-verify=false",
        );
        assert_eq!(
            got[0], v2_layers[0],
            "{name}: the new base's layer is first"
        );
        if name == "auths-auth" {
            assert!(
                stderr(&out).contains("mount="),
                "-v shows the mount: {}",
                stderr(&out)
            );
        }
    }
}

/// The token service of tests/servers, on a free loopback port; stopped on drop.
struct TokenServer {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl TokenServer {
    fn start(users: serde_json::Value) -> TokenServer {
        let dir = TempDir::new("token");
        let d = dir.path();
        let keygen = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=token-test",
                "-days",
                "2",
            ])
            .arg("-keyout")
            .arg(d.join("key.pem"))
            .arg("-out")
            .arg(d.join("cert.pem"))
            .output()
            .unwrap();
        assert!(
            keygen.status.success(),
            "{}",
            String::from_utf8_lossy(&keygen.stderr)
        );
        std::fs::write(d.join("users.json"), users.to_string()).unwrap();
        let python = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        let child = Command::new(python)
            .arg(root().join("tests/servers/token_server.py"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--issuer",
                "test-issuer",
                "--service",
                "test-registry",
            ])
            .arg("--port-file")
            .arg(d.join("port"))
            .arg("--key")
            .arg(d.join("key.pem"))
            .arg("--cert")
            .arg(d.join("cert.pem"))
            .arg("--users")
            .arg(d.join("users.json"))
            .arg("--log")
            .arg(d.join("token.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(d.join("port")) {
                break p.trim().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the token server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        TokenServer {
            child,
            port,
            log: d.join("token.log"),
            _dir: dir,
        }
    }

    fn registry_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            self.port,
            self.log.parent().unwrap().join("cert.pem").display()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn token_auth_one_token_per_push_refresh_tokens_and_missing_rights() {
    let tokens = TokenServer::start(serde_json::json!({
        "users": {
            "alice": {"password": ALICE_PW, "refresh_token": REFRESH, "grants": {"team/app": ["pull", "push"], "library/base": ["pull"]}},
            "bob": {"password": BOB_PW, "grants": {"team/app": ["pull"], "team/other": ["pull", "push"]}},
            "root": {"password": ROOT_PW, "grants": {"*": ["*"]}},
        }
    }));
    let reg = Registry::start_with(&tokens.registry_config());
    let work = TempDir::new("token-fixtures");
    push_fixtures(&reg, work.path(), &format!("root:{ROOT_PW}"));

    // Basic credentials exchanged for one token that covers the whole push.
    let home = TempDir::new("alice");
    let env = [
        ("IMAGE_REBASE_USERNAME", "alice".to_string()),
        ("IMAGE_REBASE_PASSWORD", ALICE_PW.to_string()),
    ];
    let before = tokens.log().lines().count();
    let out = run_env(
        &args(&rebase_args(&reg, "by-alice")),
        None,
        &env,
        home.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = tokens.log();
    let requests: Vec<&str> = log.lines().skip(before).collect();
    assert!(
        requests.iter().any(|l| {
            let granted: Vec<&str> = l
                .split_once("granted=")
                .map_or("", |(_, g)| g)
                .split_whitespace()
                .collect();
            l.contains("user=alice")
                && granted.contains(&"repository:team/app:pull,push")
                && granted.contains(&"repository:library/base:pull")
        }),
        "one token for the push covers the target and the mount source:\n{}",
        requests.join("\n")
    );
    // The rebase declares what it will ask of the registry before its first request:
    // one token serves the whole run.
    assert_eq!(
        requests.len(),
        1,
        "one token for the run: {}",
        requests.join("\n")
    );

    // An identity token (OAuth2 refresh token) from config.json.
    let home = TempDir::new("alice-refresh");
    let cfg = format!(
        r#"{{"auths":{{"{}":{{"identitytoken":"{REFRESH}"}}}}}}"#,
        reg.addr
    );
    write(&home.path().join(".docker/config.json"), &cfg);
    let out = run_env(
        &args(&rebase_args(&reg, "by-refresh")),
        None,
        &[],
        home.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        tokens.log().lines().any(|l| l.starts_with_any_post()),
        "the refresh token went by POST"
    );

    // bob may push to team/other but not pull library/base: the document is made by
    // alice, the push by bob (into team/other, where no layer is yet), so the mount of the
    // new base's layer is refused and the message names the repository and the right.
    let home = TempDir::new("bob");
    let doc = {
        let mut doc = String::new();
        for step in [
            vec!["fetch-manifest".to_string(), reg.r("team/app:1")],
            vec![
                "fetch-manifest".into(),
                "--as".into(),
                "old-base".into(),
                reg.r("library/base:v1"),
            ],
            vec![
                "fetch-manifest".into(),
                "--as".into(),
                "new-base".into(),
                reg.r("library/base:v2"),
            ],
            vec!["fetch-config".into()],
            vec!["split-history".into()],
            vec!["splice".into()],
        ] {
            let out = run_env(&args(&step), Some(&doc), &env, home.path());
            assert!(out.status.success(), "{step:?}: {}", stderr(&out));
            doc = String::from_utf8(out.stdout).unwrap();
        }
        let mut doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        doc["result"]["target"]["repository"] = "team/other".into();
        doc.to_string()
    };
    let bob = [
        ("IMAGE_REBASE_USERNAME", "bob".to_string()),
        ("IMAGE_REBASE_PASSWORD", BOB_PW.to_string()),
    ];
    let out = run_env(
        &["put-manifest", "-t", "by-bob"],
        Some(&doc),
        &bob,
        home.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "user \"bob\" from the command line has no pull right on {}/library/base",
            reg.addr
        )),
        "{err}"
    );
    // Nothing was written.
    let out = run_env(
        &["-v", "fetch-manifest", &reg.r("team/other:by-bob")],
        None,
        &bob,
        home.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("MANIFEST_UNKNOWN"),
        "{}",
        stderr(&out)
    );

    // Anonymous access gets a token with no rights.
    let home = TempDir::new("anon");
    let out = run_env(
        &["fetch-manifest", &reg.r("team/app:1")],
        None,
        &[],
        home.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no pull right on"),
        "{}",
        stderr(&out)
    );

    // --password-stdin is refused by plumbing commands, which read their document there.
    let out = run_env(
        &["--username", "alice", "--password-stdin", "fetch-config"],
        Some("x"),
        &[],
        home.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("IMAGE_REBASE_PASSWORD"));
}

trait PostLine {
    fn starts_with_any_post(&self) -> bool;
}

impl PostLine for str {
    fn starts_with_any_post(&self) -> bool {
        self.contains(" POST /token") && self.contains("user=alice") && self.contains("status=200")
    }
}

#[test]
fn https_with_a_test_ca() {
    let work = TempDir::new("tls");
    let d = work.path();
    let script = "
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem 2>/dev/null";
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reg = Registry::start_full(
        "",
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            d.join("server.pem").display(),
            d.join("server.key").display()
        ),
    );
    push_fixtures(&reg, d, "x:y");
    let home = TempDir::new("tls-home");

    let out = run_env(&args(&rebase_args(&reg, "no-ca")), None, &[], home.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--ca-cert") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    let mut with_ca = rebase_args(&reg, "with-ca");
    with_ca.splice(
        0..0,
        [
            "--ca-cert".to_string(),
            d.join("ca.pem").display().to_string(),
        ],
    );
    let out = run_env(&args(&with_ca), None, &[], home.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("https://{}/v2/", reg.addr)),
        "HTTPS was used: {}",
        stderr(&out)
    );

    let mut insecure = rebase_args(&reg, "insecure");
    insecure.insert(0, "--insecure".into());
    let out = run_env(&args(&insecure), None, &[], home.path());
    assert!(out.status.success(), "{}", stderr(&out));

    let v2 = layers_with_skopeo(&reg, "library/base:v2", "x:y", "--tls-verify=false");
    for tag in ["with-ca", "insecure"] {
        assert_eq!(
            layers_with_skopeo(
                &reg,
                &format!("team/app:{tag}"),
                "x:y",
                "--tls-verify=false"
            )[0],
            v2[0]
        );
    }

    let out = run_env(
        &[
            "--ca-cert",
            "/nonexistent.pem",
            "fetch-manifest",
            &reg.r("team/app:1"),
        ],
        None,
        &[],
        home.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--ca-cert /nonexistent.pem"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn credentials_in_a_reference_are_refused_and_never_printed() {
    let image = format!("alice:{ALICE_PW}@127.0.0.1:5000/app:1");
    let out = run(&["rebase", &image, "--layers", "1"], None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("image-rebase: error: ") && err.contains("cannot carry credentials"),
        "{err}"
    );
    assert!(
        err.contains("--password-stdin"),
        "says how to pass them: {err}"
    );
    // In fleet mode too, plain and JSON Lines entries alike.
    let list = format!(
        "{image}\n{}\n",
        serde_json::json!({ "image": image, "tag": "x" })
    );
    let out = run(
        &["rebase", "--from-file", "-", "--layers", "1"],
        Some(list.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    for line in stdout.lines() {
        assert!(line.contains("cannot carry credentials"), "{line}");
        assert!(
            line.contains("<credentials>@127.0.0.1:5000/app:1"),
            "{line}"
        );
    }
    for s in secrets() {
        assert!(
            !stdout.contains(&s) && !stderr(&out).contains(&s),
            "{s} printed"
        );
    }
    assert!(!err.contains(ALICE_PW));
}
