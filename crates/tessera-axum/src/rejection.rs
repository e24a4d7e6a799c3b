//! The answers given when a request cannot go on: store down, no user, bad CSRF token.

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, StatusCode};

/// The details of an error answer, attached to the response as an extension
/// so that an application can re-render it in its own look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable kind; the problem `type` is `/problems/<kind>`.
    pub kind: String,
    /// A short, human title.
    pub title: String,
    /// What happened and what to do.
    pub detail: String,
}

/// Builds an RFC 9457 problem (JSON) or a small HTML page.
///
/// `kind` becomes the stable problem `type` `/problems/<kind>`.
pub(crate) fn problem(status: StatusCode, kind: &str, title: &str, detail: &str, json: bool) -> Response {
    let mut response = if json {
        let body = serde_json::json!({
            "type": format!("/problems/{kind}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    } else {
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><main><h1>{title}</h1><p>{detail}</p></main></body></html>",
            title = escape_html(title),
            detail = escape_html(detail)
        );
        let mut response = (status, body).into_response();
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        response
    };
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(Problem {
        status,
        kind: kind.to_owned(),
        title: title.to_owned(),
        detail: detail.to_owned(),
    });
    response
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The session store could not be reached: `503 Service Unavailable` with
/// `Retry-After`, as HTML or JSON. The request is not treated as anonymous.
#[derive(Debug, Clone)]
pub struct SessionUnavailable {
    pub(crate) json: bool,
}

impl IntoResponse for SessionUnavailable {
    fn into_response(self) -> Response {
        let mut response = problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "session-store-unavailable",
            "Sessions are temporarily unavailable",
            "The session store is not answering. Nothing was changed; please try again in a moment.",
            self.json,
        );
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("5"));
        response
    }
}

/// No logged-in user: a `303` to the login page with a `next` parameter for
/// browsers, `401` for JSON clients.
#[derive(Debug, Clone)]
pub struct Unauthenticated {
    pub(crate) json: bool,
    pub(crate) login_location: String,
}

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        if self.json {
            let mut response = problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
                "Log in, or send a valid bearer token.",
                true,
            );
            response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return response;
        }
        let mut response = StatusCode::SEE_OTHER.into_response();
        if let Ok(location) = HeaderValue::from_str(&self.login_location) {
            response.headers_mut().insert(LOCATION, location);
        }
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// A state-changing request without a valid CSRF token, or from another
/// site: `403 Forbidden`.
#[derive(Debug, Clone)]
pub struct CsrfRejection {
    pub(crate) json: bool,
    pub(crate) reason: &'static str,
}

impl IntoResponse for CsrfRejection {
    fn into_response(self) -> Response {
        problem(StatusCode::FORBIDDEN, "csrf", "Request refused", self.reason, self.json)
    }
}

/// A form body that could not be read: `400`, `413` or `415`.
#[derive(Debug, Clone)]
pub(crate) struct FormRejection {
    pub(crate) status: StatusCode,
    pub(crate) detail: String,
    pub(crate) json: bool,
}

impl IntoResponse for FormRejection {
    fn into_response(self) -> Response {
        problem(self.status, "invalid-form", "The form could not be read", &self.detail, self.json)
    }
}

/// The layer is missing from the router: a programming error, reported as
/// `500` with a message that names the fix.
pub(crate) fn missing_layer() -> Response {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Server misconfigured",
        "SessionLayer is not installed on this route.",
        false,
    )
}
