//! The work queue on the `events` table, written once for both backends: claim under a lease,
//! complete, retry, dead-letter, release, prune.
//!
//! An event is `pending` until a worker claims it (`processing`, leased until
//! `next_attempt_at` under the claim's token), then `done` or, after its last allowed attempt,
//! `dead` with a dead letter filed in the same transaction. Every completion changes only rows
//! still held under the completing claim's token, so an event whose lease expired and was
//! claimed again is applied exactly once.

use std::collections::HashSet;

use super::{
    dead_letters::file_dead_letters,
    records::{unknown_conversation_reason, ClaimRequest, Claimed, Completed, InlineApplied},
    stats, Db, Statements,
};
use crate::server::domain::{
    ClaimedEvent, Effect, EventStatus, ForwardState, Outcome, ProcessError,
};

/// Which due events a claim takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Waiting for their first or next attempt.
    Pending,
    /// Claimed before, and the lease ran out: that claim never finished.
    ExpiredLease,
}

impl Due {
    /// The status such events are in.
    pub(crate) fn status(self) -> EventStatus {
        match self {
            Due::Pending => EventStatus::Pending,
            Due::ExpiredLease => EventStatus::Processing,
        }
    }

    /// The forwarding state such deliveries are in.
    pub(crate) fn forward_state(self) -> ForwardState {
        match self {
            Due::Pending => ForwardState::Pending,
            Due::ExpiredLease => ForwardState::Sending,
        }
    }
}

/// A claim's lease: the claimed rows are held until `until` under `token`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub until: i64,
    pub token: i64,
}

impl Lease {
    /// The lease `request` asks for, from `now`.
    pub(crate) fn of(now: i64, request: ClaimRequest) -> Lease {
        Lease {
            until: now.saturating_add(request.lease_ms),
            token: request.token,
        }
    }
}

/// A claimed event that failed: retried at `retry_at`, or dead when `None`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Failure<'a> {
    pub seq: i64,
    pub error: &'a str,
    pub retry_at: Option<i64>,
}

/// An event processed as it arrived that failed (by id: its writer knows no seq).
#[derive(Clone, Debug)]
pub(crate) struct FreshFailure<'a> {
    pub id: &'a str,
    pub error: std::borrow::Cow<'a, str>,
}

