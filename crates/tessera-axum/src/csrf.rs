//! CSRF protection: tokens bound to the session, checked on every form post.
//!
//! A token is `HMAC-SHA256(key, binding)`, where the binding is a secret the
//! attacker cannot read: the session's key when the visitor has a session,
//! otherwise a random pre-session secret kept in an `HttpOnly` cookie (so the
//! login and registration forms are protected too, against login CSRF).
//! Verification accepts a token made from either binding the request
//! carries, so a form stays valid when the session is created or emptied
//! between rendering and posting. The pre-session secret is replaced
//! whenever a request logs a user in or out ([`tessera::Session::owner_changed`]),
//! so a token minted for the login form dies with the login. Requests that
//! browsers mark as cross-site (`Sec-Fetch-Site: cross-site`) or whose
//! `Origin` is another host are refused before the token is even looked
//! at. The request's own host is its authority (HTTP/2 `:authority` or
//! HTTP/1.1 `Host`), a [`ForwardedHost`] the application vouches for, or
//! one of the origins given to
//! [`SessionLayer::with_allowed_origins`](crate::SessionLayer::with_allowed_origins).
//!
//! Each rendering masks the token afresh (a random 32-byte pad, then the
//! token XOR the pad, base64url: 86 characters), so the bytes on a page
//! change every time and compressed pages do not leak the token to a
//! BREACH-style length oracle. Verification unmasks; the bare 43-character
//! token is accepted too.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, HOST, ORIGIN};
use http::request::Parts;
use http::StatusCode;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::extract::slot;
use crate::layer::SessionSlot;
use crate::rejection::{CsrfRejection, FormRejection, Rejection};

/// Base name of the pre-session cookie (prefixed like the session cookie).
pub(crate) const PRE_SESSION_COOKIE: &str = "csrf";

/// Largest form body [`CsrfForm`] reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The secret that signs CSRF tokens. Generate it once and keep it (the
/// tessera server stores it in its database) so tokens survive restarts and
/// work across instances.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    /// A fresh random key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        CsrfKey(bytes)
    }

    /// A key from stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CsrfKey(bytes)
    }

    fn sign(&self, purpose: &[u8], binding: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(purpose);
        mac.update(binding);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

/// A fresh pre-session secret: 32 random bytes, base64url.
pub(crate) fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn valid_secret(value: &str) -> bool {
    value.len() == 43 && URL_SAFE_NO_PAD.decode(value).map(|b| b.len() == 32).unwrap_or(false)
}

fn session_token(key: &CsrfKey, session_key: &tessera::SessionKey) -> [u8; 32] {
    key.sign(b"tessera csrf session v1\0", session_key.as_bytes())
}

fn pre_session_token(key: &CsrfKey, secret: &str) -> [u8; 32] {
    key.sign(b"tessera csrf pre-session v1\0", secret.as_bytes())
}

/// `base64url(pad || token XOR pad)` with a fresh random pad.
fn masked(token: [u8; 32]) -> String {
    let mut pad = [0u8; 32];
    OsRng.fill_bytes(&mut pad);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&pad);
    for (i, byte) in token.iter().enumerate() {
        out[32 + i] = byte ^ pad[i];
    }
    URL_SAFE_NO_PAD.encode(out)
}

/// The token inside a submitted value: masked (86 characters) or bare (43).
fn unmasked(submitted: &str) -> Option<[u8; 32]> {
    let bytes = URL_SAFE_NO_PAD.decode(submitted).ok()?;
    match bytes.len() {
        32 => bytes.try_into().ok(),
        64 => {
            let mut token = [0u8; 32];
            for (i, byte) in token.iter_mut().enumerate() {
                *byte = bytes[32 + i] ^ bytes[i];
            }
            Some(token)
        }
        _ => None,
    }
}

/// The CSRF token to embed in this request's forms as a hidden `csrf_token`
/// field (or to send as `X-CSRF-Token` from scripts).
#[derive(Clone, Debug)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    async fn for_slot(slot: &Arc<SessionSlot>) -> Result<Self, Rejection> {
        let session = slot.session().await?;
        let key = &slot.config.csrf_key;
        if let Some(session_key) = session.key() {
            return Ok(CsrfToken(masked(session_token(key, &session_key))));
        }
        if let Some(secret) = &slot.pre_session_secret {
            return Ok(CsrfToken(masked(pre_session_token(key, secret))));
        }
        let mut minted = slot.minted_pre_session_secret.lock().unwrap_or_else(|p| p.into_inner());
        let secret = minted.get_or_insert_with(new_secret);
        Ok(CsrfToken(masked(pre_session_token(key, secret))))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = slot(parts)?;
        CsrfToken::for_slot(&slot).await
    }
}

/// A digest naming the browser a request comes from, to bind server-side
/// state that outlives the request (a passkey challenge kept in a database,
/// say) to the browser that made it: an HMAC, under the CSRF key, of the
/// browser's pre-session secret (the `HttpOnly` cookie CSRF tokens of
/// visitors without a session are bound to). A browser that has none gets
/// one minted by this request (set as a cookie with the response). Another
/// browser, or a client that sends no cookie, has another binding. The
/// secret is replaced when a request logs in or out, so the browser's
/// binding changes with its login state; state already bound to the old
/// binding is not deleted by that, though: until it expires, a client that
/// still sends the old (`HttpOnly`) cookie reaches it. Bind nothing to it
/// that must end with the login, or delete it at the login. The value is 64
/// hex digits and reveals nothing of the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserBinding(String);

