//! Queue statistics, written once for both backends: applying event effects, reading each
//! queue's status, rebuilding, forgetting old conversations.
//!
//! Workers (on several replicas, with PostgreSQL) may merge into the same conversation at
//! once. Each merge is a single `INSERT … ON CONFLICT DO UPDATE` whose columns only move one
//! way (the earliest time of each milestone, the outcome of the earliest end, the newest
//! observation), so concurrent and repeated applications give the same row as one application
//! in any order. A batch's effects are merged per row here first (one statement may not change
//! a row twice) and written in key order, so two transactions never wait on each other's rows
//! in opposite orders.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use super::{
    figures::{self, ConversationFigures, IntervalRow, Read},
    records::{Routes, StatsWindow, StoredEvent, REBUILD_CHUNK},
    Db, Statements,
};
use crate::{model::QueueStatus, server::domain::Effect};

/// One conversation's milestones in one queue, as merged and written.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Milestones {
    pub media_type: Option<String>,
    pub queued_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub outcome: Option<String>,
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

/// Conversation rows to merge, keyed (queue, conversation).
pub(crate) type ConversationRows = BTreeMap<(String, String), Milestones>;

/// Observation rows to merge, keyed (queue, media type): the observation's time and figures.
/// A stored observation of the same time takes these figures over its own, key by key.
pub(crate) type ObservationRows = BTreeMap<(String, String), (i64, Map<String, Value>)>;

/// Interval rows to merge, keyed (queue, media type, interval start): the interval's end,
/// the report's time and its figures; merged as observations are (the newest report wins).
pub(crate) type IntervalRows = BTreeMap<(String, String, i64), (i64, i64, Map<String, Value>)>;

/// What the conversation figures are counted over: today and the current interval, in one
/// scan (a status read is a reader the WAL's restarts wait for: it must stay short).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Period<'a> {
    pub start: i64,
    pub end: i64,
    pub interval_start: i64,
    pub interval_end: i64,
    /// Open conversations with a last milestone before this lost their end event.
    pub open_since: i64,
    /// An abandon sooner than this after queueing is short (0: none is).
    pub short_abandon_ms: i64,
    /// The service-level target (ms) of queues without their own.
    pub target_ms: i64,
    /// Per-queue targets as a JSON object `{"queue": ms}`.
    pub targets: &'a str,
}

/// The statistics' statements.
pub(crate) trait StatsSql {
    /// (conversation, queue) of the stored conversations among `conversations`.
    async fn conversation_queues(
        &mut self,
        conversations: &[String],
    ) -> sqlx::Result<Vec<(String, String)>>;
    async fn merge_conversations(&mut self, rows: &ConversationRows) -> sqlx::Result<()>;
    async fn merge_observations(&mut self, rows: &ObservationRows) -> sqlx::Result<()>;
    async fn merge_intervals(&mut self, rows: &IntervalRows) -> sqlx::Result<()>;
    /// Stores queue names (`queue → name`), replacing older ones.
    async fn merge_names(&mut self, names: &BTreeMap<String, String>) -> sqlx::Result<()>;
    /// Each queue's and media type's figures from its conversations over `period`.
    async fn conversation_figures(
        &mut self,
        period: &Period<'_>,
    ) -> sqlx::Result<Vec<ConversationFigures>>;
    /// The interval reports of intervals starting in `[start, end)`.
    async fn intervals_between(&mut self, start: i64, end: i64) -> sqlx::Result<Vec<IntervalRow>>;
    /// When the oldest stored event was received: how far back the conversations can know.
    async fn first_received_at(&mut self) -> sqlx::Result<Option<i64>>;
    /// Deletes the interval reports of intervals ended before `before`.
    async fn prune_intervals(&mut self, before: i64) -> sqlx::Result<u64>;
    /// (queue, media type, figures as JSON text) of the observations made at or after `after`.
    async fn fresh_observations(
        &mut self,
        after: i64,
    ) -> sqlx::Result<Vec<(String, String, String)>>;
    /// (queue, name) of every stored queue name.
    async fn queue_names(&mut self) -> sqlx::Result<Vec<(String, String)>>;
    /// Empties the statistics tables.
    async fn reset_stats(&mut self) -> sqlx::Result<()>;
    /// Up to `limit` done events after `seq`, in arrival order.
    async fn done_events_after(&mut self, seq: i64, limit: i64) -> sqlx::Result<Vec<StoredEvent>>;
    /// Deletes up to `limit` conversations ended before `ended_before`, or open with a last
    /// milestone before `open_before`.
    async fn prune_conversations(
        &mut self,
        ended_before: i64,
        open_before: i64,
        limit: i64,
    ) -> sqlx::Result<u64>;
}

