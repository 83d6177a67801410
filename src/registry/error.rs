//! The registry layer's errors, typed where callers decide: a registry's answer with its
//! status and error codes (`RegistryError`), and a request that got no answer, by kind
//! (`ConnectError`). Both say what happened in plain words.

use std::io::Read;

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

/// Why a request got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectKind {
    /// The host name could not be resolved.
    Dns,
    /// No connection could be made.
    Refused,
    /// The server's certificate was not accepted.
    Certificate,
    /// TLS failed otherwise (e.g. the server speaks plain HTTP).
    Tls,
    TimedOut,
    /// The connection broke before the answer.
    Broken,
    /// The answer is not HTTP.
    NotHttp,
    Other,
}

/// A request that got no HTTP answer.
#[derive(Debug)]
pub struct ConnectError {
    pub method: String,
    pub url: String,
    pub kind: ConnectKind,
    /// What happened, in plain words, with the innermost cause.
    pub message: String,
}

impl ConnectError {
    pub fn new(method: &str, url: &str, t: &ureq::Transport) -> ConnectError {
        let causes = causes(t);
        let io_kind = causes
            .iter()
            .find_map(|e| e.downcast_ref::<std::io::Error>().map(|io| io.kind()));
        let tls = causes
            .iter()
            .find_map(|e| e.downcast_ref::<rustls::Error>());
        use std::io::ErrorKind as Io;
        let kind = match (t.kind(), tls, io_kind) {
            (
                _,
                Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
                _,
            ) => ConnectKind::Certificate,
            (_, Some(_), _) => ConnectKind::Tls,
            (ureq::ErrorKind::Dns, ..) => ConnectKind::Dns,
            (_, _, Some(Io::TimedOut | Io::WouldBlock)) => ConnectKind::TimedOut,
            (ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::ProxyConnect, ..) => {
                ConnectKind::Refused
            }
            (ureq::ErrorKind::Io, ..) => ConnectKind::Broken,
            (ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader, ..) => ConnectKind::NotHttp,
            _ => ConnectKind::Other,
        };
        let plain = match kind {
            ConnectKind::Dns => "the host name could not be resolved".to_string(),
            ConnectKind::Refused => "could not connect".to_string(),
            ConnectKind::Certificate => "the certificate was not accepted".to_string(),
            ConnectKind::Tls => "TLS failed".to_string(),
            ConnectKind::TimedOut => "timed out".to_string(),
            ConnectKind::Broken => "the connection broke before the registry answered".to_string(),
            ConnectKind::NotHttp => "the answer is not valid HTTP".to_string(),
            ConnectKind::Other => t.kind().to_string(),
        };
        // The innermost cause: an OS error, a TLS alert, ureq's own words.
        let detail = causes
            .last()
            .map(|e| e.to_string())
            .or_else(|| t.message().map(str::to_string));
        let message = match detail {
            Some(d) if !d.is_empty() && d != plain => format!("{plain} ({d})"),
            _ => plain,
        };
        ConnectError {
            method: method.to_string(),
            url: url.to_string(),
            kind,
            message,
        }
    }

    /// Whether the same request may get an answer if sent again.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self.kind,
            ConnectKind::Refused | ConnectKind::TimedOut | ConnectKind::Broken
        )
    }
}

/// The causes under a transport error, outermost first, looking inside I/O errors too
/// (their `source` skips the error they wrap).
fn causes(t: &ureq::Transport) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut next = std::error::Error::source(t);
    while let Some(e) = next {
        out.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    out
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.method, self.url, self.message)
    }
}

impl std::error::Error for ConnectError {}
