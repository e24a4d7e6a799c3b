//! The site's few static files, compiled into the binary: one stylesheet,
//! two small scripts (progressive enhancement for the forms; the passkey
//! ceremonies) and the icon.
//!
//! Each answer carries an `ETag` (a digest of the content, so it changes
//! exactly when a new build changes the file; weak, because the compression
//! layer may send the same content gzip- or Brotli-encoded) and `Last-Modified`
//! (when this process started: the embedded files cannot change while it
//! runs). `If-None-Match` and, without it, `If-Modified-Since` are honoured
//! with `304 Not Modified` (RFC 9110 §13.1.2, §13.1.3). Compression is the
//! server-wide `CompressionLayer`'s job.

use std::sync::OnceLock;
use std::time::SystemTime;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

/// How long browsers may use a file without asking again.
const CACHE_CONTROL_VALUE: &str = "public, max-age=3600";

/// An embedded file.
struct StaticFile {
    content_type: &'static str,
    body: &'static str,
    etag: OnceLock<String>,
}

static STYLE: StaticFile = StaticFile::new("text/css; charset=utf-8", include_str!("../static/style.css"));
static SCRIPT: StaticFile = StaticFile::new("text/javascript; charset=utf-8", include_str!("../static/forms.js"));
static PASSKEYS: StaticFile = StaticFile::new("text/javascript; charset=utf-8", include_str!("../static/passkeys.js"));
static ICON: StaticFile = StaticFile::new("image/svg+xml", include_str!("../static/icon.svg"));

impl StaticFile {
    const fn new(content_type: &'static str, body: &'static str) -> Self {
        StaticFile { content_type, body, etag: OnceLock::new() }
    }

    /// `W/"<first 16 bytes of the SHA-256 of the content, hex>"`.
    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("W/\"{hex}\"")
        })
    }

    fn answer(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let modified = last_modified();
        let mut response = if not_modified(request, etag, modified) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = self.body.into_response();
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
            response
        };
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_VALUE));
        if let Ok(value) = HeaderValue::from_str(etag) {
            headers.insert(ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            headers.insert(LAST_MODIFIED, value);
        }
        // The body differs by Accept-Encoding once the compression layer
        // is on; a 304 must name it too (RFC 9110 §15.4.5).
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        response
    }
}

/// When this process started, to the second (HTTP dates have no fractions).
fn last_modified() -> SystemTime {
    static STARTED: OnceLock<SystemTime> = OnceLock::new();
    *STARTED.get_or_init(|| {
        let now = SystemTime::now();
        let seconds = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds)
    })
}

/// Whether the client's copy is current. `If-None-Match` wins when present
/// (weak comparison, `*` matches); otherwise `If-Modified-Since`.
fn not_modified(request: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    let mut saw_if_none_match = false;
    for value in request.get_all(IF_NONE_MATCH) {
        saw_if_none_match = true;
        let Ok(text) = value.to_str() else { continue };
        let matches = text
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag.trim_start_matches("W/"));
        if matches {
            return true;
        }
    }
    if saw_if_none_match {
        return false;
    }
    request
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|text| httpdate::parse_http_date(text).ok())
        .is_some_and(|since| since >= modified)
}

/// The routes under `/static/`. They never touch the session.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/static/style.css", get(|headers: HeaderMap| async move { STYLE.answer(&headers) }))
        .route("/static/forms.js", get(|headers: HeaderMap| async move { SCRIPT.answer(&headers) }))
        .route("/static/passkeys.js", get(|headers: HeaderMap| async move { PASSKEYS.answer(&headers) }))
        .route("/static/icon.svg", get(|headers: HeaderMap| async move { ICON.answer(&headers) }))
        .route("/favicon.ico", get(|headers: HeaderMap| async move { ICON.answer(&headers) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn conditional_requests() {
        let etag = STYLE.etag();
        assert_eq!(etag.len(), 36);
        let modified = last_modified();
        let date = httpdate::fmt_http_date(modified);
        let earlier = httpdate::fmt_http_date(modified - std::time::Duration::from_secs(1));
        assert!(not_modified(&headers(&[(IF_NONE_MATCH, etag)]), etag, modified));
        assert!(not_modified(&headers(&[(IF_NONE_MATCH, &format!("\"x\", {etag}"))]), etag, modified));
        assert!(not_modified(&headers(&[(IF_NONE_MATCH, etag.trim_start_matches("W/"))]), etag, modified));
        assert!(not_modified(&headers(&[(IF_NONE_MATCH, "*")]), etag, modified));
        assert!(!not_modified(&headers(&[(IF_NONE_MATCH, "\"other\"")]), etag, modified));
        assert!(not_modified(&headers(&[(IF_MODIFIED_SINCE, &date)]), etag, modified));
        assert!(!not_modified(&headers(&[(IF_MODIFIED_SINCE, &earlier)]), etag, modified));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(&headers(&[(IF_NONE_MATCH, "\"other\""), (IF_MODIFIED_SINCE, &date)]), etag, modified));
        assert!(!not_modified(&headers(&[(IF_MODIFIED_SINCE, "not a date")]), etag, modified));
        assert_ne!(STYLE.etag(), SCRIPT.etag());
    }
}
