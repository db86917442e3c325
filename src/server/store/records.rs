//! What the store takes and hands back, whatever the backend: batches claimed and completed,
//! counts, the statistics window, and the pure logic both backends share.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::{
    model::EventCounts,
    server::{
        domain::{ClaimedEvent, DeadLetter, EventStatus},
        queues::QueueSettings,
    },
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

/// The time frame and settings for reading queue statistics.
#[derive(Debug, Clone)]
pub struct StatsWindow<'a> {
    pub now: i64,
    /// Start and end of "today" in the configured time zone (epoch ms).
    pub day_start: i64,
    pub day_end: i64,
    /// The current 30-minute interval (epoch ms).
    pub interval_start: i64,
    pub interval_end: i64,
    /// Where "today" is, for the times the API shows.
    pub timezone: &'a jiff::tz::TimeZone,
    /// Observations newer than this are authoritative.
    pub fresh_after: i64,
    /// Open conversations whose last milestone is older than this lost their end event:
    /// they no longer count as waiting or interacting.
    pub open_since: i64,
    /// Names, targets and thresholds per queue.
    pub settings: &'a QueueSettings,
}

/// Done events re-applied per transaction by a rebuild.
pub const REBUILD_CHUNK: i64 = 1000;

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