/// The [`StatsSql`] statements whose binds are the same on both backends, for each backend's
/// impl, with the SQL text of those that differ and `$skip_locked` (see
/// `shared_work_statements`).
macro_rules! shared_stats_statements {
    (
        conversation_figures: $conversation_figures:expr,
        conversation_figures_by_queue: $by_queue:expr,
        skip_locked: $skip_locked:literal $(,)?
    ) => {
        async fn conversation_figures(
            &mut self,
            p: &$crate::server::store::stats::Period<'_>,
        ) -> sqlx::Result<Vec<$crate::server::store::figures::ConversationFigures>> {
            // The join with the per-queue targets costs a lookup per conversation: only
            // paid when some queue has a target of its own.
            let query = sqlx::query_as(if p.targets == "{}" {
                $conversation_figures
            } else {
                $by_queue
            })
            .bind(p.start)
            .bind(p.end)
            .bind(p.open_since)
            .bind(p.short_abandon_ms)
            .bind(p.target_ms)
            .bind(p.interval_start)
            .bind(p.interval_end);
            if p.targets == "{}" {
                query.fetch_all(self).await
            } else {
                query.bind(p.targets).fetch_all(self).await
            }
        }

        async fn intervals_between(
            &mut self,
            start: i64,
            end: i64,
        ) -> sqlx::Result<Vec<$crate::server::store::figures::IntervalRow>> {
            sqlx::query_as(
                "SELECT queue_id, media_type, interval_start, interval_end, CAST(figures AS TEXT)
                   FROM queue_intervals WHERE interval_start >= $1 AND interval_start < $2
                  ORDER BY queue_id, media_type, interval_start",
            )
            .bind(start)
            .bind(end)
            .fetch_all(self)
            .await
        }

        async fn first_received_at(&mut self) -> sqlx::Result<Option<i64>> {
            sqlx::query_scalar("SELECT received_at FROM events ORDER BY seq LIMIT 1")
                .fetch_optional(self)
                .await
        }

        async fn prune_intervals(&mut self, before: i64) -> sqlx::Result<u64> {
            let done = sqlx::query("DELETE FROM queue_intervals WHERE interval_end < $1")
                .bind(before)
                .execute(self)
                .await?;
            Ok(done.rows_affected())
        }

        async fn prune_conversations(
            &mut self,
            ended_before: i64,
            open_before: i64,
            limit: i64,
        ) -> sqlx::Result<u64> {
            // On SQLite each side of the OR has a partial index of its own; the second's
            // expression is `conversations_open_since`'s, and must stay word for word so.
            let done = sqlx::query(concat!(
                "DELETE FROM conversations WHERE (queue_id, conversation_id) IN (
                     SELECT queue_id, conversation_id FROM conversations
                      WHERE ended_at < $1
                         OR (ended_at IS NULL AND coalesce(answered_at, queued_at) < $2)
                      LIMIT $3 ",
                $skip_locked,
                ")"
            ))
            .bind(ended_before)
            .bind(open_before)
            .bind(limit)
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }

        async fn conversation_queues(
            &mut self,
            conversations: &[String],
        ) -> sqlx::Result<Vec<(String, String)>> {
            use $crate::server::store::Dialect;
            let (open, close) = <Self as Dialect>::IN_TEXTS;
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT conversation_id, queue_id FROM conversations
                  WHERE conversation_id {open}$1{close}"
            )))
            .bind(<Self as Dialect>::texts(conversations))
            .fetch_all(self)
            .await
        }

        async fn fresh_observations(
            &mut self,
            after: i64,
        ) -> sqlx::Result<Vec<(String, String, String)>> {
            sqlx::query_as(
                "SELECT queue_id, media_type, CAST(figures AS TEXT) FROM queue_observations
                  WHERE observed_at >= $1 ORDER BY queue_id, media_type",
            )
            .bind(after)
            .fetch_all(self)
            .await
        }

        async fn queue_names(&mut self) -> sqlx::Result<Vec<(String, String)>> {
            sqlx::query_as("SELECT queue_id, name FROM queue_names")
                .fetch_all(self)
                .await
        }

        async fn reset_stats(&mut self) -> sqlx::Result<()> {
            for reset in [
                "DELETE FROM conversations",
                "DELETE FROM queue_observations",
                "DELETE FROM queue_intervals",
                "DELETE FROM queue_names",
            ] {
                sqlx::query(reset).execute(&mut *self).await?;
            }
            Ok(())
        }

        async fn done_events_after(
            &mut self,
            seq: i64,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::server::store::records::StoredEvent>> {
            sqlx::query_as(
                "SELECT seq, event_type, payload, received_at FROM events
                  WHERE status = 'done' AND seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(seq)
            .bind(limit)
            .fetch_all(self)
            .await
        }
    };
}
pub(crate) use shared_stats_statements;

