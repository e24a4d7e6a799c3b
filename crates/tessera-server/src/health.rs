//! Liveness and readiness probes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use crate::app::AppState;

/// `GET /healthz`: the process answers. No session or database work.
pub async fn live() -> &'static str {
    "ok"
}

/// `GET /readyz`: the session store and the database answer (each within the
/// store time-out); 503 naming the one that does not.
pub async fn ready(State(state): State<AppState>) -> Response {
    let (store, database) =
        tokio::join!(state.engine.ping(), async { tokio::time::timeout(state.store_timeout, state.db.ping()).await });
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
