//! Calls to the Platform API: one token for every caller (from [`TokenSource`]), renewed once
//! on a 401; a 429 holds every call until its `Retry-After` has passed; 502/503/504 are tried
//! again with a short backoff, as Genesys's own SDKs do. Each call is counted by endpoint and
//! status in `/metrics`.

use std::time::{Duration, Instant};

use reqwest::{header, Method, StatusCode};
use serde::{de::DeserializeOwned, Serialize};

use super::GenesysSettings;
use crate::server::{
    config::OAuthClientAuth,
    oauth::{TokenError, TokenSettings, TokenSource},
    transport::{describe_http_error, parse_retry_after},
};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Tries of one call (the first and the retries after 429 or 5xx).
const MAX_TRIES: u32 = 4;
/// A `Retry-After` longer than this is not waited out inside a call: the call fails and its
/// caller tries at its next round (the hold still applies to every call until then).
const LONGEST_WAIT_IN_CALL: Duration = Duration::from_secs(30);
/// The wait after a 429 without `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);

/// Why a call failed, worded for the log and the wallboard (never a token or the secret).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 404: the thing asked for is not there (yet, for a conversation's details).
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Token(#[from] TokenError),
    /// Genesys answered with an error status.
    #[error("Genesys Cloud answered {status}{detail}")]
    Status { status: u16, detail: String },
    /// Still rate-limited after the waits a call allows.
    #[error("rate-limited by Genesys Cloud (429) for {0:?} more")]
    RateLimited(Duration),
    #[error("Genesys Cloud could not be reached: {0}")]
    Transport(String),
    /// What Genesys sent could not be stored here (the writer is busy or stopped).
    #[error("what Genesys Cloud sent could not be stored: {0}")]
    Store(String),
    #[error("Genesys Cloud's answer to {endpoint} has an unexpected shape: {error}")]
    Shape {
        endpoint: &'static str,
        error: String,
    },
}

/// The Platform API of one org, as one OAuth client.
pub struct Api {
    http: reqwest::Client,
    base: reqwest::Url,
    tokens: TokenSource,
    /// No call goes out before this instant (set by a 429's `Retry-After`).
    hold: std::sync::Mutex<Option<Instant>>,
}

impl Api {
    pub fn new(settings: &GenesysSettings) -> anyhow::Result<Self> {
        // Redirects are not followed: a token must only ever go to the configured host.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("gc-status/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tokens = TokenSource::new(
            TokenSettings {
                token_url: settings.token_url.to_string(),
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                client_auth: OAuthClientAuth::Basic,
                scopes: Vec::new(),
                audience: None,
                margin: Duration::from_secs(300),
                purpose: "Genesys Cloud",
                label: "genesys",
            },
            "GC_STATUS_GENESYS_LOGIN_URL",
            http.clone(),
        )?;
        Ok(Api {
            http,
            base: settings.api_url.clone(),
            tokens,
            hold: Default::default(),
        })
    }

    /// `GET path` (with its query), read as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
    ) -> Result<T, ApiError> {
        let body = self.call(endpoint, Method::GET, path, None).await?;
        decode(endpoint, &body)
    }

    /// `POST path` with `body` as JSON, read as `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let json = serde_json::to_vec(body).map_err(|e| ApiError::Shape {
            endpoint,
            error: e.to_string(),
        })?;
        let body = self.call(endpoint, Method::POST, path, Some(json)).await?;
        decode(endpoint, &body)
    }

    /// `PUT path` with `body` as JSON; the answer is not read.
    pub async fn put(
        &self,
        endpoint: &'static str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<(), ApiError> {
        let json = serde_json::to_vec(body).map_err(|e| ApiError::Shape {
            endpoint,
            error: e.to_string(),
        })?;
        self.call(endpoint, Method::PUT, path, Some(json))
            .await
            .map(drop)
    }

    async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<axum::body::Bytes, ApiError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ApiError::Transport(format!("bad path {path}: {e}")))?;
        let mut token = self.tokens.token().await?;
        let mut renewed = false;
        let mut tries = 0;
        loop {
            tries += 1;
            self.wait_for_hold().await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.secret())
                .header(header::ACCEPT, "application/json");
            if let Some(body) = &body {
                request = request
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    count(endpoint, "error");
                    return Err(ApiError::Transport(describe_http_error(&err)));
                }
            };
            let status = response.status();
            count(endpoint, status.as_str());
            match status {
                s if s.is_success() => {
                    return response
                        .bytes()
                        .await
                        .map_err(|e| ApiError::Transport(describe_http_error(&e)))
                }
                StatusCode::UNAUTHORIZED if !renewed => {
                    // Expired early or revoked: one renewal, shared with every caller that
                    // saw the same token refused.
                    renewed = true;
                    token = self.tokens.renew_rejected(&token).await?;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    metrics::counter!("gc_status_genesys_rate_limited_total", "endpoint" => endpoint)
                        .increment(1);
                    let wait = response
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after)
                        .unwrap_or(DEFAULT_RETRY_AFTER);
                    tracing::warn!(
                        endpoint,
                        retry_after_secs = wait.as_secs_f64(),
                        "Genesys Cloud rate-limited gc-status (429); every call waits"
                    );
                    self.hold_for(wait);
                    if tries >= MAX_TRIES {
                        return Err(ApiError::RateLimited(wait));
                    }
                }
                StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                    if tries < MAX_TRIES =>
                {
                    tokio::time::sleep(Duration::from_millis(250 << tries)).await;
                }
                StatusCode::NOT_FOUND => return Err(ApiError::NotFound),
                _ => {
                    let detail = message(response).await;
                    return Err(ApiError::Status {
                        status: status.as_u16(),
                        detail,
                    });
                }
            }
        }
    }

    fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut hold = self.hold.lock().unwrap_or_else(|p| p.into_inner());
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    /// Waits out a 429's hold; fails when the hold is longer than a call may wait.
    async fn wait_for_hold(&self) -> Result<(), ApiError> {
        let until = *self.hold.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = until {
            let left = until.saturating_duration_since(Instant::now());
            if left > LONGEST_WAIT_IN_CALL {
                return Err(ApiError::RateLimited(left));
            }
            if !left.is_zero() {
                tokio::time::sleep(left).await;
            }
        }
        Ok(())
    }
}

fn count(endpoint: &'static str, status: &str) {
    metrics::counter!(
        "gc_status_genesys_api_calls_total",
        "endpoint" => endpoint,
        "status" => status.to_owned()
    )
    .increment(1);
}

fn decode<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Shape {
        endpoint,
        error: e.to_string(),
    })
}

/// Genesys's error text (`{"message", "code"}`), on one line and short.
async fn message(response: reqwest::Response) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: Option<String>,
        code: Option<String>,
    }
    let bytes = response.bytes().await.unwrap_or_default();
    let Ok(body) = serde_json::from_slice::<ErrorBody>(&bytes) else {
        return String::new();
    };
    let text = match (body.code, body.message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (None, Some(text)) | (Some(text), None) => text,
        (None, None) => return String::new(),
    };
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(" ({})", text.chars().take(200).collect::<String>())
}
