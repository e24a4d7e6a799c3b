//! The login-flow cookie: what the callback needs to finish a login that
//! this browser started (PKCE verifier, `state`, `nonce`, where to go next),
//! sealed under a server secret with the sealer of cookie sessions
//! (`tessera-store-cookie`: XChaCha20-Poly1305, the cookie name bound as
//! associated data) so the browser can neither read nor alter it.
//!
//! It is short-lived (ten minutes), `HttpOnly`, and always `SameSite=Lax`:
//! the provider's redirect back is a cross-site top-level navigation, which
//! `Lax` cookies accompany and `Strict` ones do not.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tessera::CookieSealer as _;
use tessera::{CookieConfig, SameSite};
use tessera_axum::cookies;
use tessera_store_cookie::{CookieSealer, SealerError, SealingKey};

/// How long a started login may take.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);

const COOKIE: &str = "oidc-flow";

/// A login flow in progress.
#[derive(Clone, Serialize, Deserialize)]
pub struct Flow {
    /// Random ID, recorded when the callback is handled so it runs once.
    pub id: String,
    /// The provider's `id`.
    pub provider: String,
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub pkce_verifier: String,
    /// Where to go after login (already checked).
    pub next: Option<String>,
    /// The logged-in user who asked to link an identity, if any.
    pub link_user: Option<i64>,
    /// The public handle of the session that asked to link (see
    /// [`tessera::SessionHandle`]): the callback links only into that same
    /// session, still logged in as `link_user`, so a link left unfinished
    /// by someone who then logged out cannot be finished by the next
    /// person at the browser.
    #[serde(default)]
    pub link_session: Option<String>,
    /// The logged-in user who asked to confirm who they are at the
    /// provider (a step-up for linking, unlinking or deleting), if any.
    #[serde(default)]
    pub reauth_user: Option<i64>,
    /// The `max_age` sent to the provider, in seconds, if any: the callback
    /// then requires an `auth_time` at most that old. Kept here because
    /// the browser carries the authorization request and could strip the
    /// parameter from it.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Unix milliseconds after which the flow is refused.
    pub expires_at: i64,
}

/// Seals and opens flow cookies.
#[derive(Clone)]
pub struct FlowSealer {
    sealer: CookieSealer,
    cookie: CookieConfig,
}

impl FlowSealer {
    /// A sealer with the 32-byte server secret `key`, writing cookies with
    /// the session cookie's `Secure` setting.
    pub fn new(key: [u8; 32], session_cookie: &CookieConfig) -> Result<Self, SealerError> {
        // The flow cookie belongs to tessera's host only and must survive the
        // provider's cross-site redirect: no Domain, always Lax.
        let cookie = CookieConfig { domain: None, same_site: SameSite::Lax, ..session_cookie.clone() };
        let sealer = CookieSealer::new(&cookie.prefixed(COOKIE), vec![SealingKey::from_bytes(0, key)])?;
        Ok(FlowSealer { sealer, cookie })
    }

    /// The cookie's name (`__Host-oidc-flow` when secure).
    pub fn cookie_name(&self) -> String {
        self.cookie.prefixed(COOKIE)
    }

    /// Adds the cookie carrying `flow`.
    pub fn set(&self, flow: &Flow, headers: &mut HeaderMap) -> Result<(), String> {
        let plain = serde_json::to_vec(flow).map_err(|e| e.to_string())?;
        let cookie = self.cookie.cookie(self.cookie_name(), self.sealer.seal(&plain), Some(FLOW_LIFETIME));
        cookies::set(headers, &cookie);
        Ok(())
    }

    /// Adds the cookie that removes the flow cookie.
    pub fn clear(&self, headers: &mut HeaderMap) {
        let cookie = self.cookie.cookie(self.cookie_name(), String::new(), Some(Duration::ZERO));
        cookies::set(headers, &cookie);
    }

    /// The flow the request's cookie carries, if it opens (any tampering
    /// fails authentication) and has not expired at `now_millis`.
    pub fn read(&self, headers: &HeaderMap, now_millis: i64) -> Option<Flow> {
        let name = self.cookie_name();
        let opened = self.sealer.open(cookies::value(headers, &name)?)?;
        let flow: Flow = serde_json::from_slice(&opened.payload).ok()?;
        (flow.expires_at > now_millis).then_some(flow)
    }
}

/// A fresh random identifier (URL-safe, 128 bits).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::SET_COOKIE;
    use http::HeaderValue;

    fn flow(expires_at: i64) -> Flow {
        Flow {
            id: random_id(),
            provider: "p".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            next: None,
            link_user: None,
            link_session: None,
            reauth_user: None,
            max_age: Some(600),
            expires_at,
        }
    }

    fn request_with(set: &HeaderMap) -> HeaderMap {
        let set_cookie = set.get(SET_COOKIE).unwrap().to_str().unwrap();
        let pair = set_cookie.split(';').next().unwrap();
        let mut request = HeaderMap::new();
        request.insert(http::header::COOKIE, HeaderValue::from_str(pair).unwrap());
        request
    }

    #[test]
    fn round_trips_and_refuses_tampering_expiry_and_other_keys() {
        let sealer = FlowSealer::new([7; 32], &CookieConfig::default()).unwrap();
        let mut headers = HeaderMap::new();
        sealer.set(&flow(1000), &mut headers).unwrap();
        let set = headers.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert!(set.starts_with("__Host-oidc-flow=") && set.contains("SameSite=Lax") && set.contains("HttpOnly"));
        let request = request_with(&headers);
        let opened = sealer.read(&request, 999).unwrap();
        assert_eq!((opened.state.as_str(), opened.max_age), ("s", Some(600)));
        assert!(sealer.read(&request, 1000).is_none(), "expired");
        assert!(FlowSealer::new([8; 32], &CookieConfig::default()).unwrap().read(&request, 0).is_none(), "other key");
        let mut tampered = request.get(http::header::COOKIE).unwrap().to_str().unwrap().to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        let mut bad = HeaderMap::new();
        bad.insert(http::header::COOKIE, HeaderValue::from_str(&tampered).unwrap());
        assert!(sealer.read(&bad, 0).is_none(), "tampered");
    }

    #[test]
    fn strict_session_cookies_still_get_a_lax_flow_cookie() {
        let config =
            CookieConfig { same_site: SameSite::Strict, domain: Some("example.com".into()), ..Default::default() };
        let sealer = FlowSealer::new([1; 32], &config).unwrap();
        let mut headers = HeaderMap::new();
        sealer.set(&flow(1), &mut headers).unwrap();
        let set = headers.get(SET_COOKIE).unwrap().to_str().unwrap();
        assert!(set.contains("SameSite=Lax") && !set.contains("Domain") && set.starts_with("__Host-"), "{set}");
    }
}
