//! HTTP transport: scheme and TLS, authentication, retries, request logging, and
//! registry errors in plain words. One ureq agent; connections are reused.

use super::auth::{self, Challenge, Token};
use super::credentials::{Found, Sources};
use super::secret::Secret;
use crate::reference::is_loopback_host;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct Options {
    /// Allow plain HTTP and unverified certificates for registries not on loopback.
    pub insecure: bool,
    /// Log every request (method, URL, status) and retry to stderr.
    pub verbose: bool,
    /// Extra CA certificates (PEM) to trust.
    pub ca_cert: Option<PathBuf>,
    /// Connect and read timeout of one request.
    pub timeout: Duration,
    pub credentials: Sources,
    /// Cache bases fetched by tag for the whole run (fleet mode).
    pub cache_tags: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: false,
            verbose: false,
            ca_cert: None,
            timeout: Duration::from_secs(30),
            credentials: Sources::default(),
            cache_tags: false,
        }
    }
}

/// Most repository scopes asked for in one token.
const MAX_SCOPES: usize = 16;

/// Retries of one idempotent request: at most this many attempts...
const MAX_ATTEMPTS: u32 = 4;
/// ...waiting at most this long in all...
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// ...and at most this long at once (a longer Retry-After ends the retries).
const MAX_ONE_WAIT: Duration = Duration::from_secs(30);

/// What is known of one registry.
struct State {
    /// `scheme://host`.
    base: String,
    challenge: Option<Challenge>,
    token: Option<Token>,
    /// Scopes the current operation needs, asked for in the next token.
    wanted: Vec<String>,
    credential: Option<Option<Found>>,
}

/// A registry's state, made by its first ping (or the ping's error), once per run.
type PingCell = Arc<OnceLock<std::result::Result<Arc<Mutex<State>>, String>>>;

pub struct Transport {
    agent: ureq::Agent,
    options: Options,
    registries: Mutex<HashMap<String, PingCell>>,
    /// The registries that --username credentials may go to (all when `None`).
    explicit_hosts: Mutex<Option<std::collections::HashSet<String>>>,
}

impl Transport {
    pub fn new(options: Options) -> Result<Transport> {
        let tls = if options.insecure {
            insecure_tls()?
        } else {
            verified_tls(options.ca_cert.as_deref())?
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(options.timeout)
            // A deadline for the whole request: socket timeouts alone are not restored on
            // pooled connections, and a trickle of bytes would reset them.
            .timeout(options.timeout)
            // ureq keeps one idle connection per host by default: fleet runs with many
            // jobs would open a new connection for most requests.
            .max_idle_connections(256)
            .max_idle_connections_per_host(64)
            .timeout_read(options.timeout)
            .timeout_write(options.timeout)
            .user_agent(concat!("image-rebase/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(Transport {
            agent,
            options,
            registries: Mutex::new(HashMap::new()),
            explicit_hosts: Mutex::new(None),
        })
    }

    /// The state of a registry, pinging it first (`GET /v2/`) to learn its scheme and
    /// what authentication it asks for.
    fn state(&self, registry: &str) -> Result<Arc<Mutex<State>>> {
        let cell = self
            .registries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(registry.to_string())
            .or_default()
            .clone();
        // Threads starting together ping a registry once; the map is not locked meanwhile,
        // so a slow registry holds up only its own requests. A failed ping is kept too:
        // the other images on that registry fail at once instead of waiting again.
        let state = cell.get_or_init(|| {
            self.ping(registry)
                .map(|(base, challenge)| {
                    Arc::new(Mutex::new(State {
                        base,
                        challenge,
                        token: None,
                        wanted: vec![],
                        credential: None,
                    }))
                })
                .map_err(|e| format!("{e:#}"))
        });
        state.clone().map_err(|e| anyhow!(e))
    }

    fn ping(&self, registry: &str) -> Result<(String, Option<Challenge>)> {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let schemes: &[&str] = if is_loopback_host(registry) || self.options.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut failures = Vec::new();
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{host}");
            let url = format!("{base}/v2/");
            let last = i + 1 == schemes.len();
            let result = if last {
                self.send_with_retries("GET", &url, &[], None, None)
            } else {
                self.send_once("GET", &url, &[], None, None)
            };
            match result {
                Ok(resp) => {
                    let status = resp.status();
                    let challenge = resp
                        .header("WWW-Authenticate")
                        .and_then(auth::parse_challenge);
                    drain(resp);
                    return match status {
                        200 => Ok((base, None)),
                        401 => Ok((base, challenge)),
                        404 => bail!(
                            "{registry} does not speak the registry API (GET {url} answered 404)"
                        ),
                        s => bail!("the registry {registry} answered GET {url} with HTTP {s}"),
                    };
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    failures.push(format!("{scheme}: {text}"));
                    // The registry speaks TLS but its certificate is not trusted: plain
                    // HTTP would only hide that.
                    if text.to_lowercase().contains("certificate") {
                        break;
                    }
                }
            }
        }
        let mut msg = format!(
            "cannot reach the registry {registry}: {}",
            failures.join("; ")
        );
        if failures
            .iter()
            .any(|f| f.contains("certificate") || f.contains("Certificate"))
        {
            msg.push_str(" (a registry with a private CA needs --ca-cert FILE; --insecure skips verification)");
        }
        Err(anyhow!(msg))
    }

