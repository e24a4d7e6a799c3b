//! Headers every response carries, error pages included.

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use http::HeaderValue;
use tower_http::set_header::SetResponseHeaderLayer;

/// The content security policy: only this origin's resources, no plugins,
/// no `<base>` tricks, no framing. Pages carry no inline script or style.
pub const CONTENT_SECURITY_POLICY_VALUE: &str =
    "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The layers that add the security headers (unless a handler set its own).
/// Every dynamic answer may be personal, so none is cached unless its
/// handler says otherwise (the stylesheet does).
pub fn layers() -> [SetResponseHeaderLayer<HeaderValue>; 5] {
    [
        SetResponseHeaderLayer::if_not_present(CACHE_CONTROL, HeaderValue::from_static("no-store")),
        SetResponseHeaderLayer::if_not_present(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
        ),
        SetResponseHeaderLayer::if_not_present(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        SetResponseHeaderLayer::if_not_present(REFERRER_POLICY, HeaderValue::from_static("same-origin")),
        SetResponseHeaderLayer::if_not_present(X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// `Strict-Transport-Security`: two years, subdomains included. Sent only
/// when the site is served over HTTPS (browsers ignore it over HTTP anyway).
pub fn hsts() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        http::header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    )
}
