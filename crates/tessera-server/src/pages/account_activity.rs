//! `GET /account/activity`: the user's own audit trail.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tessera_axum::RequireUser;

use super::{display_time, Chrome, PageContext};
use crate::audit::AuditKind;
use crate::database::Database;
use crate::error_pages::ServerError;

struct Row {
    kind: String,
    what: &'static str,
    when: String,
    when_iso: String,
    from: String,
}

#[derive(Template)]
#[template(path = "account_activity.html")]
struct ActivityPage {
    page: Chrome,
    events: Vec<Row>,
}

/// The latest 50 events.
pub async fn show(
    State(db): State<Database>,
    RequireUser(_): RequireUser,
    ctx: PageContext,
) -> Result<Response, ServerError> {
    let Some(user) = ctx.user.as_ref() else { return Ok(StatusCode::SEE_OTHER.into_response()) };
    let events = db.audit_events(user.id, 50).await.map_err(ServerError::unavailable)?;
    let events = events
        .into_iter()
        .map(|event| {
            let (when, when_iso) = display_time(event.created_at);
            Row {
                what: AuditKind::describe(&event.kind),
                kind: event.kind,
                when,
                when_iso,
                from: event.ip.unwrap_or_else(|| "unknown".to_owned()),
            }
        })
        .collect();
    Ok(ctx.render(StatusCode::OK, &ActivityPage { page: ctx.chrome("Recent activity"), events }))
}
