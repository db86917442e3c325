//! The one error type of the HTTP API: each variant maps to a status and a short JSON body
//! `{"error": "<code>", "detail": "<what to do>"}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use super::{
    domain::envelope::InvalidPayload,
    store::{retry_reason, writer::StoreError},
};

/// Seconds a sender is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 413: the body is over the configured limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: the body is not declared as JSON.
    #[error("send the body as JSON with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// 400: the body could not be read.
    #[error("the request body could not be read")]
    UnreadableBody,
    /// 408: the body did not arrive within the read timeout.
    #[error("the request body arrived too slowly; send it at once")]
    RequestTimeout,
    /// 401: credentials missing or wrong. The reason is logged, not sent.
    #[error("missing or invalid credentials")]
    Unauthorized {
        /// Why (from sender authentication); logged, never sent.
        reason: Box<dyn std::error::Error + Send + Sync>,
        offer_basic: bool,
    },
    /// 400: the payload is not one of the accepted envelopes.
    #[error(transparent)]
    InvalidPayload(#[from] InvalidPayload),
    /// 503 with `Retry-After`: the event was not (certainly) stored; the sender should retry.
    /// An unexpected database error ([`StoreError::Failed`]) is a 500 instead.
    #[error("the event could not be stored ({0}); retry later")]
    StorageUnavailable(#[from] StoreError),
    /// 400: a malformed admin request; the message says what is expected.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 401: the admin API needs `Authorization: Bearer <token>`.
    #[error("send `Authorization: Bearer <GC_STATUS_ADMIN_TOKEN>`")]
    AdminUnauthorized,
    /// 429 with `Retry-After`: too many wrong admin tokens from this address.
    #[error("too many wrong admin tokens from this address; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    /// 403: a wrong admin token, or the admin API is disabled.
    #[error("{0}")]
    Forbidden(String),
    /// 503 with `Retry-After` when the database is busy, full or unreachable (retry later);
    /// any other database error is an opaque 500, logged with its detail.
    #[error("the database is unavailable; retry later")]
    Database(#[from] sqlx::Error),
    /// 500: an unexpected failure, logged with its cause chain and never sent to the client.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<crate::server::domain::FilterError> for ApiError {
    /// A dead-letter filter that cannot be used is a bad request; its message says why.
    fn from(err: crate::server::domain::FilterError) -> Self {
        ApiError::BadRequest(err.to_string())
    }
}

impl ApiError {
    /// The short machine-readable code sent as `error`.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::UnreadableBody => (StatusCode::BAD_REQUEST, "unreadable_body"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::InvalidPayload(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            ApiError::StorageUnavailable(err) if !err.is_retryable() => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            ApiError::StorageUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::AdminUnauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::Database(err) if retry_reason(err).is_none() => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            ApiError::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Unauthorized { reason, .. } => {
                tracing::warn!(%reason, "webhook rejected: unauthorized");
            }
            ApiError::Internal(err) => tracing::error!("internal error: {err:#}"),
            ApiError::StorageUnavailable(err) => tracing::warn!(%err, "webhook answered 503"),
            ApiError::Database(err) if retry_reason(err).is_none() => {
                tracing::error!(error = ?err, "unexpected database error; answered 500")
            }
            ApiError::Database(err) => tracing::warn!(error = %err, "database error; answered 503"),
            _ => tracing::debug!(error = %self, "request rejected"),
        }
        let detail = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // Never a database's or a bug's text to a client: the log has it.
            "internal error; the server log has the detail".to_owned()
        } else {
            self.to_string()
        };
        let body = Json(json!({ "error": code, "detail": detail }));
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::StorageUnavailable(_) | ApiError::Database(_)
                if status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            ApiError::Unauthorized {
                offer_basic: true, ..
            } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="gc-status""#),
                );
            }
            _ => {}
        }
        response
    }
}
