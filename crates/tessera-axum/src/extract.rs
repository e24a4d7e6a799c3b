//! Extractors: the session, the user, the client's address.

use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::layer::SessionSlot;
use crate::rejection::{Rejection, Unauthenticated};

pub(crate) fn slot(parts: &Parts) -> Result<Arc<SessionSlot>, Rejection> {
    parts.extensions.get::<Arc<SessionSlot>>().cloned().ok_or(Rejection::MissingLayer)
}

/// The request's session (see [`tessera::Session`] for its methods).
///
/// Extracting it loads the session from the store; a store failure rejects
/// the request with `503`.
#[derive(Clone, Debug)]
pub struct Session(pub tessera::Session);

impl Deref for Session {
    type Target = tessera::Session;
    fn deref(&self) -> &tessera::Session {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = slot(parts)?;
        let session = slot.session().await?;
        Ok(Session(session.clone()))
    }
}

/// The ID of the logged-in user. Browsers without one are redirected (`303`)
/// to the login page with `next` set to where they were going; JSON clients
/// get `401`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequireUser(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequireUser {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = slot(parts)?;
        let session = slot.session().await?;
        if let Some(user) = session.user_id() {
            return Ok(RequireUser(user));
        }
        let mut login_location = slot.config.login_path.clone();
        // Only safe methods can be replayed by a redirect after login.
        if parts.method == Method::GET || parts.method == Method::HEAD {
            if let Some(target) = parts.uri.path_and_query() {
                if crate::safe_next(target.as_str()).is_some() {
                    login_location.push_str("?next=");
                    login_location.extend(utf8_percent_encode(target.as_str(), NON_ALPHANUMERIC));
                }
            }
        }
        Err(Unauthenticated { json: slot.json(), login_location }.into())
    }
}

/// The ID of the logged-in user, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaybeUser(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUser {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let slot = slot(parts)?;
        let session = slot.session().await?;
        Ok(MaybeUser(session.user_id()))
    }
}

/// The client's IP address as the application determined it (for example
/// from `X-Forwarded-For` sent by a trusted proxy). Insert it as a request
/// extension before [`SessionLayer`](crate::SessionLayer) runs; without it
/// the layer uses the socket's peer address (`ConnectInfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client's device (IP address and user agent) as the session layer
/// records it, for audit trails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDevice(pub tessera::DeviceInfo);

impl<S: Send + Sync> FromRequestParts<S> for ClientDevice {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientDevice(crate::layer::client_device(&parts.extensions, &parts.headers)))
    }
}
