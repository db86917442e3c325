//! What the store takes and hands back, whatever the backend: batches claimed and completed,
//! counts, the statistics window, and the pure logic both backends share.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::{
    model::{EventCounts, QueueStatus},
    server::domain::{ClaimedEvent, DeadLetter, EventStatus},
};

/// A claimed batch.
#[derive(Debug, Default)]
pub struct Claimed {
    pub events: Vec<ClaimedEvent>,
    /// Events dead-lettered at this claim because their last allowed claim never finished.
    pub abandoned: u64,
}

/// What `complete_inline` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InlineApplied {
    pub done: u64,
    pub dead: u64,
    /// Left pending and due now, for the workers.
    pub for_workers: u64,
}

/// How a batch completion went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub done: u64,
    pub retried: u64,
    pub dead: u64,
    /// Events whose lease had been lost (expired and re-claimed): nothing was applied.
    pub lost_lease: u64,
}

/// The processing state of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventState {
    pub status: EventStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub errors: Vec<serde_json::Value>,
}

/// Why an update without a queue could not be applied.
pub fn unknown_conversation_reason(conversation: &str) -> String {
    format!(
        "conversation `{conversation}` is not known in any queue yet: an event naming its \
         queue (`data.queueId`) must come first"
    )
}

/// Dead letters changed per transaction by bulk replay and discard.
pub const BULK_CHUNK: i64 = 500;

/// Events queued per transaction by `queue_for_forwarding`.
pub const QUEUE_CHUNK: i64 = 5000;

/// How a completion of deliveries went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveriesCompleted {
    pub delivered: u64,
    pub retried: u64,
    pub dead: u64,
    /// Whose lease had expired and was claimed again: nothing was recorded for them.
    pub lost_lease: u64,
}

/// Deliveries still to make.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Waiting for their first or next attempt (includes `retrying`).
    pub waiting: i64,
    /// Failed at least once and waiting for the next attempt.
    pub retrying: i64,
    /// Being sent now, under a lease.
    pub sending: i64,
}

/// How many minutes of samples a sparkline shows.
pub const SPARKLINE_MINUTES: i64 = 60;

/// One admin action, as recorded.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub at: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub count: Option<i64>,
    pub detail: serde_json::Value,
}

/// The queues each conversation is known in.
pub type Routes = HashMap<String, BTreeSet<String>>;

/// The time frame and sources for reading queue statistics.
#[derive(Debug, Clone)]
pub struct StatsWindow<'a> {
    pub now: i64,
    /// Start and end of "today" in the configured time zone (epoch ms).
    pub day_start: i64,
    pub day_end: i64,
    /// Observations newer than this are authoritative.
    pub fresh_after: i64,
    /// Open conversations whose last milestone is older than this lost their end event:
    /// they no longer count as waiting or interacting.
    pub open_since: i64,
    /// Names from the configured names file.
    pub names: &'a HashMap<String, String>,
}

/// Done events re-applied per transaction by a rebuild.
pub const REBUILD_CHUNK: i64 = 1000;

/// The status list from the conversations' figures (`queues`), the fresh observations
/// (`observed`: queue id and figures as JSON text, one per media type) and the stored queue
/// names (`named`, before the names file's): busiest first.
pub fn assemble_statuses(
    mut queues: BTreeMap<String, QueueStatus>,
    observed: Vec<(String, String)>,
    named: Vec<(String, String)>,
    w: &StatsWindow<'_>,
) -> Vec<QueueStatus> {
    let mut fresh: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    for (queue_id, figures) in observed {
        let figures: Map<String, Value> = serde_json::from_str(&figures).unwrap_or_default();
        fresh.entry(queue_id).or_default().push(figures);
    }
    for (queue_id, per_media) in fresh {
        let status = queues
            .entry(queue_id.clone())
            .or_insert_with(|| QueueStatus {
                queue_id,
                ..QueueStatus::default()
            });
        apply_observations(status, &per_media, w.now);
    }
    let named: HashMap<String, String> = named.into_iter().collect();
    let mut list: Vec<QueueStatus> = queues
        .into_values()
        .map(|mut q| {
            q.name = named
                .get(&q.queue_id)
                .or_else(|| w.names.get(&q.queue_id))
                .cloned()
                .unwrap_or_else(|| q.queue_id.clone());
            q
        })
        .collect();
    // Busiest first, so the queues that need attention lead the wallboard.
    list.sort_by(|a, b| {
        b.busyness()
            .cmp(&a.busyness())
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.queue_id.cmp(&b.queue_id))
    });
    list
}

