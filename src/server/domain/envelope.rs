//! Recognising and validating the three payload shapes gc-status accepts.
//!
//! Only the fields that identify and route an event are checked; the body itself is stored
//! byte for byte, so unknown fields are kept, never rejected.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Longest event id accepted from a payload; longer ids are a sign of a wrong field.
pub const MAX_ID_LEN: usize = 256;

/// Which envelope a payload arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvelopeKind {
    /// `{"event", "id"?, "timestamp", "data"}`.
    Simple,
    /// Genesys Cloud notification: `{"topicName", "version"?, "eventBody", "metadata"?}`.
    Notification,
    /// Amazon EventBridge: `{"version", "id", "detail-type", "source", "time", "detail"}`.
    EventBridge,
}

/// What ingestion needs to know about a valid payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    pub kind: EnvelopeKind,
    /// The envelope's own id, else the SHA-256 of the body: a redelivery maps to the same id.
    pub event_id: String,
    /// The simple event's `event`, else the notification's `topicName`.
    pub event_type: String,
}

/// Why a payload was rejected; the message names the offending field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPayload(pub String);

fn invalid(message: impl Into<String>) -> InvalidPayload {
    InvalidPayload(message.into())
}

/// The top-level fields of all three envelopes, borrowed from the body without parsing
/// nested values.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow, rename = "topicName")]
    topic_name: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventBody")]
    event_body: Option<&'a RawValue>,
    #[serde(borrow, rename = "detail-type")]
    detail_type: Option<&'a RawValue>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
}

fn parse_fields<'a>(json: &'a str, at: &str) -> Result<Fields<'a>, InvalidPayload> {
    serde_json::from_str(json).map_err(|e| match e.classify() {
        serde_json::error::Category::Data if at.is_empty() => {
            invalid(format!("the body must be a JSON object: {e}"))
        }
        serde_json::error::Category::Data => invalid(format!("`{at}` must be an object: {e}")),
        _ => invalid(format!("malformed JSON: {e}")),
    })
}

/// Deepest nesting accepted. Real payloads stay under ten levels; the parser keeps nested
/// values it does not read as raw text, where serde's own recursion limit does not reach, so
/// the limit is enforced here, before anything is stored.
pub const MAX_DEPTH: usize = 64;

/// Whether `json` nests arrays and objects deeper than `limit` (strings are skipped).
fn nests_deeper_than(json: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Validates `body` and extracts the event's id and type.
pub fn parse(body: &[u8]) -> Result<Envelope, InvalidPayload> {
    let json = std::str::from_utf8(body).map_err(|_| invalid("the body is not valid UTF-8"))?;
    if nests_deeper_than(json, MAX_DEPTH) {
        return Err(invalid(format!(
            "the body nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let fields = parse_fields(json, "")?;

    if fields.detail_type.is_some() || (fields.detail.is_some() && fields.source.is_some()) {
        required_string(fields.detail_type, "detail-type")?;
        let detail = required_object(fields.detail, "detail")?;
        let inner = parse_fields(detail.get(), "detail")?;
        let topic = required_string(inner.topic_name, "detail.topicName")?;
        required_object(inner.event_body, "detail.eventBody")?;
        return Ok(Envelope {
            kind: EnvelopeKind::EventBridge,
            event_id: optional_id(fields.id, "id")?.unwrap_or_else(|| body_digest(body)),
            event_type: topic.into_owned(),
        });
    }
    if fields.topic_name.is_some() || fields.event_body.is_some() {
        let topic = required_string(fields.topic_name, "topicName")?;
        required_object(fields.event_body, "eventBody")?;
        return Ok(Envelope {
            kind: EnvelopeKind::Notification,
            event_id: body_digest(body),
            event_type: topic.into_owned(),
        });
    }
    if fields.event.is_some() || fields.data.is_some() {
        let event = required_string(fields.event, "event")?;
        let timestamp = required_string(fields.timestamp, "timestamp")?;
        if timestamp.parse::<jiff::Timestamp>().is_err() {
            return Err(invalid(
                "`timestamp` must be an RFC 3339 date-time such as 2026-01-31T09:30:00Z",
            ));
        }
        required_object(fields.data, "data")?;
        return Ok(Envelope {
            kind: EnvelopeKind::Simple,
            event_id: optional_id(fields.id, "id")?.unwrap_or_else(|| body_digest(body)),
            event_type: event.into_owned(),
        });
    }
    Err(invalid(
        "no known envelope: expected a simple event (`event`, `timestamp`, `data`), a Genesys \
         Cloud notification (`topicName`, `eventBody`) or an EventBridge envelope \
         (`detail-type`, `detail`)",
    ))
}

fn required_string<'a>(
    raw: Option<&'a RawValue>,
    name: &str,
) -> Result<Cow<'a, str>, InvalidPayload> {
    let raw = raw.ok_or_else(|| invalid(format!("missing field `{name}`")))?;
    match serde_json::from_str::<Cow<'a, str>>(raw.get()) {
        Ok(s) if !s.trim().is_empty() => Ok(s),
        Ok(_) => Err(invalid(format!("`{name}` must not be empty"))),
        Err(_) => Err(invalid(format!("`{name}` must be a string"))),
    }
}

fn required_object<'a>(
    raw: Option<&'a RawValue>,
    name: &str,
) -> Result<&'a RawValue, InvalidPayload> {
    let raw = raw.ok_or_else(|| invalid(format!("missing field `{name}`")))?;
    // RawValue holds exactly one JSON value with surrounding whitespace trimmed.
    if raw.get().starts_with('{') {
        Ok(raw)
    } else {
        Err(invalid(format!("`{name}` must be a JSON object")))
    }
}

