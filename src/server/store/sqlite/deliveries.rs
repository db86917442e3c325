//! The forwarding queue: deliveries to the sink of events already done, on the `forward_*`
//! columns of `events`. Claimed under a lease like processing, completed only while the lease
//! holds, retried, dead-lettered with `stage = 'sink'`.

use serde_json::{json, Value};
use sqlx::{Connection as _, SqliteConnection};

use super::{
    add_totals,
    work::{ON_REFILE, QUEUE_OF_PAYLOAD},
    SqliteDb,
};
use crate::server::{
    domain::{ClaimedEvent, DeliveryOutcome},
    store::records::{claimed_event, dead_among, DeliveriesCompleted, DeliveryCounts, QUEUE_CHUNK},
};

impl SqliteDb {
    /// Leases up to `limit` due deliveries until `now + lease_ms` under `token`: first those
    /// whose lease expired (a send that never finished: the process stopped), then pending
    /// ones in due order. Each claim counts as an attempt.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        token: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        // An idle forwarder looks often: look without the write lock first, so ingestion
        // never waits behind a claim that finds nothing.
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events
                             WHERE forward_state IN ('pending', 'sending')
                               AND forward_due_at <= ?1)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        if !due {
            return Ok(Vec::new());
        }
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let mut claimed = Vec::new();
        for state in ["sending", "pending"] {
            let room = limit - claimed.len() as i64;
            if room <= 0 {
                break;
            }
            let rows = sqlx::query(
                "UPDATE events
                    SET forward_state = 'sending', forward_attempts = forward_attempts + 1,
                        forward_due_at = ?1, forward_token = ?2
                  WHERE seq IN (SELECT seq FROM events
                                 WHERE forward_state = ?3 AND forward_due_at <= ?4
                                 ORDER BY forward_due_at, seq LIMIT ?5)
              RETURNING seq, id, event_type, payload, forward_attempts AS attempts, received_at",
            )
            .bind(now.saturating_add(lease_ms))
            .bind(token)
            .bind(state)
            .bind(now)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                claimed.push(claimed_event(row)?);
            }
        }
        tx.commit().await?;
        claimed.sort_by_key(|e| e.seq);
        Ok(claimed)
    }

    /// Records delivery outcomes in one transaction, for deliveries still held under `token`.
    pub async fn complete_deliveries(
        &self,
        token: i64,
        now: i64,
        outcomes: &[(i64, DeliveryOutcome)],
    ) -> sqlx::Result<DeliveriesCompleted> {
        let mut completed = DeliveriesCompleted::default();
        let delivered: Vec<i64> = outcomes
            .iter()
            .filter(|(_, o)| *o == DeliveryOutcome::Delivered)
            .map(|(seq, _)| *seq)
            .collect();
        let failures: Vec<Value> = outcomes
            .iter()
            .filter_map(|(seq, outcome)| match outcome {
                DeliveryOutcome::Delivered => None,
                DeliveryOutcome::Retry { at, error, refund } => {
                    Some(json!({ "s": seq, "e": error, "at": at, "r": i64::from(*refund) }))
                }
                DeliveryOutcome::Dead { error } => Some(json!({ "s": seq, "e": error, "r": 0 })),
            })
            .collect();
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        if !delivered.is_empty() {
            completed.delivered = sqlx::query(
                "UPDATE events
                    SET forward_state = 'done', forwarded_at = ?1, forward_due_at = NULL,
                        forward_token = NULL
                  WHERE seq IN (SELECT value FROM json_each(?2))
                    AND forward_state = 'sending' AND forward_token = ?3",
            )
            .bind(now)
            .bind(json!(delivered).to_string())
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            completed.lost_lease += delivered.len() as u64 - completed.delivered;
        }
        if !failures.is_empty() {
            let changed: Vec<(i64, String)> = sqlx::query_as(
                "UPDATE events
                    SET forward_state = CASE WHEN j.value ->> 'at' IS NULL THEN 'dead'
                                             ELSE 'pending' END,
                        forward_due_at = j.value ->> 'at',
                        forward_attempts = forward_attempts - (j.value ->> 'r'),
                        forward_errors = json_insert(coalesce(forward_errors, '[]'), '$[#]',
                                                     json_object('at', ?1, 'error', j.value ->> 'e')),
                        forward_token = NULL
                   FROM json_each(?2) AS j
                  WHERE events.seq = j.value ->> 's' AND events.forward_state = 'sending'
                    AND events.forward_token = ?3
              RETURNING seq, forward_state",
            )
            .bind(now)
            .bind(Value::Array(failures.clone()).to_string())
            .bind(token)
            .fetch_all(&mut *tx)
            .await?;
            let dead = dead_among(&changed);
            if !dead.is_empty() {
                file_sink_letters(&mut tx, &dead, now).await?;
            }
            completed.dead = dead.len() as u64;
            completed.retried = (changed.len() - dead.len()) as u64;
            completed.lost_lease += (failures.len() - changed.len()) as u64;
        }
        add_totals(&mut tx, 0, 0, completed.dead as i64).await?;
        tx.commit().await?;
        Ok(completed)
    }

    /// Queues the done events received in `[since, until)` that were never queued for the
    /// sink (processed while none was configured), in short transactions of
    /// [`QUEUE_CHUNK`] so ingestion is not held up. Returns how many were queued.
    pub async fn queue_for_forwarding(
        &self,
        since: i64,
        until: i64,
        now: i64,
    ) -> sqlx::Result<u64> {
        let mut queued = 0;
        loop {
            let mut w = self.writing().await?;
            let n = sqlx::query(
                "UPDATE events
                    SET forward_state = 'pending', forward_due_at = ?3, forward_attempts = 0
                  WHERE seq IN (SELECT seq FROM events
                                 WHERE status = 'done' AND forward_state IS NULL
                                   AND received_at >= ?1 AND received_at < ?2
                                 LIMIT ?4)",
            )
            .bind(since)
            .bind(until)
            .bind(now)
            .bind(QUEUE_CHUNK)
            .execute(&mut *w)
            .await?
            .rows_affected();
            queued += n;
            if n < QUEUE_CHUNK as u64 {
                return Ok(queued);
            }
        }
    }

    /// Gives back deliveries still leased under `token` (shutdown): the claim does not count.
    pub async fn release_deliveries(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        let mut w = self.writing().await?;
        let done = sqlx::query(
            "UPDATE events
                SET forward_state = 'pending', forward_due_at = ?1,
                    forward_attempts = max(forward_attempts - 1, 0), forward_token = NULL
              WHERE forward_state = 'sending' AND forward_token = ?2",
        )
        .bind(now)
        .bind(token)
        .execute(&mut *w)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deliveries still to make, counted over the forwarding index (bounded by the backlog).
    pub async fn delivery_counts(&self) -> sqlx::Result<DeliveryCounts> {
        let (pending, retrying, sending): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM events
                      WHERE forward_state = 'pending' AND forward_due_at IS NOT NULL),
                    (SELECT COUNT(*) FROM events
                      WHERE forward_state = 'pending' AND forward_due_at IS NOT NULL
                        AND forward_attempts > 0),
                    (SELECT COUNT(*) FROM events
                      WHERE forward_state = 'sending' AND forward_due_at IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(DeliveryCounts {
            waiting: pending,
            retrying,
            sending,
        })
    }

    /// One event's forwarding state: (state, attempts, errors), `None` if it was never
    /// queued for the sink (tests).
    pub async fn delivery_state(
        &self,
        id: &str,
    ) -> sqlx::Result<Option<(String, i64, Vec<Value>)>> {
        let row: Option<(Option<String>, i64, Option<String>)> = sqlx::query_as(
            "SELECT forward_state, forward_attempts, forward_errors FROM events WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(state, attempts, errors)| {
            let errors = errors
                .and_then(|e| serde_json::from_str(&e).ok())
                .unwrap_or_default();
            state.map(|s| (s, attempts, errors))
        }))
    }
}

/// Files the (already dead) deliveries `seqs` as dead letters of the sink stage, with their
/// delivery attempts and errors.
async fn file_sink_letters(tx: &mut SqliteConnection, seqs: &[i64], now: i64) -> sqlx::Result<()> {
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}
