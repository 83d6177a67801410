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
    /// Whether an earlier attempt of the same request got an answer (so the registry
    /// is there, on this scheme).
    pub answered: bool,
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
            answered: false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(errors: &[(&str, &str)]) -> RegistryError {
        RegistryError {
            doing: "the registry refused the manifest".into(),
            status: 400,
            status_text: "Bad Request".into(),
            errors: errors
                .iter()
                .map(|(c, m)| (c.to_string(), m.to_string()))
                .collect(),
        }
    }

    #[test]
    fn every_registry_error_code_is_said_in_plain_words() {
        for (code, plain) in [
            ("MANIFEST_BLOB_UNKNOWN", "references a blob that is not in"),
            ("BLOB_UNKNOWN", "the blob is not in this repository"),
            ("MANIFEST_UNKNOWN", "no such manifest"),
            ("NAME_UNKNOWN", "no such repository"),
            ("DENIED", "access denied"),
            ("UNAUTHORIZED", "authentication required"),
            ("TOOMANYREQUESTS", "rate limiting"),
            ("MANIFEST_INVALID", "rejected the manifest as invalid"),
            ("DIGEST_INVALID", "does not match its digest"),
            ("UNSUPPORTED", "does not support this operation"),
        ] {
            let shown = refused(&[(code, "m")]).to_string();
            assert!(shown.ends_with(&format!("{code}: m ({})", explain(code).unwrap())));
            assert!(shown.contains(plain), "{code}: {shown}");
        }
        assert_eq!(
            refused(&[("SOMETHING_NEW", "m")]).to_string(),
            "the registry refused the manifest: HTTP 400 Bad Request: SOMETHING_NEW: m"
        );
    }

    #[test]
    fn several_registry_errors_are_listed_in_order() {
        assert_eq!(
            refused(&[("DENIED", "no"), ("SOMETHING_NEW", "also")]).to_string(),
            "the registry refused the manifest: HTTP 400 Bad Request: DENIED: no (access denied); \
             SOMETHING_NEW: also"
        );
        assert_eq!(
            refused(&[]).to_string(),
            "the registry refused the manifest: HTTP 400 Bad Request"
        );
    }

    #[test]
    fn the_codes_of_a_long_error_body_are_read() {
        let message = "x".repeat(4000);
        let body = format!(r#"{{"errors":[{{"code":"DENIED","message":"{message}"}}]}}"#);
        let resp: ureq::Response = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .parse()
        .unwrap();
        let err = status_error(resp, "pulling");
        let e = err.downcast_ref::<RegistryError>().unwrap();
        assert!(e.has_code("DENIED"), "{e:?}");
        assert_eq!(e.status, 403);
    }

    #[test]
    fn only_a_refused_timed_out_or_broken_connection_is_temporary() {
        use ConnectKind::*;
        for (kind, temporary) in [
            (Refused, true),
            (TimedOut, true),
            (Broken, true),
            (Dns, false),
            (Certificate, false),
            (Tls, false),
            (NotHttp, false),
            (Other, false),
        ] {
            let e = ConnectError {
                method: "GET".into(),
                url: "http://r/v2/".into(),
                kind,
                message: "m".into(),
                answered: false,
            };
            assert_eq!(e.is_temporary(), temporary, "{kind:?}");
        }
    }

    #[test]
    fn a_refused_connection_is_said_with_the_system_s_words() {
        // A port that was free a moment ago: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/v2/");
        let Err(ureq::Error::Transport(t)) = ureq::get(&url).call() else {
            panic!("a connection to a closed port");
        };
        let e = ConnectError::new("GET", &url, &t);
        assert_eq!(e.kind, ConnectKind::Refused);
        assert!(
            e.message.starts_with("could not connect ("),
            "{}",
            e.message
        );
        assert!(e.message.contains("os error"), "{}", e.message);
        assert_eq!(e.to_string(), format!("GET {url}: {}", e.message));
    }
}
