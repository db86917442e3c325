//! Operational routes (`/healthz`, `/readyz`) and the one-line-per-request log.

use std::{collections::BTreeMap, time::Instant};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use super::{health::Health, state::AppState, store::Db};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is alive and serving HTTP.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready: the database answers, its schema is current, every background task runs and the
/// last commit did not hit a storage fault. Otherwise 503 with each unhealthy part and why,
/// e.g. `{"status":"not_ready","unhealthy":{"storage":"the disk ... is full"}}`.
async fn readyz(State(db): State<Db>, State(health): State<Health>) -> Response {
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
    if unhealthy.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "unhealthy": unhealthy })),
        )
            .into_response()
    }
}

/// Logs one line per request: method, path, status and latency. Never headers or bodies.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let latency_us = started.elapsed().as_micros() as u64;
    tracing::info!(%method, %path, status = response.status().as_u16(), latency_us, "request");
    response
}
