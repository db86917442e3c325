//! Queue statistics on PostgreSQL: applying effects with atomic merges, reading, rebuilding.
//!
//! Workers on several replicas may merge into the same conversation at once. Each merge is a
//! single `INSERT … ON CONFLICT DO UPDATE` whose columns only move one way (`LEAST` of times,
//! the outcome of the earliest end, the newest observation), so concurrent and repeated
//! applications give the same row as one application in any order. Rows are merged in key
//! order so two transactions never wait on each other's rows in opposite orders.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use sqlx::{PgConnection, Row as _};

use super::{pg_json, pg_text, PgDb};
use crate::{
    model::{EventCounts, QueueStatus},
    server::{
        domain::Effect,
        store::records::{assemble_statuses, event_counts, Routes, StatsWindow, StoredEvent},
    },
};

/// Where the conversation updates among `effects` that name no queue apply (see the SQLite
/// backend).
pub async fn routes<'a>(
    tx: &mut PgConnection,
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
    let keys: Vec<String> = wanted.iter().map(|c| pg_text(c).into_owned()).collect();
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, queue_id FROM conversations WHERE conversation_id = ANY($1)",
    )
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    // Stored keys are NUL-free; map them back to the ids the effects carry.
    let original: HashMap<String, &str> = wanted
        .iter()
        .map(|c| (pg_text(c).into_owned(), *c))
        .collect();
    for (conversation, queue) in stored {
        let key = original
            .get(&conversation)
            .map_or(conversation.clone(), |c| (*c).to_owned());
        routes.entry(key).or_default().insert(queue);
    }
    for (conversation, queue) in named {
        if wanted.contains(&conversation) {
            routes
                .entry(conversation.to_owned())
                .or_default()
                .insert(pg_text(queue).into_owned());
        }
    }
    Ok(routes)
}

/// One conversation's milestones, merged before they reach the database: one statement may
/// not change a row twice.
#[derive(Clone, Default)]
struct Milestones {
    media_type: Option<String>,
    queued_at: Option<i64>,
    answered_at: Option<i64>,
    ended_at: Option<i64>,
    outcome: Option<String>,
}

/// Conversation rows column by column (PostgreSQL takes each column as an array).
#[derive(Default)]
struct ConversationColumns {
    queue: Vec<String>,
    conversation: Vec<String>,
    media_type: Vec<Option<String>>,
    queued_at: Vec<Option<i64>>,
    answered_at: Vec<Option<i64>>,
    ended_at: Vec<Option<i64>>,
    outcome: Vec<Option<String>>,
}

/// The earlier of two optional times.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Milestones {
    /// The same merge the SQL performs against the stored row.
    fn merge(&mut self, new: Milestones) {
        let new_ends_first = match (new.ended_at, self.ended_at) {
            (Some(n), Some(o)) => n < o,
            (Some(_), None) => true,
            (None, _) => false,
        };
        self.outcome = if new_ends_first {
            new.outcome.or(self.outcome.take())
        } else {
            self.outcome.take().or(new.outcome)
        };
        self.media_type = self.media_type.take().or(new.media_type);
        self.queued_at = earliest(self.queued_at, new.queued_at);
        self.answered_at = earliest(self.answered_at, new.answered_at);
        self.ended_at = earliest(self.ended_at, new.ended_at);
    }
}

