//! One ID per request: taken from `x-request-id` when a trusted proxy sent
//! it, generated otherwise; carried by the request's tracing span (so every
//! log line of the request has it) and returned in the response. The
//! layer that does this is [`crate::edge`].

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue};
use rand::RngCore;

use crate::client_ip::TrustedProxies;

/// The header carrying the ID, both ways.
pub const HEADER: &str = "x-request-id";

/// The request's ID, as an extension for handlers. A header value, so that
/// copying it into the response and the request is a reference count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The ID as text (always visible ASCII: generated, or checked by
    /// [`acceptable`]).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }
}

/// Whether `peer` is one of the trusted proxies.
fn trusts(trusted: &TrustedProxies, peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|peer| trusted.contains(peer.ip()))
}

/// A fresh ID: 16 random bytes in lowercase hex, formatted on the stack.
pub fn generate() -> RequestId {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut text = [0u8; 32];
    for (i, byte) in bytes.iter().enumerate() {
        text[2 * i] = DIGITS[usize::from(byte >> 4)];
        text[2 * i + 1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Hex digits are always a valid header value.
    RequestId(HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0")))
}

/// An incoming ID is used only if short and plain (it ends up in logs).
fn acceptable(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The ID of a request from `peer` with `headers`: the one a trusted proxy
/// sent if it is acceptable, else a fresh one.
pub fn choose(trusted: &TrustedProxies, peer: Option<SocketAddr>, headers: &HeaderMap) -> RequestId {
    match headers.get(HEADER) {
        Some(incoming) if acceptable(incoming.as_bytes()) && trusts(trusted, peer) => RequestId(incoming.clone()),
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_generated() {
        assert!(acceptable(b"abc-123"));
        assert!(!acceptable(b""));
        assert!(!acceptable(b"a b"));
        assert!(!acceptable("x".repeat(129).as_bytes()));
        let id = generate();
        assert_eq!(id.as_str().len(), 32);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, generate());
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(trusts(&trusted, Some("10.1.1.1:5".parse().unwrap())));
        assert!(!trusts(&trusted, Some("127.0.0.1:5".parse().unwrap())));
        assert!(!trusts(&trusted, None));
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("edge-1"));
        assert_eq!(choose(&trusted, Some("10.0.0.1:1".parse().unwrap()), &headers).as_str(), "edge-1");
        assert_ne!(choose(&trusted, Some("127.0.0.1:1".parse().unwrap()), &headers).as_str(), "edge-1");
    }
}
