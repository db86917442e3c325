//! The work queue on the `events` table: claim under a lease with `FOR UPDATE SKIP LOCKED`,
//! complete, retry, dead-letter, release, prune; and the dead letters.

use sqlx::{postgres::PgRow, PgConnection, Postgres, QueryBuilder};

use super::{events::add_totals, pg_text, stats, PgDb};
use crate::server::{
    domain::{
        ClaimedEvent, DeadLetter, DeadLetterFilter, Effect, Outcome, ProcessError, Selection,
    },
    store::records::{
        claimed_event, dead_among, dead_letter, unknown_conversation_reason, Claimed, Completed,
        InlineApplied, PageBy, BULK_CHUNK,
    },
};

const ABANDONED: &str =
    "'abandoned after ' || attempts || ' claims: processing never finished (the process stopped or the worker hung)'";

impl PgDb {
    /// Claims up to `limit` due events in one transaction, leased until `now + lease_ms`
    /// under `token`. Rows another replica is claiming are skipped, never waited for.
    ///
    /// The attempt limit holds here too: an event whose lease expired after its
    /// `max_attempts`-th claim never finished, so it goes to the dead letters instead.
    #[tracing::instrument(skip_all, fields(limit))]
    pub async fn claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        token: i64,
        max_attempts: i64,
    ) -> sqlx::Result<Claimed> {
        let mut tx = self.pool.begin().await?;
        let abandoned: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
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
        )))
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&mut *tx)
        .await?;
        file_dead_letters(&mut tx, &abandoned, now).await?;
        // An expired lease means the claim before never finished: the event may be what
        // killed the process. Such suspects are claimed one at a time.
        let mut rows = claim(&mut tx, "processing", now, lease_ms, 1, token).await?;
        if rows.is_empty() {
            rows = claim(&mut tx, "pending", now, lease_ms, limit, token).await?;
        }
        let n = abandoned.len() as i64;
        add_totals(&mut tx, 0, n, n).await?;
        tx.commit().await?;
        let mut events = rows
            .iter()
            .map(claimed_event)
            .collect::<sqlx::Result<Vec<_>>>()?;
        events.sort_by_key(|e| e.seq);
        Ok(Claimed {
            events,
            abandoned: abandoned.len() as u64,
        })
    }

    /// Records the outcomes of a claimed batch in one transaction (see the SQLite backend:
    /// the same rules), for events still held under `token`.
    #[tracing::instrument(skip_all, fields(events = outcomes.len()))]
    pub async fn complete(
        &self,
        token: i64,
        now: i64,
        outcomes: &mut [(ClaimedEvent, Outcome)],
        unknown_conversation: impl Fn(&ClaimedEvent, String) -> Outcome,
    ) -> sqlx::Result<Completed> {
        let mut tx = self.pool.begin().await?;
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
                    SET status = 'done', processed_at = $1, next_attempt_at = $1,
                        locked_until = NULL, claim_token = NULL,
                        forward_state = CASE WHEN $4 THEN 'pending' END,
                        forward_due_at = CASE WHEN $4 THEN $1::int8 END
                  WHERE seq = ANY($2) AND status = 'processing' AND claim_token = $3
              RETURNING seq",
            )
            .bind(now)
            .bind(&done_seqs)
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
        let (mut seqs, mut errors, mut retry_at) = (Vec::new(), Vec::new(), Vec::new());
        for (event, outcome) in outcomes.iter() {
            match outcome {
                Outcome::Done(_) => continue,
                Outcome::Retry { at, error } => {
                    retry_at.push(Some(*at));
                    errors.push(pg_text(error).into_owned());
                }
                Outcome::Dead { error } => {
                    retry_at.push(None);
                    errors.push(pg_text(error).into_owned());
                }
            }
            seqs.push(event.seq);
        }
        if !seqs.is_empty() {
            let changed: Vec<(i64, String)> = sqlx::query_as(
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
            .fetch_all(&mut *tx)
            .await?;
            let dead = dead_among(&changed);
            file_dead_letters(&mut tx, &dead, now).await?;
            completed.dead = dead.len() as u64;
            completed.retried = (changed.len() - dead.len()) as u64;
            completed.lost_lease += (seqs.len() - changed.len()) as u64;
        }
        let dead = completed.dead as i64;
        add_totals(&mut tx, completed.done as i64, dead, dead).await?;
        tx.commit().await?;
        Ok(completed)
    }

    /// Applies the verdicts of events processed as they arrived, in one short transaction,
    /// for events still pending and never attempted.
    #[tracing::instrument(skip_all, fields(events = verdicts.len()))]
    pub async fn complete_inline(
        &self,
        verdicts: &[(String, Result<Effect, ProcessError>)],
        now: i64,
        retry_at: i64,
    ) -> sqlx::Result<InlineApplied> {
        let mut tx = self.pool.begin().await?;
        let applied = apply_verdicts(&mut tx, verdicts, now, retry_at, self.forwarding).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Due events never attempted (`part` of `parts`), read without a lease.
    pub async fn due_fresh(
        &self,
        now: i64,
        limit: i64,
        part: i64,
        parts: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        let rows = sqlx::query(
            "SELECT seq, id, event_type, payload, 1::int8 AS attempts, received_at FROM events
              WHERE status = 'pending' AND next_attempt_at <= $1 AND attempts = 0
                AND seq % $3 = $2
              ORDER BY next_attempt_at, seq LIMIT $4",
        )
        .bind(now)
        .bind(part)
        .bind(parts.max(1))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(claimed_event).collect()
    }

    /// Gives back leases still held under `token` (shutdown): the claim does not count.
    pub async fn release(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "UPDATE events
                SET status = 'pending', next_attempt_at = $1, attempts = greatest(attempts - 1, 0),
                    locked_until = NULL, claim_token = NULL
              WHERE status = 'processing' AND claim_token = $2",
        )
        .bind(now)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `limit` done events processed before `cutoff`, and tombstones of
    /// discarded letters received before it. Rows another replica is pruning are skipped, so
    /// every replica may run this at once.
    pub async fn prune(&self, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events e WHERE status = 'done' AND next_attempt_at < $1
                    AND (forward_state IS NULL OR forward_state = 'done'
                         OR (forward_state = 'dead'
                             AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = e.id)))
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        let tombstones = sqlx::query(
            "DELETE FROM events WHERE seq IN (
                 SELECT seq FROM events e WHERE status = 'dead' AND received_at < $1
                    AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = e.id)
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
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
}

