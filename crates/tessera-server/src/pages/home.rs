//! `GET /`: what this is, and where to go.

use askama::Template;
use axum::response::Response;
use http::StatusCode;

use super::{Chrome, PageContext};

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    page: Chrome,
}

/// The home page.
pub async fn show(ctx: PageContext) -> Response {
    ctx.render(StatusCode::OK, &HomePage { page: ctx.chrome("Welcome") })
}
