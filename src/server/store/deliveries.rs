//! The forwarding queue, written once for both backends: deliveries to the sink of events
//! already done, on the `forward_*` columns of `events`. Claimed under a lease like
//! processing, completed only while the lease holds, retried, dead-lettered with
//! `stage = 'sink'`.

use serde_json::Value;

use super::{
    records::{ClaimRequest, DeliveriesCompleted, DeliveryCounts, QUEUE_CHUNK},
    work::{dead_among, Due, Lease},
    Db, Statements,
};
use crate::server::domain::{ClaimedEvent, DeliveryOutcome};

/// A delivery that failed: retried at `retry_at` (the claim not counted when `refund`), or
/// dead when `None`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeliveryFailure<'a> {
    pub seq: i64,
    pub error: &'a str,
    pub retry_at: Option<i64>,
    pub refund: bool,
}

/// The forwarding queue's statements.
pub(crate) trait DeliverySql {
    /// Whether any delivery is due at `now` (read before taking the write lock).
    async fn any_delivery_due(&mut self, now: i64) -> sqlx::Result<bool>;
    /// Leases up to `limit` deliveries due at `now` in `due`'s state, counting an attempt.
    async fn claim_deliveries(
        &mut self,
        due: Due,
        now: i64,
        lease: Lease,
        limit: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>>;
    /// Marks delivered the deliveries `seqs` still held under `token`; returns how many.
    async fn finish_deliveries(&mut self, seqs: &[i64], token: i64, now: i64) -> sqlx::Result<u64>;
    /// Records `failures` of deliveries still held under `token`; returns (seq, new state)
    /// of the rows it changed.
    async fn fail_deliveries(
        &mut self,
        failures: &[DeliveryFailure<'_>],
        token: i64,
        now: i64,
    ) -> sqlx::Result<Vec<(i64, String)>>;
    /// Queues up to `limit` done events received in `[since, until)` never queued for the
    /// sink; returns how many.
    async fn queue_unforwarded(
        &mut self,
        since: i64,
        until: i64,
        now: i64,
        limit: i64,
    ) -> sqlx::Result<u64>;
    async fn release_deliveries(&mut self, token: i64, now: i64) -> sqlx::Result<u64>;
    async fn delivery_counts(&mut self) -> sqlx::Result<DeliveryCounts>;
    async fn delivery_state(&mut self, id: &str) -> sqlx::Result<Option<DeliveryState>>;
}

/// One event's forwarding state (tests and the CLI).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryState {
    pub state: crate::server::domain::ForwardState,
    pub attempts: i64,
    pub errors: Vec<Value>,
}

/// The [`DeliverySql`] statements whose binds are the same on both backends, for each
/// backend's impl, with the SQL text of those that differ and `$skip_locked` (see
/// `shared_work_statements`).
macro_rules! shared_delivery_statements {
    (
        claim_deliveries: $claim_deliveries:expr,
        finish_deliveries: $finish_deliveries:expr,
        skip_locked: $skip_locked:literal $(,)?
    ) => {
        async fn claim_deliveries(
            &mut self,
            due: $crate::server::store::work::Due,
            now: i64,
            lease: $crate::server::store::work::Lease,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::server::domain::ClaimedEvent>> {
            let rows = sqlx::query($claim_deliveries)
                .bind(lease.until)
                .bind(lease.token)
                .bind(due.forward_state().as_str())
                .bind(now)
                .bind(limit)
                .fetch_all(self)
                .await?;
            rows.iter()
                .map($crate::server::store::records::claimed_event)
                .collect()
        }

        async fn finish_deliveries(
            &mut self,
            seqs: &[i64],
            token: i64,
            now: i64,
        ) -> sqlx::Result<u64> {
            let done = sqlx::query($finish_deliveries)
                .bind(now)
                .bind(<Self as $crate::server::store::Dialect>::seqs(seqs))
                .bind(token)
                .execute(self)
                .await?;
            Ok(done.rows_affected())
        }

        async fn queue_unforwarded(
            &mut self,
            since: i64,
            until: i64,
            now: i64,
            limit: i64,
        ) -> sqlx::Result<u64> {
            let done = sqlx::query(concat!(
                "UPDATE events
                    SET forward_state = 'pending', forward_due_at = $3, forward_attempts = 0
                  WHERE seq IN (SELECT seq FROM events
                                 WHERE status = 'done' AND forward_state IS NULL
                                   AND received_at >= $1 AND received_at < $2
                                 LIMIT $4 ",
                $skip_locked,
                ")"
            ))
            .bind(since)
            .bind(until)
            .bind(now)
            .bind(limit)
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }

        async fn any_delivery_due(&mut self, now: i64) -> sqlx::Result<bool> {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events
                                 WHERE forward_state IN ('pending', 'sending')
                                   AND forward_due_at <= $1)",
            )
            .bind(now)
            .fetch_one(self)
            .await
        }

        async fn release_deliveries(&mut self, token: i64, now: i64) -> sqlx::Result<u64> {
            let done = sqlx::query(
                "UPDATE events
                    SET forward_state = 'pending', forward_due_at = $1,
                        forward_attempts = CASE WHEN forward_attempts > 0
                                                THEN forward_attempts - 1 ELSE 0 END,
                        forward_token = NULL
                  WHERE forward_state = 'sending' AND forward_token = $2",
            )
            .bind(now)
            .bind(token)
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }

        /// Counted over the forwarding index (bounded by the backlog).
        async fn delivery_counts(
            &mut self,
        ) -> sqlx::Result<$crate::server::store::records::DeliveryCounts> {
            let (waiting, retrying, sending): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM events
                          WHERE forward_state = 'pending' AND forward_due_at IS NOT NULL),
                        (SELECT COUNT(*) FROM events
                          WHERE forward_state = 'pending' AND forward_due_at IS NOT NULL
                            AND forward_attempts > 0),
                        (SELECT COUNT(*) FROM events
                          WHERE forward_state = 'sending' AND forward_due_at IS NOT NULL)",
            )
            .fetch_one(self)
            .await?;
            Ok($crate::server::store::records::DeliveryCounts {
                waiting,
                retrying,
                sending,
            })
        }

