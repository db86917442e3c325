//! The statistics' statements on SQLite: rows travel as one JSON parameter.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::SqliteConnection;

use crate::server::store::stats::{
    shared_stats_statements, ConversationRows, ObservationRows, StatsSql,
};

impl StatsSql for SqliteConnection {
    async fn merge_conversations(&mut self, rows: &ConversationRows) -> sqlx::Result<()> {
        let rows: Vec<Value> = rows
            .iter()
            .map(|((queue, conversation), m)| {
                json!({
                    "q": queue, "c": conversation, "m": m.media_type, "qa": m.queued_at,
                    "aa": m.answered_at, "ea": m.ended_at, "o": m.outcome,
                })
            })
            .collect();
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
        .bind(Value::Array(rows).to_string())
        .execute(self)
        .await?;
        Ok(())
    }

    /// At the same time, the new figures replace the stored ones key by key, as
    /// PostgreSQL's `||` does: the stored keys the new figures carry are removed first (a
    /// patch of nulls), so a nested object such as `on_queue_users` is replaced, not merged.
    async fn merge_observations(&mut self, rows: &ObservationRows) -> sqlx::Result<()> {
        let rows: Vec<Value> = rows
            .iter()
            .map(|((queue, media_type), (at, figures))| {
                json!({ "q": queue, "m": media_type, "t": at, "f": figures })
            })
            .collect();
        sqlx::query(
            "INSERT INTO queue_observations (queue_id, media_type, observed_at, figures)
             SELECT value ->> '$.q', value ->> '$.m', value ->> '$.t', value -> '$.f'
               FROM json_each(?1) WHERE true
             ON CONFLICT (queue_id, media_type) DO UPDATE SET
               figures = CASE
                   WHEN excluded.observed_at > queue_observations.observed_at THEN excluded.figures
                   WHEN excluded.observed_at = queue_observations.observed_at
                        THEN json_patch(
                                 json_patch(queue_observations.figures,
                                            (SELECT json_group_object(key, NULL)
                                               FROM json_each(excluded.figures))),
                                 excluded.figures)
                   ELSE queue_observations.figures END,
               observed_at = max(queue_observations.observed_at, excluded.observed_at)",
        )
        .bind(Value::Array(rows).to_string())
        .execute(self)
        .await?;
        Ok(())
    }

    async fn merge_names(&mut self, names: &BTreeMap<String, String>) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO queue_names (queue_id, name)
             SELECT key, value FROM json_each(?1) WHERE true
             ON CONFLICT (queue_id) DO UPDATE SET name = excluded.name",
        )
        .bind(json!(names).to_string())
        .execute(self)
        .await?;
        Ok(())
    }

    shared_stats_statements! {
        conversation_figures: "SELECT queue_id,
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
        skip_locked: "",
    }
}