    /// Limits the explicit (--username) credentials to these registries: the ones the
    /// user named. A registry found inside an image (a label, an annotation) does not get
    /// them; credentials from config files are per host and still apply.
    pub fn limit_explicit_credentials(&self, hosts: impl IntoIterator<Item = String>) {
        *self
            .explicit_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(hosts.into_iter().collect());
    }

    /// Adds scopes that the next token for `registry` should cover (the target's
    /// pull,push first, then each mount source's pull), so one token serves a whole push.
    pub fn want(&self, registry: &str, scopes: &[String]) -> Result<()> {
        let state = self.state(registry)?;
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted = scopes.to_vec();
        wanted.append(&mut st.wanted);
        st.wanted = auth::merge_scopes(&wanted);
        // A fleet run touches many repositories: the newest operation's scopes come first
        // and the oldest are let go, so a token request stays short.
        st.wanted.truncate(MAX_SCOPES);
        Ok(())
    }

    /// Resolves a path or a Location header against the registry.
    pub fn resolve(&self, registry: &str, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(location.to_string())
        } else if location.starts_with('/') {
            let state = self.state(registry)?;
            let base = state.lock().unwrap_or_else(|e| e.into_inner()).base.clone();
            Ok(format!("{base}{location}"))
        } else {
            bail!("the registry sent an unusable Location header {location:?}")
        }
    }

    /// Sends one request to a registry (a path, or a URL it gave), authenticating as it
    /// asks, and returns the response whatever its status.
    pub fn send(
        &self,
        registry: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        let state = self.state(registry)?;
        let url = self.resolve(registry, target)?;
        let scopes = scopes_for(method, &url);
        // Credentials go to the registry itself only, never to another host a Location
        // header names.
        let base = state.lock().unwrap_or_else(|e| e.into_inner()).base.clone();
        let same_origin = url.starts_with(&format!("{base}/"));
        let mut asked_again = false;
        loop {
            let authorization = if same_origin {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                self.authorization(&mut st, registry, &scopes)?
            } else {
                None
            };
            let resp =
                self.send_with_retries(method, &url, headers, authorization.as_ref(), body)?;
            if resp.status() != 401 || asked_again {
                return Ok(resp);
            }
            let Some(challenge) = resp
                .header("WWW-Authenticate")
                .and_then(auth::parse_challenge)
            else {
                return Ok(resp);
            };
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            let retry = match (&challenge, &st.challenge) {
                // Asked for more than the token covers: once more with the wider scope.
                (Challenge::Bearer { scope, .. }, _) => {
                    let mut wanted = st.wanted.clone();
                    // One scope parameter may hold several, space-separated.
                    wanted.extend(
                        scope
                            .iter()
                            .flat_map(|s| s.split_whitespace().map(str::to_string)),
                    );
                    if let Some(t) = st.token.take() {
                        wanted.extend(t.requested);
                    }
                    st.wanted = auth::merge_scopes(&wanted);
                    true
                }
                // Asked for Basic already: the same credentials (or none) again will not help.
                (Challenge::Basic, Some(Challenge::Basic)) => false,
                (Challenge::Basic, _) => true,
            };
            st.challenge = Some(challenge);
            if !retry {
                return Ok(resp);
            }
            drain(resp);
            asked_again = true;
        }
    }

    /// The Authorization header for a request needing `scopes`.
    fn authorization(
        &self,
        st: &mut State,
        registry: &str,
        scopes: &[String],
    ) -> Result<Option<Secret>> {
        let Some(challenge) = st.challenge.clone() else {
            return Ok(None);
        };
        if st.credential.is_none() {
            let explicit_allowed = self
                .explicit_hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(|hosts| hosts.contains(registry));
            st.credential = Some(
                self.options
                    .credentials
                    .lookup(registry, explicit_allowed)
                    .with_context(|| format!("looking up credentials for {registry}"))?,
            );
        }
        let credential = st.credential.clone().flatten();
        match challenge {
            Challenge::Basic => Ok(credential.and_then(|f| match f.credential {
                super::credentials::Credential::Basic { username, password } => {
                    Some(auth::basic_header(&username, &password))
                }
                // An identity token is no Basic password.
                super::credentials::Credential::IdentityToken(_) => None,
            })),
            Challenge::Bearer { realm, service, .. } => {
                if let Some(t) = &st.token
                    && t.fresh()
                    && scopes.iter().all(|s| t.covers(s))
                {
                    return Ok(Some(Secret::new(format!("Bearer {}", t.value.expose()))));
                }
                let mut requested = st.wanted.clone();
                requested.extend(scopes.iter().cloned());
                if let Some(t) = st.token.as_ref().filter(|t| t.fresh()) {
                    requested.extend(t.requested.iter().cloned());
                }
                let requested = bound_scopes(auth::merge_scopes(&requested), scopes);
                let plain_loopback = st.base.starts_with("http://") && is_loopback_host(registry);
                auth::check_realm(&realm, plain_loopback)?;
                let token = self
                    .fetch_token(&realm, service.as_deref(), requested, credential.as_ref())
                    .with_context(|| format!("getting a token for {registry} from {realm}"))?;
                let header = Secret::new(format!("Bearer {}", token.value.expose()));
                st.token = Some(token);
                Ok(Some(header))
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: Vec<String>,
        credential: Option<&Found>,
    ) -> Result<Token> {
        let req = auth::token_request(realm, service, &scopes, credential);
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let resp = match &req.body {
            Some(body) => self.send_once(
                req.method,
                &req.url,
                &form,
                req.authorization.as_ref(),
                Some(body.expose().as_bytes()),
            )?,
            None => {
                self.send_with_retries(req.method, &req.url, &[], req.authorization.as_ref(), None)?
            }
        };
        match resp.status() {
            200 => {
                let body = read_limited(resp, 1024 * 1024, "token response")?;
                auth::parse_token_response(&body, scopes)
            }
            401 | 403 => {
                let who = credential
                    .map(Found::describe)
                    .unwrap_or_else(|| "anonymous access".to_string());
                Err(status_error(
                    resp,
                    &format!("the token service refused {who}"),
                ))
            }
            _ => Err(status_error(resp, "the token service failed")),
        }
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        if let Some(a) = authorization {
            req = req.set("Authorization", a.expose());
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                if self.options.verbose {
                    eprintln!("image-rebase: {method} {url} -> {}", resp.status());
                }
                Ok(resp)
            }
            Err(ureq::Error::Transport(t)) => {
                let msg = transport_message(&t);
                if self.options.verbose {
                    eprintln!("image-rebase: {method} {url} -> {msg}");
                }
                Err(TransportError {
                    method: method.to_string(),
                    url: url.to_string(),
                    msg,
                    retryable: retryable(&t),
                }
                .into())
            }
        }
    }

    /// Sends a request; an idempotent one is retried on connection errors, 5xx and 429
    /// (honouring Retry-After), a bounded number of times within a bounded time.
    fn send_with_retries(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&Secret>,
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        let idempotent = matches!(method, "GET" | "HEAD" | "DELETE")
            || (method == "PUT" && url.contains("/manifests/"));
        let mut waited = Duration::ZERO;
        for attempt in 1.. {
            let result = self.send_once(method, url, headers, authorization, body);
            let (why, retry_after) = match &result {
                Ok(r) if matches!(r.status(), 429 | 500 | 502 | 503 | 504) => {
                    (format!("HTTP {}", r.status()), retry_after(r))
                }
                Err(e)
                    if e.downcast_ref::<TransportError>()
                        .is_some_and(|t| t.retryable) =>
                {
                    let msg = e.downcast_ref::<TransportError>().map(|t| t.msg.clone());
                    (msg.unwrap_or_default(), None)
                }
                _ => return result,
            };
            let delay = retry_after.unwrap_or_else(|| Duration::from_millis(250 << (attempt - 1)));
            if !idempotent || !may_retry(attempt, delay, waited) {
                return result;
            }
            if self.options.verbose {
                eprintln!(
                    "image-rebase: {method} {url}: {why}; retry {attempt} of {} in {:.2}s",
                    MAX_ATTEMPTS - 1,
                    delay.as_secs_f64()
                );
            }
            if let Ok(r) = result {
                drain(r);
            }
            std::thread::sleep(delay);
            waited += delay;
        }
        unreachable!("the loop returns")
    }

    /// Runs `get` (a GET and the reading of its body) again when the body broke off, as a
    /// connection error before the answer is: a bounded number of times, waiting longer
    /// each time.
    pub fn retry_cut_body<T>(&self, mut get: impl FnMut() -> Result<T>) -> Result<T> {
        for attempt in 1.. {
            match get() {
                Err(e) if attempt < MAX_ATTEMPTS && e.is::<CutBody>() => {
                    let delay = Duration::from_millis(250 << (attempt - 1));
                    if self.options.verbose {
                        eprintln!(
                            "image-rebase: {e}; retry {attempt} of {} in {:.2}s",
                            MAX_ATTEMPTS - 1,
                            delay.as_secs_f64()
                        );
                    }
                    std::thread::sleep(delay);
                }
                result => return result,
            }
        }
        unreachable!("the loop returns")
    }

    /// Whether the current token for `registry` grants `action` on `repository`
    /// (`None` when unknown: no token, or one whose claims cannot be read).
    pub fn grants(&self, registry: &str, repository: &str, action: &str) -> Option<bool> {
        let state = self.state(registry).ok()?;
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.token.as_ref()?.grants(repository, action)
    }

    /// Who we are on `registry`, for messages.
    pub fn identity(&self, registry: &str) -> String {
        let Ok(state) = self.state(registry) else {
            return "unknown credentials".into();
        };
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        match &st.credential {
            Some(Some(f)) => f.describe(),
            Some(None) => format!(
                "no credentials (none found for {registry} in {})",
                self.options.credentials.describe()
            ),
            None => "anonymous access (the registry asked for none)".into(),
        }
    }

    /// An error for an unexpected status, with what can be said about access rights.
    pub fn status_error(
        &self,
        registry: &str,
        method: &str,
        resp: ureq::Response,
        doing: &str,
    ) -> anyhow::Error {
        let status = resp.status();
        let url = resp.get_url().to_string();
        let base = status_error(resp, doing);
        if status != 401 && status != 403 {
            return base;
        }
        let mut missing = Vec::new();
        for scope in scopes_for(method, &url) {
            let Some((name, actions)) = auth::split_scope(&scope) else {
                continue;
            };
            for action in actions {
                if self.grants(registry, name, action) == Some(false) {
                    missing.push(format!("{action} right on {registry}/{name}"));
                }
            }
        }
        let none_found = self.state(registry).is_ok_and(|s| {
            matches!(
                s.lock().unwrap_or_else(|e| e.into_inner()).credential,
                Some(None)
            )
        });
        let hint = if !missing.is_empty() {
            format!(
                "{} has no {}",
                self.identity(registry),
                missing.join(" and no ")
            )
        } else if status == 401 && none_found {
            format!(
                "the registry {registry} requires credentials and none were found for it (looked in {}); \
                 log in with docker login, or give --username with --password-stdin",
                self.options.credentials.describe()
            )
        } else if status == 401 {
            format!("the registry did not accept {}", self.identity(registry))
        } else {
            format!("access denied to {}", self.identity(registry))
        };
        base.context(hint)
    }
}

