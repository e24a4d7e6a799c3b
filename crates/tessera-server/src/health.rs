//! Liveness and readiness probes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use std::time::Duration;

use tessera::SessionEngine;

use crate::database::Database;

/// How long a probe waits for a dependency before calling it down (the
/// store time-out).
#[derive(Debug, Clone, Copy)]
pub struct ProbeTimeout(pub Duration);

/// `GET /healthz`: the process answers. No session or database work.
pub async fn live() -> &'static str {
    "ok"
}

/// `GET /readyz`: the session store and the database answer (each within the
/// store time-out); 503 naming the one that does not.
pub async fn ready(
    State(engine): State<SessionEngine>,
    State(db): State<Database>,
    State(ProbeTimeout(timeout)): State<ProbeTimeout>,
) -> Response {
    let (store, database) = tokio::join!(engine.ping(), async { tokio::time::timeout(timeout, db.ping()).await });
    let store_ok = store.is_ok();
    let database_ok = matches!(database, Ok(Ok(())));
    let status = if store_ok && database_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let verdict = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "session_store": verdict(store_ok),
        "database": verdict(database_ok),
    });
    (status, Json(body)).into_response()
}