/// Where the conversation updates among `effects` that name no queue apply: the queues where
/// their conversation is already stored, or named by another update in `effects`. A
/// conversation missing from the result is known nowhere.
pub(crate) async fn routes<'a, T: Statements>(
    tx: &mut T,
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
    // Stored keys are as the backend stores text; map them back to the ids the effects carry.
    let original: HashMap<String, &str> = wanted
        .iter()
        .map(|c| (T::text(c).into_owned(), *c))
        .collect();
    let keys: Vec<String> = original.keys().cloned().collect();
    for (conversation, queue) in tx.conversation_queues(&keys).await? {
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
                .insert(T::text(queue).into_owned());
        }
    }
    Ok(routes)
}

/// Writes the effects of done events. Every merge is order-independent and idempotent: the
/// earliest time wins for each conversation milestone and the newest observation wins. An
/// update without a queue applies to each of its conversation's queues in `routes`.
pub(crate) async fn apply<'a, T: Statements>(
    tx: &mut T,
    effects: impl Iterator<Item = &'a Effect>,
    routes: &Routes,
) -> sqlx::Result<()> {
    let text = |s: &str| T::text(s).into_owned();
    let mut conversations = ConversationRows::new();
    let mut observations = ObservationRows::new();
    let mut intervals = IntervalRows::new();
    let mut names = BTreeMap::new();
    let no_queues = Default::default();
    for effect in effects {
        match effect {
            Effect::Ignored => {}
            Effect::Conversation(c) => {
                let queues: Vec<String> = match &c.queue_id {
                    Some(queue) => vec![text(queue)],
                    None => routes
                        .get(&c.conversation_id)
                        .unwrap_or(&no_queues)
                        .iter()
                        .cloned()
                        .collect(),
                };
                let milestones = Milestones {
                    media_type: c.media_type.as_deref().map(text),
                    queued_at: c.queued_at,
                    answered_at: c.answered_at,
                    ended_at: c.ended_at,
                    outcome: c.outcome.as_deref().map(text),
                };
                let conversation = text(&c.conversation_id);
                for queue in queues {
                    if let Some(name) = &c.queue_name {
                        names.insert(queue.clone(), text(name));
                    }
                    conversations
                        .entry((queue, conversation.clone()))
                        .and_modify(|m| m.merge(milestones.clone()))
                        .or_insert_with(|| milestones.clone());
                }
            }
            Effect::Observation(o) => {
                let (queue, media) = (text(&o.queue_id), text(&o.media_type));
                if !o.figures.is_empty() {
                    let key = (queue.clone(), media.clone());
                    match observations.get_mut(&key) {
                        Some((at, kept)) if o.observed_at > *at => {
                            *at = o.observed_at;
                            kept.clone_from(&o.figures);
                        }
                        Some((at, kept)) if o.observed_at == *at => {
                            kept.extend(o.figures.clone());
                        }
                        Some(_) => {}
                        None => {
                            observations.insert(key, (o.observed_at, o.figures.clone()));
                        }
                    }
                }
                for i in &o.intervals {
                    let key = (queue.clone(), media.clone(), i.start);
                    match intervals.get_mut(&key) {
                        Some((_, at, kept)) if o.observed_at > *at => {
                            *at = o.observed_at;
                            kept.clone_from(&i.figures);
                        }
                        Some((_, at, kept)) if o.observed_at == *at => {
                            kept.extend(i.figures.clone());
                        }
                        Some(_) => {}
                        None => {
                            intervals.insert(key, (i.end, o.observed_at, i.figures.clone()));
                        }
                    }
                }
            }
        }
    }
    if !conversations.is_empty() {
        tx.merge_conversations(&conversations).await?;
    }
    if !observations.is_empty() {
        tx.merge_observations(&observations).await?;
    }
    if !intervals.is_empty() {
        tx.merge_intervals(&intervals).await?;
    }
    if !names.is_empty() {
        tx.merge_names(&names).await?;
    }
    Ok(())
}