/// At most MAX_SCOPES scopes for one token request: the ones `needed` by this request
/// first, then the rest of `requested` (the current operation's, newest first).
fn bound_scopes(requested: Vec<String>, needed: &[String]) -> Vec<String> {
    if requested.len() <= MAX_SCOPES {
        return requested;
    }
    let mut kept = auth::merge_scopes(needed);
    kept.extend(requested.into_iter().filter(|r| !needed.contains(r)));
    let mut kept = auth::merge_scopes(&kept);
    kept.truncate(MAX_SCOPES.max(needed.len()));
    kept
}

/// Whether attempt number `attempt` (from 1), having waited `waited` already, may be
/// followed by another after `delay`.
fn may_retry(attempt: u32, delay: Duration, waited: Duration) -> bool {
    attempt < MAX_ATTEMPTS && delay <= MAX_ONE_WAIT && waited + delay <= MAX_RETRY_WAIT
}

/// A request that got no HTTP response.
#[derive(Debug)]
struct TransportError {
    method: String,
    url: String,
    msg: String,
    retryable: bool,
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.method, self.url, self.msg)
    }
}

impl std::error::Error for TransportError {}

fn retryable(t: &ureq::Transport) -> bool {
    matches!(
        t.kind(),
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Io | ureq::ErrorKind::ProxyConnect
    )
}