fn optional_id(raw: Option<&RawValue>, name: &str) -> Result<Option<String>, InvalidPayload> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.get() == "null" {
        return Ok(None);
    }
    let id = required_string(Some(raw), name)?;
    if id.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "`{name}` must be at most {MAX_ID_LEN} bytes"
        )));
    }
    Ok(Some(id.into_owned()))
}

/// The event type gc-status gives a valid JSON body in a shape it does not recognise: such a
/// body is stored and dead-lettered at once (see the webhook route), not refused.
pub const UNRECOGNISED_TYPE: &str = "gc-status.unrecognised";

/// Whether `body` is JSON at all (UTF-8, well formed, within [`MAX_DEPTH`]), whatever its
/// shape: what tells a body to refuse (400) from one to keep and dead-letter.
pub fn is_json(body: &[u8]) -> bool {
    let Ok(json) = std::str::from_utf8(body) else {
        return false;
    };
    !nests_deeper_than(json, MAX_DEPTH)
        && serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok()
}

/// Hex SHA-256 of the raw body: the id of an event that carries none of its own.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse(body.as_bytes()).expect_err("should be rejected").0
    }

    #[test]
    fn simple_event_uses_its_own_id() {
        let body = r#"{"event":"conversation:updated","id":"c-1","timestamp":"2026-01-31T09:30:00Z","data":{"state":"queued"},"extra":[1]}"#;
        let env = parse(body.as_bytes()).expect("valid");
        assert_eq!(env.kind, EnvelopeKind::Simple);
        assert_eq!(env.event_id, "c-1");
        assert_eq!(env.event_type, "conversation:updated");
    }

    #[test]
    fn simple_event_without_id_is_identified_by_its_digest() {
        let body = r#"{"event":"e","timestamp":"2026-01-31T09:30:00+01:00","data":{}}"#;
        let env = parse(body.as_bytes()).expect("valid");
        assert_eq!(env.event_id, body_digest(body.as_bytes()));
        assert_eq!(env.event_id.len(), 64);
    }

    #[test]
    fn notification_envelope_is_typed_by_topic() {
        let body = r#"{"topicName":"v2.analytics.queues.q1.observations","version":"2","eventBody":{"group":{}},"metadata":{"CorrelationId":"x"}}"#;
        let env = parse(body.as_bytes()).expect("valid");
        assert_eq!(env.kind, EnvelopeKind::Notification);
        assert_eq!(env.event_type, "v2.analytics.queues.q1.observations");
        assert_eq!(env.event_id, body_digest(body.as_bytes()));
    }

    #[test]
    fn eventbridge_envelope_uses_its_id_and_inner_topic() {
        let body = r#"{"version":"0","id":"eb-9","detail-type":"v2.detail.events.conversation.{id}.acd.start","source":"aws.partner/genesys.com/cloud/x/y","time":"2026-01-31T09:30:00Z","detail":{"topicName":"v2.detail.events.conversation.c1.acd.start","eventBody":{"queueId":"q"}}}"#;
        let env = parse(body.as_bytes()).expect("valid");
        assert_eq!(env.kind, EnvelopeKind::EventBridge);
        assert_eq!(env.event_id, "eb-9");
        assert_eq!(env.event_type, "v2.detail.events.conversation.c1.acd.start");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = r#"{"event":"a\u002fb","timestamp":"2026-01-31T09:30:00Z","data":{}}"#;
        assert_eq!(parse(body.as_bytes()).expect("valid").event_type, "a/b");
    }

    #[test]
    fn errors_name_the_offending_field() {
        assert!(err("{").starts_with("malformed JSON"));
        assert!(err("[1,2]").starts_with("the body must be a JSON object"));
        assert!(err(r#"{"foo":1}"#).starts_with("no known envelope"));
        assert_eq!(
            err(r#"{"event":"e","timestamp":"2026-01-31T09:30:00Z"}"#),
            "missing field `data`"
        );
        assert_eq!(
            err(r#"{"event":"e","timestamp":"2026-01-31T09:30:00Z","data":[]}"#),
            "`data` must be a JSON object"
        );
        assert!(err(r#"{"event":"e","timestamp":"yesterday","data":{}}"#).contains("RFC 3339"));
        assert_eq!(
            err(r#"{"event":5,"timestamp":"2026-01-31T09:30:00Z","data":{}}"#),
            "`event` must be a string"
        );
        assert_eq!(
            err(r#"{"topicName":"t","eventBody":"x"}"#),
            "`eventBody` must be a JSON object"
        );
        assert_eq!(
            err(r#"{"detail-type":"d","source":"s","detail":{"eventBody":{}}}"#),
            "missing field `detail.topicName`"
        );
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(err(&format!(
            r#"{{"event":"e","id":"{long}","timestamp":"2026-01-31T09:30:00Z","data":{{}}}}"#
        ))
        .contains("at most"));
    }

    #[test]
    fn deep_nesting_is_rejected_but_brackets_in_strings_do_not_count() {
        let deep = format!(
            r#"{{"event":"e","timestamp":"2026-01-31T09:30:00Z","data":{}1{}}}"#,
            "{\"a\":".repeat(100),
            "}".repeat(100)
        );
        assert!(err(&deep).contains("nests deeper"));
        let brackets = format!(
            r#"{{"event":"e","timestamp":"2026-01-31T09:30:00Z","data":{{"s":"{}\"["}}}}"#,
            "[{".repeat(100)
        );
        assert!(parse(brackets.as_bytes()).is_ok());
    }

    #[test]
    fn non_utf8_is_rejected_not_panicked_on() {
        assert_eq!(
            parse(&[0xff, 0xfe]).expect_err("invalid").0,
            "the body is not valid UTF-8"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::server::domain::interpret::{interpret, Rules};

    /// JSON-looking text built from the pieces the parser cares about, so that generated inputs
    /// reach deep into validation rather than failing at the first byte.
    fn jsonish() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "event",
            "id",
            "timestamp",
            "data",
            "topicName",
            "eventBody",
            "detail-type",
            "detail",
            "source",
            "queueId",
            "state",
            "group",
            "metrics",
        ]);
        let value = prop_oneof![
            Just("null".to_owned()),
            Just("{}".to_owned()),
            Just("[]".to_owned()),
            Just(r#""2026-11-29T10:00:00Z""#.to_owned()),
            "[a-z0-9.:{}]{0,12}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
        ];
        prop::collection::vec((key, value), 0..6).prop_map(|fields| {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            format!("{{{}}}", inner.join(","))
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&body);
        }

        #[test]
        fn accepted_payloads_have_an_id_and_a_type_and_interpret_without_panicking(body in jsonish()) {
            if let Ok(envelope) = parse(body.as_bytes()) {
                prop_assert!(!envelope.event_id.is_empty());
                prop_assert!(!envelope.event_type.trim().is_empty());
                let _ = interpret(&envelope.event_type, body.as_bytes(), 0, &Rules::default());
            }
        }
    }
}