/// The work queue's statements. Each backend writes the SQL; the rules are here.
pub(crate) trait WorkSql {
    /// Marks dead the events whose lease expired after their `max_attempts`-th claim (their
    /// processing never finished), with an error saying so; returns their seqs.
    async fn abandon_expired(&mut self, now: i64, max_attempts: i64) -> sqlx::Result<Vec<i64>>;
    /// Leases up to `limit` events due at `now` in `due`'s status, counting an attempt each.
    async fn claim(
        &mut self,
        due: Due,
        now: i64,
        lease: Lease,
        limit: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>>;
    /// Marks done the events `seqs` still held under `token` (queued for the sink when
    /// `forwarding`); returns the seqs it changed.
    async fn finish_claimed(
        &mut self,
        seqs: &[i64],
        token: i64,
        now: i64,
        forwarding: bool,
    ) -> sqlx::Result<Vec<i64>>;
    /// Records `failures` of events still held under `token`: back to pending at their retry
    /// time, or dead; returns (seq, new status) of the rows it changed.
    async fn fail_claimed(
        &mut self,
        failures: &[Failure<'_>],
        token: i64,
        now: i64,
    ) -> sqlx::Result<Vec<(i64, String)>>;
    /// Marks done (first attempt) the events `ids` still pending and never attempted; returns
    /// the ids it changed.
    async fn finish_fresh(
        &mut self,
        ids: &[&str],
        now: i64,
        forwarding: bool,
    ) -> sqlx::Result<Vec<String>>;
    /// Marks dead (first attempt) the events still pending and never attempted among
    /// `failures`; returns their seqs.
    async fn kill_fresh(
        &mut self,
        failures: &[FreshFailure<'_>],
        now: i64,
    ) -> sqlx::Result<Vec<i64>>;
    /// Counts a failed first attempt for the events still pending and never attempted among
    /// `failures`, due again at `retry_at`; returns how many.
    async fn defer_fresh(
        &mut self,
        failures: &[FreshFailure<'_>],
        now: i64,
        retry_at: i64,
    ) -> sqlx::Result<u64>;
    /// Up to `limit` due events never attempted whose `seq % parts == part`.
    async fn due_fresh(
        &mut self,
        now: i64,
        limit: i64,
        part: i64,
        parts: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>>;
    /// Puts the events held under `token` back to pending; the claim does not count.
    async fn release(&mut self, token: i64, now: i64) -> sqlx::Result<u64>;
    /// Deletes up to `limit` done events processed before `cutoff` whose delivery is over.
    async fn prune_done(&mut self, cutoff: i64, limit: i64) -> sqlx::Result<u64>;
    /// Deletes up to `limit` tombstones (dead events without a letter) received before `cutoff`.
    async fn prune_tombstones(&mut self, cutoff: i64, limit: i64) -> sqlx::Result<u64>;
}

/// The [`WorkSql`] statements whose binds are the same on both backends, for each backend's
/// impl: the backend gives the SQL text of those that differ, and `$skip_locked`, which
/// PostgreSQL sets to `FOR UPDATE SKIP LOCKED` so replicas pruning at once skip each other's
/// rows instead of waiting for them.
macro_rules! shared_work_statements {
    (
        abandon_expired: $abandon_expired:expr,
        claim: $claim:expr,
        finish_claimed: $finish_claimed:expr,
        finish_fresh: $finish_fresh:expr,
        skip_locked: $skip_locked:literal $(,)?
    ) => {
        async fn abandon_expired(&mut self, now: i64, max_attempts: i64) -> sqlx::Result<Vec<i64>> {
            sqlx::query_scalar($abandon_expired)
                .bind(now)
                .bind(max_attempts)
                .fetch_all(self)
                .await
        }

        async fn claim(
            &mut self,
            due: $crate::server::store::work::Due,
            now: i64,
            lease: $crate::server::store::work::Lease,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::server::domain::ClaimedEvent>> {
            let rows = sqlx::query($claim)
                .bind(lease.until)
                .bind(lease.token)
                .bind(now)
                .bind(limit)
                .bind(due.status().as_str())
                .fetch_all(self)
                .await?;
            rows.iter()
                .map($crate::server::store::records::claimed_event)
                .collect()
        }

        async fn finish_claimed(
            &mut self,
            seqs: &[i64],
            token: i64,
            now: i64,
            forwarding: bool,
        ) -> sqlx::Result<Vec<i64>> {
            sqlx::query_scalar($finish_claimed)
                .bind(now)
                .bind(<Self as $crate::server::store::Dialect>::seqs(seqs))
                .bind(token)
                .bind(forwarding)
                .fetch_all(self)
                .await
        }

        async fn finish_fresh(
            &mut self,
            ids: &[&str],
            now: i64,
            forwarding: bool,
        ) -> sqlx::Result<Vec<String>> {
            sqlx::query_scalar($finish_fresh)
                .bind(now)
                .bind(<Self as $crate::server::store::Dialect>::ids(ids))
                .bind(forwarding)
                .fetch_all(self)
                .await
        }

        async fn due_fresh(
            &mut self,
            now: i64,
            limit: i64,
            part: i64,
            parts: i64,
        ) -> sqlx::Result<Vec<$crate::server::domain::ClaimedEvent>> {
            let rows = sqlx::query(
                "SELECT seq, id, event_type, payload, CAST(1 AS BIGINT) AS attempts, received_at
                   FROM events
                  WHERE status = 'pending' AND next_attempt_at <= $1 AND attempts = 0
                    AND seq % $3 = $2
                  ORDER BY next_attempt_at, seq LIMIT $4",
            )
            .bind(now)
            .bind(part)
            .bind(parts)
            .bind(limit)
            .fetch_all(self)
            .await?;
            rows.iter()
                .map($crate::server::store::records::claimed_event)
                .collect()
        }

        async fn release(&mut self, token: i64, now: i64) -> sqlx::Result<u64> {
            let done = sqlx::query(
                "UPDATE events
                    SET status = 'pending', next_attempt_at = $1,
                        attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                        locked_until = NULL, claim_token = NULL
                  WHERE status = 'processing' AND claim_token = $2",
            )
            .bind(now)
            .bind(token)
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }

        async fn prune_done(&mut self, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
            let done = sqlx::query(concat!(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events e WHERE status = 'done' AND next_attempt_at < $1
                        AND (forward_state IS NULL OR forward_state = 'done'
                             OR (forward_state = 'dead'
                                 AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = e.id)))
                      LIMIT $2 ",
                $skip_locked,
                ")"
            ))
            .bind(cutoff)
            .bind(limit)
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }

        async fn prune_tombstones(&mut self, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
            let done = sqlx::query(concat!(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events e WHERE status = 'dead' AND received_at < $1
                        AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = e.id)
                      LIMIT $2 ",
                $skip_locked,
                ")"
            ))
            .bind(cutoff)
            .bind(limit)
            .execute(self)
            .await?;
            Ok(done.rows_affected())
        }
    };
}
pub(crate) use shared_work_statements;

/// The events of `changed` (seq, new status or forwarding state) that went to the dead
/// letters (`dead` in both).
pub(crate) fn dead_among(changed: &[(i64, String)]) -> Vec<i64> {
    changed
        .iter()
        .filter(|(_, status)| *status == EventStatus::Dead.as_str())
        .map(|(seq, _)| *seq)
        .collect()
}

/// See [`Db::claim_due`].
async fn claim_due(
    tx: &mut impl Statements,
    now: i64,
    lease: Lease,
    limit: i64,
    max_attempts: i64,
) -> sqlx::Result<Claimed> {
    let abandoned = tx.abandon_expired(now, max_attempts).await?;
    file_dead_letters(tx, &abandoned, now).await?;
    // An expired lease means the claim before never finished: the event may be what killed
    // the process. Such suspects are claimed one at a time, so a poison event cannot take
    // innocent batch-mates down with it again.
    let mut events = tx.claim(Due::ExpiredLease, now, lease, 1).await?;
    if events.is_empty() {
        events = tx.claim(Due::Pending, now, lease, limit).await?;
    }
    let n = abandoned.len() as i64;
    tx.add_totals(0, n, n).await?;
    // `RETURNING` promises no order: the workers apply a batch in arrival order.
    events.sort_by_key(|e| e.seq);
    Ok(Claimed {
        events,
        abandoned: abandoned.len() as u64,
    })
}

/// See [`Db::complete`].
async fn complete(
    tx: &mut impl Statements,
    token: i64,
    now: i64,
    forwarding: bool,
    outcomes: &mut [(ClaimedEvent, Outcome)],
    unknown_conversation: impl Fn(&ClaimedEvent, String) -> Outcome,
) -> sqlx::Result<Completed> {
    let mut completed = Completed::default();
    let routes = stats::routes(
        tx,
        outcomes.iter().filter_map(|(_, o)| match o {
            Outcome::Done(effect) => Some(effect),
            _ => None,
        }),
    )
    .await?;
    for (event, outcome) in outcomes.iter_mut() {
        if let Outcome::Done(Effect::Conversation(c)) = outcome {
            if c.queue_id.is_none() && !routes.contains_key(&c.conversation_id) {
                let reason = unknown_conversation_reason(&c.conversation_id);
                *outcome = unknown_conversation(event, reason);
            }
        }
    }

    let done: Vec<i64> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Done(_)))
        .map(|(e, _)| e.seq)
        .collect();
    if !done.is_empty() {
        let owned: HashSet<i64> = tx
            .finish_claimed(&done, token, now, forwarding)
            .await?
            .into_iter()
            .collect();
        let effects = outcomes.iter().filter_map(|(e, o)| match o {
            Outcome::Done(effect) if owned.contains(&e.seq) => Some(effect),
            _ => None,
        });
        stats::apply(tx, effects, &routes).await?;
        completed.done = owned.len() as u64;
        completed.lost_lease += (done.len() - owned.len()) as u64;
    }

    // Failures in one statement: back to pending until their retry time, or dead.
    let failures: Vec<Failure<'_>> = outcomes
        .iter()
        .filter_map(|(event, outcome)| match outcome {
            Outcome::Done(_) => None,
            Outcome::Retry { at, error } => Some(Failure {
                seq: event.seq,
                error,
                retry_at: Some(*at),
            }),
            Outcome::Dead { error } => Some(Failure {
                seq: event.seq,
                error,
                retry_at: None,
            }),
        })
        .collect();
    if !failures.is_empty() {
        let changed = tx.fail_claimed(&failures, token, now).await?;
        let dead = dead_among(&changed);
        file_dead_letters(tx, &dead, now).await?;
        completed.dead = dead.len() as u64;
        completed.retried = (changed.len() - dead.len()) as u64;
        completed.lost_lease += (failures.len() - changed.len()) as u64;
    }
    let dead = completed.dead as i64;
    tx.add_totals(completed.done as i64, dead, dead).await?;
    Ok(completed)
}

/// See [`Db::complete_inline`]; also how the ingest writer finishes the events it stores.
pub(crate) async fn apply_verdicts(
    tx: &mut impl Statements,
    verdicts: &[(String, Result<Effect, ProcessError>)],
    now: i64,
    retry_at: i64,
    forwarding: bool,
) -> sqlx::Result<InlineApplied> {
    let routes = stats::routes(tx, verdicts.iter().filter_map(|(_, v)| v.as_ref().ok())).await?;
    let (mut done, mut dead, mut for_workers) = (Vec::new(), Vec::new(), Vec::new());
    for (id, verdict) in verdicts {
        match verdict {
            Ok(Effect::Conversation(c))
                if c.queue_id.is_none() && !routes.contains_key(&c.conversation_id) =>
            {
                for_workers.push(FreshFailure {
                    id,
                    error: unknown_conversation_reason(&c.conversation_id).into(),
                })
            }
            Ok(_) => done.push(id.as_str()),
            Err(ProcessError::Permanent(error)) => dead.push(FreshFailure {
                id,
                error: error.into(),
            }),
            Err(ProcessError::Transient(error)) => for_workers.push(FreshFailure {
                id,
                error: error.into(),
            }),
        }
    }
    let mut applied = InlineApplied::default();
    if !done.is_empty() {
        let flipped: HashSet<String> = tx
            .finish_fresh(&done, now, forwarding)
            .await?
            .into_iter()
            .collect();
        let effects = verdicts.iter().filter_map(|(id, v)| match v {
            Ok(effect) if flipped.contains(id) => Some(effect),
            _ => None,
        });
        stats::apply(tx, effects, &routes).await?;
        applied.done = flipped.len() as u64;
    }
    if !dead.is_empty() {
        let seqs = tx.kill_fresh(&dead, now).await?;
        file_dead_letters(tx, &seqs, now).await?;
        applied.dead = seqs.len() as u64;
    }
    if !for_workers.is_empty() {
        // A failed first attempt: the workers retry it from `retry_at` under a lease.
        applied.for_workers = tx.defer_fresh(&for_workers, now, retry_at).await?;
    }
    let dead = applied.dead as i64;
    tx.add_totals(applied.done as i64, dead, dead).await?;
    Ok(applied)
}

/// See [`Db::prune`].
async fn prune(tx: &mut impl Statements, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
    let done = tx.prune_done(cutoff, limit).await?;
    let tombstones = tx.prune_tombstones(cutoff, limit).await?;
    tx.add_totals(-(done as i64), -(tombstones as i64), 0)
        .await?;
    Ok(done + tombstones)
}

impl Db {
    /// Claims up to `request.limit` due events (pending and due, or with an expired lease) in
    /// one transaction, leased for `request.lease_ms` under `request.token`; on PostgreSQL rows
    /// another replica is claiming are skipped, never waited for.
    ///
    /// The attempt limit holds here too: an event whose lease expired after its
    /// `max_attempts`-th claim never finished (the process died, or the worker hung on it), so
    /// it goes to the dead letters instead of being claimed again. Otherwise an event that
    /// kills the process would loop forever and drag its batch-mates with it.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn claim_due(
        &self,
        now: i64,
        request: ClaimRequest,
        max_attempts: i64,
    ) -> sqlx::Result<Claimed> {
        let (lease, limit) = (Lease::of(now, request), request.limit);
        write_tx!(self, |tx| claim_due(tx, now, lease, limit, max_attempts)
            .await)
    }

    /// Records the outcomes of a claimed batch in one transaction: done events are marked done
    /// together with their statistics, failures are rescheduled or dead-lettered. Only events
    /// still held under `token` change (an event whose lease was lost is applied by its new
    /// holder only).
    ///
    /// A conversation update that names no queue applies to the queues where its conversation
    /// is known (stored, or in this batch); known nowhere, its outcome becomes
    /// `unknown_conversation(event, reason)` (a retry: the event that names the queue may
    /// still be on its way).
    #[tracing::instrument(skip_all, fields(events = outcomes.len()))]
    pub async fn complete(
        &self,
        token: i64,
        now: i64,
        outcomes: &mut [(ClaimedEvent, Outcome)],
        unknown_conversation: impl Fn(&ClaimedEvent, String) -> Outcome,
    ) -> sqlx::Result<Completed> {
        let forwarding = self.forwarding();
        write_tx!(self, |tx| {
            complete(tx, token, now, forwarding, outcomes, &unknown_conversation).await
        })
    }

    /// Applies the verdicts of events processed as they arrived (inline processing), in one
    /// short transaction: done events with their statistics, dead ones with their letters.
    ///
    /// Only events still pending and never attempted change: one a worker took over (after a
    /// crash, or past the grace period) belongs to that worker, so nothing is applied twice.
    /// A transient failure, or an update whose conversation is known in no queue yet, counts
    /// as a failed first attempt: the workers retry it from `retry_at`.
    #[tracing::instrument(skip_all, fields(events = verdicts.len()))]
    pub async fn complete_inline(
        &self,
        verdicts: &[(String, Result<Effect, ProcessError>)],
        now: i64,
        retry_at: i64,
    ) -> sqlx::Result<InlineApplied> {
        let forwarding = self.forwarding();
        write_tx!(self, |tx| {
            apply_verdicts(tx, verdicts, now, retry_at, forwarding).await
        })
    }

    /// Due events never attempted, for a worker whose processor is pure (see
    /// [`Db::complete_inline`]): read without the write lock and without a lease, since
    /// completing them changes only rows still in this state. `part` of `parts` splits them
    /// between the workers.
    pub async fn due_fresh(
        &self,
        now: i64,
        limit: i64,
        part: i64,
        parts: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        read_conn!(self, |conn| conn
            .due_fresh(now, limit, part, parts.max(1))
            .await)
    }

    /// Gives back leases still held under `token` (shutdown): the claim does not count as an
    /// attempt.
    pub async fn release(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        write_tx!(self, |tx| tx.release(token, now).await)
    }

    /// Deletes up to `limit` done events processed before `cutoff` (a done event's
    /// `next_attempt_at` is when it was processed: the status index serves this), and
    /// tombstones of discarded dead letters received before it. Returns how many rows went.
    pub async fn prune(&self, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
        write_tx!(self, |tx| prune(tx, cutoff, limit).await)
    }
}
