//! The dead letters' statements on PostgreSQL.

use sqlx::{PgConnection, Postgres};

use crate::server::store::dead_letters::{shared_dead_letter_statements, DeadLetterSql};

/// A letter filed again (a replayed event that failed again) takes the new attempts.
const ON_REFILE: &str = "ON CONFLICT (id) DO UPDATE SET
                attempts = excluded.attempts, errors = excluded.errors,
                last_error = excluded.last_error, dead_at = excluded.dead_at,
                stage = excluded.stage";

impl DeadLetterSql for PgConnection {
    /// The payload is not copied (empty): the events row keeps it. Rows in id order, so two
    /// replicas filing at once take the letters' keys in the same order.
    async fn file_payload_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT id, event_type, payload_queue_id(payload), ''::bytea, attempts, errors,
                    coalesce(last_error, ''), received_at, $1, 'payload'
               FROM events WHERE seq = ANY($2) ORDER BY id
             {ON_REFILE}"
        )))
        .bind(now)
        .bind(seqs)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn file_sink_letters(&mut self, seqs: &[i64], now: i64) -> sqlx::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts,
                                       errors, last_error, received_at, dead_at, stage)
             SELECT id, event_type, payload_queue_id(payload), ''::bytea,
                    forward_attempts, coalesce(forward_errors, '[]'::jsonb),
                    coalesce(forward_errors -> -1 ->> 'error', ''), received_at, $1, 'sink'
               FROM events WHERE seq = ANY($2) ORDER BY id
             {ON_REFILE}"
        )))
        .bind(now)
        .bind(seqs)
        .execute(self)
        .await?;
        Ok(())
    }

    shared_dead_letter_statements!(Postgres);
}
