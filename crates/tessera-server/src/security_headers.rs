//! Headers every response carries, error pages included; set by
//! [`crate::edge`] on the way out.

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The content security policy: only this origin's resources, no plugins,
/// no `<base>` tricks, no framing. Pages carry no inline script or style.
pub const CONTENT_SECURITY_POLICY_VALUE: &str =
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// `Strict-Transport-Security`: two years, subdomains included.
pub const HSTS_VALUE: &str = "max-age=63072000; includeSubDomains";

/// The headers, each set unless the handler set its own. Every dynamic
/// answer may be personal, so none is cached unless its handler says
/// otherwise (the stylesheet does).
const ALWAYS: [(HeaderName, HeaderValue); 5] = [
    (CACHE_CONTROL, HeaderValue::from_static("no-store")),
    (CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE)),
    (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    (REFERRER_POLICY, HeaderValue::from_static("same-origin")),
    (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
];

/// Adds the security headers to `headers` where absent; with `hsts` (the
/// site is served over HTTPS; browsers ignore HSTS over HTTP anyway) also
/// `Strict-Transport-Security`.
pub fn apply(headers: &mut HeaderMap, hsts: bool) {
    // One growth of the map instead of one per insert.
    headers.reserve(ALWAYS.len() + 1);
    for (name, value) in ALWAYS {
        if let http::header::Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(value);
        }
    }
    if hsts {
        if let http::header::Entry::Vacant(slot) = headers.entry(STRICT_TRANSPORT_SECURITY) {
            slot.insert(HeaderValue::from_static(HSTS_VALUE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_keep_their_own_values() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
        apply(&mut headers, false);
        assert_eq!(headers[CACHE_CONTROL], "public, max-age=60");
        assert_eq!(headers[X_FRAME_OPTIONS], "DENY");
        assert!(!headers.contains_key(STRICT_TRANSPORT_SECURITY));
        apply(&mut headers, true);
        assert_eq!(headers[STRICT_TRANSPORT_SECURITY], HSTS_VALUE);
    }
}
