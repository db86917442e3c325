//! Turning a stored event into its effect on the queue statistics.
//!
//! Interpretation is a pure function of the payload, so processing an event twice, replaying it
//! or rebuilding all statistics from the stored events gives the same effect.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{value::RawValue, Map, Value};

use super::{
    envelope::{self, EnvelopeKind},
    media_type, ConversationUpdate, Effect, IntervalFigures, ObservationUpdate, ProcessError,
};

fn permanent(message: impl Into<String>) -> ProcessError {
    ProcessError::Permanent(message.into())
}

/// Event types to mark done without interpreting (`GC_STATUS_IGNORE_TOPICS`): exact names, or
/// prefixes ending in `*`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList(Vec<String>);

impl IgnoreList {
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        IgnoreList(
            patterns
                .into_iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => p == event_type,
        })
    }
}

/// How events are interpreted (from the worker settings).
#[derive(Debug, Clone)]
pub struct Rules {
    pub ignore: IgnoreList,
    /// How far an event's own time may lie after its receipt before it is refused: one sender
    /// with a wrong clock must not freeze a queue's figures in the future.
    pub max_clock_skew_ms: i64,
}

/// Five minutes: generous for real clocks, small next to the statistics' time scales.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

impl Default for Rules {
    fn default() -> Self {
        Rules {
            ignore: IgnoreList::default(),
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
}

#[derive(Deserialize)]
struct SimpleEvent {
    event: String,
    id: Option<Value>,
    timestamp: String,
    data: SimpleData,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimpleData {
    state: Option<Value>,
    queue_id: Option<Value>,
    conversation_id: Option<Value>,
    id: Option<Value>,
    queue_name: Option<Value>,
    media_type: Option<Value>,
}

/// An identifier or label as senders write it: a non-empty string, or a number.
fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(rename = "topicName")]
    topic_name: String,
    #[serde(borrow, rename = "eventBody")]
    event_body: &'a RawValue,
}

#[derive(Deserialize)]
struct EventBridge<'a> {
    #[serde(borrow)]
    detail: Notification<'a>,
    /// When the event was sent (RFC 3339): an observation's "now".
    time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcdEvent {
    /// Epoch ms in the SDK models; some senders (Architect data actions, hand-made
    /// EventBridge rules) write it as an RFC 3339 text.
    event_time: Option<Value>,
    conversation_id: Option<String>,
    queue_id: Option<String>,
    media_type: Option<String>,
    acd_outcome: Option<String>,
}

#[derive(Deserialize)]
struct ObservationBody {
    #[serde(default)]
    group: ObservationGroup,
    #[serde(default)]
    data: Vec<ObservationInterval>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObservationGroup {
    queue_id: Option<String>,
    media_type: Option<String>,
}

#[derive(Deserialize)]
struct ObservationInterval {
    interval: Option<String>,
    #[serde(default)]
    metrics: Vec<ObservationMetric>,
}

#[derive(Deserialize)]
struct ObservationMetric {
    metric: String,
    qualifier: Option<String>,
    #[serde(default)]
    stats: Stats,
}

#[derive(Deserialize, Default)]
struct Stats {
    count: Option<f64>,
    sum: Option<f64>,
    max: Option<f64>,
    numerator: Option<f64>,
    denominator: Option<f64>,
    /// `oLongestWaiting` in current payloads: the epoch ms at which the longest-waiting
    /// conversation started waiting (not a duration).
    #[serde(rename = "calculatedMetricValue")]
    calculated_metric_value: Option<f64>,
}

/// Epoch milliseconds above this are a point in time (2001-09-09 onwards), below it a
/// duration: how `oLongestWaiting`'s two forms are told apart.
const EPOCH_MS_FLOOR: f64 = 1e12;

/// Interprets one stored event. `received_at` stands in for an event time the payload lacks.
pub fn interpret(
    event_type: &str,
    payload: &[u8],
    received_at: i64,
    rules: &Rules,
) -> Result<Effect, ProcessError> {
    if rules.ignore.matches(event_type) {
        return Ok(Effect::Ignored);
    }
    let effect = interpret_payload(payload, received_at)?;
    check_clock(&effect, received_at, rules.max_clock_skew_ms)?;
    Ok(effect)
}

/// Refuses an effect whose event time lies further after `received_at` than the allowed skew.
fn check_clock(effect: &Effect, received_at: i64, max_skew_ms: i64) -> Result<(), ProcessError> {
    let latest = match effect {
        Effect::Ignored => return Ok(()),
        Effect::Conversation(c) => [c.queued_at, c.answered_at, c.ended_at]
            .into_iter()
            .flatten()
            .max(),
        Effect::Observation(o) => o
            .intervals
            .iter()
            .map(|i| i.start)
            .max()
            .max(Some(o.observed_at)),
    };
    match latest {
        Some(at) if at > received_at.saturating_add(max_skew_ms) => Err(permanent(format!(
            "event time {} is {} s after the event was received (more than the allowed clock \
             skew of {} s, GC_STATUS_MAX_CLOCK_SKEW_SECS): the sender's clock is wrong",
            jiff::Timestamp::from_millisecond(at)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| at.to_string()),
            at.saturating_sub(received_at) / 1000,
            max_skew_ms / 1000
        ))),
        _ => Ok(()),
    }
}

fn interpret_payload(payload: &[u8], received_at: i64) -> Result<Effect, ProcessError> {
    let kind = envelope::parse(payload)
        .map_err(|e| permanent(format!("payload no longer valid: {e}")))?
        .kind;
    let bad = |e: serde_json::Error| permanent(format!("unexpected payload shape: {e}"));
    match kind {
        EnvelopeKind::Simple => simple(serde_json::from_slice(payload).map_err(bad)?),
        EnvelopeKind::Notification => {
            notification(serde_json::from_slice(payload).map_err(bad)?, received_at)
        }
        EnvelopeKind::EventBridge => {
            let eb: EventBridge = serde_json::from_slice(payload).map_err(bad)?;
            // The sender's own time, when it is not after the receipt: what "now" was for
            // the `o*` figures it carries.
            let sent_at = eb
                .time
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_millisecond().min(received_at))
                .unwrap_or(received_at);
            notification(eb.detail, sent_at)
        }
    }
}

