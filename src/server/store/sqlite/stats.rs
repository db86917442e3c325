//! Queue statistics: applying event effects, reading per-queue status, rebuilding.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sqlx::{Connection as _, Row as _, SqliteConnection};

use super::SqliteDb;
use crate::server::store::records::{
    assemble_statuses, event_counts, Routes, StatsWindow, StoredEvent,
};
use crate::{
    model::{EventCounts, QueueStatus},
    server::domain::Effect,
};

/// Where the conversation updates among `effects` that name no queue apply: the queues where
/// their conversation is already stored, or named by another update in `effects`. A
/// conversation missing from the result is known nowhere.
pub async fn routes<'a>(
    tx: &mut SqliteConnection,
    effects: impl Iterator<Item = &'a Effect>,
) -> sqlx::Result<Routes> {
    let mut routes = Routes::new();
    let mut wanted = Vec::new();
    let mut named = Vec::new();
    for effect in effects {
        if let Effect::Conversation(c) = effect {
            match &c.queue_id {
                None => wanted.push(c.conversation_id.as_str()),
                Some(queue) => named.push((c.conversation_id.as_str(), queue)),
            }
        }
    }
    if wanted.is_empty() {
        return Ok(routes);
    }
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, queue_id FROM conversations
          WHERE conversation_id IN (SELECT value FROM json_each(?))",
    )
    .bind(json!(wanted).to_string())
    .fetch_all(&mut *tx)
    .await?;
    for (conversation, queue) in stored {
        routes.entry(conversation).or_default().insert(queue);
    }
    for (conversation, queue) in named {
        if wanted.contains(&conversation) {
            routes
                .entry(conversation.to_owned())
                .or_default()
                .insert(queue.clone());
        }
    }
    Ok(routes)
}

