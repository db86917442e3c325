//! The work queue's statements on PostgreSQL: claims take rows with `FOR UPDATE SKIP
//! LOCKED`, so replicas never wait for each other's work; lists travel as arrays.

use sqlx::PgConnection;

use super::pg_text;
use crate::server::store::work::{shared_work_statements, Failure, FreshFailure, WorkSql};

/// The error of an event whose last allowed claim never finished.
const ABANDONED: &str = "'abandoned after ' || attempts
    || ' claims: processing never finished (the process stopped or the worker hung)'";

/// `failures` as the two arrays the failure statements unnest: ids and errors.
fn fresh_columns(failures: &[FreshFailure<'_>]) -> (Vec<String>, Vec<String>) {
    failures
        .iter()
        .map(|f| (pg_text(f.id).into_owned(), pg_text(&f.error).into_owned()))
        .unzip()
}

impl WorkSql for PgConnection {
    async fn fail_claimed(
        &mut self,
        failures: &[Failure<'_>],
        token: i64,
        now: i64,
    ) -> sqlx::Result<Vec<(i64, String)>> {
        let seqs: Vec<i64> = failures.iter().map(|f| f.seq).collect();
        let errors: Vec<String> = failures
            .iter()
            .map(|f| pg_text(f.error).into_owned())
            .collect();
        let retry_at: Vec<Option<i64>> = failures.iter().map(|f| f.retry_at).collect();
        sqlx::query_as(
            "UPDATE events
                SET status = CASE WHEN f.at IS NULL THEN 'dead' ELSE 'pending' END,
                    next_attempt_at = coalesce(f.at, events.next_attempt_at),
                    last_error = f.error,
                    errors = events.errors
                             || jsonb_build_array(jsonb_build_object('at', $1::int8,
                                                                     'error', f.error)),
                    locked_until = NULL, claim_token = NULL
               FROM UNNEST($2::int8[], $3::text[], $4::int8[]) AS f(seq, error, at)
              WHERE events.seq = f.seq AND events.status = 'processing'
                AND events.claim_token = $5
          RETURNING events.seq, events.status",
        )
        .bind(now)
        .bind(&seqs)
        .bind(&errors)
        .bind(&retry_at)
        .bind(token)
        .fetch_all(self)
        .await
    }

    async fn kill_fresh(
        &mut self,
        failures: &[FreshFailure<'_>],
        now: i64,
    ) -> sqlx::Result<Vec<i64>> {
        let (ids, errors) = fresh_columns(failures);
        sqlx::query_scalar(
            "UPDATE events
                SET status = 'dead', attempts = 1, next_attempt_at = $1, last_error = f.error,
                    errors = events.errors
                             || jsonb_build_array(jsonb_build_object('at', $1::int8, 'error', f.error))
               FROM UNNEST($2::text[], $3::text[]) AS f(id, error)
              WHERE events.id = f.id AND events.status = 'pending' AND events.attempts = 0
          RETURNING events.seq",
        )
        .bind(now)
        .bind(&ids)
        .bind(&errors)
        .fetch_all(self)
        .await
    }

    async fn defer_fresh(
        &mut self,
        failures: &[FreshFailure<'_>],
        now: i64,
        retry_at: i64,
    ) -> sqlx::Result<u64> {
        let (ids, errors) = fresh_columns(failures);
        let done = sqlx::query(
            "UPDATE events
                SET attempts = 1, next_attempt_at = $2, last_error = f.error,
                    errors = events.errors
                             || jsonb_build_array(jsonb_build_object('at', $1::int8, 'error', f.error))
               FROM UNNEST($3::text[], $4::text[]) AS f(id, error)
              WHERE events.id = f.id AND events.status = 'pending' AND events.attempts = 0",
        )
        .bind(now)
        .bind(retry_at)
        .bind(&ids)
        .bind(&errors)
        .execute(self)
        .await?;
        Ok(done.rows_affected())
    }

    shared_work_statements! {
        abandon_expired: sqlx::AssertSqlSafe(format!(
            "WITH expired AS (
                 SELECT seq FROM events
                  WHERE status = 'processing' AND next_attempt_at <= $1 AND attempts >= $2
                  FOR UPDATE SKIP LOCKED)
             UPDATE events e
                SET status = 'dead', locked_until = NULL, claim_token = NULL,
                    last_error = {ABANDONED},
                    errors = errors || jsonb_build_array(jsonb_build_object('at', $1::int8,
                                                                            'error', {ABANDONED}))
               FROM expired WHERE e.seq = expired.seq
           RETURNING e.seq"
        )),
        claim: "WITH due AS (
                    SELECT seq FROM events WHERE status = $5 AND next_attempt_at <= $3
                     ORDER BY next_attempt_at, seq LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                UPDATE events e
                   SET status = 'processing', attempts = e.attempts + 1,
                       locked_until = $1, next_attempt_at = $1, claim_token = $2
                  FROM due WHERE e.seq = due.seq
              RETURNING e.seq, e.id, e.event_type, e.payload, e.attempts, e.received_at",
        finish_claimed: "UPDATE events
                            SET status = 'done', processed_at = $1, next_attempt_at = $1,
                                locked_until = NULL, claim_token = NULL,
                                forward_state = CASE WHEN $4 THEN 'pending' END,
                                forward_due_at = CASE WHEN $4 THEN $1::int8 END
                          WHERE seq = ANY($2) AND status = 'processing' AND claim_token = $3
                      RETURNING seq",
        finish_fresh: "UPDATE events
                          SET status = 'done', attempts = 1, processed_at = $1, next_attempt_at = $1,
                              forward_state = CASE WHEN $3 THEN 'pending' END,
                              forward_due_at = CASE WHEN $3 THEN $1::int8 END
                        WHERE id = ANY($2) AND status = 'pending' AND attempts = 0
                    RETURNING id",
        skip_locked: "FOR UPDATE SKIP LOCKED",
    }
}
