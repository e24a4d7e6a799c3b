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
    let created = time::OffsetDateTime::from_unix_timestamp(user.created_at.as_millis() / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let view = ProfilePage {
        page: ctx.chrome("Your profile"),
        username: user.username,
        created_at: created
            .format(time::macros::format_description!("[day] [month repr:long] [year], [hour]:[minute] UTC"))
            .unwrap_or_default(),
        created_at_iso: created.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        visits,
    };
    ctx.render(StatusCode::OK, &view)
}
