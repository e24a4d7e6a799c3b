//! The edge of the server: what every request passes through before its
//! route, in one service: the request ID ([`crate::request_id`]) and the
//! request's log context ([`crate::request_context`]), the client address ([`crate::client_ip`]), the checks of
//! HTTP itself ([`crate::http_semantics`]); and on the way out, error
//! answers as pages or problem documents ([`crate::error_pages`], panics
//! included), the access log line, the request metrics
//! ([`crate::metrics::RequestMetrics`]) and the security headers
//! ([`crate::security_headers`]).
//!
//! One service instead of a middleware each: every `from_fn` middleware
//! boxes and clones the rest of the stack on every request, and every layer
//! adds a future to poll. Kept as one, the edge costs one box (two when
//! the handler's future is wrapped to catch a panic).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::response::Response;
use futures::future::{ready, BoxFuture, Either};
use futures::FutureExt;
use tower::{Layer, Service};

use crate::client_ip::{self, TrustedProxies};
use crate::error_pages::{self, ErrorContext};
use crate::http_semantics;
use crate::metrics::RequestMetrics;
use crate::request_context::RequestContext;
use crate::request_id;
use crate::security_headers;

/// What the edge needs, shared by every route's copy of it.
struct EdgeConfig {
    trusted_proxies: TrustedProxies,
    metrics: RequestMetrics,
    hsts: bool,
}

/// The layer: wraps every route (mount it outermost).
#[derive(Clone)]
pub struct EdgeLayer {
    config: Arc<EdgeConfig>,
}

impl EdgeLayer {
    /// The edge for a server that believes `trusted_proxies`' forwarding
    /// headers and, with `hsts`, is served over HTTPS.
    pub fn new(trusted_proxies: TrustedProxies, hsts: bool) -> Self {
        EdgeLayer { config: Arc::new(EdgeConfig { trusted_proxies, metrics: RequestMetrics::new(), hsts }) }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner, config: self.config.clone() }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    config: Arc<EdgeConfig>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let config = self.config.clone();
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let id = request_id::choose(&config.trusted_proxies, peer, request.headers());
        request.headers_mut().insert(request_id::HEADER, id.0.clone());
        client_ip::annotate(&config.trusted_proxies, peer, &mut request);
        // Cloning the matched path is a reference count.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let context = RequestContext { id: id.clone(), method: request.method().clone(), route: matched };
        request.extensions_mut().insert(id);
        let started = Instant::now();
        let errors = ErrorContext::of(&request);
        let future = match http_semantics::refusal(&request) {
            Some(refusal) => Either::Left(ready(Ok(refusal))),
            // A panic while starting or running the handler becomes a 500.
            None => match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
                Ok(future) => Either::Right(
                    AssertUnwindSafe(future)
                        .catch_unwind()
                        .map(|result| result.unwrap_or_else(|_| Ok(error_pages::panicked()))),
                ),
                Err(_) => Either::Left(ready(Ok(error_pages::panicked()))),
            },
        };
        Box::pin(context.scope(async move {
            let mut response = future.await?;
            http_semantics::add_challenge(&mut response, || errors.json());
            let mut response = errors.render(response);
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            // The access log line; the request's ID, method and route come
            // from its context (see `log_format`).
            tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request finished");
            let headers = response.headers_mut();
            security_headers::apply(headers, config.hsts);
            RequestContext::with_current(|request| {
                config.metrics.record(request.route(), &request.method, status, elapsed);
                headers.insert(request_id::HEADER, request.id.0.clone());
            });
            Ok(response)
        }))
    }
}
