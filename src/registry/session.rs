//! One session with each registry: its scheme and challenge (learnt from the first
//! request's answer, with no separate ping), the credentials found for it, its token, and
//! the 401 loop that asks for a wider one. The requests themselves go through `http`;
//! errors are `error`'s types.

use super::auth::{self, Challenge, MAX_SCOPES, Token, bound_scopes, scopes_for};
use super::credentials::{Found, Sources};
use super::error::{ConnectError, ConnectKind, status_error};
use super::http::{Http, drain, read_limited};
use super::secret::Secret;
use crate::oci::reference::is_loopback_host;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct Options {
    /// Allow plain HTTP and unverified certificates for registries not on loopback.
    pub insecure: bool,
    /// Speak only HTTPS, to loopback registries too (never plain HTTP).
    pub https: bool,
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
            https: false,
            verbose: false,
            ca_cert: None,
            timeout: Duration::from_secs(30),
            credentials: Sources::default(),
            cache_tags: false,
        }
    }
}

/// What is known of one registry's authentication.
#[derive(Default)]
struct State {
    challenge: Option<Challenge>,
    token: Option<Token>,
    /// Scopes the current operation needs, asked for in the next token.
    wanted: Vec<String>,
    credential: Option<Option<Found>>,
}

/// One registry: its `scheme://host`, learnt once per run from the first request that
/// got an answer (or that request's failure, kept for the run), and its authentication.
#[derive(Default)]
struct Registry {
    base: OnceLock<std::result::Result<String, Arc<anyhow::Error>>>,
    /// Whether a request is learning the base now.
    learning: AtomicBool,
    /// A base that answered a request sent while the first was out: the requests that
    /// follow use it without trying schemes again.
    answered: Mutex<Option<String>>,
    state: Mutex<State>,
    /// When each request now waiting for its answer was sent; `landed` is told when one
    /// is answered.
    flying: Mutex<Vec<Instant>>,
    landed: Condvar,
}

impl Registry {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flying(&self) -> std::sync::MutexGuard<'_, Vec<Instant>> {
        self.flying.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Transport {
    http: Http,
    options: Options,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
}

impl Transport {
    pub fn new(options: Options) -> Result<Transport> {
        let tls = if options.insecure {
            super::tls::insecure_tls()?
        } else {
            super::tls::verified_tls(options.ca_cert.as_deref())?
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
            http: Http {
                agent,
                verbose: options.verbose,
            },
            options,
            registries: Mutex::new(HashMap::new()),
        })
    }

    fn registry(&self, registry: &str) -> Arc<Registry> {
        self.registries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(registry.to_string())
            .or_default()
            .clone()
    }

    /// A registry's `scheme://host`: as learnt, or learnt now by a ping (`GET /v2/`) for
    /// what cannot learn it itself (a Location header before any request, an upload whose
    /// body can be sent only once).
    fn base(&self, registry: &str) -> Result<String> {
        let reg = self.registry(registry);
        // Threads starting together learn a registry once; the map is not locked meanwhile,
        // so a slow registry holds up only its own requests. A failure is kept too: the
        // other images on that registry fail at once instead of waiting again.
        let base = reg.base.get_or_init(|| {
            self.ping(registry)
                .map(|(base, challenge)| {
                    let mut st = reg.state();
                    if st.challenge.is_none() {
                        st.challenge = challenge;
                    }
                    base
                })
                .map_err(Arc::new)
        });
        base.clone().map_err(|e| PingFailed(e).into())
    }

