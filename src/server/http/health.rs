//! Operational routes: `/healthz` (alive) and `/readyz` (ready to take webhooks).

use std::collections::BTreeMap;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::server::{health::Health, store::Db};

/// The process is alive and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready: the database answers, its schema is current, every background task runs and the
/// last commit did not hit a storage fault. Otherwise 503 with each unhealthy part and why,
/// e.g. `{"status":"not_ready","unhealthy":{"storage":"the disk ... is full"}}`. Parts
/// that do not stop webhooks (Genesys Cloud out of reach) are listed under `degraded`, ready.
pub async fn readyz(State(db): State<Db>, State(health): State<Health>) -> Response {
    let mut unhealthy: BTreeMap<&'static str, String> = health.problems();
    match db.is_ready().await {
        Ok(true) => {}
        Ok(false) => {
            unhealthy.insert("database", "migrations are not applied".into());
        }
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            unhealthy.insert("database", "the database does not answer".into());
        }
    }
    let degraded = health.degradations();
    if unhealthy.is_empty() && degraded.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else if unhealthy.is_empty() {
        // Webhooks are still taken: ready, but say what is out of reach.
        Json(json!({ "status": "ready", "degraded": degraded })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "unhealthy": unhealthy, "degraded": degraded })),
        )
            .into_response()
    }
}
