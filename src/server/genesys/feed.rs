//! The Platform API's answers as the notifications gc-status already stores and interprets:
//! an observation query's result and an aggregate query's interval become
//! `v2.analytics.queues.{id}.observations` notifications, the same shape Genesys pushes over
//! the websocket and EventBridge. One interpreter reads them all, and a stored event says in
//! its `metadata.source` which query it came from. Pure, so it is tested on the SDK's shapes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::server::domain::QueueOfConversation;

/// The `o*` metrics the connector polls (as the observation query accepts them).
pub const OBSERVATION_METRICS: &[&str] = &[
    "oWaiting",
    "oInteracting",
    "oAlerting",
    "oLongestWaiting",
    "oOnQueueUsers",
    "oOffQueueUsers",
    "oUserRoutingStatuses",
];

/// The interval metrics asked for today (the `t*`/`n*` figures of each half hour).
pub const AGGREGATE_METRICS: &[&str] = &[
    "nOffered",
    "tAnswered",
    "tAbandon",
    "tShortAbandon",
    "tFlowOut",
    "tWait",
    "oServiceLevel",
];

/// Queue ids per query: the most one filter may name.
pub const QUEUES_PER_QUERY: usize = 100;

/// Genesys's interval length: aggregate reports are per half hour.
const HALF_HOUR_MS: i64 = 30 * 60 * 1000;

/// `{"type":"or","predicates":[{"dimension":"queueId","value":…}, …]}`.
fn queue_filter(queues: &[String]) -> Value {
    let predicates: Vec<Value> = queues
        .iter()
        .map(|q| json!({"type": "dimension", "dimension": "queueId", "operator": "matches", "value": q}))
        .collect();
    json!({"type": "or", "predicates": predicates})
}

/// The body of `POST /api/v2/analytics/queues/observations/query` for `queues` (≤ 100).
pub fn observation_query(queues: &[String]) -> Value {
    json!({"filter": queue_filter(queues), "metrics": OBSERVATION_METRICS})
}

/// The body of `POST /api/v2/analytics/conversations/aggregates/query` for today so far in
/// half hours: `start`/`end` are ISO-8601 with the zone's offset, `zone` its IANA name.
pub fn aggregate_query(queues: &[String], start: &str, end: &str, zone: &str) -> Value {
    json!({
        "interval": format!("{start}/{end}"),
        "granularity": "PT30M",
        "timeZone": zone,
        "groupBy": ["queueId", "mediaType"],
        "filter": queue_filter(queues),
        "metrics": AGGREGATE_METRICS,
    })
}

/// An analytics answer: results by group (`queueId`, `mediaType`).
#[derive(Debug, Deserialize)]
pub struct Results<D> {
    #[serde(default = "Vec::new")]
    pub results: Vec<Group<D>>,
}

#[derive(Debug, Deserialize)]
pub struct Group<D> {
    #[serde(default)]
    pub group: GroupKey,
    #[serde(default = "Vec::new")]
    pub data: Vec<D>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupKey {
    #[serde(rename = "queueId", skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// One metric of an answer, as the notifications carry it (detail lists left out).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Metric {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    #[serde(default)]
    pub stats: Value,
}

/// One interval of an aggregate answer.
#[derive(Debug, Deserialize)]
pub struct Interval {
    pub interval: String,
    #[serde(default)]
    pub metrics: Vec<Metric>,
}

/// A notification body, ready for the writer.
fn notification(queue: &str, group: &GroupKey, data: Value, source: &str, id: &str) -> Vec<u8> {
    let body = json!({
        "topicName": format!("v2.analytics.queues.{queue}.observations"),
        "version": "2",
        "eventBody": {"group": group, "data": data},
        "metadata": {"CorrelationId": id, "source": source},
    });
    body.to_string().into_bytes()
}

/// One group of an observation poll, ready for the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledGroup {
    pub queue: String,
    /// Empty for the group without a media type (the agent metrics).
    pub media: String,
    /// The group's figures as text, to tell a changed poll from a repeat.
    pub figures: String,
    pub body: Vec<u8>,
}

/// The notifications of one observation poll, one per group. `poll` makes each poll's bodies
/// distinct (a poll that finds the same figures is still news: they are current now).
pub fn observation_notifications(answer: Results<Metric>, poll: &str) -> Vec<PolledGroup> {
    answer
        .results
        .into_iter()
        .filter_map(|g| {
            let queue = g.group.queue_id.clone().filter(|q| !q.is_empty())?;
            let data = json!([{"metrics": g.data}]);
            let figures = data.to_string();
            Some(PolledGroup {
                body: notification(
                    &queue,
                    &g.group,
                    data,
                    "gc-status: observations query",
                    poll,
                ),
                media: g.group.media_type.clone().unwrap_or_default(),
                queue,
                figures,
            })
        })
        .collect()
}