        async fn delivery_state(
            &mut self,
            id: &str,
        ) -> sqlx::Result<Option<$crate::server::store::deliveries::DeliveryState>> {
            let row: Option<(Option<String>, i64, Option<String>)> = sqlx::query_as(
                "SELECT forward_state, forward_attempts, CAST(forward_errors AS TEXT)
                   FROM events WHERE id = $1",
            )
            .bind(<Self as $crate::server::store::Dialect>::text(id))
            .fetch_optional(self)
            .await?;
            Ok(row.and_then(|(state, attempts, errors)| {
                let errors = errors
                    .and_then(|e| serde_json::from_str(&e).ok())
                    .unwrap_or_default();
                let state = state?.parse().ok()?;
                Some($crate::server::store::deliveries::DeliveryState {
                    state,
                    attempts,
                    errors,
                })
            }))
        }
    };
}
pub(crate) use shared_delivery_statements;

/// See [`Db::claim_deliveries`].
async fn claim_deliveries(
    tx: &mut impl Statements,
    now: i64,
    lease: Lease,
    limit: i64,
) -> sqlx::Result<Vec<ClaimedEvent>> {
    let mut claimed = Vec::new();
    for due in [Due::ExpiredLease, Due::Pending] {
        let room = limit - claimed.len() as i64;
        if room <= 0 {
            break;
        }
        claimed.extend(tx.claim_deliveries(due, now, lease, room).await?);
    }
    claimed.sort_by_key(|e| e.seq);
    Ok(claimed)
}

/// See [`Db::complete_deliveries`].
async fn complete_deliveries(
    tx: &mut impl Statements,
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
    if !delivered.is_empty() {
        completed.delivered = tx.finish_deliveries(&delivered, token, now).await?;
        completed.lost_lease += delivered.len() as u64 - completed.delivered;
    }
    let failures: Vec<DeliveryFailure<'_>> = outcomes
        .iter()
        .filter_map(|(seq, outcome)| match outcome {
            DeliveryOutcome::Delivered => None,
            DeliveryOutcome::Retry { at, error, refund } => Some(DeliveryFailure {
                seq: *seq,
                error,
                retry_at: Some(*at),
                refund: *refund,
            }),
            DeliveryOutcome::Dead { error } => Some(DeliveryFailure {
                seq: *seq,
                error,
                retry_at: None,
                refund: false,
            }),
        })
        .collect();
    if !failures.is_empty() {
        let changed = tx.fail_deliveries(&failures, token, now).await?;
        let dead = dead_among(&changed);
        if !dead.is_empty() {
            tx.file_sink_letters(&dead, now).await?;
        }
        completed.dead = dead.len() as u64;
        completed.retried = (changed.len() - dead.len()) as u64;
        completed.lost_lease += (failures.len() - changed.len()) as u64;
    }
    tx.add_totals(0, 0, completed.dead as i64).await?;
    Ok(completed)
}

impl Db {
    /// Leases up to `request.limit` due deliveries for `request.lease_ms` under its token: first those
    /// whose lease expired (a send that never finished: the process stopped), then pending
    /// ones in due order. Each claim counts as an attempt.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        request: ClaimRequest,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        // An idle forwarder looks often: look without the write lock first, so ingestion
        // never waits behind a claim that finds nothing.
        if !read_conn!(self, |conn| conn.any_delivery_due(now).await)? {
            return Ok(Vec::new());
        }
        let (lease, limit) = (Lease::of(now, request), request.limit);
        write_tx!(self, |tx| claim_deliveries(tx, now, lease, limit).await)
    }

    /// Records delivery outcomes in one transaction, for deliveries still held under `token`.
    pub async fn complete_deliveries(
        &self,
        token: i64,
        now: i64,
        outcomes: &[(i64, DeliveryOutcome)],
    ) -> sqlx::Result<DeliveriesCompleted> {
        write_tx!(self, |tx| complete_deliveries(tx, token, now, outcomes)
            .await)
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
            let n = write_tx!(self, |tx| {
                tx.queue_unforwarded(since, until, now, QUEUE_CHUNK).await
            })?;
            queued += n;
            if n < QUEUE_CHUNK as u64 {
                return Ok(queued);
            }
        }
    }

    /// Gives back deliveries still leased under `token` (shutdown): the claim does not count.
    pub async fn release_deliveries(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        write_tx!(self, |tx| tx.release_deliveries(token, now).await)
    }

    /// Deliveries still to make.
    pub async fn delivery_counts(&self) -> sqlx::Result<DeliveryCounts> {
        read_conn!(self, |conn| conn.delivery_counts().await)
    }

    /// One event's forwarding state, `None` if it was never queued for the sink.
    pub async fn delivery_state(&self, id: &str) -> sqlx::Result<Option<DeliveryState>> {
        read_conn!(self, |conn| conn.delivery_state(id).await)
    }
}
