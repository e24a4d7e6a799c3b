//! One ID per request: taken from `x-request-id` when a trusted proxy sent
//! it, generated otherwise; carried by a tracing span around the request (so
//! every log line of the request has it) and returned in the response.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use rand::RngCore;
use tracing::Instrument;

use crate::client_ip::TrustedProxies;

/// The header carrying the ID, both ways.
pub const HEADER: &str = "x-request-id";

/// The request's ID, as an extension for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether `peer` is one of the trusted proxies.
fn trusts(trusted: &TrustedProxies, peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|peer| trusted.contains(peer.ip()))
}

/// A fresh ID: 16 random bytes in hex.
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An incoming ID is used only if short and plain (it ends up in logs).
fn acceptable(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: assigns the ID, opens the span, logs the outcome, sets the
/// response header.
pub async fn assign(State(trusted): State<TrustedProxies>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let incoming = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| acceptable(v));
    let id = match incoming {
        Some(id) if trusts(&trusted, peer) => id.to_owned(),
        _ => generate(),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(HEADER, value);
    }
    request.extensions_mut().insert(RequestId(id.clone()));
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = route.as_deref().unwrap_or("unmatched"),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_generated() {
        assert!(acceptable("abc-123"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable(&"x".repeat(129)));
        let id = generate();
        assert_eq!(id.len(), 32);
        assert_ne!(id, generate());
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(trusts(&trusted, Some("10.1.1.1:5".parse().unwrap())));
        assert!(!trusts(&trusted, Some("127.0.0.1:5".parse().unwrap())));
        assert!(!trusts(&trusted, None));
    }
}
