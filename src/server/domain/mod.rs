//! What gc-status works with, apart from where it is stored: an event's effect on the
//! statistics, what became of a claimed event or a delivery, and which dead letters an admin
//! means. The store, the workers, the forwarder, the pages and the CLI share these types;
//! none of them belongs to a storage backend.

mod clock;
pub mod envelope;
mod filter;
pub mod interpret;
mod status;

pub use self::{
    clock::{day_bounds, interval_bounds, local_time},
    filter::{parse_time, DeadLetterFilter, FilterError, FilterText, Selection},
    status::{EventStatus, ForwardState, Stage, UnknownState},
};

/// Epoch milliseconds now: the one clock every part of gc-status reads.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

use serde_json::{Map, Value};

/// Why an event could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Worth retrying: a timeout, an unavailable downstream, a busy database.
    #[error("{0}")]
    Transient(String),
    /// Will never succeed: goes to the dead letters at once.
    #[error("{0}")]
    Permanent(String),
}

/// What one event changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A kind on the ignore list: marked done, no statistics.
    Ignored,
    Conversation(ConversationUpdate),
    Observation(ObservationUpdate),
}

/// One conversation's move in a queue; every time is epoch milliseconds and only ever lowers
/// the stored value (earliest wins), which makes updates order-independent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationUpdate {
    /// `None`: the event named no queue; it applies to every queue where the conversation is
    /// already known (resolved when it is applied).
    pub queue_id: Option<String>,
    pub conversation_id: String,
    pub queue_name: Option<String>,
    pub media_type: Option<String>,
    pub queued_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub outcome: Option<String>,
}

/// A queue observation: the figures of now (`o*` metrics) and of each interval it reports
/// (`t*`/`n*` metrics, which belong to their 30-minute interval, never to "now").
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationUpdate {
    pub queue_id: String,
    /// Lowercase, as Genesys's observation groups name it (`voice`, `message`, …); empty for
    /// the group without one (where the agent metrics arrive).
    pub media_type: String,
    /// When the figures were current: the notification's own time, else its receipt.
    pub observed_at: i64,
    /// The `o*` figures, keyed as the store keeps them (`waiting`, `on_queue_users`, …).
    pub figures: Map<String, Value>,
    /// The `t*`/`n*` figures of each interval the notification reports.
    pub intervals: Vec<IntervalFigures>,
}

/// One interval's aggregate figures as an observation reports them (cumulative within it).
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalFigures {
    /// Epoch ms.
    pub start: i64,
    pub end: i64,
    /// `offered`, `answered`, `answer_ms_sum`, `abandoned`, `short_abandons`, `flow_outs`,
    /// `service_level_numerator`, `service_level_denominator`: only those reported.
    pub figures: Map<String, Value>,
}

/// Where a conversation queued, as Genesys's conversation details say (for a state change
/// that named no queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOfConversation {
    pub queue_id: String,
    pub media_type: Option<String>,
}

/// Genesys's media type names, normalised to its observation groups' lowercase names:
/// detail events say `VOICE`, queue settings say `call`.
pub fn media_type(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    match lower.as_str() {
        "call" => "voice".to_owned(),
        _ => lower,
    }
}

/// An event claimed by a worker.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    /// The body byte for byte (shared, not copied, when processed as it arrives).
    pub payload: axum::body::Bytes,
    /// Including this claim.
    pub attempts: i64,
    pub received_at: i64,
}

/// What became of one claimed event.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done(Effect),
    Retry { at: i64, error: String },
    Dead { error: String },
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The sink accepted it.
    Delivered,
    /// Try again from `at`. `refund`: the attempt does not count (the sink as a whole was
    /// down, not this event), so an outage never uses up an event's attempts.
    Retry {
        at: i64,
        error: String,
        refund: bool,
    },
    /// Give up: file a dead letter with `stage = 'sink'`.
    Dead { error: String },
}

/// One dead letter as listed.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub queue_id: Option<String>,
    pub attempts: i64,
    pub last_error: String,
    /// Every attempt's error, oldest first: `[{"at": ms, "error": "..."}]`.
    pub errors: serde_json::Value,
    pub received_at: i64,
    pub dead_at: i64,
    /// Which step failed: processing the payload, or forwarding it to the sink.
    pub stage: Stage,
    /// The original body (only in single-letter reads), as text when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}