/// What went wrong with a request that got no answer, said once in plain words, with the
/// innermost cause (an OS error, a TLS alert) for detail.
fn transport_message(t: &ureq::Transport) -> String {
    use std::error::Error as _;
    let mut cause: Option<&dyn std::error::Error> = t.source();
    let mut io_kind = None;
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = io_kind.or(Some(io.kind()));
        }
        match e.source() {
            Some(next) => cause = Some(next),
            None => break,
        }
    }
    use std::io::ErrorKind as Io;
    let plain = match (t.kind(), io_kind) {
        (ureq::ErrorKind::Dns, _) => "the host name could not be resolved",
        (ureq::ErrorKind::ConnectionFailed, _) => "could not connect",
        (ureq::ErrorKind::Io, Some(Io::TimedOut | Io::WouldBlock)) => "timed out",
        (ureq::ErrorKind::Io, _) => "the connection broke before the registry answered",
        (ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader, _) => {
            "the answer is not valid HTTP"
        }
        (kind, _) => {
            return t
                .message()
                .map_or(kind.to_string(), |m| format!("{kind}: {m}"));
        }
    };
    let detail = cause
        .map(|e| e.to_string())
        .or_else(|| t.message().map(str::to_string));
    match detail {
        Some(d) if !d.is_empty() && d != plain => format!("{plain} ({d})"),
        _ => plain.to_string(),
    }
}

