//! Forward-auth for applications behind a reverse proxy (nginx
//! `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`):
//! `GET /auth/verify` answers 200 with headers naming the user when the
//! access rules ([`crate::access_rules`]) let the request's user into the
//! original URL; 401 (API clients) or a redirect to the login page
//! (browsers) when a login could help; and 403 otherwise: default deny.
//!
//! The original URL (for the login page's `next`) is read from
//! `X-Original-URL` or `X-Forwarded-Proto`/`-Host`/`-Uri` only when the
//! socket peer is a configured trusted proxy, and only kept when its host is
//! one of the configured protected hosts. See `docs/forward-auth.md`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query};
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT, CACHE_CONTROL, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use tessera_axum::{safe_next, Problem, Session};

use crate::access_rules::{evaluate, AccessRule, Subject, Target, Verdict};
use crate::client_ip::TrustedProxies;
use crate::database::Database;
use crate::error_pages::ServerError;
use crate::public_url::PublicUrl;
use crate::services::services;
use tessera_auth::{Authenticator, User};

/// What `/auth/verify` can say about the user in a response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    /// The user name.
    Username,
    /// The numeric user ID.
    UserId,
    /// A verified email address from a linked identity (omitted if none).
    Email,
}

impl FromStr for UserField {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "username" => Ok(UserField::Username),
            "id" | "user_id" => Ok(UserField::UserId),
            "email" => Ok(UserField::Email),
            other => Err(format!("unknown user field {other:?}: expected username, id or email")),
        }
    }
}

/// A response header of `/auth/verify` and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardHeader {
    /// The header name.
    pub name: HeaderName,
    /// Its value.
    pub field: UserField,
}

/// Parses `NAME=FIELD`, e.g. `X-Remote-User=username` (the
/// `--forward-auth-header` flag).
pub fn parse_forward_header(text: &str) -> Result<ForwardHeader, String> {
    let (name, field) = text.split_once('=').ok_or("expected NAME=FIELD, e.g. X-Remote-User=username")?;
    let name = HeaderName::from_str(name.trim()).map_err(|e| format!("header name {name:?}: {e}"))?;
    Ok(ForwardHeader { name, field: field.trim().parse()? })
}

/// Forward-auth settings.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// Hosts (`app.example.com`, `app.example.com:8443`, or `*.example.com`
    /// for every subdomain) the login page may send users back to.
    pub protected_hosts: Vec<String>,
    /// Headers of a 200 answer; default `X-Auth-User` (user name) and
    /// `X-Auth-User-Id`. `X-Auth-Groups` (comma-separated) is always sent.
    pub headers: Vec<ForwardHeader>,
    /// Who may enter which address; empty: nobody (default deny).
    pub rules: Vec<AccessRule>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            protected_hosts: Vec::new(),
            headers: vec![
                ForwardHeader { name: HeaderName::from_static("x-auth-user"), field: UserField::Username },
                ForwardHeader { name: HeaderName::from_static("x-auth-user-id"), field: UserField::UserId },
            ],
            rules: Vec::new(),
        }
    }
}

impl ForwardAuthConfig {
    /// Whether the absolute URL `next` may be redirected to after login:
    /// http(s), no user info, and a host in the protected list.
    pub fn allows_absolute(&self, next: &str) -> bool {
        if next.len() > 2048 || next.chars().any(|c| c.is_control() || c == '\\') {
            return false;
        }
        let Ok(url) = url::Url::parse(next) else { return false };
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(host) = url.host_str() else { return false };
        let host = host.to_ascii_lowercase();
        let with_port = url.port().map(|port| format!("{host}:{port}"));
        self.protected_hosts.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            if let Some(suffix) = allowed.strip_prefix("*.") {
                return host.ends_with(&format!(".{suffix}"));
            }
            allowed == host || with_port.as_deref() == Some(allowed.as_str())
        })
    }

    /// `next` if it is a safe relative path ([`safe_next`]) or an absolute
    /// URL on a protected host; else `None`.
    pub fn checked_next(&self, next: Option<String>) -> Option<String> {
        next.filter(|n| safe_next(n).is_some() || self.allows_absolute(n))
    }
}