/// Overlays fresh observation figures (one map per media type) on a queue's status. Counts
/// add up across media types; ratios are weighted (Σ numerators ÷ Σ denominators, Σ sums ÷
/// Σ counts), never a mean of per-media ratios; the longest wait is the earliest start.
fn apply_observations(status: &mut QueueStatus, per_media: &[Map<String, Value>], now: i64) {
    let sum = |key: &str| -> Option<i64> {
        let values: Vec<i64> = per_media
            .iter()
            .filter_map(|f| f.get(key)?.as_i64())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let weighted = |numerator: &str, denominator: &str| -> Option<f64> {
        let (mut n, mut d) = (0.0, 0.0);
        for f in per_media {
            if let (Some(a), Some(b)) = (
                f.get(numerator).and_then(Value::as_f64),
                f.get(denominator).and_then(Value::as_f64),
            ) {
                n += a;
                d += b;
            }
        }
        (d > 0.0).then(|| n / d)
    };
    // Rows stored before ratios were kept weighted carry only the ratio.
    let mean = |key: &str| -> Option<f64> {
        let values: Vec<f64> = per_media
            .iter()
            .filter_map(|f| f.get(key)?.as_f64())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    status.source = "observations".into();
    if let Some(v) = sum("waiting") {
        status.waiting = v;
    }
    if let Some(v) = sum("interacting") {
        status.interacting = v;
    }
    status.alerting = sum("alerting");
    status.offered = sum("offered");
    if let Some(v) = sum("answered") {
        status.answered = v;
    }
    if let Some(v) = sum("abandoned") {
        status.abandoned = v;
    }
    let longest = per_media
        .iter()
        .filter_map(|f| f.get("longest_waiting_since")?.as_i64())
        .min()
        .map(|since| now.saturating_sub(since).max(0))
        .or_else(|| {
            per_media
                .iter()
                .filter_map(|f| f.get("longest_waiting_ms")?.as_i64())
                .max()
        });
    if let Some(v) = longest {
        status.longest_waiting_ms = Some(v);
    }
    if let Some(v) = weighted("answer_ms_sum", "answer_count").or_else(|| mean("average_wait_ms")) {
        status.average_wait_ms = Some(v);
    }
    status.service_level = weighted("service_level_numerator", "service_level_denominator")
        .or_else(|| mean("service_level"));
    for figures in per_media {
        if let Some(users) = figures.get("on_queue_users").and_then(Value::as_object) {
            for (qualifier, n) in users {
                *status.on_queue_users.entry(qualifier.clone()).or_default() +=
                    n.as_i64().unwrap_or(0);
            }
        }
    }
}

/// How a page of dead letters is chosen.
pub enum PageBy<'a> {
    /// Newest first, by offset (the admin API and CLI).
    Offset { limit: i64, offset: i64 },
    /// Newest first (by dead-letter time, then id), strictly older than `before` when given:
    /// cursor pagination that stays stable while letters arrive.
    Cursor {
        before: Option<(i64, &'a str)>,
        limit: i64,
    },
}

/// A stored event as a rebuild reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_type: String,
    pub payload: Vec<u8>,
    pub received_at: i64,
}

/// What a worker asks to lease: up to `limit` rows for `lease_ms` under its `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub token: i64,
    pub lease_ms: i64,
    pub limit: i64,
}

/// Sparkline series per queue from samples `(queue, minute, waiting)` of the
/// [`SPARKLINE_MINUTES`] minutes from `first`, oldest first; `None` where no sample was taken.
pub fn sparklines(
    first: i64,
    samples: Vec<(String, i64, i64)>,
) -> HashMap<String, Vec<Option<i64>>> {
    let mut series: HashMap<String, Vec<Option<i64>>> = HashMap::new();
    for (queue, at, waiting) in samples {
        let slot = usize::try_from(at - first).unwrap_or(0);
        let points = series
            .entry(queue)
            .or_insert_with(|| vec![None; SPARKLINE_MINUTES as usize]);
        if let Some(point) = points.get_mut(slot) {
            *point = Some(waiting);
        }
    }
    series
}

/// A claimed event's columns, as both backends' claims return them.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimRow {
    seq: i64,
    id: String,
    event_type: String,
    payload: Vec<u8>,
    attempts: i64,
    received_at: i64,
}

