//! `GET /profile`: who you are, and how often you came by this session.

use askama::Template;
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use tessera_axum::RequireUser;

use super::{Chrome, PageContext};

#[derive(Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    page: Chrome,
    username: String,
    created_at: String,
    created_at_iso: String,
    visits: u64,
}

/// The profile page. The visit counter goes through the session's
/// read-modify-write API, so concurrent views never lose an increment.
pub async fn show(RequireUser(_): RequireUser, ctx: PageContext) -> Response {
    let Some(user) = ctx.user.clone() else {
        // The account was deleted or disabled since login: end the session.
        ctx.session.logout();
        return Redirect::to("/login").into_response();
    };
    let visits = ctx.session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).unwrap_or(0);
    let (created_at, created_at_iso) = super::display_time(user.created_at);
    let view =
        ProfilePage { page: ctx.chrome("Your profile"), username: user.username, created_at, created_at_iso, visits };
    ctx.render(StatusCode::OK, &view)
}