/// The notifications of one aggregate query for the day that starts at `day_start` (epoch
/// ms), one per group. Genesys leaves out the half hours without conversations; the day's
/// first is written with its zero offers when missing, so today's figures say they cover the
/// day from its start. Identical answers give identical bodies (stored once).
pub fn aggregate_notifications(answer: Results<Interval>, day_start: i64) -> Vec<Vec<u8>> {
    let first = format!(
        "{}/{}",
        iso(day_start),
        iso(day_start.saturating_add(HALF_HOUR_MS))
    );
    answer
        .results
        .into_iter()
        .filter_map(|g| {
            let queue = g.group.queue_id.clone().filter(|q| !q.is_empty())?;
            let starts: BTreeSet<i64> = g.data.iter().filter_map(|i| start_of(&i.interval)).collect();
            let mut data: Vec<Value> = g
                .data
                .into_iter()
                .map(|i| json!({"interval": i.interval, "metrics": i.metrics}))
                .collect();
            if !starts.contains(&day_start) {
                data.insert(
                    0,
                    json!({"interval": first, "metrics": [{"metric": "nOffered", "stats": {"count": 0}}]}),
                );
            }
            Some(notification(
                &queue,
                &g.group,
                Value::Array(data),
                "gc-status: conversations aggregates query",
                &format!("aggregates-{day_start}"),
            ))
        })
        .collect()
}

fn start_of(interval: &str) -> Option<i64> {
    let (start, _) = interval.split_once('/')?;
    Some(start.parse::<jiff::Timestamp>().ok()?.as_millisecond())
}

