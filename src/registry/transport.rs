//! HTTP transport: scheme choice, request logging, error bodies in plain words.

use crate::reference::is_loopback_host;
use anyhow::{Result, anyhow, bail};
use std::io::Read;
use std::time::Duration;

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Allow plain HTTP to registries that are not on loopback.
    pub insecure: bool,
    /// Log every request (method, URL, status) to stderr.
    pub verbose: bool,
}

pub struct Transport {
    agent: ureq::Agent,
    options: Options,
}

impl Transport {
    pub fn new(options: Options) -> Result<Transport> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            .user_agent(concat!("image-rebase/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Transport { agent, options })
    }

    /// `scheme://host` for a registry: plain HTTP on loopback or with `--insecure`.
    pub fn base(&self, registry: &str) -> String {
        let host = if registry == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if is_loopback_host(registry) || self.options.insecure {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    pub fn url(&self, registry: &str, path: &str) -> Result<String> {
        Ok(format!("{}{path}", self.base(registry)))
    }

    /// Resolves a Location header against the registry.
    pub fn resolve(&self, registry: &str, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Ok(location.to_string())
        } else if location.starts_with('/') {
            Ok(format!("{}{location}", self.base(registry)))
        } else {
            bail!("the registry sent an unusable Location header {location:?}")
        }
    }

    /// Sends one request and returns the response whatever its status.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ureq::Response> {
        let mut req = self.agent.request(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => {
                if self.options.verbose {
                    eprintln!("image-rebase: {method} {url} -> {t}");
                }
                return Err(anyhow!("{method} {url}: {}", transport_message(&t)));
            }
        };
        if self.options.verbose {
            eprintln!("image-rebase: {method} {url} -> {}", resp.status());
        }
        Ok(resp)
    }
}

fn transport_message(t: &ureq::Transport) -> String {
    let mut msg = t.kind().to_string();
    if let Some(m) = t.message() {
        msg.push_str(&format!(": {m}"));
    }
    if let Some(source) = std::error::Error::source(t) {
        msg.push_str(&format!(": {source}"));
    }
    if matches!(
        t.kind(),
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
    ) {
        msg.push_str(" (is the registry running and the host name right?)");
    }
    msg
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
    resp.into_reader().take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        bail!("the {what} is more than the {limit} bytes accepted");
    }
    Ok(bytes)
}

/// An error for an unexpected status, with the registry's error codes in plain words.
pub fn status_error(resp: ureq::Response, doing: &str) -> anyhow::Error {
    let status = resp.status();
    let text = resp.status_text().to_string();
    let mut body = String::new();
    let _ = resp.into_reader().take(64 * 1024).read_to_string(&mut body);
    let mut details = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
        for e in v
            .get("errors")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("UNKNOWN");
            let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            let mut d = format!("{code}: {message}");
            if let Some(detail) = e.get("detail").filter(|d| !d.is_null()) {
                d.push_str(&format!(" ({detail})"));
            }
            details.push(d);
        }
    }
    if details.is_empty() {
        anyhow!("{doing}: HTTP {status} {text}")
    } else {
        anyhow!("{doing}: HTTP {status} {text}: {}", details.join("; "))
    }
}
