//! The work queue's statements on SQLite. Lists travel as one JSON parameter read with
//! `json_each`; `+status` keeps SQLite on the primary key instead of the status index when a
//! list of keys is given.

use serde_json::{json, Value};
use sqlx::SqliteConnection;

use crate::server::store::work::{shared_work_statements, Failure, FreshFailure, WorkSql};

/// The error of an event whose last allowed claim never finished.
const ABANDONED: &str = "'abandoned after ' || attempts
    || ' claims: processing never finished (the process stopped or the worker hung)'";

/// `failures` as the JSON rows the failure statements read: `i` id, `e` error.
fn fresh_rows(failures: &[FreshFailure<'_>]) -> String {
    let rows: Vec<Value> = failures
        .iter()
        .map(|f| json!({ "i": f.id, "e": f.error }))
        .collect();
    Value::Array(rows).to_string()
}

impl WorkSql for SqliteConnection {
    async fn fail_claimed(
        &mut self,
        failures: &[Failure<'_>],
        token: i64,
        now: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        let rows: Vec<Value> = failures
            .iter()
            .map(|f| json!({ "s": f.seq, "e": f.error, "at": f.retry_at }))
            .collect();
        sqlx::query_as(
            "UPDATE events
                SET status = CASE WHEN j.value ->> 'at' IS NULL THEN 'dead' ELSE 'pending' END,
                    next_attempt_at = coalesce(j.value ->> 'at', next_attempt_at),
                    last_error = j.value ->> 'e',
                    errors = json_insert(errors, '$[#]',
                                         json_object('at', ?1, 'error', j.value ->> 'e')),
                    locked_until = NULL, claim_token = NULL
               FROM json_each(?2) AS j
              WHERE events.seq = j.value ->> 's' AND +events.status = 'processing'
                AND events.claim_token = ?3
          RETURNING seq, status",
        )
        .bind(now)
        .bind(Value::Array(rows).to_string())
        .bind(token)
        .fetch_all(self)
        .await
    }

    async fn kill_fresh(
        &mut self,
        failures: &[FreshFailure<'_>],
        now: i64,
    ) -> sqlx::Result<Vec<i64>> {
        sqlx::query_scalar(
            "UPDATE events
                SET status = 'dead', attempts = 1, next_attempt_at = ?1,
                    last_error = j.value ->> 'e',
                    errors = json_insert(errors, '$[#]', json_object('at', ?1, 'error', j.value ->> 'e'))
               FROM json_each(?2) AS j
              WHERE events.id = j.value ->> 'i' AND +events.status = 'pending'
                AND events.attempts = 0
          RETURNING seq",
        )
        .bind(now)
        .bind(fresh_rows(failures))
        .fetch_all(self)
        .await
    }

    async fn defer_fresh(
        &mut self,
        failures: &[FreshFailure<'_>],
        now: i64,
        retry_at: i64,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "UPDATE events
                SET attempts = 1, next_attempt_at = ?2, last_error = j.value ->> 'e',
                    errors = json_insert(errors, '$[#]', json_object('at', ?1, 'error', j.value ->> 'e'))
               FROM json_each(?3) AS j
              WHERE events.id = j.value ->> 'i' AND +events.status = 'pending'
                AND events.attempts = 0",
        )
        .bind(now)
        .bind(retry_at)
        .bind(fresh_rows(failures))
        .execute(self)
        .await?;
        Ok(done.rows_affected())
    }

    shared_work_statements! {
        abandon_expired: sqlx::AssertSqlSafe(format!(
            "UPDATE events
                SET status = 'dead', locked_until = NULL, claim_token = NULL,
                    last_error = {ABANDONED},
                    errors = json_insert(errors, '$[#]', json_object('at', ?1, 'error', {ABANDONED}))
              WHERE status = 'processing' AND next_attempt_at <= ?1 AND attempts >= ?2
          RETURNING seq"
        )),
        // While processing, `next_attempt_at` is the lease end, so one index serves both.
        claim: "UPDATE events
                   SET status = 'processing', attempts = attempts + 1,
                       locked_until = ?1, next_attempt_at = ?1, claim_token = ?2
                 WHERE seq IN (SELECT seq FROM events WHERE status = ?5 AND next_attempt_at <= ?3
                                ORDER BY next_attempt_at, seq LIMIT ?4)
             RETURNING seq, id, event_type, payload, attempts, received_at",
        finish_claimed: "UPDATE events
                            SET status = 'done', processed_at = ?1, next_attempt_at = ?1,
                                locked_until = NULL, claim_token = NULL,
                                forward_state = CASE WHEN ?4 THEN 'pending' END,
                                forward_due_at = CASE WHEN ?4 THEN ?1 END
                          WHERE seq IN (SELECT value FROM json_each(?2))
                            AND +status = 'processing' AND claim_token = ?3
                      RETURNING seq",
        finish_fresh: "UPDATE events
                          SET status = 'done', attempts = 1, processed_at = ?1, next_attempt_at = ?1,
                              forward_state = CASE WHEN ?3 THEN 'pending' END,
                              forward_due_at = CASE WHEN ?3 THEN ?1 END
                        WHERE id IN (SELECT value FROM json_each(?2))
                          AND +status = 'pending' AND attempts = 0
                    RETURNING id",
        skip_locked: "",
    }
}