fn simple(event: SimpleEvent) -> Result<Effect, ProcessError> {
    if event.event != "conversation:updated" {
        return Err(permanent(format!(
            "no interpretation for event `{}` (add it to GC_STATUS_IGNORE_TOPICS to skip it)",
            event.event
        )));
    }
    let at = event
        .timestamp
        .parse::<jiff::Timestamp>()
        .map_err(|_| permanent("`timestamp` is not an RFC 3339 date-time"))?
        .as_millisecond();
    let data = event.data;
    // Senders name the conversation in different places; many put it in the envelope `id`.
    let conversation_id = text(data.conversation_id)
        .or_else(|| text(data.id))
        .or_else(|| text(event.id))
        .ok_or_else(|| {
            permanent(
                "conversation:updated without a conversation: set `data.conversationId`, \
                 `data.id` or the event's `id`",
            )
        })?;
    let state = text(data.state).unwrap_or_default().to_ascii_lowercase();
    let mut update = ConversationUpdate {
        queue_id: text(data.queue_id),
        conversation_id,
        queue_name: text(data.queue_name),
        media_type: text(data.media_type).map(|m| media_type(&m)),
        ..ConversationUpdate::default()
    };
    match state.as_str() {
        "queued" | "alerting" | "offering" => update.queued_at = Some(at),
        "connected" => update.answered_at = Some(at),
        "disconnected" | "terminated" => update.ended_at = Some(at),
        other => {
            return Err(permanent(format!(
                "conversation:updated with unknown state `{other}` (expected queued, alerting, \
                 connected, disconnected or terminated)"
            )))
        }
    }
    Ok(Effect::Conversation(update))
}

