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
}

/// Everything the live page shows, as pushed by `GET /api/v2/stream`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub pipeline: PipelineStatus,
    pub queues: Vec<QueueStatus>,
}

/// A dead letter as the page lists it (no payload).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterSummary {
    pub id: String,
    pub event_type: String,
    pub queue_id: Option<String>,
    pub attempts: i64,
    pub last_error: String,
    /// RFC 3339.
    pub dead_at: String,
}
