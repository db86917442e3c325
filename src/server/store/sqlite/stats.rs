//! The statistics' statements on SQLite: rows travel as one JSON parameter.

use std::{collections::BTreeMap, sync::LazyLock};

use serde_json::{json, Value};
use sqlx::SqliteConnection;

use crate::server::store::stats::{
    shared_stats_statements, ConversationRows, IntervalRows, ObservationRows, StatsSql,
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

    /// As [`Self::merge_observations`], per interval.
    async fn merge_intervals(&mut self, rows: &IntervalRows) -> sqlx::Result<()> {
        let rows: Vec<Value> = rows
            .iter()
            .map(|((queue, media_type, start), (end, at, figures))| {
                json!({ "q": queue, "m": media_type, "s": start, "e": end, "t": at, "f": figures })
            })
            .collect();
        sqlx::query(
            "INSERT INTO queue_intervals (queue_id, media_type, interval_start, interval_end,
                                          observed_at, figures)
             SELECT value ->> '$.q', value ->> '$.m', value ->> '$.s', value ->> '$.e',
                    value ->> '$.t', value -> '$.f'
               FROM json_each(?1) WHERE true
             ON CONFLICT (queue_id, media_type, interval_start) DO UPDATE SET
               figures = CASE
                   WHEN excluded.observed_at > queue_intervals.observed_at THEN excluded.figures
                   WHEN excluded.observed_at = queue_intervals.observed_at
                        THEN json_patch(queue_intervals.figures, excluded.figures)
                   ELSE queue_intervals.figures END,
               observed_at = max(queue_intervals.observed_at, excluded.observed_at)",
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
        conversation_figures: figures_sql(false),
        conversation_figures_by_queue: figures_sql(true),
        skip_locked: "",
    }
}

/// The conversation figures' statement: the live counts (?3 open since), then today's (?1–?2)
/// and the current interval's (?6–?7) counts by the same definitions (?4 the short-abandon
/// ms, ?5 the default target ms); with `by_queue`, each queue's own target from ?8
/// (`{"queue": ms}`) over the default. Written once, so the two periods cannot drift.
fn figures_sql(by_queue: bool) -> &'static str {
    static SQL: LazyLock<[String; 2]> = LazyLock::new(|| [build(false), build(true)]);
    fn build(by_queue: bool) -> String {
        let target = if by_queue {
            "coalesce(t.value, ?5)"
        } else {
            "?5"
        };
        let join = if by_queue {
            "LEFT JOIN json_each(?8) t ON t.key = c.queue_id"
        } else {
            ""
        };
        let period = |s: &str, e: &str, p: &str| {
            let abandoned = format!(
                "answered_at IS NULL AND ended_at >= {s} AND ended_at < {e}
                 AND coalesce(outcome, 'ABANDON') = 'ABANDON'"
            );
            let answered =
                format!("answered_at >= {s} AND answered_at < {e} AND queued_at <= answered_at");
            format!(
                "coalesce(SUM(queued_at >= {s} AND queued_at < {e}), 0) AS {p}offered,
                 coalesce(SUM(answered_at >= {s} AND answered_at < {e}), 0) AS {p}answered,
                 coalesce(SUM({abandoned}), 0) AS {p}abandoned,
                 coalesce(SUM({abandoned} AND ended_at - queued_at < ?4), 0) AS {p}short_abandons,
                 coalesce(SUM(answered_at IS NULL AND ended_at >= {s} AND ended_at < {e}
                              AND outcome = 'FLOW_OUT'), 0) AS {p}flow_outs,
                 coalesce(SUM({answered} AND answered_at - queued_at <= {target}), 0)
                     AS {p}answered_in_target,
                 SUM(CASE WHEN {answered} THEN answered_at - queued_at END) AS {p}answer_ms_sum"
            )
        };
        format!(
            "SELECT c.queue_id, coalesce(c.media_type, '') AS media_type,
                    coalesce(SUM(queued_at >= ?3 AND answered_at IS NULL AND ended_at IS NULL), 0)
                        AS waiting,
                    coalesce(SUM(answered_at >= ?3 AND ended_at IS NULL), 0) AS interacting,
                    MIN(CASE WHEN queued_at >= ?3 AND answered_at IS NULL AND ended_at IS NULL
                             THEN queued_at END) AS oldest_waiting,
                    {}, {}
               FROM conversations c {join}
              GROUP BY c.queue_id, coalesce(c.media_type, '')",
            period("?1", "?2", ""),
            period("?6", "?7", "interval_"),
        )
    }
    &SQL[usize::from(by_queue)]
}
