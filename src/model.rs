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
    /// The Genesys Cloud connector, when one is configured.
    #[serde(default)]
    pub genesys: Option<ConnectorStatus>,
}

/// The Genesys Cloud connector's state, for the wallboard's strip.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectorStatus {
    /// `starting`, `websocket` (live over the notifications websocket, with polls between),
    /// `polling` (no websocket: by choice, or `reason` says why), `failing` (calls fail:
    /// `reason` says why, `next_try_at` when it tries again) or `standby` (another replica
    /// runs the connector).
    pub state: String,
    pub reason: Option<String>,
    pub next_try_at: Option<String>,
    /// Queues watched.
    pub queues: usize,
    /// RFC 3339 (UTC) of the last good poll, today's figures and the last notification.
    pub last_poll_at: Option<String>,
    pub today_at: Option<String>,
    pub last_notification_at: Option<String>,
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
    /// From payloads, else the queue settings file, else the id.
    pub name: String,
    /// Where the live counts come from: `observations` when a fresh queue observation
    /// supplies them, else `conversations`.
    pub source: String,
    /// Conversations waiting in the queue now.
    pub waiting: i64,
    /// Conversations connected to an agent now.
    pub interacting: i64,
    /// Conversations being offered to an agent now (observations only).
    pub alerting: Option<i64>,
    /// Agents on queue by routing status (observations only), as Genesys names them.
    pub on_queue_users: std::collections::BTreeMap<String, i64>,
    /// Agents by state (observations only).
    #[serde(default)]
    pub agents: Option<Agents>,
    /// Longest current wait in milliseconds, as of the snapshot.
    pub longest_waiting_ms: Option<i64>,
    /// When the longest current wait began (RFC 3339, UTC).
    #[serde(default)]
    pub longest_waiting_since: Option<String>,
    /// Offered today (same as `today.offered`).
    pub offered: Option<i64>,
    /// Answered today (same as `today.answered`).
    pub answered: i64,
    /// Abandoned today (same as `today.abandoned`).
    pub abandoned: i64,
    /// Average speed of answer today, in milliseconds (same as `today.average_answer_ms`).
    pub average_wait_ms: Option<f64>,
    /// Service level today, 0..1 (same as `today.service_level`).
    pub service_level: Option<f64>,
    /// Today's totals, from the source that covers more of the day.
    #[serde(default)]
    pub today: Option<Figures>,
    /// The current 30-minute interval's figures.
    #[serde(default)]
    pub interval: Option<Figures>,
    /// The same per media type (`voice`, `callback`, `chat`, `email`, `message`).
    #[serde(default)]
    pub media: std::collections::BTreeMap<String, MediaStatus>,
    /// Peak waiting conversations per minute over the last hour, oldest first; `None` where
    /// no sample exists.
    #[serde(default)]
    pub history: Vec<Option<i64>>,
}

/// Agents of a queue by state, from Genesys's user observations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agents {
    /// On queue and available (`oOnQueueUsers` IDLE).
    pub idle: Option<i64>,
    /// On queue, handling a conversation of the queue (INTERACTING).
    pub interacting: Option<i64>,
    /// On queue, handling a conversation from elsewhere (COMMUNICATING).
    pub communicating: Option<i64>,
    /// On queue, not answering what is offered (NOT_RESPONDING).
    pub not_responding: Option<i64>,
    /// On queue in any routing status.
    pub on_queue: Option<i64>,
    /// Members signed in but off queue (`oOffQueueUsers`).
    pub off_queue: Option<i64>,
    /// Members signed in (`oActiveUsers`).
    #[serde(default)]
    pub active: Option<i64>,
    /// Members of the queue (`oMemberUsers`).
    #[serde(default)]
    pub members: Option<i64>,
}

/// A queue's service-level target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceLevelTarget {
    /// Answered within this many seconds counts as within the target.
    pub seconds: i64,
    /// The share (in percent) of conversations that should be.
    pub percent: f64,
}

