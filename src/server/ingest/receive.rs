//! `POST /api/v2/webhooks/gc-status`: the order of checks is the contract —
//! size (413) → content type (415) → authentication (401, nothing parsed) → validation (400)
//! → durable commit (503 on failure) → 202.

use axum::{
    body::Body,
    extract::State,
    http::{header::CONTENT_TYPE, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
    Json, Router,
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;

use crate::server::domain::envelope;
use crate::server::{
    domain::ClaimedEvent,
    error::ApiError,
    state::AppState,
    store::writer::{NewEvent, Stored},
    worker,
};

pub const WEBHOOK_PATH: &str = "/api/v2/webhooks/gc-status";

pub fn router() -> Router<AppState> {
    Router::new().route(WEBHOOK_PATH, post(receive_webhook))
}

/// The acknowledgement a sender gets once its event is durably stored.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: bool,
    pub id: String,
    pub duplicate: bool,
}

/// Answers the sender and keeps the ingest metrics.
async fn receive_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let started = std::time::Instant::now();
    let result = ingest(&state, &headers, body).await;
    metrics::histogram!("gc_status_ingest_latency_seconds").record(started.elapsed().as_secs_f64());
    match &result {
        Ok(accepted) if accepted.duplicate => {
            metrics::counter!("gc_status_events_duplicate_total").increment(1)
        }
        Ok(_) => metrics::counter!("gc_status_events_received_total").increment(1),
        Err(err) => metrics::counter!("gc_status_events_rejected_total", "reason" => err.code())
            .increment(1),
    }
    Ok((StatusCode::ACCEPTED, Json(result?)))
}

#[tracing::instrument(skip_all)]
async fn ingest(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Accepted, ApiError> {
    let limit = state.max_body_bytes;
    let declared_too_large = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64);
    if declared_too_large {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // A body trickled in slowly holds a connection and memory: cut it off.
    let reading = Limited::new(body, limit).collect();
    let body = match tokio::time::timeout(state.limits.body_timeout, reading).await {
        Err(_) => return Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(_)) => return Err(ApiError::UnreadableBody),
    };

    state
        .auth
        .verify(headers, &body)
        .map_err(|reason| ApiError::Unauthorized {
            reason,
            offer_basic: state.auth.offers_basic(),
        })?;

    let envelope = envelope::parse(&body)?;
    let received_at = jiff::Timestamp::now().as_millisecond();
    // Inline processing: interpreting is pure CPU, done here in parallel across requests and
    // outside the write lock; the writer stores the result in the same commit as the event.
    let processed = state.inline.as_deref().map(|processor| {
        worker::verdict(
            processor,
            &ClaimedEvent {
                seq: 0,
                id: envelope.event_id.clone(),
                event_type: envelope.event_type.clone(),
                payload: body.clone(),
                attempts: 1,
                received_at,
            },
        )
    });
    let receipt = state
        .writer
        .store(NewEvent {
            id: envelope.event_id,
            event_type: envelope.event_type,
            payload: body,
            received_at,
            processed,
        })
        .await?;
    if receipt.id_reused && receipt.stored == Stored::New {
        // Senders that reuse an id (a conversation id per state change) show up here.
        metrics::counter!("gc_status_event_id_reused_total").increment(1);
    }

    Ok(Accepted {
        accepted: true,
        id: receipt.id,
        duplicate: receipt.stored == Stored::Duplicate,
    })
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, value.parse().expect("header"));
        h
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(&with_type("application/json")));
        assert!(is_json(&with_type("application/json; charset=utf-8")));
        assert!(is_json(&with_type("Application/JSON")));
        assert!(is_json(&with_type("application/cloudevents+json")));
        assert!(!is_json(&with_type("text/plain")));
        assert!(!is_json(&with_type("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
