//! HTTP semantics every route shares (RFC 9110, RFC 9112):
//!
//! - an HTTP/1.1 request without exactly one `Host` header is a 400
//!   (RFC 9112 §3.2: "a server MUST respond with a 400 (Bad Request) status
//!   code to any HTTP/1.1 request message that lacks a Host header field and
//!   to any request message that contains more than one Host header field");
//! - a body in a `Content-Encoding` the server does not decode is a 415 with
//!   `Accept-Encoding: identity` (RFC 9110 §15.5.16, §12.5.3);
//! - every 401 carries `WWW-Authenticate` (RFC 9110 §15.5.2): `Bearer` for
//!   API clients, a `Cookie` challenge naming the login form for browsers.
//!
//! The refusals carry a [`Problem`], so the error pages turn them into a
//! page or a problem document like every other error.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use tessera_axum::Problem;

/// The challenge of 401s to API clients.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"tessera\"";

/// The challenge of 401s to browsers: log in with the form at `/login`,
/// which sets a session cookie (there is no registered scheme for form
/// logins; browsers show no dialog for unknown schemes).
pub const COOKIE_CHALLENGE: &str = "Cookie realm=\"tessera\", form-action=\"/login\"";

/// Whether the request body is in a content coding other than `identity`.
pub fn unsupported_content_encoding(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|value| match value.to_str() {
        Ok(text) => {
            text.split(',').map(str::trim).any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        }
        Err(_) => true,
    })
}

fn refuse(problem: Problem) -> Response {
    let mut response = problem.status.into_response();
    response.extensions_mut().insert(problem);
    response
}

/// The refusal of a request that breaks the rules above, if it does.
/// Called by [`crate::edge`] before the route runs.
pub fn refusal(request: &Request) -> Option<Response> {
    if request.version() == Version::HTTP_11 && request.headers().get_all(HOST).iter().count() != 1 {
        return Some(refuse(Problem {
            status: StatusCode::BAD_REQUEST,
            kind: "bad-host".into(),
            title: "Bad request".into(),
            detail: "An HTTP/1.1 request needs exactly one Host header.".into(),
        }));
    }
    if unsupported_content_encoding(request.headers()) {
        let mut response = refuse(Problem {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            kind: "unsupported-content-encoding".into(),
            title: "Unsupported content encoding".into(),
            detail: crate::api::problem::UNSUPPORTED_ENCODING_DETAIL.into(),
        });
        response.headers_mut().insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        return Some(response);
    }
    None
}

/// Gives a `401` without a challenge the one that fits the client: `Bearer`
/// for API clients (`api`, asked only for a `401`), the login form's for browsers.
pub fn add_challenge(response: &mut Response, api: impl FnOnce() -> bool) {
    if response.status() == StatusCode::UNAUTHORIZED && !response.headers().contains_key(WWW_AUTHENTICATE) {
        let challenge = if api() { BEARER_CHALLENGE } else { COOKIE_CHALLENGE };
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_encodings() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
            }
            unsupported_content_encoding(&headers)
        };
        assert!(!with(&[]));
        assert!(!with(&["identity"]));
        assert!(!with(&["Identity", ""]));
        assert!(with(&["gzip"]));
        assert!(with(&["identity, br"]));
        assert!(with(&["identity", "deflate"]));
    }
}