/// A response whose body broke off: the connection failed in the middle of it.
#[derive(Debug)]
pub struct CutBody {
    url: String,
    msg: String,
}

impl std::fmt::Display for CutBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the connection broke while reading the answer to GET {}: {}",
            self.url, self.msg
        )
    }
}

impl std::error::Error for CutBody {}

/// The Retry-After header as a delay (seconds form; an HTTP date counts as absent).
fn retry_after(resp: &ureq::Response) -> Option<Duration> {
    resp.header("Retry-After")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads and drops a body so the connection can be reused.
fn drain(resp: ureq::Response) {
    let _ = std::io::copy(
        &mut resp.into_reader().take(1024 * 1024),
        &mut std::io::sink(),
    );
}

/// The scopes a request needs: pull for reads, pull,push for writes, and pull on the
/// source of a mount.
pub fn scopes_for(method: &str, url: &str) -> Vec<String> {
    let path_and_query = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((&path_and_query, ""));
    let Some(rest) = path.strip_prefix("/v2/") else {
        return vec![];
    };
    let cut = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.rfind(m))
        .max();
    let Some(cut) = cut else { return vec![] };
    let name = &rest[..cut];
    let actions = if matches!(method, "GET" | "HEAD") {
        "pull"
    } else {
        "pull,push"
    };
    let mut scopes = vec![format!("repository:{name}:{actions}")];
    for pair in query.split('&') {
        if let Some(from) = pair.strip_prefix("from=") {
            scopes.push(format!("repository:{from}:pull"));
        }
    }
    scopes
}

/// Reads a body of at most `limit` bytes; `what` names it in the error.
pub fn read_limited(resp: ureq::Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|l| l.parse::<u64>().ok())
        && len > limit
    {
        bail!("the {what} is {len} bytes, more than the {limit} bytes accepted");
    }
    let mut bytes = Vec::new();
    let url = resp.get_url().to_string();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CutBody {
            url,
            msg: e.to_string(),
        })?;
    if bytes.len() as u64 > limit {
        bail!("the {what} is more than the {limit} bytes accepted");
    }
    Ok(bytes)
}

/// What registry error codes mean, in plain words.
fn explain(code: &str) -> Option<&'static str> {
    Some(match code {
        "MANIFEST_BLOB_UNKNOWN" => "the manifest references a blob that is not in this repository",
        "BLOB_UNKNOWN" => "the blob is not in this repository",
        "MANIFEST_UNKNOWN" => "no such manifest (tag or digest) in this repository",
        "NAME_UNKNOWN" => "no such repository on this registry",
        "DENIED" => "access denied",
        "UNAUTHORIZED" => "authentication required, or the credentials were not accepted",
        "TOOMANYREQUESTS" => "the registry is rate limiting these requests; try again later",
        "MANIFEST_INVALID" => "the registry rejected the manifest as invalid",
        "DIGEST_INVALID" => "the content does not match its digest",
        "UNSUPPORTED" => "the registry does not support this operation",
        _ => return None,
    })
}