/// Writes the effects of done events, merged per row and in key order (see the module).
pub async fn apply<'a>(
    tx: &mut PgConnection,
    effects: impl Iterator<Item = &'a Effect>,
    routes: &Routes,
) -> sqlx::Result<()> {
    let mut conversations: BTreeMap<(String, String), Milestones> = BTreeMap::new();
    let mut observations: BTreeMap<(String, String), (i64, Map<String, Value>)> = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let no_queues = Default::default();
    for effect in effects {
        match effect {
            Effect::Ignored => {}
            Effect::Conversation(c) => {
                let queues: Vec<String> = match &c.queue_id {
                    Some(queue) => vec![pg_text(queue).into_owned()],
                    None => routes
                        .get(&c.conversation_id)
                        .unwrap_or(&no_queues)
                        .iter()
                        .cloned()
                        .collect(),
                };
                let milestones = Milestones {
                    media_type: c.media_type.as_deref().map(|m| pg_text(m).into_owned()),
                    queued_at: c.queued_at,
                    answered_at: c.answered_at,
                    ended_at: c.ended_at,
                    outcome: c.outcome.as_deref().map(|o| pg_text(o).into_owned()),
                };
                let conversation = pg_text(&c.conversation_id).into_owned();
                for queue in queues {
                    if let Some(name) = &c.queue_name {
                        names.insert(queue.clone(), pg_text(name).into_owned());
                    }
                    conversations
                        .entry((queue, conversation.clone()))
                        .and_modify(|m| m.merge(milestones.clone()))
                        .or_insert_with(|| milestones.clone());
                }
            }
            Effect::Observation(o) => {
                let figures = o.figures.clone();
                let key = (
                    pg_text(&o.queue_id).into_owned(),
                    pg_text(&o.media_type).into_owned(),
                );
                match observations.get_mut(&key) {
                    Some((at, kept)) if o.observed_at > *at => {
                        *at = o.observed_at;
                        *kept = figures;
                    }
                    Some((at, kept)) if o.observed_at == *at => kept.extend(figures),
                    Some(_) => {}
                    None => {
                        observations.insert(key, (o.observed_at, figures));
                    }
                }
            }
        }
    }
    if !conversations.is_empty() {
        let mut c = ConversationColumns::default();
        for ((queue, conversation), m) in conversations {
            c.queue.push(queue);
            c.conversation.push(conversation);
            c.media_type.push(m.media_type);
            c.queued_at.push(m.queued_at);
            c.answered_at.push(m.answered_at);
            c.ended_at.push(m.ended_at);
            c.outcome.push(m.outcome);
        }
        sqlx::query(
            "INSERT INTO conversations AS c (queue_id, conversation_id, media_type, queued_at,
                                             answered_at, ended_at, outcome)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                  $6::int8[], $7::text[])
             ON CONFLICT (queue_id, conversation_id) DO UPDATE SET
               media_type  = coalesce(c.media_type, excluded.media_type),
               queued_at   = LEAST(c.queued_at, excluded.queued_at),
               answered_at = LEAST(c.answered_at, excluded.answered_at),
               outcome     = CASE WHEN excluded.ended_at < coalesce(c.ended_at, excluded.ended_at + 1)
                                  THEN coalesce(excluded.outcome, c.outcome)
                                  ELSE coalesce(c.outcome, excluded.outcome) END,
               ended_at    = LEAST(c.ended_at, excluded.ended_at)",
        )
        .bind(&c.queue)
        .bind(&c.conversation)
        .bind(&c.media_type)
        .bind(&c.queued_at)
        .bind(&c.answered_at)
        .bind(&c.ended_at)
        .bind(&c.outcome)
        .execute(&mut *tx)
        .await?;
    }
    if !observations.is_empty() {
        let (mut queues, mut media, mut at, mut figures) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((queue, media_type), (observed_at, f)) in observations {
            queues.push(queue);
            media.push(media_type);
            at.push(observed_at);
            figures.push(pg_json(&Value::Object(f)));
        }
        sqlx::query(
            "INSERT INTO queue_observations AS o (queue_id, media_type, observed_at, figures)
             SELECT q, m, t, f::jsonb
               FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[]) AS x(q, m, t, f)
             ON CONFLICT (queue_id, media_type) DO UPDATE SET
               figures = CASE
                   WHEN excluded.observed_at > o.observed_at THEN excluded.figures
                   WHEN excluded.observed_at = o.observed_at THEN o.figures || excluded.figures
                   ELSE o.figures END,
               observed_at = GREATEST(o.observed_at, excluded.observed_at)",
        )
        .bind(&queues)
        .bind(&media)
        .bind(&at)
        .bind(&figures)
        .execute(&mut *tx)
        .await?;
    }
    if !names.is_empty() {
        let (queues, names): (Vec<String>, Vec<String>) = names.into_iter().unzip();
        sqlx::query(
            "INSERT INTO queue_names (queue_id, name)
             SELECT * FROM UNNEST($1::text[], $2::text[])
             ON CONFLICT (queue_id) DO UPDATE SET name = excluded.name",
        )
        .bind(&queues)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

impl PgDb {
    /// How many events are in each state (done and dead from the maintained totals).
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
                COUNT(*) FILTER (WHERE queued_at >= $3 AND answered_at IS NULL
                                   AND ended_at IS NULL) AS waiting,
                COUNT(*) FILTER (WHERE answered_at >= $3 AND ended_at IS NULL) AS interacting,
                MIN(queued_at) FILTER (WHERE queued_at >= $3 AND answered_at IS NULL
                                         AND ended_at IS NULL) AS oldest_waiting,
                COUNT(*) FILTER (WHERE answered_at >= $1 AND answered_at < $2) AS answered,
                COUNT(*) FILTER (WHERE queued_at >= $1 AND queued_at < $2) AS offered,
                COUNT(*) FILTER (WHERE answered_at IS NULL AND ended_at >= $1 AND ended_at < $2
                                   AND coalesce(outcome, 'ABANDON') = 'ABANDON') AS abandoned,
                (AVG(answered_at - queued_at) FILTER (WHERE answered_at >= $1 AND answered_at < $2
                                                        AND queued_at <= answered_at))::float8
                    AS average_wait
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
            "SELECT queue_id, figures::text FROM queue_observations WHERE observed_at >= $1
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

    /// Empties the statistics tables (the start of a rebuild), in one transaction.
    pub async fn reset_stats(&self) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
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
              WHERE status = 'done' AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Merges `effects` into the statistics in one transaction.
    pub async fn apply_effects(&self, effects: &[Effect]) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        let routes = routes(&mut tx, effects.iter()).await?;
        apply(&mut tx, effects.iter(), &routes).await?;
        tx.commit().await
    }

    /// Forgets conversations that ended before `ended_before`, and open ones whose last
    /// milestone is older than `open_before` (rows another replica is pruning are skipped).
    pub async fn prune_conversations(
        &self,
        ended_before: i64,
        open_before: i64,
        limit: i64,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "DELETE FROM conversations WHERE (queue_id, conversation_id) IN (
                 SELECT queue_id, conversation_id FROM conversations
                  WHERE ended_at < $1
                     OR (ended_at IS NULL AND coalesce(answered_at, queued_at) < $2)
                  LIMIT $3 FOR UPDATE SKIP LOCKED)",
        )
        .bind(ended_before)
        .bind(open_before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
