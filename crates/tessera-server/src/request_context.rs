//! The request a log line belongs to.
//!
//! Every line logged while a request is handled names it — its ID, method
//! and route — so that an operator can find all the lines of one request
//! (and the client can quote the ID from the `X-Request-Id` header). The
//! edge ([`crate::edge`]) runs each request's future inside
//! [`RequestContext::scope`], and the log formats ([`crate::log_format`])
//! read the context of the task they are called from.
//!
//! A task-local instead of a `tracing` span: a span costs a registry slot,
//! its fields formatted into a string and an enter and exit on every poll
//! of the request's future — measured, about a third of the server's own
//! instructions for a `GET /healthz`. A task-local costs a swap of a
//! thread-local pointer per poll. What it does not do, a span does not do
//! either: work the handler hands to another task (`tokio::spawn`,
//! `spawn_blocking`) logs without the request.

use std::future::Future;

use axum::extract::MatchedPath;
use http::Method;

use crate::request_id::RequestId;

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// What identifies a request in its log lines.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request's ID, as sent back in `X-Request-Id`.
    pub id: RequestId,
    /// The request's method.
    pub method: Method,
    /// The route that matched (`/account/sessions`, `/auth/oidc/{provider}/start`),
    /// never the path itself, which may carry tokens; `None` when none matched.
    pub route: Option<MatchedPath>,
}

impl RequestContext {
    /// The route as logged.
    pub fn route(&self) -> &str {
        self.route.as_ref().map_or("unmatched", MatchedPath::as_str)
    }

    /// Runs `future` with this as the current request.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// `f` of the request the calling task is handling; `None` outside a
    /// request (start-up, background tasks).
    pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
        CURRENT.try_with(f).ok()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[tokio::test]
    async fn the_context_is_seen_inside_its_scope_only() {
        let context =
            RequestContext { id: RequestId(HeaderValue::from_static("abc")), method: Method::POST, route: None };
        let inside = context.scope(async { RequestContext::with_current(|c| c.id.as_str().to_owned()) });
        assert_eq!(inside.await.as_deref(), Some("abc"));
        assert_eq!(RequestContext::with_current(|_| ()), None);
    }
}
