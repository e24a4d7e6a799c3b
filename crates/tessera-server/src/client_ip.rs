//! The client's address: from the socket, or from `X-Forwarded-For` when —
//! and only when — the socket peer is a configured trusted proxy.
//!
//! Anyone can send `X-Forwarded-For`; believing it from an untrusted peer
//! would let an attacker pick a fresh address for every guess and walk
//! around the per-address throttle. Behind trusted proxies the header is
//! read from the right (each proxy appends the address it saw), skipping
//! trusted proxies, and the first untrusted address is the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use http::request::Parts;
use http::HeaderMap;
use ipnet::IpNet;
use tessera_axum::{ClientIp, ForwardedHost};

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl TrustedProxies {
    /// Trust these networks (single addresses are /32 or /128 networks).
    pub fn new(networks: Vec<IpNet>) -> Self {
        TrustedProxies(Arc::new(networks))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from socket peer `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list; read from the right.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            // A malformed entry could have been written by anyone: stop and
            // keep the last address a trusted hop vouched for.
            let Some(ip) = parse_entry(entry) else { break };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// Parses a trusted-proxy flag value: an address or a network in CIDR form.
pub fn parse_trusted_proxy(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR network (e.g. 10.0.0.0/8)"))
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]:port` or `v4:port`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 addresses as IPv4, so that `10.0.0.0/8` matches them.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The first host in the `X-Forwarded-Host` headers: the `Host` the
/// browser sent to the first proxy.
fn forwarded_host(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-host")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_owned())
}

/// Sets [`ClientIp`] for the session layer, the throttle and logs; and,
/// for requests from a trusted proxy, [`ForwardedHost`] from its
/// `X-Forwarded-Host`. Called by [`crate::edge`] for every request.
pub fn annotate(proxies: &TrustedProxies, peer: Option<SocketAddr>, request: &mut Request) {
    let Some(peer) = peer.map(|p| p.ip()) else { return };
    let ip = proxies.client_ip(peer, request.headers());
    request.extensions_mut().insert(ClientIp(ip));
    if proxies.contains(peer) {
        if let Some(host) = forwarded_host(request.headers()) {
            request.extensions_mut().insert(ForwardedHost(host));
        }
    }
}

/// Extractor: the client address set by [`annotate`], if known (it is
/// not when the router is driven without a socket, as in unit tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(parts.extensions.get::<ClientIp>().map(|c| c.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_say() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("198.51.100.9"), &headers(&["203.0.113.1"])), ip("198.51.100.9"));
        let some = TrustedProxies::new(vec![parse_trusted_proxy("10.0.0.0/8").unwrap()]);
        assert_eq!(some.client_ip(ip("198.51.100.9"), &headers(&["203.0.113.1"])), ip("198.51.100.9"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_behind_trusted_proxies() {
        let proxies = TrustedProxies::new(vec![
            parse_trusted_proxy("10.0.0.0/8").unwrap(),
            parse_trusted_proxy("2001:db8::1").unwrap(),
        ]);
        // The client forged the first entry; the proxy appended the real one.
        let forged = headers(&["1.2.3.4, 203.0.113.7"]);
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &forged), ip("203.0.113.7"));
        // Two trusted hops, several headers.
        let chain = headers(&["1.2.3.4", "203.0.113.7, 10.9.9.9"]);
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &chain), ip("203.0.113.7"));
        assert_eq!(
            proxies.client_ip(ip("2001:db8::1"), &headers(&["[2001:db8:beef::5]:4711"])),
            ip("2001:db8:beef::5")
        );
        assert_eq!(proxies.client_ip(ip("::ffff:10.0.0.1"), &headers(&["203.0.113.8:80"])), ip("203.0.113.8"));
        // No header: the proxy itself.
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        // All trusted: the leftmost.
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &headers(&["10.0.0.5, 10.0.0.6"])), ip("10.0.0.5"));
        // Garbage stops the walk at the last vouched-for address.
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &headers(&["203.0.113.1, nonsense, 10.0.0.6"])), ip("10.0.0.6"));
        assert_eq!(proxies.client_ip(ip("10.1.2.3"), &headers(&["unknown"])), ip("10.1.2.3"));
    }

    #[test]
    fn flag_values() {
        assert_eq!(parse_trusted_proxy("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_trusted_proxy("192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(parse_trusted_proxy("::1").unwrap().to_string(), "::1/128");
        assert!(parse_trusted_proxy("proxy.example").is_err());
        assert!(parse_trusted_proxy("10.0.0.0/33").is_err());
    }
}