fn iso(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub struct ConversationDetails {
    #[serde(default)]
    participants: Vec<Participant>,
}

#[derive(Deserialize)]
struct Participant {
    #[serde(default)]
    sessions: Vec<Session>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    media_type: Option<String>,
    #[serde(default)]
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Segment {
    queue_id: Option<String>,
    segment_start: Option<String>,
}

/// The queue the conversation was last routed through (its latest segment with a queue).
pub fn queue_of(details: ConversationDetails) -> Option<QueueOfConversation> {
    details
        .participants
        .into_iter()
        .flat_map(|p| p.sessions)
        .flat_map(|s| {
            let media = s.media_type;
            s.segments.into_iter().filter_map(move |seg| {
                let queue = seg.queue_id.filter(|q| !q.is_empty())?;
                let at = seg.segment_start.as_deref().and_then(|t| {
                    t.parse::<jiff::Timestamp>()
                        .ok()
                        .map(|t| t.as_millisecond())
                });
                Some((at.unwrap_or(i64::MIN), queue, media.clone()))
            })
        })
        .max_by_key(|(at, ..)| *at)
        .map(|(_, queue_id, media)| QueueOfConversation {
            queue_id,
            media_type: media.as_deref().map(crate::server::domain::media_type),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::domain::{
        envelope,
        interpret::{interpret, Rules},
        Effect,
    };

    const LATER: i64 = 4_000_000_000_000;

    fn effect(body: &[u8]) -> Effect {
        let e = envelope::parse(body).expect("a valid notification");
        interpret(&e.event_type, body, LATER, &Rules::default()).expect("interpreted")
    }

    #[test]
    fn an_observation_answer_is_read_as_the_pushed_notification_would_be() {
        // QueueObservationQueryResponse: lowercase media types, agent metrics in a group
        // without one, `observations` detail lists beside the stats.
        let answer: Results<Metric> = serde_json::from_str(
            r#"{"results":[
              {"group":{"queueId":"q-1","mediaType":"voice"},"data":[
                {"metric":"oWaiting","stats":{"count":3},"truncated":false,
                 "observations":[{"observationDate":"2026-12-01T09:00:00.000Z","conversationId":"c"}]},
                {"metric":"oInteracting","stats":{"count":2}},
                {"metric":"oLongestWaiting","stats":{"count":3,"calculatedMetricValue":1764579600000}}]},
              {"group":{"queueId":"q-1"},"data":[
                {"metric":"oOnQueueUsers","qualifier":"IDLE","stats":{"count":4}},
                {"metric":"oOnQueueUsers","qualifier":"INTERACTING","stats":{"count":2}},
                {"metric":"oOffQueueUsers","stats":{"count":1}}]},
              {"group":{"mediaType":"voice"},"data":[]}]}"#,
        )
        .expect("the SDK's shape");
        let bodies: Vec<Vec<u8>> = observation_notifications(answer, "poll-1")
            .into_iter()
            .map(|g| g.body)
            .collect();
        assert_eq!(bodies.len(), 2, "a group without a queue is left out");
        let Effect::Observation(voice) = effect(&bodies[0]) else {
            panic!("an observation")
        };
        assert_eq!(
            (voice.queue_id.as_str(), voice.media_type.as_str()),
            ("q-1", "voice")
        );
        assert_eq!(voice.figures["waiting"], 3);
        assert_eq!(voice.figures["interacting"], 2);
        assert_eq!(voice.figures["longest_waiting_since"], 1_764_579_600_000i64);
        assert!(!String::from_utf8_lossy(&bodies[0]).contains("observationDate"));
        let Effect::Observation(agents) = effect(&bodies[1]) else {
            panic!("an observation")
        };
        assert_eq!(agents.media_type, "");
        assert_eq!(agents.figures["on_queue_users"]["IDLE"], 4);
        // Each poll is its own event, even with the same figures.
        let again: Results<Metric> =
            serde_json::from_str(r#"{"results":[{"group":{"queueId":"q"},"data":[{"metric":"oWaiting","stats":{"count":1}}]}]}"#)
                .expect("shape");
        let same: Results<Metric> =
            serde_json::from_str(r#"{"results":[{"group":{"queueId":"q"},"data":[{"metric":"oWaiting","stats":{"count":1}}]}]}"#)
                .expect("shape");
        let (first, second) = (
            observation_notifications(again, "poll-1").remove(0),
            observation_notifications(same, "poll-2").remove(0),
        );
        assert_ne!(first.body, second.body);
        assert_eq!(
            first.figures, second.figures,
            "the same figures, told apart"
        );
    }

    #[test]
    fn aggregate_intervals_become_interval_reports_from_the_start_of_the_day() {
        let day_start: i64 = "2026-12-01T00:00:00+01:00"
            .parse::<jiff::Timestamp>()
            .expect("ts")
            .as_millisecond();
        let answer: Results<Interval> = serde_json::from_str(
            r#"{"results":[{"group":{"queueId":"q-1","mediaType":"voice"},"data":[
                {"interval":"2026-11-30T23:30:00.000Z/2026-12-01T00:00:00.000Z","metrics":[
                  {"metric":"nOffered","stats":{"count":4}},
                  {"metric":"tAnswered","stats":{"max":30000,"min":1000,"count":3,"sum":45000}},
                  {"metric":"tAbandon","stats":{"count":1,"sum":9000}},
                  {"metric":"oServiceLevel","stats":{"ratio":0.75,"numerator":3,"denominator":4,"target":0.8}}]}]}]}"#,
        )
        .expect("the SDK's shape");
        let bodies = aggregate_notifications(answer, day_start);
        let Effect::Observation(o) = effect(&bodies[0]) else {
            panic!("an observation")
        };
        assert!(o.figures.is_empty(), "no live figures from an aggregate");
        assert_eq!(o.intervals.len(), 2);
        // The day's first half hour (empty in Genesys's answer) says the day is covered.
        assert_eq!(o.intervals[0].start, day_start);
        assert_eq!(o.intervals[0].figures["offered"], 0);
        let later = &o.intervals[1];
        assert_eq!(later.figures["offered"], 4);
        assert_eq!(later.figures["answered"], 3);
        assert_eq!(later.figures["answer_ms_sum"], 45000.0);
        assert_eq!(later.figures["service_level_denominator"], 4.0);
    }

    #[test]
    fn a_conversation_is_placed_in_the_queue_of_its_latest_acd_segment() {
        let details: ConversationDetails = serde_json::from_str(
            r#"{"conversationId":"c-1","participants":[
              {"purpose":"customer","sessions":[{"mediaType":"voice","segments":[{"segmentType":"interact"}]}]},
              {"purpose":"acd","participantName":"Sales","sessions":[{"mediaType":"voice","segments":[
                {"segmentType":"interact","queueId":"q-sales","segmentStart":"2026-12-01T09:00:00.000Z"}]}]},
              {"purpose":"acd","participantName":"Billing","sessions":[{"mediaType":"voice","segments":[
                {"segmentType":"interact","queueId":"q-billing","segmentStart":"2026-12-01T09:05:00.000Z"}]}]}]}"#,
        )
        .expect("the SDK's shape");
        assert_eq!(
            queue_of(details),
            Some(QueueOfConversation {
                queue_id: "q-billing".into(),
                media_type: Some("voice".into())
            })
        );
        let none: ConversationDetails =
            serde_json::from_str(r#"{"conversationId":"c","participants":[]}"#).expect("shape");
        assert_eq!(queue_of(none), None);
    }
}
