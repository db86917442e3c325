//! The forwarding queue on PostgreSQL (see the SQLite backend for the rules): deliveries
//! claimed with `FOR UPDATE SKIP LOCKED`, completed only while the lease holds.

use serde_json::Value;

use super::{events::add_totals, pg_text, work::ON_REFILE, PgDb};
use crate::server::{
    domain::{ClaimedEvent, DeliveryOutcome},
    store::records::{claimed_event, dead_among, DeliveriesCompleted, DeliveryCounts, QUEUE_CHUNK},
};

impl PgDb {
    /// Leases up to `limit` due deliveries until `now + lease_ms` under `token`: first those
    /// whose lease expired, then pending ones in due order. Each claim counts as an attempt.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        token: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        let mut tx = self.pool.begin().await?;
        let mut claimed = Vec::new();
        for state in ["sending", "pending"] {
            let room = limit - claimed.len() as i64;
            if room <= 0 {
                break;
            }
            let rows = sqlx::query(
                "WITH due AS (
                     SELECT seq FROM events WHERE forward_state = $3 AND forward_due_at <= $4
                      ORDER BY forward_due_at, seq LIMIT $5
                      FOR UPDATE SKIP LOCKED)
                 UPDATE events e
                    SET forward_state = 'sending', forward_attempts = e.forward_attempts + 1,
                        forward_due_at = $1, forward_token = $2
                   FROM due WHERE e.seq = due.seq
               RETURNING e.seq, e.id, e.event_type, e.payload, e.forward_attempts AS attempts,
                         e.received_at",
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
        let (mut seqs, mut errors, mut retry_at, mut refunds) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (seq, outcome) in outcomes {
            match outcome {
                DeliveryOutcome::Delivered => continue,
                DeliveryOutcome::Retry { at, error, refund } => {
                    retry_at.push(Some(*at));
                    errors.push(pg_text(error).into_owned());
                    refunds.push(i64::from(*refund));
                }
                DeliveryOutcome::Dead { error } => {
                    retry_at.push(None);
                    errors.push(pg_text(error).into_owned());
                    refunds.push(0);
                }
            }
            seqs.push(*seq);
        }
        let mut tx = self.pool.begin().await?;
        if !delivered.is_empty() {
            completed.delivered = sqlx::query(
                "UPDATE events
                    SET forward_state = 'done', forwarded_at = $1, forward_due_at = NULL,
                        forward_token = NULL
                  WHERE seq = ANY($2) AND forward_state = 'sending' AND forward_token = $3",
            )
            .bind(now)
            .bind(&delivered)
            .bind(token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            completed.lost_lease += delivered.len() as u64 - completed.delivered;
        }
        if !seqs.is_empty() {
            let changed: Vec<(i64, String)> = sqlx::query_as(
                "UPDATE events
                    SET forward_state = CASE WHEN f.at IS NULL THEN 'dead' ELSE 'pending' END,
                        forward_due_at = f.at,
                        forward_attempts = events.forward_attempts - f.refund,
                        forward_errors = coalesce(events.forward_errors, '[]'::jsonb)
                            || jsonb_build_array(jsonb_build_object('at', $1::int8,
                                                                    'error', f.error)),
                        forward_token = NULL
                   FROM UNNEST($2::int8[], $3::text[], $4::int8[], $5::int8[])
                        AS f(seq, error, at, refund)
                  WHERE events.seq = f.seq AND events.forward_state = 'sending'
                    AND events.forward_token = $6
              RETURNING events.seq, events.forward_state",
            )
            .bind(now)
            .bind(&seqs)
            .bind(&errors)
            .bind(&retry_at)
            .bind(&refunds)
            .bind(token)
            .fetch_all(&mut *tx)
            .await?;
            let dead = dead_among(&changed);
            if !dead.is_empty() {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts,
                                               errors, last_error, received_at, dead_at, stage)
                     SELECT id, event_type, payload_queue_id(payload), ''::bytea,
                            forward_attempts, coalesce(forward_errors, '[]'::jsonb),
                            coalesce(forward_errors -> -1 ->> 'error', ''), received_at, $1,
                            'sink'
                       FROM events WHERE seq = ANY($2) ORDER BY id
                     {ON_REFILE}"
                )))
                .bind(now)
                .bind(&dead)
                .execute(&mut *tx)
                .await?;
            }
            completed.dead = dead.len() as u64;
            completed.retried = (changed.len() - dead.len()) as u64;
            completed.lost_lease += (seqs.len() - changed.len()) as u64;
        }
        add_totals(&mut tx, 0, 0, completed.dead as i64).await?;
        tx.commit().await?;
        Ok(completed)
    }

    /// Queues the done events received in `[since, until)` that were never queued for the
    /// sink, in short transactions of [`QUEUE_CHUNK`]. Returns how many were queued.
    pub async fn queue_for_forwarding(
        &self,
        since: i64,
        until: i64,
        now: i64,
    ) -> sqlx::Result<u64> {
        let mut queued = 0;
        loop {
            let n = sqlx::query(
                "UPDATE events
                    SET forward_state = 'pending', forward_due_at = $3, forward_attempts = 0
                  WHERE seq IN (SELECT seq FROM events
                                 WHERE status = 'done' AND forward_state IS NULL
                                   AND received_at >= $1 AND received_at < $2
                                 LIMIT $4 FOR UPDATE SKIP LOCKED)",
            )
            .bind(since)
            .bind(until)
            .bind(now)
            .bind(QUEUE_CHUNK)
            .execute(&self.pool)
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
        let done = sqlx::query(
            "UPDATE events
                SET forward_state = 'pending', forward_due_at = $1,
                    forward_attempts = greatest(forward_attempts - 1, 0), forward_token = NULL
              WHERE forward_state = 'sending' AND forward_token = $2",
        )
        .bind(now)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deliveries still to make, counted over the forwarding index.
    pub async fn delivery_counts(&self) -> sqlx::Result<DeliveryCounts> {
        let (pending, retrying, sending): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE forward_state = 'pending'),
                    COUNT(*) FILTER (WHERE forward_state = 'pending' AND forward_attempts > 0),
                    COUNT(*) FILTER (WHERE forward_state = 'sending')
               FROM events WHERE forward_due_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(DeliveryCounts {
            waiting: pending,
            retrying,
            sending,
        })
    }

    /// One event's forwarding state: (state, attempts, errors), `None` if never queued.
    pub async fn delivery_state(
        &self,
        id: &str,
    ) -> sqlx::Result<Option<(String, i64, Vec<Value>)>> {
        let row: Option<(Option<String>, i64, Option<String>)> = sqlx::query_as(
            "SELECT forward_state, forward_attempts, forward_errors::text FROM events
              WHERE id = $1",
        )
        .bind(pg_text(id))
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