/// The counts and ratios of a period: today, or one 30-minute interval. Counts absent where
/// no source reported them; ratios absent where their denominator is 0. (One flat struct for
/// both, not a flattened one: serde's `flatten` would add its buffering code to the page.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Today: where its figures begin (RFC 3339 in `GC_STATUS_TIMEZONE`): the start of the
    /// day, or later when gc-status holds nothing earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Today: `observations` (Genesys's own interval figures) or `conversations` (derived
    /// from the conversation events), whichever covers more of the day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An interval: its start and end (RFC 3339 in `GC_STATUS_TIMEZONE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Today: the queue's service-level target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_level_target: Option<ServiceLevelTarget>,
    /// Conversations that entered the queue.
    pub offered: Option<i64>,
    /// Answered by an agent.
    pub answered: Option<i64>,
    /// Ended in the queue unanswered (the customer hung up or left).
    pub abandoned: Option<i64>,
    /// Of `abandoned`, those within the short-abandon time; present only when
    /// `GC_STATUS_SHORT_ABANDON_SECS` is set, and then left out of both ratios.
    #[serde(default)]
    pub short_abandons: Option<i64>,
    /// Left the queue unanswered to another destination (overflow, timeout, transfer).
    pub flow_outs: Option<i64>,
    /// `abandoned ÷ offered` (short abandons left out of both when they are excluded).
    pub abandon_rate: Option<f64>,
    /// `service_level_numerator ÷ service_level_denominator`.
    pub service_level: Option<f64>,
    /// Answered within the target.
    pub service_level_numerator: Option<f64>,
    /// Answered plus abandoned (short abandons and flow-outs excluded).
    pub service_level_denominator: Option<f64>,
    /// Average speed of answer: `answer_ms_sum ÷ answered`.
    pub average_answer_ms: Option<f64>,
    /// Time to answer summed over the answered conversations (ms).
    pub answer_ms_sum: Option<f64>,
}

fn add_count(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    }
}

fn add_sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

impl Figures {
    /// Adds another period's or media type's figures: counts and sums add, ratios are then
    /// recomputed from them (weighted, never a mean of ratios).
    pub fn add(&mut self, other: &Figures) {
        self.offered = add_count(self.offered, other.offered);
        self.answered = add_count(self.answered, other.answered);
        self.abandoned = add_count(self.abandoned, other.abandoned);
        self.short_abandons = add_count(self.short_abandons, other.short_abandons);
        self.flow_outs = add_count(self.flow_outs, other.flow_outs);
        self.service_level_numerator =
            add_sum(self.service_level_numerator, other.service_level_numerator);
        self.service_level_denominator = add_sum(
            self.service_level_denominator,
            other.service_level_denominator,
        );
        self.answer_ms_sum = add_sum(self.answer_ms_sum, other.answer_ms_sum);
        self.finish();
    }

    /// Computes the ratios from the counts. Short abandons (present only when they are
    /// excluded) count neither as offered nor as abandoned.
    pub fn finish(&mut self) {
        let short = self.short_abandons.unwrap_or(0);
        self.abandon_rate = match (self.abandoned, self.offered) {
            (Some(abandoned), Some(offered)) if offered - short > 0 => {
                Some((abandoned - short).max(0) as f64 / (offered - short) as f64)
            }
            _ => None,
        };
        self.service_level = match (self.service_level_numerator, self.service_level_denominator) {
            (Some(n), Some(d)) if d > 0.0 => Some((n / d).clamp(0.0, 1.0)),
            _ => None,
        };
        self.average_answer_ms = match (self.answer_ms_sum, self.answered) {
            (Some(sum), Some(n)) if n > 0 => Some(sum / n as f64),
            _ => None,
        };
    }
}

/// One media type's part of a queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MediaStatus {
    pub waiting: Option<i64>,
    pub interacting: Option<i64>,
    pub longest_waiting_ms: Option<i64>,
    pub today: Option<Figures>,
    pub interval: Option<Figures>,
}

impl QueueStatus {
    /// The queue's figures for one media type, or (`None`) for all of them.
    pub fn part(&self, media: Option<&str>) -> Option<MediaStatus> {
        match media {
            Some(m) => self.media.get(m).cloned(),
            None => Some(MediaStatus {
                waiting: Some(self.waiting),
                interacting: Some(self.interacting),
                longest_waiting_ms: self.longest_waiting_ms,
                today: self.today.clone(),
                interval: self.interval.clone(),
            }),
        }
    }