fn notification(n: Notification, received_at: i64) -> Result<Effect, ProcessError> {
    let topic = n.topic_name.as_str();
    let bad = |e: serde_json::Error| permanent(format!("unexpected eventBody for {topic}: {e}"));
    if let Some(rest) = topic.strip_prefix("v2.detail.events.conversation.") {
        let phase = if rest.ends_with(".acd.start") {
            AcdPhase::Start
        } else if rest.ends_with(".acd.end") {
            AcdPhase::End
        } else {
            return Err(unknown_topic(topic));
        };
        let body: AcdEvent = serde_json::from_str(n.event_body.get()).map_err(bad)?;
        return acd(body, phase, topic);
    }
    if let Some(rest) = topic.strip_prefix("v2.analytics.queues.") {
        if let Some(queue_from_topic) = rest.strip_suffix(".observations") {
            let body: ObservationBody = serde_json::from_str(n.event_body.get()).map_err(bad)?;
            return observation(body, queue_from_topic, received_at);
        }
    }
    Err(unknown_topic(topic))
}

fn unknown_topic(topic: &str) -> ProcessError {
    permanent(format!(
        "no interpretation for topic `{topic}` (add it to GC_STATUS_IGNORE_TOPICS to skip it)"
    ))
}

enum AcdPhase {
    Start,
    End,
}

fn acd(body: AcdEvent, phase: AcdPhase, topic: &str) -> Result<Effect, ProcessError> {
    let missing = |field: &str| permanent(format!("{topic} without `eventBody.{field}`"));
    let at = match body.event_time {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(t)) => Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|_| {
                    permanent(format!(
                        "{topic}: `eventBody.eventTime` `{t}` is neither epoch milliseconds nor \
                         an RFC 3339 date-time"
                    ))
                })?
                .as_millisecond(),
        ),
        _ => None,
    }
    .ok_or_else(|| missing("eventTime"))?;
    let mut update = ConversationUpdate {
        queue_id: Some(
            body.queue_id
                .filter(|q| !q.is_empty())
                .ok_or_else(|| missing("queueId"))?,
        ),
        conversation_id: body
            .conversation_id
            .filter(|c| !c.is_empty())
            .ok_or_else(|| missing("conversationId"))?,
        media_type: body.media_type.as_deref().map(media_type),
        ..ConversationUpdate::default()
    };
    match phase {
        AcdPhase::Start => update.queued_at = Some(at),
        AcdPhase::End => {
            let outcome = body
                .acd_outcome
                .map(|o| o.to_ascii_uppercase())
                .ok_or_else(|| missing("acdOutcome"))?;
            if outcome == "ANSWERED" {
                update.answered_at = Some(at);
            }
            update.ended_at = Some(at);
            update.outcome = Some(outcome);
        }
    }
    Ok(Effect::Conversation(update))
}