/// A claimed event from a row of `seq, id, event_type, payload, attempts, received_at`.
pub(crate) fn claimed_event<'r, R: sqlx::Row>(row: &'r R) -> sqlx::Result<ClaimedEvent>
where
    ClaimRow: sqlx::FromRow<'r, R>,
{
    let c: ClaimRow = sqlx::FromRow::from_row(row)?;
    Ok(ClaimedEvent {
        seq: c.seq,
        id: c.id,
        event_type: c.event_type,
        payload: c.payload.into(),
        attempts: c.attempts,
        received_at: c.received_at,
    })
}

/// A dead letter's columns (`errors` as JSON text; `payload` only where selected).
#[derive(sqlx::FromRow)]
pub(crate) struct LetterRow {
    id: String,
    event_type: String,
    queue_id: Option<String>,
    attempts: i64,
    last_error: String,
    errors: String,
    received_at: i64,
    dead_at: i64,
    stage: String,
    #[sqlx(default)]
    payload: Option<Vec<u8>>,
}

/// A dead letter from its row; `with_payload` for the detail view (the row selects it).
pub(crate) fn dead_letter<'r, R: sqlx::Row>(
    row: &'r R,
    with_payload: bool,
) -> sqlx::Result<DeadLetter>
where
    LetterRow: sqlx::FromRow<'r, R>,
{
    let l: LetterRow = sqlx::FromRow::from_row(row)?;
    Ok(DeadLetter {
        payload: with_payload
            .then(|| String::from_utf8_lossy(&l.payload.unwrap_or_default()).into_owned()),
        errors: serde_json::from_str(&l.errors).unwrap_or(Value::Null),
        id: l.id,
        event_type: l.event_type,
        queue_id: l.queue_id,
        attempts: l.attempts,
        last_error: l.last_error,
        received_at: l.received_at,
        dead_at: l.dead_at,
        stage: l
            .stage
            .parse()
            .map_err(|err| sqlx::Error::Decode(Box::new(err)))?,
    })
}

/// The pipeline counts' columns: open states counted, done and dead from the totals.
#[derive(sqlx::FromRow)]
pub(crate) struct CountsRow {
    pending: i64,
    retrying: i64,
    processing: i64,
    done: Option<i64>,
    dead: Option<i64>,
    dead_events: Option<i64>,
}

/// The pipeline counts from a row of `pending, retrying, processing, done, dead, dead_events`.
pub(crate) fn event_counts<'r, R: sqlx::Row>(row: &'r R) -> sqlx::Result<EventCounts>
where
    CountsRow: sqlx::FromRow<'r, R>,
{
    let c: CountsRow = sqlx::FromRow::from_row(row)?;
    let done = c.done.unwrap_or(0);
    Ok(EventCounts {
        pending: c.pending - c.retrying,
        retrying: c.retrying,
        processing: c.processing,
        done,
        dead: c.dead.unwrap_or(0),
        total: c.pending + c.processing + done + c.dead_events.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn figures(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn media_types_combine_weighted_and_the_longest_wait_ticks_from_its_start() {
        let now = 1_000_000_000_000_000;
        let voice = figures(json!({
            "waiting": 3, "answered": 9,
            "service_level_numerator": 9.0, "service_level_denominator": 10.0, "service_level": 0.9,
            "answer_ms_sum": 90_000.0, "answer_count": 9.0,
            "longest_waiting_since": now - 95_000,
        }));
        let message = figures(json!({
            "waiting": 1, "answered": 1,
            "service_level_numerator": 1.0, "service_level_denominator": 2.0, "service_level": 0.5,
            "answer_ms_sum": 110_000.0, "answer_count": 1.0,
            "longest_waiting_since": now - 20_000,
        }));
        let mut status = QueueStatus::default();
        apply_observations(&mut status, &[voice, message], now);
        assert_eq!(status.waiting, 4);
        assert_eq!(status.answered, 10);
        // 10 of 12 within the target: 83 %, not the 70 % a mean of 90 % and 50 % gives.
        let level = status.service_level.expect("a service level");
        assert!((level - 10.0 / 12.0).abs() < 1e-9, "{level}");
        // 200 s over 10 answers, not the mean of 10 s and 110 s.
        assert_eq!(status.average_wait_ms, Some(20_000.0));
        assert_eq!(status.longest_waiting_ms, Some(95_000));
    }

    #[test]
    fn rows_from_before_weighting_still_read() {
        let old = figures(
            json!({ "service_level": 0.75, "average_wait_ms": 1500.0, "longest_waiting_ms": 3000 }),
        );
        let mut status = QueueStatus::default();
        apply_observations(&mut status, &[old], 0);
        assert_eq!(status.service_level, Some(0.75));
        assert_eq!(status.average_wait_ms, Some(1500.0));
        assert_eq!(status.longest_waiting_ms, Some(3000));
    }
}
