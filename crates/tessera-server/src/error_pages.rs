//! Error answers that match the site: HTML pages for browsers, RFC 9457
//! problems for API clients; 404, 405, 500 (panics included) and 503.

use askama::Template;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use tessera_auth::{LoginError, RegisterError};
use tessera_axum::{safe_next, wants_json_given, Problem, BUSY_RETRY_AFTER_SECONDS};

use crate::pages::{render, Chrome};

/// An error inside a handler.
#[derive(Debug)]
pub enum ServerError {
    /// A dependency (database, store, hashing pool) is down: 503.
    Unavailable(String),
    /// The password hashing queue is full: 503 with a short `Retry-After`;
    /// nothing was checked or counted.
    Busy,
    /// No such page: 404.
    NotFound,
    /// The login is refused until the account's address is verified
    /// (`accounts.email = required`): 403.
    EmailUnverified,
}

impl ServerError {
    /// Wraps the failure of a dependency. The text goes to the log only.
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        ServerError::Unavailable(error.to_string())
    }
}

impl From<LoginError> for ServerError {
    /// A login step that could not be decided: busy or unavailable.
    fn from(error: LoginError) -> Self {
        match error {
            LoginError::Busy => ServerError::Busy,
            LoginError::EmailUnverified(_) => ServerError::EmailUnverified,
            other => ServerError::unavailable(other),
        }
    }
}

impl From<RegisterError> for ServerError {
    /// A registration or password change that could not be made: busy or
    /// unavailable.
    fn from(error: RegisterError) -> Self {
        match error {
            RegisterError::Busy => ServerError::Busy,
            other => ServerError::unavailable(other),
        }
    }
}

/// The problem of a `503` for a full password hashing queue (pages and API).
pub fn busy_problem() -> Problem {
    Problem {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "busy".into(),
        title: "Busy".into(),
        detail: "The server is busy checking passwords. Nothing was changed or counted against you; please try \
                 again in a moment."
            .into(),
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let problem = match self {
            ServerError::Unavailable(error) => {
                tracing::warn!(%error, "dependency unavailable; answering 503");
                Problem {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    kind: "service-unavailable".into(),
                    title: "Temporarily unavailable".into(),
                    detail: "A service tessera depends on is not answering. Nothing was changed; please try again in a moment.".into(),
                }
            }
            ServerError::Busy => {
                crate::metrics::hashing_busy();
                let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_SECONDS));
                response.extensions_mut().insert(busy_problem());
                return response;
            }
            ServerError::NotFound => not_found_problem(),
            ServerError::EmailUnverified => Problem {
                status: StatusCode::FORBIDDEN,
                kind: "email-unverified".into(),
                title: "Email address not verified".into(),
                detail: "Confirm your email address with the link we mailed you, then log in again. No mail? \
                         Log in with your password to send it again."
                    .into(),
            },
        };
        let mut response = problem.status.into_response();
        response.extensions_mut().insert(problem);
        response
    }
}

fn not_found_problem() -> Problem {
    Problem {
        status: StatusCode::NOT_FOUND,
        kind: "not-found".into(),
        title: "Page not found".into(),
        detail: "There is nothing at this address. It may have moved, or the link may be mistyped.".into(),
    }
}

fn problem_for_status(status: StatusCode) -> Problem {
    match status {
        StatusCode::NOT_FOUND => not_found_problem(),
        StatusCode::METHOD_NOT_ALLOWED => Problem {
            status,
            kind: "method-not-allowed".into(),
            title: "Not allowed".into(),
            detail: "This address does not accept that kind of request.".into(),
        },
        StatusCode::PAYLOAD_TOO_LARGE => Problem {
            status,
            kind: "payload-too-large".into(),
            title: "Request too large".into(),
            detail: "The request body is larger than this server accepts.".into(),
        },
        status if status.is_server_error() => Problem {
            status,
            kind: "internal".into(),
            title: "Something went wrong".into(),
            detail: "The server hit an unexpected problem. It has been logged; please try again.".into(),
        },
        status => Problem {
            status,
            kind: "bad-request".into(),
            title: status.canonical_reason().unwrap_or("Request refused").into(),
            detail: "The request could not be handled.".into(),
        },
    }
}

/// The fallback for unknown routes.
pub async fn not_found() -> ServerError {
    ServerError::NotFound
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    page: Chrome,
    status: u16,
    heading: &'a str,
    detail: &'a str,
    /// Where "Try again" goes: the same address, for a failed `GET`.
    retry: Option<String>,
}

/// What rendering a request's error answer needs to know of the request,
/// taken before the request is handed on.
pub struct ErrorContext {
    /// The request's path is the API's, whatever `Accept` says.
    api_path: bool,
    /// `Accept` and `Content-Type` (reference counts), read only if an
    /// error is to be rendered: most answers are not errors.
    accept: Option<HeaderValue>,
    content_type: Option<HeaderValue>,
    /// The URI of a `GET` (a reference count), for "Try again" on a 5xx.
    retry_uri: Option<http::Uri>,
}

impl ErrorContext {
    /// The context of `request`.
    pub fn of(request: &Request) -> Self {
        let headers = request.headers();
        ErrorContext {
            api_path: crate::api::is_api_path(request.uri().path()),
            accept: headers.get(ACCEPT).cloned(),
            content_type: headers.get(CONTENT_TYPE).cloned(),
            retry_uri: (request.method() == http::Method::GET).then(|| request.uri().clone()),
        }
    }

    /// Problem documents rather than pages: JSON clients, and API paths
    /// whatever `Accept` says.
    pub fn json(&self) -> bool {
        self.api_path || wants_json_given(self.accept.as_ref(), self.content_type.as_ref())
    }

    /// Renders an error answer in the site's look, or as a problem document
    /// for JSON clients; other answers pass untouched.
    pub fn render(self, response: Response) -> Response {
        let status = response.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return response;
        }
        let problem = match response.extensions().get::<Problem>() {
            Some(problem) => problem.clone(),
            // A bare status (405 from the router, 413 from the body limit, 500
            // from a panic) gets a page too; bodies handlers wrote themselves stay.
            None if !response.headers().contains_key(CONTENT_TYPE) || status == StatusCode::PAYLOAD_TOO_LARGE => {
                problem_for_status(status)
            }
            None => return response,
        };
        let (mut parts, _) = response.into_parts();
        let rendered = if self.json() {
            Problem { status, ..problem.clone() }.json_response()
        } else {
            let page = ErrorPage {
                page: Chrome { title: "Error", logged_in: false, csrf: String::new(), flash: None },
                status: status.as_u16(),
                heading: &problem.title,
                detail: &problem.detail,
                retry: self
                    .retry_uri
                    .filter(|_| status.is_server_error())
                    .and_then(|uri| uri.path_and_query().map(|p| p.as_str().to_owned()))
                    .filter(|path| safe_next(path).is_some()),
            };
            render(status, &page)
        };
        let (rendered_parts, body) = rendered.into_parts();
        parts.headers.insert(CONTENT_TYPE, rendered_parts.headers[CONTENT_TYPE].clone());
        // The body is new: drop what described the old one (a compressed
        // 413, say).
        parts.headers.remove(http::header::CONTENT_LENGTH);
        parts.headers.remove(http::header::CONTENT_ENCODING);
        if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(RETRY_AFTER) {
            parts.headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        Response::from_parts(parts, body)
    }
}

/// The answer to a request whose handler panicked: a 500 without a stack
/// trace (the error page is rendered like any other).
pub fn panicked() -> Response {
    tracing::error!("a handler panicked; answering 500");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}
