//! One delivery to the sink: the normalized record, the POST, and what its answer means.

use std::{sync::Arc, time::Duration};

use reqwest::{header, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::server::domain::{
    interpret::{self, Rules},
    ClaimedEvent, Effect,
};
use crate::server::{
    oauth::{Token, TokenSource},
    transport::{describe_http_error, parse_retry_after},
};

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Worth retrying (the sink or the token endpoint is unwell); `retry_after` is the
    /// sink's own `Retry-After`, when it sent one.
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Will not succeed as it is (the sink refused the record).
    Permanent {
        error: String,
    },
}

/// How much of the sink's answer a dead letter quotes.
const QUOTED_ANSWER_CHARS: usize = 200;

/// The sink's address and how to reach it.
pub struct Sink {
    http: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    tokens: Option<Arc<TokenSource>>,
    rules: Rules,
}

impl Sink {
    pub fn new(
        http: reqwest::Client,
        url: reqwest::Url,
        timeout: Duration,
        tokens: Option<Arc<TokenSource>>,
        rules: Rules,
    ) -> Self {
        Sink {
            http,
            url,
            timeout,
            tokens,
            rules,
        }
    }

    /// Delivers `event`'s record. A 401 renews the token once and retries at once; a second
    /// 401 is a transient failure.
    pub async fn deliver(&self, event: &ClaimedEvent) -> Delivery {
        let body = match record(event, &self.rules) {
            Ok(body) => body,
            Err(error) => return Delivery::Permanent { error },
        };
        let mut token = match self.token().await {
            Ok(token) => token,
            Err(error) => return error,
        };
        let mut renewed = false;
        loop {
            let answer = self.post(event, &body, token.as_ref()).await;
            match answer {
                Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
                    metrics::counter!("gc_status_forward_failures_total", "class" => "unauthorized")
                        .increment(1);
                    let (Some(tokens), Some(rejected), false) = (&self.tokens, &token, renewed)
                    else {
                        let what = if renewed {
                            "401 Unauthorized again with a new token"
                        } else {
                            "401 Unauthorized (no OAuth2 token is configured: set GC_STATUS_OAUTH_TOKEN_URL)"
                        };
                        return Delivery::Transient {
                            error: format!("sink answered {what}"),
                            retry_after: None,
                        };
                    };
                    match tokens.renew_rejected(rejected).await {
                        Ok(fresh) => token = Some(fresh),
                        Err(err) => {
                            return Delivery::Transient {
                                error: format!("sink answered 401 Unauthorized and {err}"),
                                retry_after: None,
                            }
                        }
                    }
                    renewed = true;
                }
                Ok(response) => return classify(response, token.as_ref()).await,
                // A request that cannot even be built is this event's fault, not the sink's:
                // retrying would fail the same way and pause forwarding for everyone.
                Err(err) if err.is_builder() => {
                    return Delivery::Permanent {
                        error: format!("the request to the sink cannot be built: {err}"),
                    }
                }
                Err(err) => {
                    return Delivery::Transient {
                        error: format!("sink unreachable: {}", describe_http_error(&err)),
                        retry_after: None,
                    }
                }
            }
        }
    }

    async fn token(&self) -> Result<Option<Token>, Delivery> {
        match &self.tokens {
            None => Ok(None),
            Some(tokens) => tokens
                .token()
                .await
                .map(Some)
                .map_err(|err| Delivery::Transient {
                    error: err.to_string(),
                    retry_after: None,
                }),
        }
    }

    async fn post(
        &self,
        event: &ClaimedEvent,
        body: &axum::body::Bytes,
        token: Option<&Token>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", idempotency_key(&event.id))
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token.secret());
        }
        request.send().await
    }
}

/// The bytes of an event id that an `Idempotency-Key` carries percent-encoded: controls,
/// space and `%` itself (so the encoding is unambiguous); non-ASCII is always encoded.
const NOT_IN_KEY: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'%');

/// The event id as an `Idempotency-Key` header value: unchanged when it is printable ASCII
/// without `%`, else percent-encoded, so every id gives a valid header and distinct ids give
/// distinct keys.
pub fn idempotency_key(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, NOT_IN_KEY).to_string()
}

