//! The dead letters' statements on SQLite.

use sqlx::{Sqlite, SqliteConnection};

use crate::server::store::dead_letters::{shared_dead_letter_statements, DeadLetterSql, ON_REFILE};

/// The queue an event's payload names, in SQL over the events row (for filtering letters).
const QUEUE_OF_PAYLOAD: &str = "coalesce(json_extract(payload, '$.data.queueId'),
                         json_extract(payload, '$.eventBody.queueId'),
                         json_extract(payload, '$.eventBody.group.queueId'),
                         json_extract(payload, '$.detail.eventBody.queueId'),
                         json_extract(payload, '$.detail.eventBody.group.queueId'))";

impl DeadLetterSql for SqliteConnection {
    shared_dead_letter_statements! {
        db: Sqlite,
        // The payload is not copied (empty): the events row keeps it.
        file_payload_letters: sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT id, event_type, {QUEUE_OF_PAYLOAD}, x'', attempts, errors,
                    coalesce(last_error, ''), received_at, ?1, 'payload'
               FROM events WHERE seq IN (SELECT value FROM json_each(?2))
             {ON_REFILE}"
        )),
        file_sink_letters: sqlx::AssertSqlSafe(format!(
            "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                       last_error, received_at, dead_at, stage)
             SELECT id, event_type, {QUEUE_OF_PAYLOAD}, x'', forward_attempts,
                    coalesce(forward_errors, '[]'),
                    coalesce(forward_errors ->> '$[#-1].error', ''), received_at, ?1, 'sink'
               FROM events WHERE seq IN (SELECT value FROM json_each(?2))
             {ON_REFILE}"
        )),
    }
}