impl BrowserBinding {
    /// The digest, 64 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BrowserBinding {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = slot(parts)?;
        let secret = match &slot.pre_session_secret {
            Some(secret) => secret.clone(),
            None => {
                let mut minted = slot.minted_pre_session_secret.lock().unwrap_or_else(|p| p.into_inner());
                minted.get_or_insert_with(new_secret).clone()
            }
        };
        let digest = slot.config.csrf_key.sign(b"tessera browser binding v1\0", secret.as_bytes());
        Ok(BrowserBinding(digest.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

/// The host a trusted reverse proxy says the browser addressed (its
/// `X-Forwarded-Host`). Insert it as a request extension before
/// [`SessionLayer`](crate::SessionLayer) runs, and only for requests that
/// really come from a proxy you trust: the `Origin` check then also accepts
/// forms posted from this host. (The library cannot know which peers are
/// proxies; the tessera server inserts it for `--trusted-proxy` peers.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedHost(pub String);

/// An origin as compared: `scheme://host[:port]`, lower case, without a
/// trailing slash or path, and without the scheme's default port.
pub(crate) fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if scheme.is_empty() || authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", strip_default_port(scheme, authority)))
}

/// `authority` without `:443` (https) or `:80` (http).
fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// Refuses requests that the browser says come from another site, or whose
/// `Origin` is none of the request's own: the authority it was sent to
/// (HTTP/2's `:authority`, which browsers send instead of `Host`, or
/// HTTP/1.1's `Host`), the host a trusted proxy forwarded
/// ([`ForwardedHost`]), or an origin the application configured
/// ([`SessionLayer::with_allowed_origins`](crate::SessionLayer::with_allowed_origins),
/// e.g. its public URL behind a proxy that rewrites `Host`).
fn check_origin(parts: &Parts, allowed: &[String]) -> Result<(), &'static str> {
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        if site.as_bytes() == b"cross-site" {
            return Err("This request came from another site.");
        }
    }
    let Some(origin) = parts.headers.get(ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().map_err(|_| "The request's origin is invalid.")?;
    let foreign = "This request came from another origin.";
    if origin == "null" {
        return Err(foreign);
    }
    let origin = normalize_origin(origin).ok_or("The request's origin is invalid.")?;
    if allowed.contains(&origin) {
        return Ok(());
    }
    let (scheme, origin_host) = origin.split_once("://").unwrap_or(("", ""));
    let same = |authority: &str| strip_default_port(scheme, authority.trim()).eq_ignore_ascii_case(origin_host);
    let uri_authority = parts.uri.authority().map(|a| a.as_str());
    let host = parts.headers.get(HOST).and_then(|h| h.to_str().ok());
    let forwarded = parts.extensions.get::<ForwardedHost>().map(|f| f.0.as_str());
    if [uri_authority, host, forwarded].into_iter().flatten().any(same) {
        Ok(())
    } else {
        Err(foreign)
    }
}

/// Checks `submitted` against the tokens this request's bindings allow.
pub(crate) async fn verify(parts: &Parts, submitted: Option<&str>) -> Result<(), Rejection> {
    let slot = slot(parts)?;
    let json = slot.json();
    check_origin(parts, &slot.config.allowed_origins).map_err(|reason| CsrfRejection { json, reason })?;
    let missing = || CsrfRejection {
        json,
        reason: "The form's security token is missing or expired. Reload the page and try again.",
    };
    let submitted = submitted.ok_or_else(missing)?;
    let session = slot.session().await?;
    let key = &slot.config.csrf_key;
    let submitted = unmasked(submitted).ok_or_else(missing)?;
    let mut valid = false;
    if let Some(session_key) = session.key() {
        valid |= bool::from(session_token(key, &session_key).ct_eq(&submitted));
    }
    if let Some(secret) = &slot.pre_session_secret {
        valid |= bool::from(pre_session_token(key, secret).ct_eq(&submitted));
    }
    if valid {
        Ok(())
    } else {
        Err(missing().into())
    }
}

/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Verifies the `X-CSRF-Token` header of a request that the session cookie
/// authenticates, with the same rules as [`CsrfForm`]: the token must match
/// the session (or pre-session) binding, and cross-site requests are refused
/// first. For JSON APIs, where the body is not a form.
///
/// Requests authenticated otherwise (a bearer token, which browsers never
/// attach on their own) need no CSRF token and should not call this.
///
/// Rejection: `403` (`/problems/csrf`), or `503` if the session store is down.
pub async fn verify_csrf_header(parts: &Parts) -> Result<(), Rejection> {
    let submitted = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    verify(parts, submitted).await
}

/// An extractor that succeeds only when [`verify_csrf_header`] does.
///
/// ```no_run
/// use tessera_axum::{CsrfHeader, RequireUser};
/// async fn delete_thing(_user: RequireUser, _csrf: CsrfHeader) -> &'static str {
///     "deleted"
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct CsrfHeader;

impl<S: Send + Sync> FromRequestParts<S> for CsrfHeader {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        verify_csrf_header(parts).await.map(|()| CsrfHeader)
    }
}