/// See [`Db::queue_statuses`].
async fn queue_statuses(
    conn: &mut impl Statements,
    w: &StatsWindow<'_>,
) -> sqlx::Result<Vec<QueueStatus>> {
    let targets = w.settings.targets_json();
    let period = Period {
        start: w.day_start,
        end: w.day_end,
        interval_start: w.interval_start,
        interval_end: w.interval_end,
        open_since: w.open_since,
        short_abandon_ms: w.settings.short_abandon_ms.unwrap_or(0),
        target_ms: w.settings.target.seconds.saturating_mul(1000),
        targets: &targets,
    };
    let read = Read {
        conversations: conn.conversation_figures(&period).await?,
        observed: conn.fresh_observations(w.fresh_after).await?,
        intervals: conn.intervals_between(w.day_start, w.day_end).await?,
        named: conn.queue_names().await?,
        first_received_at: conn.first_received_at().await?,
    };
    Ok(figures::assemble(read, w))
}

/// Merges `effects` into the statistics (one chunk of a rebuild).
async fn apply_effects(tx: &mut impl Statements, effects: &[Effect]) -> sqlx::Result<()> {
    let routes = routes(tx, effects.iter()).await?;
    apply(tx, effects.iter(), &routes).await
}

/// See [`Db::placed_conversations`].
async fn placed<T: Statements>(
    conn: &mut T,
    conversations: &[String],
) -> sqlx::Result<HashSet<String>> {
    let original: HashMap<String, &str> = conversations
        .iter()
        .map(|c| (T::text(c).into_owned(), c.as_str()))
        .collect();
    let keys: Vec<String> = original.keys().cloned().collect();
    Ok(conn
        .conversation_queues(&keys)
        .await?
        .into_iter()
        .map(|(c, _)| original.get(&c).map_or(c.clone(), |o| (*o).to_owned()))
        .collect())
}

impl Db {
    /// Which of `conversations` a stored event already places in a queue.
    pub async fn placed_conversations(
        &self,
        conversations: &[String],
    ) -> sqlx::Result<HashSet<String>> {
        read_conn!(self, |conn| placed(conn, conversations).await)
    }

    /// Every queue's statistics, busiest first.
    pub async fn queue_statuses(&self, w: &StatsWindow<'_>) -> sqlx::Result<Vec<QueueStatus>> {
        read_conn!(self, |conn| queue_statuses(conn, w).await)
    }

