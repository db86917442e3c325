//! The statistics' statements on PostgreSQL: rows travel column by column as arrays
//! (`UNNEST`), already merged per row and in key order (see `store::stats`).

use std::{collections::BTreeMap, sync::LazyLock};

use serde_json::Value;
use sqlx::PgConnection;

use super::pg_json;
use crate::server::store::stats::{
    shared_stats_statements, ConversationRows, IntervalRows, ObservationRows, StatsSql,
};

impl StatsSql for PgConnection {
    async fn merge_conversations(&mut self, rows: &ConversationRows) -> sqlx::Result<()> {
        let mut queue = Vec::with_capacity(rows.len());
        let mut conversation = Vec::with_capacity(rows.len());
        let mut media_type = Vec::with_capacity(rows.len());
        let (mut queued_at, mut answered_at, mut ended_at) = (Vec::new(), Vec::new(), Vec::new());
        let mut outcome = Vec::with_capacity(rows.len());
        for ((q, c), m) in rows {
            queue.push(q.as_str());
            conversation.push(c.as_str());
            media_type.push(m.media_type.as_deref());
            queued_at.push(m.queued_at);
            answered_at.push(m.answered_at);
            ended_at.push(m.ended_at);
            outcome.push(m.outcome.as_deref());
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
        .bind(&queue)
        .bind(&conversation)
        .bind(&media_type)
        .bind(&queued_at)
        .bind(&answered_at)
        .bind(&ended_at)
        .bind(&outcome)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn merge_observations(&mut self, rows: &ObservationRows) -> sqlx::Result<()> {
        let (mut queues, mut media, mut at, mut figures) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((queue, media_type), (observed_at, f)) in rows {
            queues.push(queue.as_str());
            media.push(media_type.as_str());
            at.push(*observed_at);
            figures.push(pg_json(&Value::Object(f.clone())));
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
        .execute(self)
        .await?;
        Ok(())
    }

    async fn merge_intervals(&mut self, rows: &IntervalRows) -> sqlx::Result<()> {
        let (mut queues, mut media, mut starts, mut ends, mut at, mut figures) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for ((queue, media_type, start), (end, observed_at, f)) in rows {
            queues.push(queue.as_str());
            media.push(media_type.as_str());
            starts.push(*start);
            ends.push(*end);
            at.push(*observed_at);
            figures.push(pg_json(&Value::Object(f.clone())));
        }
        sqlx::query(
            "INSERT INTO queue_intervals AS i (queue_id, media_type, interval_start, interval_end,
                                               observed_at, figures)
             SELECT q, m, s, e, t, f::jsonb
               FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[],
                           $6::text[]) AS x(q, m, s, e, t, f)
             ON CONFLICT (queue_id, media_type, interval_start) DO UPDATE SET
               figures = CASE
                   WHEN excluded.observed_at > i.observed_at THEN excluded.figures
                   WHEN excluded.observed_at = i.observed_at THEN i.figures || excluded.figures
                   ELSE i.figures END,
               observed_at = GREATEST(i.observed_at, excluded.observed_at)",
        )
        .bind(&queues)
        .bind(&media)
        .bind(&starts)
        .bind(&ends)
        .bind(&at)
        .bind(&figures)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn merge_names(&mut self, names: &BTreeMap<String, String>) -> sqlx::Result<()> {
        let (queues, names): (Vec<&str>, Vec<&str>) =
            names.iter().map(|(q, n)| (q.as_str(), n.as_str())).unzip();
        sqlx::query(
            "INSERT INTO queue_names (queue_id, name)
             SELECT * FROM UNNEST($1::text[], $2::text[])
             ON CONFLICT (queue_id) DO UPDATE SET name = excluded.name",
        )
        .bind(&queues)
        .bind(&names)
        .execute(self)
        .await?;
        Ok(())
    }

    shared_stats_statements! {
        conversation_figures: figures_sql(false),
        conversation_figures_by_queue: figures_sql(true),
        skip_locked: "FOR UPDATE SKIP LOCKED",
    }
}

/// The conversation figures' statement: the live counts ($3 open since), then today's ($1–$2)
/// and the current interval's ($6–$7) counts by the same definitions ($4 the short-abandon
/// ms, $5 the default target ms); with `by_queue`, each queue's own target from $8
/// (`{"queue": ms}`) over the default. Written once, so the two periods cannot drift.
fn figures_sql(by_queue: bool) -> &'static str {
    static SQL: LazyLock<[String; 2]> = LazyLock::new(|| [build(false), build(true)]);
    fn build(by_queue: bool) -> String {
        let target = if by_queue {
            "coalesce(t.value::int8, $5)"
        } else {
            "$5"
        };
        let join = if by_queue {
            "LEFT JOIN jsonb_each_text($8::jsonb) t ON t.key = c.queue_id"
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
                "COUNT(*) FILTER (WHERE queued_at >= {s} AND queued_at < {e}) AS {p}offered,
                 COUNT(*) FILTER (WHERE answered_at >= {s} AND answered_at < {e}) AS {p}answered,
                 COUNT(*) FILTER (WHERE {abandoned}) AS {p}abandoned,
                 COUNT(*) FILTER (WHERE {abandoned} AND ended_at - queued_at < $4)
                     AS {p}short_abandons,
                 COUNT(*) FILTER (WHERE answered_at IS NULL AND ended_at >= {s} AND ended_at < {e}
                                    AND outcome = 'FLOW_OUT') AS {p}flow_outs,
                 COUNT(*) FILTER (WHERE {answered} AND answered_at - queued_at <= {target})
                     AS {p}answered_in_target,
                 (SUM(answered_at - queued_at) FILTER (WHERE {answered}))::int8
                     AS {p}answer_ms_sum"
            )
        };
        format!(
            "SELECT c.queue_id, coalesce(c.media_type, '') AS media_type,
                    COUNT(*) FILTER (WHERE queued_at >= $3 AND answered_at IS NULL
                                       AND ended_at IS NULL) AS waiting,
                    COUNT(*) FILTER (WHERE answered_at >= $3 AND ended_at IS NULL) AS interacting,
                    MIN(queued_at) FILTER (WHERE queued_at >= $3 AND answered_at IS NULL
                                             AND ended_at IS NULL) AS oldest_waiting,
                    {}, {}
               FROM conversations c {join}
              GROUP BY c.queue_id, coalesce(c.media_type, '')",
            period("$1", "$2", ""),
            period("$6", "$7", "interval_"),
        )
    }
    &SQL[usize::from(by_queue)]
}
