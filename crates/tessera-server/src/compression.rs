//! Response compression: gzip or Brotli, whichever the client prefers in
//! `Accept-Encoding`, for text answers (pages, CSS, JavaScript, SVG, JSON
//! such as the OpenAPI document) of more than 32 bytes; `Vary:
//! Accept-Encoding` tells caches. Other answers pass untouched.
//!
//! Only a request whose `Accept-Encoding` names gzip, Brotli or `*` goes
//! through `tower-http`'s compression; the others (API clients, probes,
//! load balancers) skip its response wrapper, which otherwise costs every
//! answer it passes — a boxed body and its moves, about 5 000 instructions
//! of a `GET /api/me` — and gets only the `Vary: Accept-Encoding` the
//! wrapper would have added, so that caches still key on it.
//!
//! BREACH: a compressed page that holds a secret and reflects attacker
//! input leaks the secret through its length. The only secret on pages is
//! the CSRF token, which is masked afresh on every rendering
//! (`tessera_axum` CSRF), so there is nothing stable to guess.

use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures::future::{Either, Map};
use futures::FutureExt;
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE, VARY};
use http::{Extensions, HeaderMap, HeaderValue, StatusCode, Version};
use tower::{Layer, Service};
use tower_http::compression::predicate::{And, DefaultPredicate, Predicate};
use tower_http::compression::{Compression, CompressionLayer};

/// Whether the content type is text worth compressing.
fn is_text(_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE) else { return false };
    let essence = content_type.as_bytes().split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    let is = |name: &str| essence.eq_ignore_ascii_case(name.as_bytes());
    essence.get(..5).is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"text/"))
        || is("image/svg+xml")
        || is("application/json")
        || is("application/problem+json")
        || is("application/javascript")
}

type TextPredicate = fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool;

/// When an answer is compressed: text, more than 32 bytes, not already encoded.
type WhenToCompress = And<DefaultPredicate, TextPredicate>;

fn when_to_compress() -> WhenToCompress {
    DefaultPredicate::new().and(is_text as TextPredicate)
}

/// The layer: gzip and Brotli for text answers, to clients that accept them.
pub fn layer() -> NegotiatedCompressionLayer {
    NegotiatedCompressionLayer
}

/// See [`layer`].
#[derive(Debug, Clone, Copy)]
pub struct NegotiatedCompressionLayer;

impl<S: Clone> Layer<S> for NegotiatedCompressionLayer {
    type Service = NegotiatedCompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let compressing = CompressionLayer::new().gzip(true).br(true).compress_when(when_to_compress()).layer(inner);
        NegotiatedCompression { compressing }
    }
}

/// The service of [`NegotiatedCompressionLayer`]: `tower-http`'s
/// compression, and its inner service (reached through it) for requests
/// that accept no encoding. One inner service, not two copies: axum clones
/// a route's whole stack on every request, and a second copy doubled that.
#[derive(Clone)]
pub struct NegotiatedCompression<S> {
    compressing: Compression<S, WhenToCompress>,
}

/// Whether `headers` accept an encoding this server offers (a fast,
/// generous check: the compression layer then negotiates exactly, `q=0`
/// included).
fn accepts_compression(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT_ENCODING).iter().any(|value| {
        let value = value.as_bytes();
        let has = |token: &[u8]| value.windows(token.len()).any(|w| w.eq_ignore_ascii_case(token));
        has(b"gzip") || has(b"br") || value.contains(&b'*')
    })
}

type Compressed<F> = Map<
    F,
    fn(
        Result<http::Response<tower_http::compression::CompressionBody<Body>>, std::convert::Infallible>,
    ) -> Result<Response, std::convert::Infallible>,
>;
type Plain<F> = Map<F, fn(Result<Response, std::convert::Infallible>) -> Result<Response, std::convert::Infallible>>;

impl<S> Service<Request> for NegotiatedCompression<S>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible> + Clone,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Either<Compressed<<Compression<S, WhenToCompress> as Service<Request>>::Future>, Plain<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Compression's readiness is its inner service's: one check covers
        // both ways a request can go.
        self.compressing.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if accepts_compression(request.headers()) {
            Either::Left(self.compressing.call(request).map(|result| result.map(|response| response.map(Body::new))))
        } else {
            Either::Right(self.compressing.get_mut().call(request).map(|result| result.map(add_vary)))
        }
    }
}

/// The `Vary` the compression layer adds to every answer it could compress.
fn add_vary(mut response: Response) -> Response {
    if when_to_compress().should_compress(&response) {
        response.headers_mut().append(VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_encodings() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
            accepts_compression(&headers)
        };
        assert!(with("gzip, deflate, br, zstd"));
        assert!(with("GZIP"));
        assert!(with("*"));
        assert!(!with("identity"));
        assert!(!with("deflate"));
        assert!(!accepts_compression(&HeaderMap::new()));
    }

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
        assert!(check("Application/JSON ; charset=utf-8"));
        assert!(!check("text"));
        for no in ["image/png", "application/octet-stream", "text/event-stream; x"] {
            // SSE is text/*, refused by the default predicate instead.
            assert_eq!(check(no), no.starts_with("text/"), "{no}");
        }
    }
}