/// What the sink's answer means for the delivery.
async fn classify(response: reqwest::Response, token: Option<&Token>) -> Delivery {
    let status = response.status();
    if status.is_success() {
        return Delivery::Delivered;
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let transient = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = quote_answer(response, token).await;
    let mut error = format!("sink answered {status}");
    if let Some(location) = location.filter(|_| status.is_redirection()) {
        error.push_str(&format!(
            " to {location}: set GC_STATUS_SINK_URL to the final address"
        ));
    }
    if !answer.is_empty() {
        error.push_str(&format!(": {answer}"));
    }
    if transient {
        Delivery::Transient { error, retry_after }
    } else {
        Delivery::Permanent { error }
    }
}

/// The start of the sink's answer, on one line, with the token blanked out should the sink
/// echo the request.
async fn quote_answer(response: reqwest::Response, token: Option<&Token>) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    let head = &bytes[..bytes.len().min(QUOTED_ANSWER_CHARS * 4)];
    let mut text: String = String::from_utf8_lossy(head)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(token) = token.filter(|t| !t.secret().is_empty()) {
        text = text.replace(token.secret(), "[token]");
    }
    match text.char_indices().nth(QUOTED_ANSWER_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The normalized record of an event, as the sink receives it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    queue_id: Option<&'a str>,
    conversation_id: Option<&'a str>,
    media_type: Option<&'a str>,
    /// `queued`, `answered`, `ended`, `observed`, or `ignored` (a topic on the ignore list).
    state: &'static str,
    outcome: Option<&'a str>,
    queued_at: Option<String>,
    answered_at: Option<String>,
    ended_at: Option<String>,
    observed_at: Option<String>,
    received_at: Option<String>,
    /// The body as received.
    payload: &'a RawValue,
}

/// The record of `event` as JSON. The statistics accepted this event, so interpreting it
/// again gives the same effect — unless the settings changed since (a topic taken off the
/// ignore list): then the record carries the payload alone, as for an ignored topic, rather
/// than the sink losing the event.
pub fn record(event: &ClaimedEvent, rules: &Rules) -> Result<axum::body::Bytes, String> {
    let payload: &RawValue = serde_json::from_slice(&event.payload)
        .map_err(|err| format!("the stored payload is not JSON: {err}"))?;
    let effect = interpret::interpret(&event.event_type, &event.payload, event.received_at, rules)
        .unwrap_or(Effect::Ignored);
    let time = |ms: Option<i64>| {
        ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(|t| t.to_string())
    };
    let mut record = Record {
        id: &event.id,
        event_type: &event.event_type,
        queue_id: None,
        conversation_id: None,
        media_type: None,
        state: "ignored",
        outcome: None,
        queued_at: None,
        answered_at: None,
        ended_at: None,
        observed_at: None,
        received_at: time(Some(event.received_at)),
        payload,
    };
    match &effect {
        Effect::Ignored => {}
        Effect::Conversation(c) => {
            record.queue_id = c.queue_id.as_deref();
            record.conversation_id = Some(&c.conversation_id);
            record.media_type = c.media_type.as_deref();
            record.outcome = c.outcome.as_deref();
            record.state = if c.ended_at.is_some() {
                "ended"
            } else if c.answered_at.is_some() {
                "answered"
            } else {
                "queued"
            };
            record.queued_at = time(c.queued_at);
            record.answered_at = time(c.answered_at);
            record.ended_at = time(c.ended_at);
        }
        Effect::Observation(o) => {
            record.queue_id = Some(&o.queue_id);
            record.media_type = Some(&o.media_type);
            record.state = "observed";
            record.observed_at = time(Some(o.observed_at));
        }
    }
    serde_json::to_vec(&record)
        .map(axum::body::Bytes::from)
        .map_err(|err| format!("the record cannot be written: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_id_gives_a_valid_and_distinct_idempotency_key() {
        let uuid = "3fa85f64-5717-4562-b3fc-2c963f66afa6";
        assert_eq!(idempotency_key(uuid), uuid);
        assert_eq!(idempotency_key("conv-1~0a1b2c3d"), "conv-1~0a1b2c3d");
        assert_eq!(idempotency_key("line\nbreak"), "line%0Abreak");
        let odd = [
            "line\nbreak",
            "tab\there",
            "caf\u{e9}",
            "50%",
            "50%25",
            "nul\u{0}",
            "a b",
        ];
        let keys: std::collections::HashSet<String> = odd
            .iter()
            .map(|id| {
                let key = idempotency_key(id);
                assert!(
                    axum::http::HeaderValue::from_str(&key).is_ok(),
                    "{id:?} gives {key:?}"
                );
                key
            })
            .collect();
        assert_eq!(keys.len(), odd.len(), "distinct ids, distinct keys");
    }
}