/// `?status=401`: answer 401 (with the login URL in `Location`) instead of
/// redirecting, for nginx, whose `auth_request` accepts only 2xx, 401 and 403.
#[derive(Debug, Deserialize)]
pub struct VerifyQuery {
    status: Option<u16>,
}

/// The original URL the proxy is asking about, from a trusted proxy only.
///
/// nginx sends it as `X-Original-URL`; Traefik and Caddy as
/// `X-Forwarded-Proto`/`-Host`/`-Uri` — and copy every header the *client*
/// sent into the check, so a client can add an `X-Original-URL` of its own
/// that the proxy does not overwrite (nginx likewise passes a client's
/// `X-Forwarded-*` on). When both forms are present they must name the same
/// host, port and path, or there is no target at all (a `403`): a proxy
/// never sends two different answers, only a client hiding one behind the
/// other does.
fn original_url(headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let forwarded = get("x-forwarded-host").map(|host| {
        let proto = get("x-forwarded-proto").unwrap_or("https");
        let uri = get("x-forwarded-uri").unwrap_or("/");
        (matches!(proto, "http" | "https") && uri.starts_with('/')).then(|| format!("{proto}://{host}{uri}"))
    });
    let original = get("x-original-url").map(str::to_owned);
    match (original, forwarded) {
        (Some(original), None) => Some(original),
        (None, Some(forwarded)) => forwarded,
        (Some(original), Some(Some(forwarded))) => {
            let same = |a: &str, b: &str| match (Target::from_url(a), Target::from_url(b)) {
                (Some(a), Some(b)) => a.host == b.host && a.port == b.port && a.path == b.path,
                _ => false,
            };
            same(&original, &forwarded).then_some(original)
        }
        (Some(_), Some(None)) | (None, None) => None,
    }
}

services! {
    /// What `/auth/verify` consults: the access rules, and the accounts with
    /// their groups and second factors.
    pub struct Gate {
        auth: Authenticator,
        db: Database,
        config: Arc<ForwardAuthConfig>,
        /// Peers whose `X-Forwarded-*` / `X-Original-URL` headers are believed
        /// (`server.trusted_proxies`, the one list that also decides client
        /// addresses).
        proxies: TrustedProxies,
        public_url: PublicUrl,
    }
}

async fn user_header_value(gate: &Gate, user: &User, field: UserField) -> Result<Option<String>, ServerError> {
    Ok(match field {
        UserField::Username => Some(user.username.clone()),
        UserField::UserId => Some(user.id.to_string()),
        UserField::Email => gate
            .db
            .identities_of(user.id)
            .await
            .map_err(ServerError::unavailable)?
            .into_iter()
            .find_map(|identity| identity.email),
    })
}

/// A 403 answer: an HTML page for browsers, a problem document otherwise
/// (rendered by `render_errors`).
fn forbidden(kind: &str, title: &str, detail: &str) -> Response {
    let problem =
        Problem { status: StatusCode::FORBIDDEN, kind: kind.into(), title: title.into(), detail: detail.into() };
    let mut response = StatusCode::FORBIDDEN.into_response();
    response.extensions_mut().insert(problem);
    response
}