    /// Agents on queue in any routing status, when observed.
    pub fn agents_on_queue(&self) -> Option<i64> {
        (!self.on_queue_users.is_empty()).then(|| self.on_queue_users.values().sum())
    }

    /// Abandoned as a share (0..1) of the conversations offered today.
    pub fn abandon_ratio(&self) -> Option<f64> {
        self.today.as_ref().and_then(|t| t.abandon_rate)
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Waiting conversations.
    pub waiting: Option<i64>,
    /// Longest current wait, in seconds.
    pub longest_wait_secs: Option<i64>,
    /// Service level today, as a ratio 0..1: lower is a breach.
    pub service_level: Option<f64>,
}

/// The two threshold levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub warning: Limits,
    pub critical: Limits,
}

/// How far over its thresholds a queue is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// Which limits `part` is beyond, with the reason for each as text.
fn beyond(part: &MediaStatus, l: &Limits, longest_wait_ms: Option<i64>) -> Vec<String> {
    let mut found = Vec::new();
    let waiting = part.waiting.unwrap_or(0);
    if let Some(max) = l.waiting.filter(|max| waiting > *max) {
        found.push(format!("{waiting} waiting (over {max})"));
    }
    if let (Some(max), Some(wait)) = (l.longest_wait_secs, longest_wait_ms) {
        if wait > max.saturating_mul(1000) {
            found.push(format!("a wait of {} s (over {max} s)", wait / 1000));
        }
    }
    let level = part.today.as_ref().and_then(|t| t.service_level);
    if let (Some(min), Some(level)) = (l.service_level, level) {
        if level < min {
            // Whole percentages by integer formatting (float formatting would add its
            // tables to the browser's wasm).
            found.push(format!(
                "service level {} % (under {} %)",
                (level * 100.0).round() as i64,
                (min * 100.0).round() as i64
            ));
        }
    }
    found
}

/// The highest threshold level `part` (a queue, or one media type of it) breaches and why;
/// `None` within every threshold.
pub fn breaches(
    part: &MediaStatus,
    t: &Thresholds,
    longest_wait_ms: Option<i64>,
) -> Option<(Level, Vec<String>)> {
    let critical = beyond(part, &t.critical, longest_wait_ms);
    if !critical.is_empty() {
        return Some((Level::Critical, critical));
    }
    let warning = beyond(part, &t.warning, longest_wait_ms);
    (!warning.is_empty()).then_some((Level::Warning, warning))
}

/// Display settings the server sends with every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardSettings {
    /// Thresholds of queues without their own.
    pub thresholds: Thresholds,
    /// Queues with thresholds of their own (from the queue settings file).
    #[serde(default)]
    pub queue_thresholds: std::collections::BTreeMap<String, Thresholds>,
    /// `GC_STATUS_TIMEZONE` (an IANA name).
    #[serde(default)]
    pub timezone: String,
    /// Its abbreviation now (`CET`, `UTC`): the label of every time shown.
    #[serde(default)]
    pub zone: String,
    /// Its offset from UTC now, in seconds: times are shown in the zone.
    #[serde(default)]
    pub utc_offset_secs: i64,
    /// No event for this long marks the data stale.
    pub stale_after_secs: u64,
    /// Origins allowed to frame the widget: where it reports its height.
    #[serde(default)]
    pub frame_origins: Vec<String>,
}

impl BoardSettings {
    /// The thresholds that apply to `queue`.
    pub fn thresholds_for(&self, queue: &str) -> &Thresholds {
        self.queue_thresholds.get(queue).unwrap_or(&self.thresholds)
    }
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

/// The zone times are shown in (`GC_STATUS_TIMEZONE`), as of the answer it came with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// Its abbreviation (`CET`); empty: UTC.
    pub label: String,
    pub utc_offset_secs: i64,
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
    /// Where `at` is shown.
    #[serde(default)]
    pub zone: Zone,
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
    /// Where the times are shown.
    #[serde(default)]
    pub zone: Zone,
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