#[derive(Deserialize)]
struct TokenField {
    csrf_token: Option<String>,
}

/// The `csrf_token` field of a URL-encoded body, decoded before the rest of
/// the form so that a forged request is refused before its fields are read.
pub(crate) fn token_field(body: &[u8]) -> Result<Option<String>, serde_urlencoded::de::Error> {
    serde_urlencoded::from_bytes::<TokenField>(body).map(|field| field.csrf_token)
}

/// A URL-encoded form whose `csrf_token` field was verified.
///
/// Rejections: `415` for another content type, `413` over 64 KiB, `400` for
/// a body that does not decode into `T`, `403` for a missing or wrong token
/// or a cross-site request.
#[derive(Debug, Clone)]
pub struct CsrfForm<T>(pub T);

impl<S, T> FromRequest<S> for CsrfForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let json = crate::wants_json(&parts.headers);
        let reject = |status: StatusCode, detail: &str| {
            Rejection::from(FormRejection { status, detail: detail.to_owned(), json })
        };
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(reject(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Expected a URL-encoded form."));
        }
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| reject(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
        let token = token_field(&bytes).map_err(|_| reject(StatusCode::BAD_REQUEST, "The form is malformed."))?;
        verify(&parts, token.as_deref()).await?;
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| reject(StatusCode::BAD_REQUEST, &format!("The form is malformed: {e}.")))?;
        Ok(CsrfForm(form))
    }
}

#[cfg(test)]
mod mask_tests {
    use super::*;

    #[test]
    fn masking_changes_the_text_not_the_token() {
        let token = [7u8; 32];
        let (a, b) = (masked(token), masked(token));
        assert_eq!(a.len(), 86);
        assert_ne!(a, b, "a fresh pad each time");
        assert_eq!(unmasked(&a), Some(token));
        assert_eq!(unmasked(&b), Some(token));
        assert_eq!(unmasked(&URL_SAFE_NO_PAD.encode(token)), Some(token), "the bare token is accepted");
        assert_eq!(unmasked("short"), None);
        assert_eq!(unmasked("not base64 !!"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn origins_normalize() {
        assert_eq!(normalize_origin("https://Auth.Example.com/").as_deref(), Some("https://auth.example.com"));
        assert_eq!(normalize_origin("https://auth.example.com:443/x").as_deref(), Some("https://auth.example.com"));
        assert_eq!(normalize_origin("http://localhost:8080").as_deref(), Some("http://localhost:8080"));
        assert_eq!(normalize_origin("localhost:8080"), None);
        assert_eq!(normalize_origin("https://"), None);
    }

    /// Issue #14 item 9: HTTP/2 requests carry `:authority`, not `Host`.
    #[test]
    fn http2_requests_are_compared_with_their_authority() {
        let h2 = parts("https://localhost:8443/login", &[("origin", "https://localhost:8443")]);
        assert_eq!(check_origin(&h2, &[]), Ok(()));
        let h2_default_port = parts("https://auth.example.com/login", &[("origin", "https://auth.example.com")]);
        assert_eq!(check_origin(&h2_default_port, &[]), Ok(()));
        let forged = parts("https://localhost:8443/login", &[("origin", "https://evil.example")]);
        assert!(check_origin(&forged, &[]).is_err());
        // HTTP/1.1: the Host header, as before.
        let h1 = parts("/login", &[("origin", "http://localhost:3000"), ("host", "localhost:3000")]);
        assert_eq!(check_origin(&h1, &[]), Ok(()));
        let h1_foreign = parts("/login", &[("origin", "http://evil.example"), ("host", "localhost:3000")]);
        assert!(check_origin(&h1_foreign, &[]).is_err());
        assert!(check_origin(&parts("/login", &[("origin", "null"), ("host", "x")]), &[]).is_err());
    }

    #[test]
    fn proxies_configured_origins_and_forwarded_hosts() {
        // nginx's plain proxy_pass: Host is the upstream's address.
        let proxied = parts("/login", &[("origin", "https://auth.example.com"), ("host", "127.0.0.1:3000")]);
        assert!(check_origin(&proxied, &[]).is_err());
        let allowed = vec![normalize_origin("https://auth.example.com/").unwrap()];
        assert_eq!(check_origin(&proxied, &allowed), Ok(()));
        let other = parts("/login", &[("origin", "http://auth.example.com"), ("host", "127.0.0.1:3000")]);
        assert!(check_origin(&other, &allowed).is_err(), "the scheme is part of the origin");
        let mut forwarded = parts("/login", &[("origin", "https://app.example.com"), ("host", "127.0.0.1:3000")]);
        assert!(check_origin(&forwarded, &[]).is_err());
        forwarded.extensions.insert(ForwardedHost("app.example.com".into()));
        assert_eq!(check_origin(&forwarded, &[]), Ok(()));
    }
}