/// [`PgDb::complete_inline`] inside a transaction the caller holds.
async fn apply_verdicts(
    tx: &mut PgConnection,
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
    let mut done = Vec::new();
    let (mut dead_ids, mut dead_errors) = (Vec::new(), Vec::new());
    let (mut later_ids, mut later_errors) = (Vec::new(), Vec::new());
    for (id, verdict) in verdicts {
        match verdict {
            Ok(Effect::Conversation(c))
                if c.queue_id.is_none() && !routes.contains_key(&c.conversation_id) =>
            {
                later_ids.push(id.as_str());
                later_errors.push(unknown_conversation_reason(&pg_text(&c.conversation_id)));
            }
            Ok(_) => done.push(id.as_str()),
            Err(ProcessError::Permanent(error)) => {
                dead_ids.push(id.as_str());
                dead_errors.push(pg_text(error).into_owned());
            }
            Err(ProcessError::Transient(error)) => {
                later_ids.push(id.as_str());
                later_errors.push(pg_text(error).into_owned());
            }
        }
    }
    let mut applied = InlineApplied::default();
    if !done.is_empty() {
        let flipped: std::collections::HashSet<String> = sqlx::query_scalar(
            "UPDATE events
                SET status = 'done', attempts = 1, processed_at = $1, next_attempt_at = $1,
                    forward_state = CASE WHEN $3 THEN 'pending' END,
                    forward_due_at = CASE WHEN $3 THEN $1::int8 END
              WHERE id = ANY($2) AND status = 'pending' AND attempts = 0
          RETURNING id",
        )
        .bind(now)
        .bind(&done)
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
    if !dead_ids.is_empty() {
        let seqs: Vec<i64> = sqlx::query_scalar(
            "UPDATE events
                SET status = 'dead', attempts = 1, next_attempt_at = $1, last_error = f.error,
                    errors = events.errors
                             || jsonb_build_array(jsonb_build_object('at', $1::int8, 'error', f.error))
               FROM UNNEST($2::text[], $3::text[]) AS f(id, error)
              WHERE events.id = f.id AND events.status = 'pending' AND events.attempts = 0
          RETURNING events.seq",
        )
        .bind(now)
        .bind(&dead_ids)
        .bind(&dead_errors)
        .fetch_all(&mut *tx)
        .await?;
        file_dead_letters(tx, &seqs, now).await?;
        applied.dead = seqs.len() as u64;
    }
    if !later_ids.is_empty() {
        // A failed first attempt: the workers retry it from `retry_at` under a lease.
        applied.for_workers = sqlx::query(
            "UPDATE events
                SET attempts = 1, next_attempt_at = $2, last_error = f.error,
                    errors = events.errors
                             || jsonb_build_array(jsonb_build_object('at', $1::int8, 'error', f.error))
               FROM UNNEST($3::text[], $4::text[]) AS f(id, error)
              WHERE events.id = f.id AND events.status = 'pending' AND events.attempts = 0",
        )
        .bind(now)
        .bind(retry_at)
        .bind(&later_ids)
        .bind(&later_errors)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    let dead = applied.dead as i64;
    add_totals(tx, applied.done as i64, dead, dead).await?;
    Ok(applied)
}

/// Leases up to `limit` due events in `status` under `token`, skipping rows another replica
/// holds: the claim token and lease are set in the same statement.
async fn claim(
    tx: &mut PgConnection,
    status: &str,
    now: i64,
    lease_ms: i64,
    limit: i64,
    token: i64,
) -> sqlx::Result<Vec<PgRow>> {
    sqlx::query(
        "WITH due AS (
             SELECT seq FROM events WHERE status = $5 AND next_attempt_at <= $3
              ORDER BY next_attempt_at, seq LIMIT $4
              FOR UPDATE SKIP LOCKED)
         UPDATE events e
            SET status = 'processing', attempts = e.attempts + 1,
                locked_until = $1, next_attempt_at = $1, claim_token = $2
           FROM due WHERE e.seq = due.seq
       RETURNING e.seq, e.id, e.event_type, e.payload, e.attempts, e.received_at",
    )
    .bind(now.saturating_add(lease_ms))
    .bind(token)
    .bind(now)
    .bind(limit)
    .bind(status)
    .fetch_all(&mut *tx)
    .await
}

/// A letter filed again (a replayed event that failed again) takes the new attempts.
pub(super) const ON_REFILE: &str = "ON CONFLICT (id) DO UPDATE SET
                attempts = excluded.attempts, errors = excluded.errors,
                last_error = excluded.last_error, dead_at = excluded.dead_at,
                stage = excluded.stage";

/// Files the (already dead) events `seqs` as dead letters with their errors, in one
/// statement. The payload is not copied (empty): the events row keeps it.
async fn file_dead_letters(tx: &mut PgConnection, seqs: &[i64], now: i64) -> sqlx::Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn push_filter(filter: &DeadLetterFilter, q: &mut QueryBuilder<Postgres>) {
    q.push(" WHERE true");
    if let Some(t) = &filter.event_type {
        q.push(" AND event_type = ")
            .push_bind(pg_text(t).into_owned());
    }
    if let Some(queue) = &filter.queue {
        q.push(" AND queue_id = ")
            .push_bind(pg_text(queue).into_owned());
    }
    if let Some(text) = &filter.error {
        let escaped = pg_text(text)
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" AND errors::text ILIKE ")
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
        q.push(" AND stage = ")
            .push_bind(pg_text(stage).into_owned());
    }
}

