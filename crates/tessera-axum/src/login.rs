//! The bridge to the authentication core (`tessera-auth`): the request as
//! a [`Client`] the core can throttle and audit, and the login's result
//! written to the session and the response.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::header::SET_COOKIE;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use tessera::CookieConfig;
use tessera_auth::throttle::{DEVICE_COOKIE, DEVICE_COOKIE_LIFETIME};
use tessera_auth::{Client, LoggedIn};

use crate::extract::slot;
use crate::extract::ClientIp;
use crate::layer::{client_device, find_cookie};

/// Extractor: the client as the authentication core sees it — its address
/// (from [`ClientIp`], else the socket), user agent and device cookie.
///
/// ```
/// use tessera_auth::{Authenticator, Channel};
/// use tessera_axum::LoginClient;
///
/// async fn handler(LoginClient(client): LoginClient) {
///     // auth.password(Channel::Web, &client, name, password, None).await
///     let _ = client.ip;
/// }
/// ```
#[derive(Debug, Clone)]
pub struct LoginClient(pub Client);

impl<S: Send + Sync> FromRequestParts<S> for LoginClient {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip: Option<IpAddr> = parts
            .extensions
            .get::<ClientIp>()
            .map(|ip| ip.0)
            .or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        let cookie_config = slot(parts).ok().map(|slot| slot.config.engine.cookie_config().clone()).unwrap_or_default();
        let name = cookie_config.prefixed(DEVICE_COOKIE);
        let device_cookie = find_cookie(&parts.headers, &name, |_| true);
        let device = client_device(&parts.extensions, &parts.headers);
        Ok(LoginClient(Client { ip, device, device_cookie }))
    }
}

/// Adds the device cookie of a password login to a response, so this
/// browser is never locked out by failures made elsewhere (see
/// `tessera_auth::throttle`). Does nothing for logins that made none.
pub fn remember_device(headers: &mut HeaderMap, cookie: &CookieConfig, logged_in: &LoggedIn) {
    let Some(value) = logged_in.device_cookie.clone() else { return };
    let cookie = cookie.cookie(cookie.prefixed(DEVICE_COOKIE), value, Some(DEVICE_COOKIE_LIFETIME));
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        headers.append(SET_COOKIE, value);
    }
}
