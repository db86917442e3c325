//! The dead letters' statements on SQLite.

use serde_json::json;
use sqlx::{Sqlite, SqliteConnection};

use crate::server::store::dead_letters::{shared_dead_letter_statements, DeadLetterSql};

/// The queue an event's payload names, in SQL over the events row (for filtering letters).
const QUEUE_OF_PAYLOAD: &str = "coalesce(json_extract(payload, '$.data.queueId'),
                         json_extract(payload, '$.eventBody.queueId'),
                         json_extract(payload, '$.eventBody.group.queueId'),
                         json_extract(payload, '$.detail.eventBody.queueId'),
                         json_extract(payload, '$.detail.eventBody.group.queueId'))";

/// A letter filed again (a replayed event that failed again) takes the new attempts.
const ON_REFILE: &str = "ON CONFLICT (id) DO UPDATE SET
                attempts = excluded.attempts, errors = excluded.errors,
                last_error = excluded.last_error, dead_at = excluded.dead_at,
                stage = excluded.stage";

impl DeadLetterSql for SqliteConnection {
    /// The payload is not copied (an empty blob marks that): the events row keeps it.
    async fn file_payload_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT id, event_type, {QUEUE_OF_PAYLOAD}, x'', attempts, errors,
                    coalesce(last_error, ''), received_at, ?1, 'payload'
               FROM events WHERE seq IN (SELECT value FROM json_each(?2))
             {ON_REFILE}"
        )))
        .bind(now)
        .bind(json!(seqs).to_string())
        .execute(self)
        .await?;
        Ok(())
    }

    async fn file_sink_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT id, event_type, {QUEUE_OF_PAYLOAD}, x'', forward_attempts,
                    coalesce(forward_errors, '[]'),
                    coalesce(forward_errors ->> '$[#-1].error', ''), received_at, ?1, 'sink'
               FROM events WHERE seq IN (SELECT value FROM json_each(?2))
             {ON_REFILE}"
        )))
        .bind(now)
        .bind(json!(seqs).to_string())
        .execute(self)
        .await?;
        Ok(())
    }

    shared_dead_letter_statements!(Sqlite);
}