/// A registry's answer with an unexpected status: the status and the registry's error
/// codes, so that callers decide on those, never on the message's text.
#[derive(Debug)]
pub struct RegistryError {
    /// What was being done, e.g. "the registry refused the manifest".
    pub doing: String,
    pub status: u16,
    pub status_text: String,
    /// The registry's error codes (`MANIFEST_BLOB_UNKNOWN`, ...) with their messages.
    pub errors: Vec<(String, String)>,
}

impl RegistryError {
    /// Whether the registry gave this error code.
    pub fn has_code(&self, code: &str) -> bool {
        self.errors.iter().any(|(c, _)| c == code)
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: HTTP {} {}",
            self.doing, self.status, self.status_text
        )?;
        for (i, (code, message)) in self.errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{code}: {message}")?;
            if let Some(plain) = explain(code) {
                write!(f, " ({plain})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

/// An error for an unexpected status, with the registry's error codes in plain words.
pub fn status_error(resp: ureq::Response, doing: &str) -> anyhow::Error {
    let status = resp.status();
    let status_text = resp.status_text().to_string();
    let mut body = String::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_string(&mut body);
    let mut errors = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
        for e in v
            .get("errors")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("UNKNOWN");
            let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            errors.push((code.to_string(), message.to_string()));
        }
    }
    RegistryError {
        doing: doing.to_string(),
        status,
        status_text,
        errors,
    }
    .into()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS that verifies certificates against the public roots plus `ca_cert`.
fn verified_tls(ca_cert: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_cert {
        let what = || format!("--ca-cert {}", path.display());
        let mut n = 0;
        for cert in CertificateDer::pem_file_iter(path).with_context(what)? {
            roots.add(cert.with_context(what)?).with_context(what)?;
            n += 1;
        }
        if n == 0 {
            bail!(
                "--ca-cert {}: the file holds no PEM certificate",
                path.display()
            );
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS that accepts any certificate (`--insecure`).
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_in_count_and_time() {
        let s = Duration::from_secs;
        assert!(may_retry(1, s(1), s(0)));
        assert!(may_retry(3, s(1), s(0)));
        assert!(!may_retry(4, s(1), s(0)), "4 attempts at most");
        assert!(
            may_retry(1, s(30), s(0)),
            "a wait of exactly 30 s is waited"
        );
        assert!(!may_retry(1, s(31), s(0)));
        assert!(may_retry(2, s(30), s(30)), "60 s in all");
        assert!(!may_retry(2, s(30), s(31)));
    }

    #[test]
    fn token_requests_keep_at_most_16_scopes_those_needed_first() {
        let scope = |i: usize| format!("repository:r{i}:pull");
        let few: Vec<String> = (0..16).map(scope).collect();
        assert_eq!(bound_scopes(few.clone(), &[scope(3)]), few);
        let many: Vec<String> = (0..20).map(scope).collect();
        let needed = [scope(19)];
        let kept = bound_scopes(many.clone(), &needed);
        assert_eq!(kept.len(), 16);
        assert_eq!(kept[0], scope(19), "what this request needs comes first");
        assert_eq!(kept[1..], many[..15]);
        // More needed than the bound: all of them are kept.
        let needed: Vec<String> = (0..18).map(scope).collect();
        assert_eq!(bound_scopes(many, &needed), needed);
    }

    #[test]
    fn scopes_from_urls() {
        assert_eq!(
            scopes_for("GET", "http://r:5000/v2/team/app/manifests/1"),
            ["repository:team/app:pull"]
        );
        assert_eq!(
            scopes_for("HEAD", "https://r/v2/a/blobs/b/blobs/sha256:x"),
            ["repository:a/blobs/b:pull"]
        );
        assert_eq!(
            scopes_for(
                "POST",
                "http://r/v2/team/app/blobs/uploads/?mount=sha256:x&from=library/base"
            ),
            [
                "repository:team/app:pull,push",
                "repository:library/base:pull"
            ]
        );
        assert_eq!(
            scopes_for(
                "PUT",
                "http://r/v2/app/blobs/uploads/uuid?_state=s&digest=d"
            ),
            ["repository:app:pull,push"]
        );
        assert!(scopes_for("GET", "http://r/v2/").is_empty());
    }
}