/// Writes the effects of done events. Every merge is order-independent and idempotent: the
/// earliest time wins for each conversation milestone and the newest observation wins. An
/// update without a queue applies to each of its conversation's queues in `routes`.
pub async fn apply<'a>(
    tx: &mut SqliteConnection,
    effects: impl Iterator<Item = &'a Effect>,
    routes: &Routes,
) -> sqlx::Result<()> {
    let mut conversations = Vec::new();
    let mut observations = Vec::new();
    let mut names = Vec::new();
    let no_queues = BTreeSet::new();
    for effect in effects {
        match effect {
            Effect::Ignored => {}
            Effect::Conversation(c) => {
                let queues: Vec<&String> = match &c.queue_id {
                    Some(queue) => vec![queue],
                    None => routes
                        .get(&c.conversation_id)
                        .unwrap_or(&no_queues)
                        .iter()
                        .collect(),
                };
                for queue in queues {
                    conversations.push(json!({
                        "q": queue, "c": c.conversation_id, "m": c.media_type,
                        "qa": c.queued_at, "aa": c.answered_at, "ea": c.ended_at, "o": c.outcome,
                    }));
                    if let Some(name) = &c.queue_name {
                        names.push(json!({ "q": queue, "n": name }));
                    }
                }
            }
            Effect::Observation(o) => observations.push(json!({
                "q": o.queue_id, "m": o.media_type, "t": o.observed_at, "f": o.figures,
            })),
        }
    }
    if !conversations.is_empty() {
        sqlx::query(
            "INSERT INTO conversations (queue_id, conversation_id, media_type, queued_at,
                                        answered_at, ended_at, outcome)
             SELECT value ->> '$.q', value ->> '$.c', value ->> '$.m', value ->> '$.qa',
                    value ->> '$.aa', value ->> '$.ea', value ->> '$.o'
               FROM json_each(?1) WHERE true
             ON CONFLICT (queue_id, conversation_id) DO UPDATE SET
               media_type  = coalesce(conversations.media_type, excluded.media_type),
               queued_at   = coalesce(min(conversations.queued_at, excluded.queued_at),
                                      conversations.queued_at, excluded.queued_at),
               answered_at = coalesce(min(conversations.answered_at, excluded.answered_at),
                                      conversations.answered_at, excluded.answered_at),
               outcome     = CASE WHEN excluded.ended_at < coalesce(conversations.ended_at, excluded.ended_at + 1)
                                  THEN coalesce(excluded.outcome, conversations.outcome)
                                  ELSE coalesce(conversations.outcome, excluded.outcome) END,
               ended_at    = coalesce(min(conversations.ended_at, excluded.ended_at),
                                      conversations.ended_at, excluded.ended_at)",
        )
        .bind(Value::Array(conversations).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !observations.is_empty() {
        sqlx::query(
            "INSERT INTO queue_observations (queue_id, media_type, observed_at, figures)
             SELECT value ->> '$.q', value ->> '$.m', value ->> '$.t', value -> '$.f'
               FROM json_each(?1) WHERE true
             ON CONFLICT (queue_id, media_type) DO UPDATE SET
               figures = CASE
                   WHEN excluded.observed_at > queue_observations.observed_at THEN excluded.figures
                   WHEN excluded.observed_at = queue_observations.observed_at
                        THEN json_patch(queue_observations.figures, excluded.figures)
                   ELSE queue_observations.figures END,
               observed_at = max(queue_observations.observed_at, excluded.observed_at)",
        )
        .bind(Value::Array(observations).to_string())
        .execute(&mut *tx)
        .await?;
    }
    if !names.is_empty() {
        sqlx::query(
            "INSERT INTO queue_names (queue_id, name)
             SELECT value ->> '$.q', value ->> '$.n' FROM json_each(?1) WHERE true
             ON CONFLICT (queue_id) DO UPDATE SET name = excluded.name",
        )
        .bind(Value::Array(names).to_string())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl SqliteDb {
    /// How many events are in each state. Open states are counted over the status index
    /// (bounded by the backlog); done and dead come from the maintained totals, so the cost
    /// does not grow with the events kept.
    pub async fn event_counts(&self) -> sqlx::Result<EventCounts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM events WHERE status = 'pending') AS pending,
                    (SELECT COUNT(*) FROM events WHERE status = 'pending' AND attempts > 0)
                        AS retrying,
                    (SELECT COUNT(*) FROM events WHERE status = 'processing') AS processing,
                    (SELECT n FROM event_totals WHERE name = 'done') AS done,
                    (SELECT n FROM event_totals WHERE name = 'dead_letters') AS dead,
                    (SELECT n FROM event_totals WHERE name = 'dead_events') AS dead_events",
        )
        .fetch_one(&self.pool)
        .await?;
        event_counts(&row)
    }

    /// Receive time (epoch ms) of the newest stored event.
    pub async fn last_received_at(&self) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar("SELECT received_at FROM events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
    }

    /// Every queue's statistics, busiest first.
    pub async fn queue_statuses(&self, w: &StatsWindow<'_>) -> sqlx::Result<Vec<QueueStatus>> {
        let mut queues: BTreeMap<String, QueueStatus> = BTreeMap::new();
        let derived = sqlx::query(
            "SELECT queue_id,
                coalesce(SUM(queued_at >= ?3 AND answered_at IS NULL AND ended_at IS NULL), 0)
                    AS waiting,
                coalesce(SUM(answered_at >= ?3 AND ended_at IS NULL), 0) AS interacting,
                MIN(CASE WHEN queued_at >= ?3 AND answered_at IS NULL AND ended_at IS NULL
                         THEN queued_at END) AS oldest_waiting,
                coalesce(SUM(answered_at >= ?1 AND answered_at < ?2), 0) AS answered,
                coalesce(SUM(queued_at >= ?1 AND queued_at < ?2), 0) AS offered,
                coalesce(SUM(answered_at IS NULL AND ended_at >= ?1 AND ended_at < ?2
                             AND coalesce(outcome, 'ABANDON') = 'ABANDON'), 0) AS abandoned,
                AVG(CASE WHEN answered_at >= ?1 AND answered_at < ?2 AND queued_at <= answered_at
                         THEN answered_at - queued_at END) AS average_wait
             FROM conversations GROUP BY queue_id",
        )
        .bind(w.day_start)
        .bind(w.day_end)
        .bind(w.open_since)
        .fetch_all(&self.pool)
        .await?;
        for row in derived {
            let queue_id: String = row.try_get("queue_id")?;
            let oldest: Option<i64> = row.try_get("oldest_waiting")?;
            let status = QueueStatus {
                queue_id: queue_id.clone(),
                source: "conversations".into(),
                waiting: row.try_get("waiting")?,
                interacting: row.try_get("interacting")?,
                longest_waiting_ms: oldest.map(|t| (w.now - t).max(0)),
                answered: row.try_get("answered")?,
                offered: Some(row.try_get("offered")?),
                abandoned: row.try_get("abandoned")?,
                average_wait_ms: row.try_get("average_wait")?,
                ..QueueStatus::default()
            };
            queues.insert(queue_id, status);
        }

        let observed: Vec<(String, String)> = sqlx::query_as(
            "SELECT queue_id, figures FROM queue_observations WHERE observed_at >= ?
              ORDER BY queue_id, media_type",
        )
        .bind(w.fresh_after)
        .fetch_all(&self.pool)
        .await?;
        let named: Vec<(String, String)> = sqlx::query_as("SELECT queue_id, name FROM queue_names")
            .fetch_all(&self.pool)
            .await?;
        Ok(assemble_statuses(queues, observed, named, w))
    }

    /// Empties the statistics tables (the start of a rebuild), in one short transaction.
    pub async fn reset_stats(&self) -> sqlx::Result<()> {
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        for reset in [
            "DELETE FROM conversations",
            "DELETE FROM queue_observations",
            "DELETE FROM queue_names",
        ] {
            sqlx::query(reset).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Up to `limit` done events after `seq`, in arrival order: (seq, type, payload, received).
    pub async fn done_events_after(&self, seq: i64, limit: i64) -> sqlx::Result<Vec<StoredEvent>> {
        sqlx::query_as(
            "SELECT seq, event_type, payload, received_at FROM events
              WHERE status = 'done' AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Merges `effects` into the statistics in one short transaction.
    pub async fn apply_effects(&self, effects: &[Effect]) -> sqlx::Result<()> {
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let routes = routes(&mut tx, effects.iter()).await?;
        apply(&mut tx, effects.iter(), &routes).await?;
        tx.commit().await
    }

    /// Forgets conversations that ended before `ended_before` (they no longer count for
    /// "today"), and open ones whose last milestone is older than `open_before`: their end
    /// event was lost, and they must not make "longest wait" grow forever.
    pub async fn prune_conversations(
        &self,
        ended_before: i64,
        open_before: i64,
        limit: i64,
    ) -> sqlx::Result<u64> {
        let mut w = self.writing().await?;
        let done = sqlx::query(
            "DELETE FROM conversations WHERE (queue_id, conversation_id) IN (
                 SELECT queue_id, conversation_id FROM conversations
                  WHERE ended_at < ?1
                     OR (ended_at IS NULL AND coalesce(answered_at, queued_at) < ?2)
                  LIMIT ?3)",
        )
        .bind(ended_before)
        .bind(open_before)
        .bind(limit)
        .execute(&mut *w)
        .await?;
        Ok(done.rows_affected())
    }
}