fn observation(
    body: ObservationBody,
    queue_from_topic: &str,
    sent_at: i64,
) -> Result<Effect, ProcessError> {
    let queue_id = body
        .group
        .queue_id
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| queue_from_topic.to_owned());
    if queue_id.is_empty() || queue_id.contains('{') {
        return Err(permanent("queue observation without a queue id"));
    }
    // The `o*` metrics are "now" values: as fresh as the notification (its own time, else
    // its receipt), whatever interval the `t*`/`n*` figures belong to.
    let observed_at = sent_at;
    let mut figures = Map::new();
    let mut users: BTreeMap<&'static str, Map<String, Value>> = BTreeMap::new();
    let mut intervals = Vec::new();
    for interval in body.data {
        let bounds = interval.interval.as_deref().and_then(interval_bounds);
        let mut totals = Map::new();
        for m in interval.metrics {
            let s = &m.stats;
            let count = s.count.map(|c| Value::from(c.round() as i64));
            match m.metric.as_str() {
                "oWaiting" => put(&mut figures, "waiting", count),
                "oInteracting" => put(&mut figures, "interacting", count),
                "oAlerting" => put(&mut figures, "alerting", count),
                "oLongestWaiting" => {
                    // Kept as the time the longest wait began, so the board can tick.
                    let since = match (s.calculated_metric_value, s.max) {
                        (Some(v), _) if v > EPOCH_MS_FLOOR => Some(v.round() as i64),
                        (Some(ms), _) | (None, Some(ms)) if ms >= 0.0 => {
                            Some(observed_at.saturating_sub(ms.round() as i64))
                        }
                        _ => None,
                    };
                    // Nobody waiting (no value): clear what an earlier observation said.
                    figures.insert(
                        "longest_waiting_since".into(),
                        since.map_or(Value::Null, Value::from),
                    );
                }
                metric @ ("oOnQueueUsers" | "oOffQueueUsers" | "oActiveUsers" | "oMemberUsers") => {
                    // Kept by routing status (IDLE, INTERACTING, COMMUNICATING,
                    // NOT_RESPONDING), never summed into one number.
                    let key = match metric {
                        "oOnQueueUsers" => "on_queue_users",
                        "oOffQueueUsers" => "off_queue_users",
                        "oActiveUsers" => "active_users",
                        _ => "member_users",
                    };
                    let qualifier = m.qualifier.as_deref().unwrap_or("TOTAL");
                    users.entry(key).or_default().insert(
                        qualifier.to_ascii_uppercase(),
                        count.unwrap_or(Value::from(0)),
                    );
                }
                "nOffered" => put(&mut totals, "offered", count),
                // Average speed of answer is Genesys's tAnswered (sum ÷ count); tWait also
                // counts the conversations that were abandoned.
                "tAnswered" => {
                    put(&mut totals, "answered", count);
                    put(&mut totals, "answer_ms_sum", s.sum.map(Value::from));
                }
                "tAbandon" => put(&mut totals, "abandoned", count),
                "tShortAbandon" => put(&mut totals, "short_abandons", count),
                "tFlowOut" => put(&mut totals, "flow_outs", count),
                // Numerator and denominator, so media types and intervals combine weighted.
                "oServiceLevel" => {
                    if let (Some(n), Some(d)) = (s.numerator, s.denominator) {
                        put(&mut totals, "service_level_numerator", Some(Value::from(n)));
                        put(
                            &mut totals,
                            "service_level_denominator",
                            Some(Value::from(d)),
                        );
                    }
                }
                _ => {}
            }
        }
        // Aggregates without an interval belong nowhere and are left out.
        if let (Some((start, end)), false) = (bounds, totals.is_empty()) {
            intervals.push(IntervalFigures {
                start,
                end,
                figures: totals,
            });
        }
    }
    for (key, by_status) in users {
        figures.insert(key.into(), Value::Object(by_status));
    }
    if figures.is_empty() && intervals.is_empty() {
        return Err(permanent(
            "queue observation carries none of the metrics gc-status shows",
        ));
    }
    Ok(Effect::Observation(ObservationUpdate {
        queue_id,
        media_type: body
            .group
            .media_type
            .as_deref()
            .map(media_type)
            .unwrap_or_default(),
        observed_at,
        figures,
        intervals,
    }))
}

/// Start and end (epoch ms) of an ISO-8601 interval `start/end`.
fn interval_bounds(text: &str) -> Option<(i64, i64)> {
    let (start, end) = text.split_once('/')?;
    let start = start.parse::<jiff::Timestamp>().ok()?.as_millisecond();
    let end = end.parse::<jiff::Timestamp>().ok()?.as_millisecond();
    (start < end).then_some((start, end))
}