    /// Recomputes all statistics from the done events. `interpret` returns the effect of a
    /// stored event (`None` to skip it).
    ///
    /// The reset and each chunk of [`REBUILD_CHUNK`] events are separate short transactions,
    /// so webhooks and workers keep their usual latency during a long rebuild. Merges are
    /// idempotent, so events the workers complete meanwhile are counted once either way.
    pub async fn rebuild_stats(
        &self,
        interpret: impl Fn(&str, &[u8], i64) -> Option<Effect>,
    ) -> sqlx::Result<u64> {
        write_tx!(self, |tx| tx.reset_stats().await)?;
        let mut after = 0i64;
        let mut applied = 0u64;
        loop {
            let events = read_conn!(self, |conn| {
                conn.done_events_after(after, REBUILD_CHUNK).await
            })?;
            let Some(last) = events.last() else {
                break;
            };
            after = last.seq;
            let effects: Vec<Effect> = events
                .iter()
                .filter_map(|e| interpret(&e.event_type, &e.payload, e.received_at))
                .collect();
            applied += effects.len() as u64;
            write_tx!(self, |tx| apply_effects(tx, &effects).await)?;
        }
        self.recount_totals().await?;
        Ok(applied)
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
        write_tx!(self, |tx| {
            // An interval's report is kept as long as the conversations of its time.
            tx.prune_intervals(ended_before).await?;
            tx.prune_conversations(ended_before, open_before, limit)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::server::{domain::ObservationUpdate, store::test_store};

    fn observation(at: i64, figures: Value) -> Effect {
        let Value::Object(figures) = figures else {
            unreachable!("figures are an object")
        };
        Effect::Observation(ObservationUpdate {
            queue_id: "q".into(),
            media_type: "voice".into(),
            observed_at: at,
            figures,
            intervals: Vec::new(),
        })
    }

    async fn stored_figures(db: &Db) -> Value {
        let rows = read_conn!(db, |conn| conn.fresh_observations(0).await).expect("read");
        assert_eq!(rows.len(), 1);
        serde_json::from_str(&rows[0].2).expect("JSON figures")
    }

    fn conversation(id: &str, queued: i64, answered: Option<i64>, ended: Option<i64>) -> Effect {
        Effect::Conversation(crate::server::domain::ConversationUpdate {
            queue_id: Some("q".into()),
            conversation_id: id.into(),
            queue_name: None,
            media_type: Some("voice".into()),
            queued_at: Some(queued),
            answered_at: answered,
            ended_at: ended,
            outcome: None,
        })
    }

    #[tokio::test]
    async fn pruning_forgets_conversations_ended_or_silent_before_the_cutoffs_and_keeps_the_rest() {
        let (_store, db, _writer) = test_store().await;
        let effects = [
            conversation("ended-long-ago", 100, Some(200), Some(300)),
            conversation("ended-lately", 100, Some(200), Some(5_000)),
            conversation("open-and-silent", 100, None, None),
            conversation("answered-lately", 100, Some(5_000), None),
            conversation("queued-lately", 5_000, None, None),
        ];
        write_tx!(&db, |tx| apply_effects(tx, &effects).await).expect("apply");
        let pruned = db
            .prune_conversations(1_000, 1_000, 100)
            .await
            .expect("prune");
        assert_eq!(pruned, 2);
        let all: Vec<String> = [
            "ended-long-ago",
            "ended-lately",
            "open-and-silent",
            "answered-lately",
            "queued-lately",
        ]
        .map(String::from)
        .to_vec();
        let mut left: Vec<String> = db
            .placed_conversations(&all)
            .await
            .expect("read")
            .into_iter()
            .collect();
        left.sort();
        assert_eq!(left, ["answered-lately", "ended-lately", "queued-lately"]);
    }

    #[tokio::test]
    async fn an_observation_of_the_same_time_replaces_the_figures_it_carries_key_by_key() {
        let (_store, db, _writer) = test_store().await;
        let first = observation(
            1_000,
            json!({ "waiting": 3, "on_queue_users": { "IDLE": 2, "BUSY": 1 } }),
        );
        write_tx!(&db, |tx| apply_effects(tx, &[first]).await).expect("apply");
        // Later in the same interval: nobody is idle any more, so IDLE is not listed.
        let second = observation(1_000, json!({ "on_queue_users": { "BUSY": 3 } }));
        write_tx!(&db, |tx| apply_effects(tx, &[second]).await).expect("apply");
        assert_eq!(
            stored_figures(&db).await,
            json!({ "waiting": 3, "on_queue_users": { "BUSY": 3 } })
        );
        // An older observation changes nothing; a newer one replaces every figure.
        let older = observation(500, json!({ "waiting": 9 }));
        write_tx!(&db, |tx| apply_effects(tx, &[older]).await).expect("apply");
        assert_eq!(stored_figures(&db).await["waiting"], 3);
        let newer = observation(2_000, json!({ "waiting": 1 }));
        write_tx!(&db, |tx| apply_effects(tx, &[newer]).await).expect("apply");
        assert_eq!(stored_figures(&db).await, json!({ "waiting": 1 }));
    }
}
