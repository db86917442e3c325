//! Operational routes (`/healthz`, `/readyz`) and the one-line-per-request log.

use std::time::Instant;

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;

use super::{state::AppState, store::Db};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is alive and serving HTTP.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The database answers and its schema is current.
async fn readyz(State(db): State<Db>) -> Response {
    match db.is_ready().await {
        Ok(true) => Json(json!({ "status": "ready" })).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "detail": "database migrations are not applied" })),
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not_ready", "detail": "the database does not answer" })),
            )
                .into_response()
        }
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
