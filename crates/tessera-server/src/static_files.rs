//! The site's few static files, compiled into the binary: one stylesheet,
//! one small script (progressive enhancement only) and the icon.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

/// The routes under `/static/`. They never touch the session.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/static/style.css", get(|| file("text/css; charset=utf-8", include_str!("../static/style.css"))))
        .route("/static/forms.js", get(|| file("text/javascript; charset=utf-8", include_str!("../static/forms.js"))))
        .route("/static/icon.svg", get(|| file("image/svg+xml", include_str!("../static/icon.svg"))))
        .route("/favicon.ico", get(|| file("image/svg+xml", include_str!("../static/icon.svg"))))
}

async fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=3600")], body)
}