/// Sets `key` when the metric carried a value.
fn put(figures: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        figures.insert(key.into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(payload: &str) -> Result<Effect, ProcessError> {
        let event_type = envelope::parse(payload.as_bytes())
            .expect("valid envelope")
            .event_type;
        // Received long after any time used below, so no clock-skew check interferes.
        interpret(&event_type, payload.as_bytes(), LATER, &Rules::default())
    }

    const LATER: i64 = 4_000_000_000_000;

    fn conversation(payload: &str) -> ConversationUpdate {
        match run(payload) {
            Ok(Effect::Conversation(u)) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_conversation_is_data_conversation_id_else_data_id_else_the_event_id() {
        let explicit = conversation(
            r#"{"event":"conversation:updated","id":"e-1","timestamp":"2026-11-29T10:00:00Z","data":{"state":"queued","queueId":"q","conversationId":"c-1","id":"d-1"}}"#,
        );
        assert_eq!(explicit.conversation_id, "c-1");
        let data_id = conversation(
            r#"{"event":"conversation:updated","id":"e-1","timestamp":"2026-11-29T10:00:00Z","data":{"state":"queued","queueId":"q","id":"d-1"}}"#,
        );
        assert_eq!(data_id.conversation_id, "d-1");
        // The README's quick-start event: the envelope id is the conversation.
        let envelope_id = conversation(
            r#"{"event":"conversation:updated","id":"c-1","timestamp":"2026-11-29T10:00:00Z","data":{"state":"queued","queueId":"q-1"}}"#,
        );
        assert_eq!(envelope_id.conversation_id, "c-1");
        assert_eq!(envelope_id.queue_id.as_deref(), Some("q-1"));
        // Numbers are ids too; a state change without a queue is resolved when applied.
        let numeric = conversation(
            r#"{"event":"conversation:updated","timestamp":"2026-11-29T10:00:00Z","data":{"state":"Connected","id":42}}"#,
        );
        assert_eq!(numeric.conversation_id, "42");
        assert_eq!(numeric.queue_id, None);
        assert!(numeric.answered_at.is_some());
        let nothing = run(
            r#"{"event":"conversation:updated","timestamp":"2026-11-29T10:00:00Z","data":{"state":"queued","queueId":"q"}}"#,
        );
        assert!(
            matches!(nothing, Err(ProcessError::Permanent(m)) if m.contains("data.conversationId"))
        );
    }

    #[test]
    fn event_times_far_after_receipt_are_refused_with_the_reason() {
        let body = r#"{"event":"conversation:updated","id":"c","timestamp":"2026-11-29T10:10:00Z","data":{"state":"queued","queueId":"q"}}"#;
        let received: i64 = "2026-11-29T10:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("ts")
            .as_millisecond();
        let refused = interpret(
            "conversation:updated",
            body.as_bytes(),
            received,
            &Rules::default(),
        );
        assert!(
            matches!(&refused, Err(ProcessError::Permanent(m)) if m.contains("clock skew")),
            "{refused:?}"
        );
        let lenient = Rules {
            max_clock_skew_ms: 15 * 60 * 1000,
            ..Rules::default()
        };
        assert!(interpret("conversation:updated", body.as_bytes(), received, &lenient).is_ok());
        // Observations too: figures of an interval starting in the far future.
        let obs = r#"{"topicName":"v2.analytics.queues.q.observations","eventBody":{"data":[{"interval":"2099-01-01T00:00:00Z/2099-01-01T00:00:01Z","metrics":[{"metric":"nOffered","stats":{"count":1}}]}]}}"#;
        assert!(interpret(
            "v2.analytics.queues.q.observations",
            obs.as_bytes(),
            received,
            &Rules::default()
        )
        .is_err());
    }

    #[test]
    fn enormous_numbers_saturate_instead_of_overflowing() {
        let obs = r#"{"topicName":"v2.analytics.queues.q.observations","eventBody":{"data":[{"metrics":[{"metric":"oWaiting","stats":{"count":1e300}},{"metric":"oLongestWaiting","stats":{"max":-1e300}},{"metric":"tWait","stats":{"count":1e308,"sum":1e308}}]}]}}"#;
        let effect = interpret("t", obs.as_bytes(), 0, &Rules::default());
        let Ok(Effect::Observation(o)) = effect else {
            panic!("{effect:?}")
        };
        assert_eq!(o.figures["waiting"], i64::MAX);
        let acd = r#"{"topicName":"v2.detail.events.conversation.c.acd.start","eventBody":{"eventTime":9223372036854775807,"conversationId":"c","queueId":"q"}}"#;
        assert!(interpret("t", acd.as_bytes(), i64::MAX - 1, &Rules::default()).is_ok());
    }

    #[test]
    fn simple_states_map_to_queue_times() {
        let e = run(
            r#"{"event":"conversation:updated","timestamp":"1970-01-01T00:00:01Z","data":{"state":"connected","queueId":"q","conversationId":"c","queueName":"Sales"}}"#,
        );
        let Ok(Effect::Conversation(u)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(u.answered_at, Some(1000));
        assert_eq!(u.queue_name.as_deref(), Some("Sales"));
        let unknown = run(
            r#"{"event":"conversation:updated","timestamp":"1970-01-01T00:00:01Z","data":{"state":"parked","queueId":"q","conversationId":"c"}}"#,
        );
        assert!(matches!(unknown, Err(ProcessError::Permanent(m)) if m.contains("parked")));
    }

    #[test]
    fn acd_end_in_eventbridge_envelope_is_read() {
        let e = run(
            r#"{"version":"0","id":"x","detail-type":"t","source":"aws.partner/genesys.com/a","time":"","detail":{"topicName":"v2.detail.events.conversation.c1.acd.end","eventBody":{"eventTime":5000,"conversationId":"c1","queueId":"q1","mediaType":"VOICE","acdOutcome":"ABANDON"}}}"#,
        );
        let Ok(Effect::Conversation(u)) = e else {
            panic!("{e:?}")
        };
        assert_eq!((u.ended_at, u.answered_at), (Some(5000), None));
        assert_eq!(u.outcome.as_deref(), Some("ABANDON"));
    }

    #[test]
    fn observation_metrics_are_extracted() {
        let e = run(
            r#"{"topicName":"v2.analytics.queues.q9.observations","eventBody":{"group":{"queueId":"q9","mediaType":"voice"},"data":[{"interval":"2026-11-29T10:00:00Z/2026-11-29T10:30:00Z","metrics":[{"metric":"oWaiting","stats":{"count":4}},{"metric":"oOnQueueUsers","qualifier":"IDLE","stats":{"count":2}},{"metric":"tAnswered","stats":{"count":2,"sum":3000,"max":2000}},{"metric":"tWait","stats":{"count":5,"sum":90000}},{"metric":"oServiceLevel","stats":{"ratio":0.75,"numerator":3,"denominator":4,"target":0.8}}]}]}}"#,
        );
        let Ok(Effect::Observation(o)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(o.queue_id, "q9");
        assert_eq!(o.media_type, "voice");
        assert_eq!(o.figures["waiting"], 4);
        assert_eq!(o.figures["on_queue_users"]["IDLE"], 2);
        // A Genesys notification carries no time of its own: the figures of now are as of
        // receipt; the aggregates belong to their interval, not to now.
        assert_eq!(o.observed_at, LATER);
        assert!(o.figures.get("answered").is_none());
        let [interval] = o.intervals.as_slice() else {
            panic!("one interval: {:?}", o.intervals)
        };
        assert_eq!(interval.start, at("2026-11-29T10:00:00Z"));
        assert_eq!(interval.end, at("2026-11-29T10:30:00Z"));
        let f = &interval.figures;
        assert_eq!(f["answered"], 2);
        // Speed of answer from tAnswered (tWait also counts abandoned conversations).
        assert_eq!(f["answer_ms_sum"], 3000.0);
        assert_eq!(f["service_level_numerator"], 3.0);
        assert_eq!(f["service_level_denominator"], 4.0);
    }

    #[test]
    fn agents_are_kept_by_metric_and_routing_status() {
        let e = run(
            r#"{"topicName":"v2.analytics.queues.q9.observations","eventBody":{"group":{"queueId":"q9"},"data":[{"interval":"2026-11-29T10:00:00Z/2026-11-29T10:30:00Z","metrics":[{"metric":"oOnQueueUsers","qualifier":"IDLE","stats":{"count":2}},{"metric":"oOnQueueUsers","qualifier":"INTERACTING","stats":{"count":3}},{"metric":"oOnQueueUsers","qualifier":"NOT_RESPONDING","stats":{"count":1}},{"metric":"oOffQueueUsers","stats":{"count":4}},{"metric":"oActiveUsers","stats":{"count":10}},{"metric":"oMemberUsers","stats":{"count":12}}]}]}}"#,
        );
        let Ok(Effect::Observation(o)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(o.media_type, "");
        assert_eq!(
            Value::Object(o.figures),
            serde_json::json!({
                "on_queue_users": {"IDLE": 2, "INTERACTING": 3, "NOT_RESPONDING": 1},
                "off_queue_users": {"TOTAL": 4},
                "active_users": {"TOTAL": 10},
                "member_users": {"TOTAL": 12},
            })
        );
    }

    #[test]
    fn detail_events_name_media_in_capitals_and_may_write_their_time_as_text() {
        for (time, media) in [("5000", "VOICE"), (r#""1970-01-01T00:00:05Z""#, "MESSAGE")] {
            let body = format!(
                r#"{{"topicName":"v2.detail.events.conversation.c1.acd.start","eventBody":{{"eventTime":{time},"conversationId":"c1","queueId":"q1","mediaType":"{media}"}}}}"#
            );
            let u = conversation(&body);
            assert_eq!(u.queued_at, Some(5000), "{time}");
            assert_eq!(
                u.media_type.as_deref(),
                Some(media.to_ascii_lowercase().as_str())
            );
        }
        let bad = run(
            r#"{"topicName":"v2.detail.events.conversation.c1.acd.start","eventBody":{"eventTime":"yesterday","conversationId":"c1","queueId":"q1"}}"#,
        );
        assert!(matches!(bad, Err(ProcessError::Permanent(m)) if m.contains("RFC 3339")));
    }

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>()
            .expect("a time")
            .as_millisecond()
    }

    /// An EventBridge observation sent at `sent`, 17 minutes into its interval.
    fn bridged_observation(sent: &str, longest: &str) -> String {
        format!(
            r#"{{"version":"0","id":"4b3e9c1a-7d0e-4f6b-9a55-0c8b1e2f3a4d","detail-type":"v2.analytics.queues.{{id}}.observations","source":"aws.partner/genesys.com/cloud/o/e","account":"1","time":"{sent}","region":"eu-west-1","resources":[],"detail":{{"topicName":"v2.analytics.queues.3f1c.observations","version":"2","eventBody":{{"group":{{"queueId":"3f1c","mediaType":"voice"}},"data":[{{"interval":"2026-12-01T07:30:00.000Z/2026-12-01T08:00:00.000Z","metrics":[{{"metric":"oWaiting","stats":{{"count":2}}}},{{"metric":"oLongestWaiting","stats":{longest}}}]}}]}}}}}}"#
        )
    }

    #[test]
    fn an_observation_is_as_fresh_as_it_was_sent_not_as_its_interval_began() {
        let received = at("2026-12-01T07:47:05Z");
        let body = bridged_observation("2026-12-01T07:47:00Z", r#"{"count":1}"#);
        let e = interpret(
            "v2.analytics.queues.3f1c.observations",
            body.as_bytes(),
            received,
            &Rules::default(),
        );
        let Ok(Effect::Observation(o)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(o.observed_at, at("2026-12-01T07:47:00Z"));
        // A count alone says nothing about how long anyone waits.
        assert_eq!(o.figures["longest_waiting_since"], Value::Null);
    }

    #[test]
    fn the_longest_wait_is_kept_as_the_time_it_began_from_either_form() {
        let received = at("2026-12-01T07:47:05Z");
        let started = at("2026-12-01T07:45:25Z");
        for longest in [
            // Current payloads: the epoch ms the longest wait began.
            format!(r#"{{"count":2,"calculatedMetricValue":{started}}}"#),
            // Older ones: a duration (100 s before the notification's time).
            r#"{"count":2,"max":95000}"#.to_owned(),
        ] {
            let body = bridged_observation("2026-12-01T07:47:00Z", &longest);
            let e = interpret("t", body.as_bytes(), received, &Rules::default());
            let Ok(Effect::Observation(o)) = e else {
                panic!("{e:?}")
            };
            assert_eq!(o.figures["longest_waiting_since"], started, "{longest}");
        }
    }

    #[test]
    fn unknown_topics_are_permanent_unless_ignored() {
        let body = r#"{"topicName":"v2.users.u1.presence","eventBody":{}}"#;
        assert!(
            matches!(run(body), Err(ProcessError::Permanent(m)) if m.contains("v2.users.u1.presence"))
        );
        let rules = Rules {
            ignore: IgnoreList::new(["v2.users.*".to_owned()]),
            ..Rules::default()
        };
        assert_eq!(
            interpret("v2.users.u1.presence", body.as_bytes(), 0, &rules),
            Ok(Effect::Ignored)
        );
    }
}
