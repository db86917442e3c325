//! The dead letters' statements on PostgreSQL.

use sqlx::{PgConnection, Postgres};

use crate::server::store::dead_letters::{shared_dead_letter_statements, DeadLetterSql, ON_REFILE};

impl DeadLetterSql for PgConnection {
    shared_dead_letter_statements! {
        db: Postgres,
        // The payload is not copied (empty): the events row keeps it. Rows in id order, so
        // two replicas filing at once take the letters' keys in the same order.
        file_payload_letters: sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT id, event_type, payload_queue_id(payload), ''::bytea, attempts, errors,
                    coalesce(last_error, ''), received_at, $1, 'payload'
               FROM events WHERE seq = ANY($2) ORDER BY id
             {ON_REFILE}"
        )),
        file_sink_letters: sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts,
                                       errors, last_error, received_at, dead_at, stage)
             SELECT id, event_type, payload_queue_id(payload), ''::bytea,
                    forward_attempts, coalesce(forward_errors, '[]'::jsonb),
                    coalesce(forward_errors -> -1 ->> 'error', ''), received_at, $1, 'sink'
               FROM events WHERE seq = ANY($2) ORDER BY id
             {ON_REFILE}"
        )),
    }
}