fn push_selection(selection: &Selection, q: &mut QueryBuilder<Postgres>) {
    match selection {
        Selection::Ids(ids) => {
            let ids: Vec<String> = ids.iter().map(|id| pg_text(id).into_owned()).collect();
            q.push(" WHERE id = ANY(").push_bind(ids).push(")");
        }
        Selection::Filter(filter) => push_filter(filter, q),
    }
}

impl PgDb {
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
            "SELECT id, event_type, queue_id, attempts, last_error, errors::text AS errors,
                    received_at, dead_at, stage
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
                        .push_bind(pg_text(id).into_owned())
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
        let row = sqlx::query(
            "SELECT d.id, d.event_type, d.queue_id, d.attempts, d.errors::text AS errors,
                    d.last_error, d.received_at, d.dead_at, d.stage,
                    CASE WHEN length(d.payload) > 0 THEN d.payload ELSE e.payload END AS payload
               FROM dead_letters d LEFT JOIN events e ON e.id = d.id
              WHERE d.id = $1",
        )
        .bind(pg_text(id))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| dead_letter(&r, true)).transpose()
    }

    /// Puts the dead letters `ids` back as pending with attempts reset, in one transaction;
    /// returns how many letters there were.
    pub async fn replay_chunk(&self, ids: &[String], now: i64) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Whoever deletes the letter replays it: an admin clicking replay on two replicas at
        // once replays each event once.
        let removed: Vec<String> =
            sqlx::query_scalar("DELETE FROM dead_letters WHERE id = ANY($1) RETURNING id")
                .bind(ids)
                .fetch_all(&mut *tx)
                .await?;
        let revived = sqlx::query(
            "UPDATE events
                SET status = 'pending', attempts = 0, next_attempt_at = $1,
                    last_error = NULL, locked_until = NULL, claim_token = NULL
              WHERE id = ANY($2) AND status = 'dead'",
        )
        .bind(now)
        .bind(&removed)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // A letter of the sink stage: the event stays done, its delivery starts over.
        sqlx::query(
            "UPDATE events
                SET forward_state = 'pending', forward_attempts = 0, forward_due_at = $1,
                    forward_token = NULL
              WHERE id = ANY($2) AND forward_state = 'dead'",
        )
        .bind(now)
        .bind(&removed)
        .execute(&mut *tx)
        .await?;
        add_totals(&mut tx, 0, -(revived as i64), -(removed.len() as i64)).await?;
        tx.commit().await?;
        Ok(removed.len() as u64)
    }

    /// Deletes the dead letters `ids` for good, in one transaction.
    pub async fn discard_chunk(&self, ids: &[String]) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query("DELETE FROM dead_letters WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        add_totals(&mut tx, 0, 0, -(removed as i64)).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// The next chunk of selected dead-letter ids after `after` (in id order).
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
