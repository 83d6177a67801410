//! Registry authentication: the `WWW-Authenticate` challenge, Basic credentials and
//! Bearer tokens (one token for every scope an operation needs, reused until it expires).

use super::credentials::{Credential, Found};
use super::secret::Secret;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the registry asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header: `Bearer realm="...",service="...",scope="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let mut map = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        map.insert(key, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: map.remove("realm")?,
            service: map.remove("service"),
            scope: map.remove("scope"),
            error: map.remove("error"),
        }),
        _ => None,
    }
}

/// A bearer token and what it was asked for and granted.
#[derive(Clone, Debug)]
pub struct Token {
    pub value: Secret,
    pub expires: Instant,
    /// The scopes requested (`repository:NAME:ACTIONS`).
    pub requested: Vec<String>,
    /// What the token grants, when it is a JWT whose claims can be read: repository name
    /// to actions.
    pub granted: Option<BTreeMap<String, Vec<String>>>,
}

impl Token {
    /// Whether the token was asked for every action of `scope`.
    pub fn covers(&self, scope: &str) -> bool {
        let Some((name, actions)) = split_scope(scope) else {
            return self.requested.iter().any(|r| r == scope);
        };
        actions.iter().all(|a| {
            self.requested
                .iter()
                .any(|r| split_scope(r).is_some_and(|(n, acts)| n == name && acts.contains(a)))
        })
    }

    pub fn fresh(&self) -> bool {
        Instant::now() + Duration::from_secs(5) < self.expires
    }

    /// Whether the token grants `action` on `repository`; `None` when unknown.
    pub fn grants(&self, repository: &str, action: &str) -> Option<bool> {
        let granted = self.granted.as_ref()?;
        Some(
            granted
                .get(repository)
                .is_some_and(|acts| acts.iter().any(|a| a == action || a == "*")),
        )
    }
}

/// `repository:team/app:pull,push` as (`team/app`, [pull, push]).
pub fn split_scope(scope: &str) -> Option<(&str, Vec<&str>)> {
    let rest = scope.strip_prefix("repository:")?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((name, actions.split(',').collect()))
}

/// Merges scopes: one entry per repository, actions united, first-seen order kept;
/// other scopes (`registry:catalog:*`) kept once as they are.
pub fn merge_scopes<'a>(scopes: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut actions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for scope in scopes {
        let Some((name, acts)) = split_scope(scope) else {
            let other = format!("\0{scope}");
            if !scope.is_empty() && !order.contains(&other) {
                order.push(other);
            }
            continue;
        };
        if !actions.contains_key(name) {
            order.push(name.to_string());
        }
        let entry = actions.entry(name.to_string()).or_default();
        for a in acts {
            if !entry.iter().any(|e| e == a) {
                entry.push(a.to_string());
            }
        }
    }
    order
        .into_iter()
        .map(|name| {
            if let Some(other) = name.strip_prefix('\0') {
                return other.to_string();
            }
            let mut acts = actions.remove(&name).unwrap_or_default();
            acts.sort_by_key(|a| match a.as_str() {
                "pull" => 0,
                "push" => 1,
                _ => 2,
            });
            format!("repository:{name}:{}", acts.join(","))
        })
        .collect()
}

/// The `Authorization` value for Basic credentials.
pub fn basic_header(username: &str, password: &Secret) -> Secret {
    let raw = format!("{username}:{}", password.expose());
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// How to ask the token service: the request to send.
pub struct TokenRequest {
    pub method: &'static str,
    pub url: String,
    pub authorization: Option<Secret>,
    /// Form body for POST (contains the refresh token: never log it).
    pub body: Option<Secret>,
}

pub fn token_request(
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    credential: Option<&Found>,
) -> TokenRequest {
    let enc = |s: &str| percent_encode(s);
    match credential.map(|f| &f.credential) {
        Some(Credential::IdentityToken(refresh)) => {
            let mut form = format!(
                "grant_type=refresh_token&client_id=image-rebase&refresh_token={}",
                enc(refresh.expose())
            );
            if let Some(s) = service {
                form.push_str(&format!("&service={}", enc(s)));
            }
            if !scopes.is_empty() {
                form.push_str(&format!("&scope={}", enc(&scopes.join(" "))));
            }
            TokenRequest {
                method: "POST",
                url: realm.to_string(),
                authorization: None,
                body: Some(Secret::new(form)),
            }
        }
        other => {
            let mut url = realm.to_string();
            let mut sep = if url.contains('?') { '&' } else { '?' };
            if let Some(s) = service {
                url.push_str(&format!("{sep}service={}", enc(s)));
                sep = '&';
            }
            for scope in scopes {
                url.push_str(&format!("{sep}scope={}", enc(scope)));
                sep = '&';
            }
            let authorization = match other {
                Some(Credential::Basic { username, password }) => {
                    Some(basic_header(username, password))
                }
                _ => None,
            };
            TokenRequest {
                method: "GET",
                url,
                authorization,
                body: None,
            }
        }
    }
}

/// Reads a token service's answer: `token` or `access_token`, `expires_in`.
pub fn parse_token_response(body: &[u8], requested: Vec<String>) -> Result<Token> {
    let v: Value =
        serde_json::from_slice(body).context("the token service's answer is not JSON")?;
    let value = v
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .or_else(|| {
            v.get("access_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        })
        .ok_or_else(|| {
            anyhow!("the token service's answer has neither \"token\" nor \"access_token\"")
        })?;
    // The spec's default lifetime is 60 s.
    let expires_in = v
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(60)
        .max(1);
    Ok(Token {
        granted: jwt_access(value),
        value: Secret::new(value),
        // A day at most: a token service's number must not overflow the clock.
        expires: Instant::now() + Duration::from_secs(expires_in.min(86_400)),
        requested,
    })
}

/// The `access` claim of a JWT, when the token is one.
fn jwt_access(token: &str) -> Option<BTreeMap<String, Vec<String>>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let mut out = BTreeMap::new();
    for entry in claims.get("access")?.as_array()? {
        if entry.get("type").and_then(Value::as_str) != Some("repository") {
            continue;
        }
        let name = entry.get("name")?.as_str()?.to_string();
        let actions = entry
            .get("actions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, actions);
    }
    Some(out)
}

/// Percent-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks that a realm may receive credentials.
pub fn check_realm(realm: &str, registry_is_plain_loopback: bool) -> Result<()> {
    if realm.starts_with("https://") {
        return Ok(());
    }
    if realm.starts_with("http://") {
        if registry_is_plain_loopback {
            return Ok(());
        }
        bail!(
            "the registry sends credentials to a token service on plain HTTP ({realm}); refused: \
             only a plain-HTTP registry on loopback may use one"
        );
    }
    bail!("the registry named an unusable token service {realm:?}")
}

/// Most repository scopes asked for in one token.
pub const MAX_SCOPES: usize = 16;

/// At most MAX_SCOPES scopes for one token request: the ones `needed` by this request
/// first, then the rest of `requested` (the current operation's, newest first).
pub fn bound_scopes(requested: Vec<String>, needed: &[String]) -> Vec<String> {
    if requested.len() <= MAX_SCOPES {
        return requested;
    }
    let mut kept = merge_scopes(needed);
    kept.extend(requested.into_iter().filter(|r| !needed.contains(r)));
    let mut kept = merge_scopes(&kept);
    kept.truncate(MAX_SCOPES.max(needed.len()));
    kept
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
    if rest == "_catalog" {
        return vec!["registry:catalog:*".to_string()];
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            scopes_for("GET", "http://r/v2/_catalog?n=1000&last=a"),
            ["registry:catalog:*"]
        );
        assert_eq!(
            scopes_for("GET", "http://r/v2/team/app/tags/list?n=10"),
            ["repository:team/app:pull"]
        );
    }

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:team/app:pull,push".into()),
                error: None
            })
        );
        let c = parse_challenge(r#"Bearer realm="http://127.0.0.1:1/token", service="s", error="insufficient_scope",scope="repository:a:pull""#).unwrap();
        assert!(matches!(c, Challenge::Bearer { error: Some(e), .. } if e == "insufficient_scope"));
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "a realm is required"
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn scopes_merge_per_repository() {
        let s: Vec<String> = [
            "repository:a:push",
            "repository:b:pull",
            "repository:a:pull",
            "repository:b:pull",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            merge_scopes(&s),
            ["repository:a:pull,push", "repository:b:pull"]
        );
        let with_catalog: Vec<String> = ["registry:catalog:*", "repository:a:pull"]
            .iter()
            .chain(&["registry:catalog:*"])
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            merge_scopes(&with_catalog),
            ["registry:catalog:*", "repository:a:pull"],
            "a registry scope is kept once"
        );
    }

    #[test]
    fn token_covers_and_grants() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            r#"{"access":[{"type":"repository","name":"team/app","actions":["pull","push"]}]}"#,
        );
        let body = format!(r#"{{"access_token":"h.{claims}.s","expires_in":300}}"#);
        let t = parse_token_response(
            body.as_bytes(),
            vec![
                "repository:team/app:pull,push".into(),
                "repository:base:pull".into(),
            ],
        )
        .unwrap();
        assert!(t.covers("repository:team/app:push") && t.covers("repository:base:pull"));
        assert!(!t.covers("repository:base:push") && !t.covers("repository:other:pull"));
        assert_eq!(t.grants("team/app", "push"), Some(true));
        assert_eq!(t.grants("base", "pull"), Some(false));
        assert!(t.fresh());
        let opaque = parse_token_response(br#"{"token":"opaque"}"#, vec![]).unwrap();
        assert_eq!(opaque.grants("x", "pull"), None);
        assert!(parse_token_response(br#"{"nothing":1}"#, vec![]).is_err());
        // A huge lifetime does not overflow the clock.
        let long = parse_token_response(
            br#"{"token":"t","expires_in":18446744073709551615}"#,
            vec![],
        )
        .unwrap();
        assert!(long.fresh());
    }

    #[test]
    fn token_requests_carry_scopes_and_hide_secrets() {
        let basic = Found {
            credential: Credential::Basic {
                username: "alice".into(),
                password: Secret::new("pw"),
            },
            source: "t".into(),
        };
        let r = token_request(
            "https://a/token",
            Some("reg"),
            &["repository:x/y:pull,push".into()],
            Some(&basic),
        );
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.url,
            "https://a/token?service=reg&scope=repository%3Ax%2Fy%3Apull%2Cpush"
        );
        assert!(!r.url.contains("pw"));
        assert!(r.authorization.is_some());
        let id = Found {
            credential: Credential::IdentityToken(Secret::new("refresh-me")),
            source: "t".into(),
        };
        let r = token_request("https://a/token", None, &[], Some(&id));
        assert_eq!((r.method, r.url.as_str()), ("POST", "https://a/token"));
        assert!(
            r.body
                .unwrap()
                .expose()
                .contains("refresh_token=refresh-me")
        );
    }

    #[test]
    fn realms_on_plain_http_need_a_loopback_registry() {
        assert!(check_realm("https://auth.example/token", false).is_ok());
        assert!(check_realm("http://127.0.0.1:5001/token", true).is_ok());
        assert!(check_realm("http://auth.example/token", false).is_err());
        assert!(check_realm("ftp://x", true).is_err());
    }
}
