//! Data shapes the page, the JSON API and the server agree on.

use serde::{Deserialize, Serialize};

/// How many stored events are in each state of the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Stored and due, never tried yet.
    pub pending: i64,
    /// Failed at least once and waiting for their next attempt.
    pub retrying: i64,
    /// Claimed by a worker under a lease.
    pub processing: i64,
    /// Processed successfully (until pruned by retention).
    pub done: i64,
    /// In the dead-letter table, waiting for an admin.
    pub dead: i64,
    /// Every event row stored.
    pub total: i64,
}

/// Pipeline health: counts plus rates over the last minute.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    #[serde(flatten)]
    pub counts: EventCounts,
    /// Webhooks stored per second, averaged over the last minute.
    pub in_per_second: f64,
    /// Events processed (done or dead) per second, averaged over the last minute.
    pub out_per_second: f64,
    /// Receive time of the newest stored event (RFC 3339), if any.
    pub last_event_at: Option<String>,
    /// Forwarding to the sink, when one is configured.
    #[serde(default)]
    pub forwarding: Option<ForwardingStatus>,
}

/// Deliveries to the downstream sink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ForwardingStatus {
    /// Delivered per second, averaged over the last minute.
    pub delivered_per_second: f64,
    /// Events still to deliver (first tries, retries and deliveries in flight).
    pub waiting: i64,
    /// Of `waiting`, those that failed at least once.
    pub retrying: i64,
    /// Set while forwarding is paused because the sink keeps failing.
    pub paused: Option<ForwardPause>,
}

/// Why forwarding is paused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardPause {
    /// Epoch ms: when the pause began (kept across failed probes).
    pub since_ms: i64,
    /// Epoch ms: when one event is tried again.
    pub until_ms: i64,
    /// The last failure.
    pub reason: String,
}

/// Live statistics of one queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub queue_id: String,
    /// From payloads, else the names file, else the id.
    pub name: String,
    /// `observations` when a fresh queue observation supplies the figures, else `conversations`.
    pub source: String,
    /// Conversations waiting in the queue now.
    pub waiting: i64,
    /// Conversations connected to an agent now.
    pub interacting: i64,
    /// Conversations being offered to an agent now (observations only).
    pub alerting: Option<i64>,
    /// Agents on queue by routing status (observations only).
    pub on_queue_users: std::collections::BTreeMap<String, i64>,
    /// Longest current wait in milliseconds.
    pub longest_waiting_ms: Option<i64>,
    /// Offered in the current interval (observations only).
    pub offered: Option<i64>,
    /// Answered today (or in the observed interval).
    pub answered: i64,
    /// Abandoned today (or in the observed interval).
    pub abandoned: i64,
    /// Average wait before answer, in milliseconds.
    pub average_wait_ms: Option<f64>,
    /// Service level ratio 0..1 (observations only).
    pub service_level: Option<f64>,
    /// Peak waiting conversations per minute over the last hour, oldest first; `None` where
    /// no sample exists.
    #[serde(default)]
    pub history: Vec<Option<i64>>,
}

impl QueueStatus {
    /// Agents on queue in any routing status, when observed.
    pub fn agents_on_queue(&self) -> Option<i64> {
        (!self.on_queue_users.is_empty()).then(|| self.on_queue_users.values().sum())
    }

    /// Abandoned as a share (0..1) of the conversations that ended in the queue today.
    pub fn abandon_ratio(&self) -> Option<f64> {
        let ended = self.answered + self.abandoned;
        (ended > 0).then(|| self.abandoned as f64 / ended as f64)
    }

    /// How busy the queue is, for ordering the wallboard: waiting first, then interacting.
    pub fn busyness(&self) -> (i64, i64, i64) {
        (
            self.waiting,
            self.longest_waiting_ms.unwrap_or(0),
            self.interacting,
        )
    }
}

/// Limits above (or, for service level, below) which the wallboard flags a queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Waiting conversations.
    pub waiting: Option<i64>,
    /// Longest current wait, in seconds.
    pub longest_wait_secs: Option<i64>,
    /// Service level, as a ratio 0..1: lower is a breach.
    pub service_level: Option<f64>,
}

/// Why a queue is flagged; empty when it is within every threshold.
pub fn breaches(
    q: &QueueStatus,
    t: &Thresholds,
    longest_wait_ms: Option<i64>,
) -> Vec<&'static str> {
    let mut found = Vec::new();
    if t.waiting.is_some_and(|max| q.waiting > max) {
        found.push("waiting");
    }
    if let (Some(max), Some(wait)) = (t.longest_wait_secs, longest_wait_ms) {
        if wait > max.saturating_mul(1000) {
            found.push("longest wait");
        }
    }
    if let (Some(min), Some(level)) = (t.service_level, q.service_level) {
        if level < min {
            found.push("service level");
        }
    }
    found
}

/// Display settings the server sends with every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardSettings {
    pub thresholds: Thresholds,
    /// No event for this long marks the data stale.
    pub stale_after_secs: u64,
    /// Origins allowed to frame the widget: where it reports its height.
    #[serde(default)]
    pub frame_origins: Vec<String>,
}

/// Everything the live page shows, as pushed by `GET /api/v2/stream`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub pipeline: PipelineStatus,
    /// Busiest first.
    pub queues: Vec<QueueStatus>,
    /// When the figures were read (RFC 3339).
    #[serde(default)]
    pub as_of: String,
    #[serde(default)]
    pub board: BoardSettings,
}

/// Who the visitor is signed in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May see the dashboard (only needed when a viewer token is configured).
    Viewer,
    /// May see and act on dead letters.
    Admin,
}

/// One entry of the admin audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Epoch ms.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub count: Option<i64>,
    /// JSON: the ids or filter acted on.
    pub detail: String,
}

/// A dead letter as the console lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    pub id: String,
    pub event_type: String,
    pub queue_id: Option<String>,
    pub attempts: i64,
    pub last_error: String,
    /// Epoch ms.
    pub received_at: i64,
    /// Epoch ms.
    pub dead_at: i64,
    /// Which step failed: `payload` (processing it) or `sink` (forwarding it).
    #[serde(default)]
    pub stage: String,
}

/// One failed attempt of a dead letter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Epoch ms.
    pub at: i64,
    pub error: String,
}

/// A dead letter with its attempts and payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterDetail {
    pub row: DeadLetterRow,
    pub attempts: Vec<Attempt>,
    /// The body as received, pretty-printed when it is JSON.
    pub payload: String,
}

/// The filter of the dead-letter console, as kept in its URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleFilter {
    pub event_type: String,
    pub queue: String,
    pub error: String,
    /// RFC 3339 or `YYYY-MM-DDTHH:MM` (a `datetime-local` input, read as UTC).
    pub since: String,
    pub until: String,
    /// `payload`, `sink`, or empty for both.
    #[serde(default)]
    pub stage: String,
}

/// A page of the console: rows newest first, the total matching and the next page's cursor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterList {
    pub rows: Vec<DeadLetterRow>,
    pub total: i64,
    /// Pass as `before` for the next (older) page.
    pub next: Option<String>,
    /// Epoch ms at which the total was counted; "all matching" acts on letters dead by then.
    pub counted_at: i64,
}
