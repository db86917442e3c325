//! The work queue on the `events` table: claim under a lease, complete, retry, dead-letter,
//! release, prune.

use serde_json::{json, Value};
use sqlx::{Connection as _, QueryBuilder, Row as _, Sqlite, SqliteConnection};

use super::{add_totals, stats, SqliteDb};
use crate::server::domain::{
    ClaimedEvent, DeadLetter, DeadLetterFilter, Effect, Outcome, ProcessError, Selection,
};
use crate::server::store::records::{
    claimed_event, dead_among, dead_letter, unknown_conversation_reason, Claimed, Completed,
    EventState, InlineApplied, PageBy, BULK_CHUNK,
};

impl SqliteDb {
    /// Claims up to `limit` due events (pending and due, or with an expired lease) in one
    /// transaction, leasing them until `now + lease_ms` under `token`.
    ///
    /// The attempt limit holds here too: an event whose lease expired after its
    /// `max_attempts`-th claim never finished (the process died, or the worker hung on it), so
    /// it goes to the dead letters instead of being claimed again. Otherwise an event that
    /// kills the process would loop forever and drag its batch-mates with it.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        token: i64,
        max_attempts: i64,
    ) -> sqlx::Result<Claimed> {
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let abandoned: Vec<i64> = sqlx::query_scalar(
            "UPDATE events
                SET status = 'dead', locked_until = NULL, claim_token = NULL,
                    last_error = 'abandoned after ' || attempts
                                 || ' claims: processing never finished (the process stopped or the worker hung)',
                    errors = json_insert(errors, '$[#]', json_object('at', ?1,
                        'error', 'abandoned after ' || attempts
                                 || ' claims: processing never finished (the process stopped or the worker hung)'))
              WHERE status = 'processing' AND next_attempt_at <= ?1 AND attempts >= ?2
          RETURNING seq",
        )
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&mut *tx)
        .await?;
        for &seq in &abandoned {
            copy_to_dead_letters(&mut tx, seq, now).await?;
        }
        let n = abandoned.len() as i64;
        add_totals(&mut tx, 0, n, n).await?;
        // An expired lease means the claim before never finished: the event may be what
        // killed the process. Such suspects are claimed one at a time, so a poison event
        // cannot take innocent batch-mates down with it again.
        let mut rows = claim(&mut tx, Due::ExpiredLease, now, lease_ms, 1, token).await?;
        if rows.is_empty() {
            rows = claim(&mut tx, Due::Pending, now, lease_ms, limit, token).await?;
        }
        tx.commit().await?;
        let events = rows
            .iter()
            .map(claimed_event)
            .collect::<sqlx::Result<_>>()?;
        Ok(Claimed {
            events,
            abandoned: abandoned.len() as u64,
        })
    }

    /// Records the outcomes of a claimed batch in one transaction: done events are marked done
    /// together with their statistics, failures are rescheduled or dead-lettered. Only events
    /// still held under `token` change, so an event whose lease expired and was claimed again
    /// is applied exactly once.
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
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let mut completed = Completed::default();

        let routes = stats::routes(
            &mut tx,
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

        let done_seqs: Vec<i64> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Done(_)))
            .map(|(e, _)| e.seq)
            .collect();
        if !done_seqs.is_empty() {
            let owned: Vec<i64> = sqlx::query_scalar(
                "UPDATE events
                    SET status = 'done', processed_at = ?1, next_attempt_at = ?1,
                        locked_until = NULL, claim_token = NULL,
                        forward_state = CASE WHEN ?4 THEN 'pending' END,
                        forward_due_at = CASE WHEN ?4 THEN ?1 END
                  WHERE seq IN (SELECT value FROM json_each(?2))
                    AND +status = 'processing' AND claim_token = ?3
              RETURNING seq",
            )
            .bind(now)
            .bind(json!(done_seqs).to_string())
            .bind(token)
            .bind(self.forwarding)
            .fetch_all(&mut *tx)
            .await?;
            let owned: std::collections::HashSet<i64> = owned.into_iter().collect();
            let effects = outcomes.iter().filter_map(|(e, o)| match o {
                Outcome::Done(effect) if owned.contains(&e.seq) => Some(effect),
                _ => None,
            });
            stats::apply(&mut tx, effects, &routes).await?;
            completed.done = owned.len() as u64;
            completed.lost_lease += (done_seqs.len() - owned.len()) as u64;
        }

        // Failures in one statement: back to pending until their retry time, or dead.
        let failures: Vec<Value> = outcomes
            .iter()
            .filter_map(|(event, outcome)| match outcome {
                Outcome::Done(_) => None,
                Outcome::Retry { at, error } => {
                    Some(json!({ "s": event.seq, "e": error, "at": at }))
                }
                Outcome::Dead { error } => Some(json!({ "s": event.seq, "e": error })),
            })
            .collect();
        if !failures.is_empty() {
            let changed: Vec<(i64, String)> = sqlx::query_as(
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
            .bind(Value::Array(failures.clone()).to_string())
            .bind(token)
            .fetch_all(&mut *tx)
            .await?;
            let dead = dead_among(&changed);
            file_dead_letters(&mut tx, &dead, now).await?;
            completed.dead = dead.len() as u64;
            completed.retried = (changed.len() - dead.len()) as u64;
            completed.lost_lease += (failures.len() - changed.len()) as u64;
        }
        let dead = completed.dead as i64;
        add_totals(&mut tx, completed.done as i64, dead, dead).await?;
        tx.commit().await?;
        Ok(completed)
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
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let applied = apply_verdicts(&mut tx, verdicts, now, retry_at, self.forwarding).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Due events never attempted, for a worker whose processor is pure (see
    /// [`SqliteDb::complete_inline`]): read without the write lock and without a lease, since
    /// completing them changes only rows still in this state. `part` of `parts` splits them
    /// between the workers.
    pub async fn due_fresh(
        &self,
        now: i64,
        limit: i64,
        part: i64,
        parts: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        let rows = sqlx::query(
            "SELECT seq, id, event_type, payload, 1 AS attempts, received_at FROM events
              WHERE status = 'pending' AND next_attempt_at <= ?1 AND attempts = 0
                AND seq % ?3 = ?2
              ORDER BY next_attempt_at, seq LIMIT ?4",
        )
        .bind(now)
        .bind(part)
        .bind(parts.max(1))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(claimed_event).collect()
    }

    /// Gives back leases still held under `token` (shutdown): the claim does not count as an
    /// attempt.
    pub async fn release(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        let mut w = self.writing().await?;
        let done = sqlx::query(
            "UPDATE events
                SET status = 'pending', next_attempt_at = ?1, attempts = max(attempts - 1, 0),
                    locked_until = NULL, claim_token = NULL
              WHERE status = 'processing' AND claim_token = ?2",
        )
        .bind(now)
        .bind(token)
        .execute(&mut *w)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` done events processed before `cutoff` (a done event's
    /// `next_attempt_at` is when it was processed: the status index serves this), and tombstones of
    /// discarded dead letters received before it. Returns how many rows went.
    pub async fn prune(&self, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events e WHERE status = 'done' AND next_attempt_at < ?1
                    AND (forward_state IS NULL OR forward_state = 'done'
                         OR (forward_state = 'dead'
                             AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = e.id)))
                  LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        let tombstones = sqlx::query(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events e WHERE status = 'dead' AND received_at < ?1
                    AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = e.id) LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        let (done, tombstones) = (done.rows_affected(), tombstones.rows_affected());
        add_totals(&mut tx, -(done as i64), -(tombstones as i64), 0).await?;
        tx.commit().await?;
        Ok(done + tombstones)
    }

    /// The earliest time any pending event is due, if any (to sleep until then).
    pub async fn next_due_at(&self) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM events WHERE status IN ('pending', 'processing')",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Events processed so far in `status`, with attempts and errors (tests and the CLI).
    pub async fn event_state(&self, id: &str) -> sqlx::Result<Option<EventState>> {
        let row = sqlx::query(
            "SELECT status, attempts, next_attempt_at, errors FROM events WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(EventState {
                status: r.try_get("status")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                errors: serde_json::from_str(r.try_get::<&str, _>("errors")?).unwrap_or_default(),
            })
        })
        .transpose()
    }
}

/// Which due events a claim takes.
enum Due {
    Pending,
    ExpiredLease,
}

/// [`SqliteDb::complete_inline`] inside a transaction the caller holds (the writer's own, too).
pub(crate) async fn apply_verdicts(
    tx: &mut SqliteConnection,
    verdicts: &[(String, Result<Effect, ProcessError>)],
    now: i64,
    retry_at: i64,
    forwarding: bool,
) -> sqlx::Result<InlineApplied> {
    let routes = stats::routes(
        &mut *tx,
        verdicts.iter().filter_map(|(_, v)| v.as_ref().ok()),
    )
    .await?;
    let (mut done, mut dead, mut for_workers) = (Vec::new(), Vec::new(), Vec::new());
    for (id, verdict) in verdicts {
        match verdict {
            Ok(Effect::Conversation(c))
                if c.queue_id.is_none() && !routes.contains_key(&c.conversation_id) =>
            {
                for_workers
                    .push(json!({ "i": id, "e": unknown_conversation_reason(&c.conversation_id) }))
            }
            Ok(_) => done.push(id.as_str()),
            Err(ProcessError::Permanent(error)) => dead.push(json!({ "i": id, "e": error })),
            Err(ProcessError::Transient(error)) => for_workers.push(json!({ "i": id, "e": error })),
        }
    }
    let mut applied = InlineApplied::default();
    if !done.is_empty() {
        let flipped: std::collections::HashSet<String> = sqlx::query_scalar(
            "UPDATE events
                SET status = 'done', attempts = 1, processed_at = ?1, next_attempt_at = ?1,
                    forward_state = CASE WHEN ?3 THEN 'pending' END,
                    forward_due_at = CASE WHEN ?3 THEN ?1 END
              WHERE id IN (SELECT value FROM json_each(?2))
                AND +status = 'pending' AND attempts = 0
          RETURNING id",
        )
        .bind(now)
        .bind(json!(done).to_string())
        .bind(forwarding)
        .fetch_all(&mut *tx)
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
        let seqs: Vec<i64> = sqlx::query_scalar(
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
        .bind(Value::Array(dead).to_string())
        .fetch_all(&mut *tx)
        .await?;
        file_dead_letters(tx, &seqs, now).await?;
        applied.dead = seqs.len() as u64;
    }
    if !for_workers.is_empty() {
        // A failed first attempt: the workers retry it from `retry_at` under a lease.
        applied.for_workers = sqlx::query(
            "UPDATE events
                SET attempts = 1, next_attempt_at = ?2, last_error = j.value ->> 'e',
                    errors = json_insert(errors, '$[#]', json_object('at', ?1, 'error', j.value ->> 'e'))
               FROM json_each(?3) AS j
              WHERE events.id = j.value ->> 'i' AND +events.status = 'pending'
                AND events.attempts = 0",
        )
        .bind(now)
        .bind(retry_at)
        .bind(Value::Array(for_workers).to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    let dead = applied.dead as i64;
    add_totals(tx, applied.done as i64, dead, dead).await?;
    Ok(applied)
}

/// Leases up to `limit` due events of one kind under `token`.
async fn claim(
    tx: &mut SqliteConnection,
    due: Due,
    now: i64,
    lease_ms: i64,
    limit: i64,
    token: i64,
) -> sqlx::Result<Vec<sqlx::sqlite::SqliteRow>> {
    // While processing, `next_attempt_at` is the lease end, so one index serves both.
    let status = match due {
        Due::Pending => "pending",
        Due::ExpiredLease => "processing",
    };
    sqlx::query(
        "UPDATE events
            SET status = 'processing', attempts = attempts + 1,
                locked_until = ?1, next_attempt_at = ?1, claim_token = ?2
          WHERE seq IN (SELECT seq FROM events WHERE status = ?5 AND next_attempt_at <= ?3
                         ORDER BY next_attempt_at, seq LIMIT ?4)
      RETURNING seq, id, event_type, payload, attempts, received_at",
    )
    .bind(now.saturating_add(lease_ms))
    .bind(token)
    .bind(now)
    .bind(limit)
    .bind(status)
    .fetch_all(&mut *tx)
    .await
}

/// Files the (already dead) event `seq` as a dead letter with its errors so far.
async fn copy_to_dead_letters(tx: &mut SqliteConnection, seq: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(file_dead_letters_sql("WHERE seq = ?2")))
        .bind(now)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Files the (already dead) events `seqs` as dead letters, in one statement.
async fn file_dead_letters(tx: &mut SqliteConnection, seqs: &[i64], now: i64) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(file_dead_letters_sql(
        "WHERE seq IN (SELECT value FROM json_each(?2))",
    )))
    .bind(now)
    .bind(json!(seqs).to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A dead letter from its events row. The payload is not copied (an empty blob marks that):
/// the events row keeps it byte for byte for as long as the letter exists.
const FILE_DEAD_LETTERS: &str =
    "INSERT INTO dead_letters (id, event_type, queue_id, payload, attempts, errors,
                                   last_error, received_at, dead_at, stage)
         SELECT id, event_type, QUEUE_OF_PAYLOAD,
                x'', attempts, errors, coalesce(last_error, ''), received_at, ?1, 'payload'
           FROM events";

/// The queue an event's payload names, in SQL over the events row (for filtering letters).
pub(super) const QUEUE_OF_PAYLOAD: &str = "coalesce(json_extract(payload, '$.data.queueId'),
                         json_extract(payload, '$.eventBody.queueId'),
                         json_extract(payload, '$.eventBody.group.queueId'),
                         json_extract(payload, '$.detail.eventBody.queueId'),
                         json_extract(payload, '$.detail.eventBody.group.queueId'))";

/// A letter filed again (a replayed event that failed again) takes the new attempts.
pub(super) const ON_REFILE: &str = "ON CONFLICT (id) DO UPDATE SET
                attempts = excluded.attempts, errors = excluded.errors,
                last_error = excluded.last_error, dead_at = excluded.dead_at,
                stage = excluded.stage";

/// [`FILE_DEAD_LETTERS`] as SQL, with the payload's queue expression in place.
fn file_dead_letters_sql(rest: &str) -> String {
    format!(
        "{} {rest} {ON_REFILE}",
        FILE_DEAD_LETTERS.replace("QUEUE_OF_PAYLOAD", QUEUE_OF_PAYLOAD)
    )
}

fn push_filter(filter: &DeadLetterFilter, q: &mut QueryBuilder<Sqlite>) {
    {
        q.push(" WHERE 1 = 1");
        if let Some(t) = &filter.event_type {
            q.push(" AND event_type = ").push_bind(t.clone());
        }
        if let Some(queue) = &filter.queue {
            q.push(" AND queue_id = ").push_bind(queue.clone());
        }
        if let Some(text) = &filter.error {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q.push(" AND errors LIKE ")
                .push_bind(format!("%{escaped}%"))
                .push(" ESCAPE '\\'");
        }
        if let Some(since) = filter.since {
            q.push(" AND dead_at >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            q.push(" AND dead_at < ").push_bind(until);
        }
        if let Some(stage) = &filter.stage {
            q.push(" AND stage = ").push_bind(stage.clone());
        }
    }
}

impl SqliteDb {
    /// One page of the letters matching `filter`, and how many match in all.
    pub async fn dead_letter_page(
        &self,
        filter: &DeadLetterFilter,
        page: PageBy<'_>,
    ) -> sqlx::Result<(Vec<DeadLetter>, i64)> {
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM dead_letters");
        push_filter(filter, &mut count);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let mut list = QueryBuilder::new(
            "SELECT id, event_type, queue_id, attempts, last_error, errors, received_at, dead_at,
                    stage
               FROM dead_letters",
        );
        push_filter(filter, &mut list);
        match page {
            PageBy::Offset { limit, offset } => {
                list.push(" ORDER BY dead_at DESC, id LIMIT ")
                    .push_bind(limit)
                    .push(" OFFSET ")
                    .push_bind(offset);
            }
            PageBy::Cursor { before, limit } => {
                if let Some((dead_at, id)) = before {
                    list.push(" AND (dead_at, id) < (")
                        .push_bind(dead_at)
                        .push(", ")
                        .push_bind(id.to_owned())
                        .push(")");
                }
                list.push(" ORDER BY dead_at DESC, id DESC LIMIT ")
                    .push_bind(limit);
            }
        }
        let rows = list.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(|r| dead_letter(r, false))
            .collect::<sqlx::Result<_>>()?;
        Ok((items, total))
    }

    pub async fn get_dead_letter(&self, id: &str) -> sqlx::Result<Option<DeadLetter>> {
        // Letters filed before payloads stopped being copied still carry their own.
        let row = sqlx::query(
            "SELECT d.id, d.event_type, d.queue_id, d.attempts, d.errors, d.last_error,
                    d.received_at, d.dead_at, d.stage,
                    CASE WHEN length(d.payload) > 0 THEN d.payload ELSE e.payload END AS payload
               FROM dead_letters d LEFT JOIN events e ON e.id = d.id
              WHERE d.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| dead_letter(&r, true)).transpose()
    }

    /// Puts the dead letters `ids` back as pending with attempts reset, in one short write
    /// transaction; returns how many letters there were.
    pub async fn replay_chunk(&self, ids: &[String], now: i64) -> sqlx::Result<u64> {
        let ids_json = json!(ids).to_string();
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let removed =
            sqlx::query("DELETE FROM dead_letters WHERE id IN (SELECT value FROM json_each(?))")
                .bind(&ids_json)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let revived = sqlx::query(
            "UPDATE events
                SET status = 'pending', attempts = 0, next_attempt_at = ?1,
                    last_error = NULL, locked_until = NULL, claim_token = NULL
              WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'dead'",
        )
        .bind(now)
        .bind(&ids_json)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A letter of the sink stage: the event stays done, its delivery starts over.
        sqlx::query(
            "UPDATE events
                SET forward_state = 'pending', forward_attempts = 0, forward_due_at = ?1,
                    forward_token = NULL
              WHERE id IN (SELECT value FROM json_each(?2)) AND forward_state = 'dead'",
        )
        .bind(now)
        .bind(&ids_json)
        .execute(&mut *tx)
        .await?;
        add_totals(&mut tx, 0, -(revived as i64), -(removed as i64)).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Deletes the dead letters `ids` for good, in one short write transaction.
    pub async fn discard_chunk(&self, ids: &[String]) -> sqlx::Result<u64> {
        let mut w = self.writing().await?;
        let mut tx = w.begin_with("BEGIN IMMEDIATE").await?;
        let removed =
            sqlx::query("DELETE FROM dead_letters WHERE id IN (SELECT value FROM json_each(?))")
                .bind(json!(ids).to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        add_totals(&mut tx, 0, 0, -(removed as i64)).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// The next chunk of selected dead-letter ids after `after` (in id order), read outside
    /// the write gate; `None` when the selection is exhausted.
    pub async fn next_selected(
        &self,
        selection: &Selection,
        after: &str,
    ) -> sqlx::Result<Option<Vec<String>>> {
        let mut query = QueryBuilder::new("SELECT id FROM dead_letters");
        push_selection(selection, &mut query);
        query
            .push(" AND id > ")
            .push_bind(after.to_owned())
            .push(" ORDER BY id LIMIT ")
            .push_bind(BULK_CHUNK);
        let ids: Vec<String> = query.build_query_scalar().fetch_all(&self.pool).await?;
        Ok((!ids.is_empty()).then_some(ids))
    }
}

fn push_selection(selection: &Selection, q: &mut QueryBuilder<Sqlite>) {
    {
        match selection {
            Selection::Ids(ids) => {
                q.push(" WHERE id IN (SELECT value FROM json_each(")
                    .push_bind(json!(ids).to_string())
                    .push("))");
            }
            Selection::Filter(filter) => push_filter(filter, q),
        }
    }
}