    /// The registry's base for a request to `target`, learnt from this very request when
    /// it is the registry's first: then the answer comes back too (sent without
    /// credentials: the answer says whether the registry wants any).
    fn learn_base(
        &self,
        reg: &Registry,
        registry: &str,
        target: &str,
        repeatable: bool,
        perform: &mut impl FnMut(&str, Option<&Secret>, bool) -> Result<ureq::Response>,
    ) -> Result<(String, Option<ureq::Response>)> {
        if let Some(known) = reg.base.get() {
            return Ok((known.clone().map_err(PingFailed)?, None));
        }
        if !repeatable || !target.starts_with('/') {
            return Ok((self.base(registry)?, None));
        }
        if let Some(base) = reg
            .answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok((base, None));
        }
        if reg.learning.swap(true, Ordering::SeqCst) {
            // Another request is learning the base: this one goes out at once too, each
            // scheme once, and waits for what that request learns only when it gets no
            // answer.
            let once = self.first_answer(registry, false, |base, _| {
                perform(&format!("{base}{target}"), None, false)
            });
            if let Ok((base, resp)) = once {
                *reg.answered.lock().unwrap_or_else(|e| e.into_inner()) = Some(base.clone());
                return Ok((base, Some(resp)));
            }
        }
        let mut answer = None;
        let known = reg.base.get_or_init(|| {
            self.first_answer(registry, true, |base, last| {
                perform(&format!("{base}{target}"), None, last)
            })
            .map(|(base, resp)| {
                answer = Some(resp);
                base
            })
            .map_err(Arc::new)
        });
        let base = known
            .clone()
            .map_err(|e| anyhow::Error::from(PingFailed(e)))?;
        Ok((base, answer))
    }

    fn ping(&self, registry: &str) -> Result<(String, Option<Challenge>)> {
        let (base, resp) = self.first_answer(registry, true, |base, retry| {
            let url = format!("{base}/v2/");
            self.http.send_retrying("GET", &url, &[], None, None, retry)
        })?;
        let url = format!("{base}/v2/");
        let status = resp.status();
        let challenge = resp
            .header("WWW-Authenticate")
            .and_then(auth::parse_challenge);
        drain(resp);
        match status {
            200 => Ok((base, None)),
            401 => Ok((base, challenge)),
            404 => bail!("{registry} does not speak the registry API (GET {url} answered 404)"),
            s => bail!("the registry {registry} answered GET {url} with HTTP {s}"),
        }
    }

    /// The schemes to try for a registry, in order: on loopback plain HTTP first (a local
    /// registry most often speaks it, and a failed TLS attempt costs two round trips),
    /// elsewhere HTTPS, then plain HTTP only with --insecure; only HTTPS with --https.
    fn schemes(&self, registry: &str) -> &'static [&'static str] {
        if self.options.https {
            &["https"]
        } else if is_loopback_host(registry) {
            &["http", "https"]
        } else if self.options.insecure {
            &["https", "http"]
        } else {
            &["https"]
        }
    }

    /// Sends one request with `attempt` (given `scheme://host` and whether it may be
    /// retried after a connection error) on each of the registry's schemes until one answers; that scheme's base
    /// and its answer. Each scheme is tried once, then (when `patient`) the first again
    /// with retries when its failure may pass (a registry that dropped the connection is
    /// there). A plain-HTTP
    /// answer 400 is what a TLS server says to plain HTTP: HTTPS is tried next, and the
    /// 400 stands only when HTTPS gets no answer.
    fn first_answer(
        &self,
        registry: &str,
        patient: bool,
        mut attempt: impl FnMut(&str, bool) -> Result<ureq::Response>,
    ) -> Result<(String, ureq::Response)> {
        let host = api_host(registry);
        let schemes = self.schemes(registry);
        let mut failures = Vec::new();
        let mut held = None;
        let mut certificate = false;
        let mut passing = false;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{host}");
            let only = patient && schemes.len() == 1;
            match attempt(&base, only) {
                Ok(resp) if *scheme == "http" && resp.status() == 400 && i == 0 && !only => {
                    failures.push("http: HTTP 400 (a TLS server's answer to plain HTTP?)".into());
                    held = Some((base, resp));
                }
                Ok(resp) => return Ok((base, resp)),
                // The registry answered on this scheme before: its failure stands.
                Err(e) if e.downcast_ref::<ConnectError>().is_some_and(|c| c.answered) => {
                    return Err(e);
                }
                Err(e) => {
                    failures.push(format!("{scheme}: {e:#}"));
                    let kind = e.downcast_ref::<ConnectError>();
                    passing |= i == 0 && !only && kind.is_some_and(ConnectError::is_temporary);
                    // The registry speaks TLS but its certificate is not trusted: plain
                    // HTTP would only hide that.
                    certificate = kind.is_some_and(|c| c.kind == ConnectKind::Certificate);
                    if certificate {
                        break;
                    }
                }
            }
        }
        if let (false, Some(answer)) = (certificate, held) {
            return Ok(answer);
        }
        if passing && patient && !certificate {
            let base = format!("{}://{host}", schemes[0]);
            match attempt(&base, true) {
                Ok(resp) => return Ok((base, resp)),
                Err(e) => failures[0] = format!("{}: {e:#}", schemes[0]),
            }
        }
        let mut msg = format!(
            "cannot reach the registry {registry}: {}",
            failures.join("; ")
        );
        if certificate {
            msg.push_str(" (a registry with a private CA needs --ca-cert FILE; --insecure skips verification)");
        }
        Err(anyhow!(msg))
    }

    /// What this run learnt of each registry, for the document: its scheme (`https` or
    /// `http`) and the authentication it asked for (`none`, `basic`, `bearer`). Never a
    /// credential or a token.
    pub fn learnt(&self) -> Vec<(String, &'static str, &'static str)> {
        let registries = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (name, reg) in registries.iter() {
            let Some(Ok(base)) = reg.base.get() else {
                continue;
            };
            let scheme = if base.starts_with("http://") {
                "http"
            } else {
                "https"
            };
            let auth = match reg.state().challenge {
                None => "none",
                Some(Challenge::Basic) => "basic",
                Some(Challenge::Bearer { .. }) => "bearer",
            };
            out.push((name.clone(), scheme, auth));
        }
        out.sort();
        out
    }

    /// Takes in what an earlier command learnt of a registry (see `learnt`), so that its
    /// scheme is not tried out again and Basic credentials go with the first request. A
    /// scheme this run would not try (plain HTTP beyond loopback without --insecure) and
    /// unknown values are ignored; a Bearer challenge is learnt from the registry itself,
    /// whose answer names the token service.
    pub fn teach(&self, registry: &str, scheme: &str, auth: &str) {
        if !self.schemes(registry).contains(&scheme) {
            return;
        }
        let reg = self.registry(registry);
        let _ = reg
            .base
            .set(Ok(format!("{scheme}://{}", api_host(registry))));
        let mut st = reg.state();
        if auth == "basic" && st.challenge.is_none() {
            st.challenge = Some(Challenge::Basic);
        }
    }

    /// Adds scopes that the next token for `registry` should cover (the target's
    /// pull,push first, then each mount source's pull), so one token serves a whole push.
    pub fn want(&self, registry: &str, scopes: &[String]) -> Result<()> {
        let reg = self.registry(registry);
        let mut st = reg.state();
        let mut wanted = scopes.to_vec();
        wanted.append(&mut st.wanted);
        st.wanted = auth::merge_scopes(&wanted);
        // A fleet run touches many repositories: the newest operation's scopes come first
        // and the oldest are let go, so a token request stays short.
        st.wanted.truncate(MAX_SCOPES);
        Ok(())
    }

    /// The scopes the next token for `registry` would ask for (see `want`).
    #[cfg(test)]
    pub(crate) fn wanted(&self, registry: &str) -> Vec<String> {
        self.registry(registry).state().wanted.clone()
    }

    /// Resolves a path or a Location header against the registry.
    pub fn resolve(&self, registry: &str, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(location.to_string())
        } else if location.starts_with('/') {
            Ok(format!("{}{location}", self.base(registry)?))
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
        let reg = self.registry(registry);
        self.send_authenticated(
            registry,
            method,
            target,
            true,
            |url, authorization, retry| {
                let sent = Instant::now();
                reg.flying().push(sent);
                let answer =
                    self.http
                        .send_retrying(method, url, headers, authorization, body, retry);
                let mut flying = reg.flying();
                if let Some(i) = flying.iter().position(|t| *t == sent) {
                    flying.swap_remove(i);
                }
                reg.landed.notify_all();
                answer
            },
        )
    }

    /// For requests sent as soon as the answer to one sent at `sent` came back at
    /// `answered`: waits for the requests to `registry` that went out with that one (sent
    /// within half its round trip of it) to be answered too, at most a quarter of its
    /// round trip. Their connections are then free for the new requests, which would
    /// otherwise open new ones: a round trip more, two with TLS. On loopback that is
    /// microseconds.
    pub fn settle(&self, registry: &str, sent: Instant, answered: Instant) {
        let trip = answered.saturating_duration_since(sent);
        let with_it = sent + trip / 2;
        let deadline = answered + trip / 4;
        let reg = self.registry(registry);
        let mut flying = reg.flying();
        while flying.iter().any(|t| *t <= with_it) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            flying = reg
                .landed
                .wait_timeout(flying, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends one request of a blob copy (see `Http::send_stream`): a GET of the blob,
    /// asked again with a wider token after a 401 as `send` does; or an upload whose body
    /// is read as it is sent, sent once (the upload's start got the token it needs).
    pub fn send_stream(
        &self,
        registry: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&mut dyn std::io::Read>,
        deadline: Duration,
    ) -> Result<ureq::Response> {
        let mut body = body;
        let repeatable = body.is_none();
        self.send_authenticated(
            registry,
            method,
            target,
            repeatable,
            |url, authorization, _| {
                let body = body.take().map(|b| b as &mut dyn std::io::Read);
                self.http
                    .send_stream(method, url, headers, authorization, body, deadline)
            },
        )
    }

    /// Runs `perform` (one request to `target` on `registry`, given the URL, the
    /// Authorization and whether it may be retried) with the Authorization the registry
    /// asks for, and once more with a wider token after a 401 when `repeatable`. The
    /// registry's first request teaches its scheme and challenge.
    fn send_authenticated(
        &self,
        registry: &str,
        method: &str,
        target: &str,
        repeatable: bool,
        mut perform: impl FnMut(&str, Option<&Secret>, bool) -> Result<ureq::Response>,
    ) -> Result<ureq::Response> {
        let reg = self.registry(registry);
        let (base, mut first) =
            self.learn_base(&reg, registry, target, repeatable, &mut perform)?;
        let url = if target.starts_with('/') {
            format!("{base}{target}")
        } else {
            self.resolve(registry, target)?
        };
        let scopes = scopes_for(method, &url);
        // Credentials go to the registry itself only, never to another host a Location
        // header names.
        let same_origin = url.starts_with(&format!("{base}/"));
        let mut asked_again = false;
        loop {
            let (resp, sent) = match first.take() {
                Some(resp) => (resp, false),
                None => {
                    let authorization = if same_origin {
                        self.authorization(&mut reg.state(), registry, &base, &scopes)?
                    } else {
                        None
                    };
                    let sent = authorization.is_some();
                    (perform(&url, authorization.as_ref(), true)?, sent)
                }
            };
            if resp.status() != 401 || asked_again || !repeatable {
                return Ok(resp);
            }
            let Some(challenge) = resp
                .header("WWW-Authenticate")
                .and_then(auth::parse_challenge)
            else {
                return Ok(resp);
            };
            let retry = learn(&mut reg.state(), challenge, sent);
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
        base: &str,
        scopes: &[String],
    ) -> Result<Option<Secret>> {
        let Some(challenge) = st.challenge.clone() else {
            return Ok(None);
        };
        if st.credential.is_none() {
            st.credential = Some(
                self.options
                    .credentials
                    .lookup(registry)
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
                let plain_loopback = base.starts_with("http://") && is_loopback_host(registry);
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
            Some(body) => self.http.send_once(
                req.method,
                &req.url,
                &form,
                req.authorization.as_ref(),
                Some(body.expose().as_bytes()),
            )?,
            None => self.http.send_with_retries(
                req.method,
                &req.url,
                &[],
                req.authorization.as_ref(),
                None,
            )?,
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

    /// Whether every request is logged.
    pub fn verbose(&self) -> bool {
        self.http.verbose
    }

    /// See `Http::retry_cut_body`.
    pub fn retry_cut_body<T>(&self, get: impl FnMut() -> Result<T>) -> Result<T> {
        self.http.retry_cut_body(get)
    }

    /// Whether the current token for `registry` grants `action` on `repository`
    /// (`None` when unknown: no token, or one whose claims cannot be read).
    pub fn grants(&self, registry: &str, repository: &str, action: &str) -> Option<bool> {
        let reg = self.registry(registry);
        let st = reg.state();
        st.token.as_ref()?.grants(repository, action)
    }

    /// Who we are on `registry`, for messages.
    pub fn identity(&self, registry: &str) -> String {
        let reg = self.registry(registry);
        let st = reg.state();
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
        let none_found = matches!(self.registry(registry).state().credential, Some(None));
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

/// The host that serves a registry's API.
fn api_host(registry: &str) -> &str {
    if registry == crate::oci::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// Takes in a 401's challenge to a request sent with credentials or not (`sent`);
/// whether asking again may help. A Bearer challenge asks for more than the token
/// covers: the next token asks for that scope too. A Basic one after credentials were
/// sent will not be met by sending them again.
fn learn(st: &mut State, challenge: Challenge, sent: bool) -> bool {
    let retry = match &challenge {
        Challenge::Bearer { scope, .. } => {
            let mut wanted = st.wanted.clone();
            // One scope parameter may hold several, space-separated.
            wanted.extend(
                scope
                    .iter()
                    .flat_map(|s| s.split_whitespace().map(str::to_string)),
            );
            // A token this request was not sent with (several first requests go out at
            // once, before any token) is not the one refused: it stays for the others.
            if let Some(t) = st.token.take_if(|_| sent) {
                wanted.extend(t.requested);
            }
            st.wanted = auth::merge_scopes(&wanted);
            true
        }
        Challenge::Basic => !sent,
    };
    st.challenge = Some(challenge);
    retry
}

/// A registry's failed first request (or ping), kept for the run and handed to every request for it: the
/// same messages and the same typed causes each time.
#[derive(Debug)]
struct PingFailed(Arc<anyhow::Error>);

impl std::fmt::Display for PingFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for PingFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.chain().nth(1)
    }
}
