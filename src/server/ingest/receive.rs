//! `POST /api/v2/webhooks/gc-status`: the order of checks is the contract —
//! declared size (413) → content type (415) → header credentials (401, before any of the body
//! is read) → the body within its time and size (408, 413) → signature (401, nothing parsed)
//! → validation (400 for a body that is not JSON) → durable commit (503 on failure) → 202.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header::CONTENT_TYPE, HeaderMap, StatusCode},
    response::IntoResponse,
    Json,
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;

use super::auth::{HeaderCheck, SenderAuth};
use crate::server::domain::envelope;
use crate::server::{
    domain::{now_ms, ClaimedEvent, ProcessError},
    error::ApiError,
    limits,
    store::{
        writer::{IngestWriter, NewEvent, Stored},
        Db,
    },
    worker::{self, Processor},
};

pub const WEBHOOK_PATH: &str = "/api/v2/webhooks/gc-status";

/// What the webhook route needs: who may send, how much and how fast, and where it goes.
pub struct Webhooks {
    pub auth: SenderAuth,
    pub writer: IngestWriter,
    pub max_body_bytes: usize,
    /// How long a body may take to arrive.
    pub body_timeout: Duration,
    /// The processor that runs on each event as it arrives, when processing is inline.
    pub inline: Option<Arc<dyn Processor>>,
    /// For filing the dead letter of an unrecognised body when processing is not inline.
    pub db: Db,
}

/// The acknowledgement a sender gets once its event is durably stored.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: bool,
    pub id: String,
    pub duplicate: bool,
    /// Set when the body is JSON in a shape gc-status does not recognise: it is stored and
    /// dead-lettered at once with this reason, to be replayed once understood.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<String>,
}

/// Answers the sender and keeps the ingest metrics.
pub async fn receive_webhook(
    State(state): State<Arc<Webhooks>>,
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
async fn ingest(state: &Webhooks, headers: &HeaderMap, body: Body) -> Result<Accepted, ApiError> {
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
    let unauthorized = |reason: super::auth::AuthError| ApiError::Unauthorized {
        reason: reason.into(),
        offer_basic: state.auth.offers_basic(),
    };
    let by_headers = state.auth.check_headers(headers).map_err(unauthorized)?;
    // A body trickled in slowly holds a connection and memory: cut it off.
    let reading = Limited::new(body, limit).collect();
    let body = match tokio::time::timeout(state.body_timeout, reading).await {
        Err(_) => {
            limits::body_cut();
            return Err(ApiError::RequestTimeout);
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(_)) => return Err(ApiError::UnreadableBody),
    };

    if by_headers == HeaderCheck::NeedsBody {
        state.auth.verify(headers, &body).map_err(unauthorized)?;
    }

    state
        .store(body, jiff::Timestamp::now().as_millisecond())
        .await
}

impl Webhooks {
    /// Stores an authenticated body: validated, processed inline when processing is, and
    /// durably committed before this returns. What the webhook route does after its checks,
    /// and how the Genesys Cloud connector feeds what it fetches into the same pipeline.
    pub async fn store(&self, body: Bytes, received_at: i64) -> Result<Accepted, ApiError> {
        let envelope = match envelope::parse(&body) {
            Ok(envelope) => envelope,
            // Valid JSON in a shape not recognised: EventBridge never redelivers a 4xx, so a
            // 400 would lose it for good. Keep it where an admin sees it and can replay it.
            Err(invalid) if envelope::is_json(&body) => {
                return dead_on_arrival(self, body, received_at, invalid.to_string()).await
            }
            Err(invalid) => return Err(invalid.into()),
        };
        // Inline processing: interpreting is pure CPU, done here in parallel across requests and
        // outside the write lock; the writer stores the result in the same commit as the event.
        let processed = self.inline.as_deref().map(|processor| {
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
        let receipt = self
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
            dead_lettered: None,
        })
    }
}

/// Stores a body of an unrecognised shape under its digest and dead-letters it at once.
async fn dead_on_arrival(
    state: &Webhooks,
    body: Bytes,
    received_at: i64,
    why: String,
) -> Result<Accepted, ApiError> {
    let reason = format!("unrecognised payload: {why}");
    let id = envelope::body_digest(&body);
    let verdict = || Err(ProcessError::Permanent(reason.clone()));
    let receipt = state
        .writer
        .store(NewEvent {
            id,
            event_type: envelope::UNRECOGNISED_TYPE.to_owned(),
            payload: body,
            received_at,
            processed: Some(verdict()),
        })
        .await?;
    // With inline processing the writer files the letter with the verdicts it applies;
    // otherwise it is filed here (the workers would only take the event after a grace).
    if state.inline.is_none() && receipt.stored == Stored::New {
        let now = now_ms();
        state
            .db
            .complete_inline(&[(receipt.id.clone(), verdict())], now, now)
            .await?;
    }
    metrics::counter!("gc_status_events_unrecognised_total").increment(1);
    Ok(Accepted {
        accepted: true,
        id: receipt.id,
        duplicate: receipt.stored == Stored::Duplicate,
        dead_lettered: Some(reason),
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