/// `GET /auth/verify`: asks the access rules
/// ([`crate::access_rules::evaluate`]) about the original URL, which must
/// come from a trusted proxy; without one, or with an ambiguous path, the
/// answer is 403.
pub async fn verify(
    gate: Gate,
    session: Session,
    extensions: http::Extensions,
    Query(query): Query<VerifyQuery>,
    headers: HeaderMap,
) -> Response {
    let mut response = decide(&gate, &session, &extensions, &query, &headers).await;
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn decide(
    gate: &Gate,
    session: &Session,
    extensions: &http::Extensions,
    query: &VerifyQuery,
    headers: &HeaderMap,
) -> Response {
    let user = match session.user_id().and_then(|id| id.parse::<i64>().ok()) {
        // The session was just found valid in the shared store; see
        // tessera_auth::signed_in_users for why its user may come from memory.
        Some(id) => match gate.auth.accounts().signed_in().enabled(id).await {
            Ok(user) => user,
            Err(error) => return ServerError::unavailable(error).into_response(),
        },
        None => None,
    };
    let config = &gate.config;
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
    let trusted = peer.is_some_and(|ip| gate.proxies.contains(ip));
    let original = if trusted { original_url(headers) } else { None };
    let browser = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"));

    let Some(target) = original.as_deref().and_then(Target::from_url) else {
        tracing::info!(trusted, has_url = original.is_some(), "forward-auth refused: no usable original URL");
        return forbidden(
            "forward-auth-no-target",
            "Access denied",
            "tessera cannot tell which address this request is for, or its path is ambiguous. \
             The proxy in front must be one of server.trusted_proxies and send X-Original-URL or X-Forwarded-Host.",
        );
    };
    let groups = match &user {
        Some(user) => match gate.db.groups_of(user.id).await {
            Ok(groups) => groups,
            Err(error) => return ServerError::unavailable(error).into_response(),
        },
        None => Vec::new(),
    };
    let subject = user.as_ref().map(|user| Subject {
        username: user.username.clone(),
        groups: groups.clone(),
        // Accounts have no verified email address of their own yet.
        verified_emails: Vec::new(),
    });
    let decision = evaluate(&config.rules, &target, subject.as_ref());
    let user_id = user.as_ref().map(|u| u.id);
    match decision.verdict {
        Verdict::Allow => {}
        Verdict::AllowWithSecondFactor => {
            // `evaluate` asks for a second factor only of a logged-in user.
            let Some(user) = &user else { return login_required(gate, original, browser, query) };
            // A sign-in with two factors (a passkey, or a password and a
            // code or passkey) passes; so does any session of an account
            // with an authenticator app, whose every sign-in asks for it.
            let two_factors = tessera_axum::signed_in_with_two_factors(session);
            match if two_factors { Ok(true) } else { gate.auth.second_factors().is_enabled(user.id).await } {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(user_id, rule = ?decision.rule, host = %target.host, "forward-auth: second factor required");
                    return second_factor_missing(gate, browser, query);
                }
                Err(error) => return ServerError::unavailable(error).into_response(),
            }
        }
        Verdict::LoginRequired => return login_required(gate, original, browser, query),
        Verdict::Deny => {
            tracing::info!(user_id, rule = ?decision.rule, host = %target.host, "forward-auth: access denied");
            let detail = if user.is_some() {
                "Your account may not open this address. Ask an administrator if you need it."
            } else {
                "Nobody may open this address."
            };
            return forbidden("forward-auth-denied", "Access denied", detail);
        }
    }
    let mut response = StatusCode::OK.into_response();
    let Some(user) = user else { return response };
    for header in &config.headers {
        match user_header_value(gate, &user, header.field).await {
            Ok(Some(value)) => {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(header.name.clone(), value);
                }
            }
            Ok(None) => {}
            Err(error) => return error.into_response(),
        }
    }
    if let Ok(value) = HeaderValue::from_str(&groups.join(",")) {
        response.headers_mut().insert(HeaderName::from_static("x-auth-groups"), value);
    }
    response
}

