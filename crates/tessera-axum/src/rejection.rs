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

impl Problem {
    /// A problem with this status, kind, title and detail.
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: &str) -> Self {
        Problem { status, kind: kind.to_owned(), title: title.to_owned(), detail: detail.to_owned() }
    }

    /// The problem as an RFC 9457 document (`application/problem+json`,
    /// `type` = `/problems/<kind>`, never stored by caches), carrying
    /// itself as an extension. The one place problem documents are written.
    pub fn json_response(&self) -> Response {
        let body = serde_json::json!({
            "type": format!("/problems/{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(self.clone());
        response
    }

    /// The problem as a small HTML page (an application can re-render it in
    /// its own look from the extension it carries).
    pub fn html_response(&self) -> Response {
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><main><h1>{title}</h1><p>{detail}</p></main></body></html>",
            title = escape_html(&self.title),
            detail = escape_html(&self.detail)
        );
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.extensions_mut().insert(self.clone());
        response
    }
}

/// Builds an RFC 9457 problem (JSON) or a small HTML page.
///
/// `kind` becomes the stable problem `type` `/problems/<kind>`.
pub(crate) fn problem(status: StatusCode, kind: &str, title: &str, detail: &str, json: bool) -> Response {
    let problem = Problem::new(status, kind, title, detail);
    if json {
        problem.json_response()
    } else {
        problem.html_response()
    }
}

/// Escapes text for HTML element content and (quoted) attribute values:
/// `&`, `<`, `>`, `"` and `'`. The one escaper of the web layer, used by
/// its error pages and by applications that build HTML by hand (the tessera
/// server's mails).
pub fn escape_html(text: &str) -> String {
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
    /// Where a browser is sent to log in (with `next`).
    pub login_location: String,
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
    /// Why the request was refused.
    pub reason: &'static str,
}

impl IntoResponse for CsrfRejection {
    fn into_response(self) -> Response {
        problem(StatusCode::FORBIDDEN, "csrf", "Request refused", self.reason, self.json)
    }
}

/// A form body that could not be read: `400`, `413` or `415`.
#[derive(Debug, Clone)]
pub struct FormRejection {
    /// The status: `400`, `413` or `415`.
    pub status: StatusCode,
    /// What was wrong with the body.
    pub detail: String,
    pub(crate) json: bool,
}

impl IntoResponse for FormRejection {
    fn into_response(self) -> Response {
        problem(self.status, "invalid-form", "The form could not be read", &self.detail, self.json)
    }
}

/// Why one of this crate's extractors refused a request. Return it from a
/// handler (it is an answer: a page or a problem document, see each
/// variant), or match on it to answer in the application's own way.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The session store did not answer: `503` with `Retry-After`.
    #[error("the session store is unavailable")]
    SessionUnavailable(SessionUnavailable),
    /// Nobody is logged in: a `303` to the login page, or `401` for JSON clients.
    #[error("authentication required")]
    Unauthenticated(Unauthenticated),
    /// A missing or wrong CSRF token, or a cross-site request: `403`.
    #[error("CSRF check failed: {}", .0.reason)]
    Csrf(CsrfRejection),
    /// A form body that could not be read: `400`, `413` or `415`.
    #[error("the form could not be read: {}", .0.detail)]
    Form(FormRejection),
    /// [`SessionLayer`](crate::SessionLayer) is not installed on the route:
    /// a programming error, answered with `500`.
    #[error("SessionLayer is not installed on this route")]
    MissingLayer,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::SessionUnavailable(rejection) => rejection.into_response(),
            Rejection::Unauthenticated(rejection) => rejection.into_response(),
            Rejection::Csrf(rejection) => rejection.into_response(),
            Rejection::Form(rejection) => rejection.into_response(),
            Rejection::MissingLayer => missing_layer(),
        }
    }
}

/// Lets code whose error type is a [`Response`] use `?` on extractors.
impl From<Rejection> for Response {
    fn from(rejection: Rejection) -> Response {
        rejection.into_response()
    }
}

impl From<SessionUnavailable> for Rejection {
    fn from(rejection: SessionUnavailable) -> Self {
        Rejection::SessionUnavailable(rejection)
    }
}

impl From<Unauthenticated> for Rejection {
    fn from(rejection: Unauthenticated) -> Self {
        Rejection::Unauthenticated(rejection)
    }
}

impl From<CsrfRejection> for Rejection {
    fn from(rejection: CsrfRejection) -> Self {
        Rejection::Csrf(rejection)
    }
}

impl From<FormRejection> for Rejection {
    fn from(rejection: FormRejection) -> Self {
        Rejection::Form(rejection)
    }
}

/// The layer is missing from the router: a programming error, reported as
/// `500` with a message that names the fix.
fn missing_layer() -> Response {
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Server misconfigured",
        "SessionLayer is not installed on this route.",
        false,
    )
}
