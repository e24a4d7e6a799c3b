//! Response compression: gzip or Brotli, whichever the client prefers in
//! `Accept-Encoding`, for text answers (pages, CSS, JavaScript, SVG, JSON
//! such as the OpenAPI document) of more than 32 bytes; `Vary:
//! Accept-Encoding` tells caches. Other answers pass untouched.
//!
//! BREACH: a compressed page that holds a secret and reflects attacker
//! input leaks the secret through its length. The only secret on pages is
//! the CSRF token, which is masked afresh on every rendering
//! (`tessera_axum` CSRF), so there is nothing stable to guess.

use http::header::CONTENT_TYPE;
use http::{Extensions, HeaderMap, StatusCode, Version};
use tower_http::compression::predicate::{And, DefaultPredicate, Predicate};
use tower_http::compression::CompressionLayer;

/// Whether the content type is text worth compressing.
fn is_text(_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence == "image/svg+xml"
        || essence == "application/json"
        || essence == "application/problem+json"
        || essence == "application/javascript"
}

type TextPredicate = fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool;

/// The layer: gzip and Brotli for text answers.
pub fn layer() -> CompressionLayer<And<DefaultPredicate, TextPredicate>> {
    CompressionLayer::new().gzip(true).br(true).compress_when(DefaultPredicate::new().and(is_text as TextPredicate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn text_types() {
        let check = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
            is_text(StatusCode::OK, Version::HTTP_11, &headers, &Extensions::new())
        };
        for yes in ["text/html; charset=utf-8", "text/css", "text/javascript; charset=utf-8", "image/svg+xml"] {
            assert!(check(yes), "{yes}");
        }
        assert!(check("application/json"));
        for no in ["image/png", "application/octet-stream", "text/event-stream; x"] {
            // SSE is text/*, refused by the default predicate instead.
            assert_eq!(check(no), no.starts_with("text/"), "{no}");
        }
    }
}