/// A `two_factor` rule and an account without two-step verification:
/// browsers go to set it up (unless the proxy asked for `?status=401`,
/// nginx, which cannot pass a redirect on), everyone else gets 403.
fn second_factor_missing(gate: &Gate, browser: bool, query: &VerifyQuery) -> Response {
    let setup = format!("{}/account/two-factor", gate.public_url.get().unwrap_or("").trim_end_matches('/'));
    if browser && query.status != Some(401) {
        let mut response = StatusCode::FOUND.into_response();
        if let Ok(location) = HeaderValue::from_str(&setup) {
            response.headers_mut().insert(LOCATION, location);
        }
        return response;
    }
    forbidden(
        "second-factor-required",
        "Two-step verification required",
        &format!("This address needs an account with two-step verification. Set it up at {setup}, then try again."),
    )
}

/// Nobody is logged in: 401 for API clients (and nginx), a redirect to the
/// login page for browsers, with the original URL as `next` when it is on
/// a protected host.
fn login_required(gate: &Gate, original: Option<String>, browser: bool, query: &VerifyQuery) -> Response {
    let next = original.filter(|url| gate.config.allows_absolute(url));
    let mut login = format!("{}/login", gate.public_url.get().unwrap_or("").trim_end_matches('/'));
    if let Some(next) = &next {
        login.push_str("?next=");
        login.extend(utf8_percent_encode(next, NON_ALPHANUMERIC));
    }
    let location = HeaderValue::from_str(&login).ok();
    let mut response = if browser && query.status != Some(401) {
        StatusCode::FOUND.into_response()
    } else {
        let problem = Problem {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthenticated".into(),
            title: "Log in first".into(),
            detail: "This address needs a tessera session.".into(),
        };
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.extensions_mut().insert(problem);
        response
    };
    if browser {
        if let Some(location) = location {
            response.headers_mut().insert(LOCATION, location);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ForwardAuthConfig {
        ForwardAuthConfig {
            protected_hosts: vec!["app.example.com".into(), "*.corp.example".into(), "localhost:8080".into()],
            ..ForwardAuthConfig::default()
        }
    }

    #[test]
    fn protected_hosts_only() {
        let c = config();
        for good in [
            "https://app.example.com/x?y=1",
            "http://APP.example.com/",
            "https://wiki.corp.example/page",
            "http://localhost:8080/",
        ] {
            assert!(c.allows_absolute(good), "{good}");
        }
        for bad in [
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://corp.example/",
            "https://user@app.example.com/",
            "javascript:alert(1)",
            "http://localhost:9090/",
            "ftp://app.example.com/",
            "https://app.example.com/\\x",
        ] {
            assert!(!c.allows_absolute(bad), "{bad}");
        }
        assert_eq!(c.checked_next(Some("/profile".into())).as_deref(), Some("/profile"));
        assert_eq!(c.checked_next(Some("//evil".into())), None);
    }

    #[test]
    fn forward_headers() {
        assert_eq!(parse_forward_header("X-Remote-Email=email").unwrap().field, UserField::Email);
        assert!(parse_forward_header("X-Remote-Email").is_err());
        assert!(parse_forward_header("X-A=password").is_err());
    }

    #[test]
    fn original_url_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("app.example.com"));
        h.insert("x-forwarded-uri", HeaderValue::from_static("/a?b=1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert_eq!(original_url(&h).as_deref(), Some("http://app.example.com/a?b=1"));
        // A client hiding another address behind the proxy's (Caddy and
        // Traefik pass client headers on): no target at all.
        h.insert("x-original-url", HeaderValue::from_static("https://app.example.com/z"));
        assert_eq!(original_url(&h), None, "two different original URLs");
        h.insert("x-original-url", HeaderValue::from_static("http://app.example.com/a?b=1"));
        assert_eq!(original_url(&h).as_deref(), Some("http://app.example.com/a?b=1"), "the same twice");
        let mut nginx = HeaderMap::new();
        nginx.insert("x-original-url", HeaderValue::from_static("https://app.example.com/z"));
        assert_eq!(original_url(&nginx).as_deref(), Some("https://app.example.com/z"));
    }
}
