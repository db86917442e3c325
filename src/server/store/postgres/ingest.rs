//! The writer's statements on PostgreSQL: each batch is one `INSERT … SELECT FROM UNNEST(…)
//! ON CONFLICT DO NOTHING` in one transaction, and at most one `NOTIFY` for the other replicas.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use sqlx::{PgConnection, PgPool};

use super::{pg_text, WORK_CHANNEL};
use crate::server::store::records::InlineApplied;
use crate::server::store::writer::{
    any_for_workers, apply_held, first_due, insert_batch, Apply, BatchRows, InlineBatch, NewEvent,
    Receipt,
};

/// The other replicas hear of new work at most this often: under load their workers are busy
/// anyway, and a notification per batch would cost every replica a wake-up per commit.
const NOTIFY_EVERY: Duration = Duration::from_millis(50);

/// The ingest writer's side of the pool.
pub struct PgWriter {
    pool: PgPool,
    last_notify: Option<Instant>,
}

impl PgWriter {
    pub(super) fn new(pool: PgPool) -> Self {
        PgWriter {
            pool,
            last_notify: None,
        }
    }

    /// Stores `events` in one transaction and returns a receipt for each.
    pub async fn commit_batch(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Receipt>> {
        // Text columns cannot hold NUL: such ids and types are stored with U+FFFD instead
        // (rare: copy only then).
        let cleaned: Vec<NewEvent>;
        let events = if events
            .iter()
            .any(|e| e.id.contains('\0') || e.event_type.contains('\0'))
        {
            cleaned = events.iter().map(without_nul).collect();
            &cleaned[..]
        } else {
            events
        };
        // Two replicas given the same deliveries in other orders (Genesys retries to any
        // replica) insert the same keys in opposite orders, and PostgreSQL breaks the deadlock
        // by aborting one batch. Nothing of it was stored, so it is run again at once instead
        // of answering its webhooks 503.
        let mut attempt = 1;
        loop {
            match self.try_commit(events).await {
                Err(err) if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&err) => {
                    tracing::debug!(attempt, "a batch met another replica's; committing again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// [`PgWriter::commit_batch`]'s one attempt.
    async fn try_commit(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Receipt>> {
        let mut tx = self.pool.begin().await?;
        let receipts = insert_batch(&mut *tx, events).await?;
        let due = self
            .last_notify
            .is_none_or(|at| at.elapsed() >= NOTIFY_EVERY);
        if due && any_for_workers(events) {
            // Delivered at commit, to every replica listening (see `PgDb::listen_for_work`).
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(WORK_CHANNEL)
                .execute(&mut *tx)
                .await?;
            self.last_notify = Some(Instant::now());
        }
        tx.commit().await?;
        Ok(receipts)
    }

    /// See [`crate::server::store::WriterConn::apply_verdicts`].
    pub(crate) async fn apply_verdicts(
        &mut self,
        verdicts: &InlineBatch,
        apply: Apply,
    ) -> sqlx::Result<InlineApplied> {
        let mut tx = self.pool.begin().await?;
        let applied = apply_held(&mut *tx, verdicts, apply).await?;
        tx.commit().await?;
        Ok(applied)
    }

    pub async fn close(self) -> sqlx::Result<()> {
        self.pool.close().await;
        Ok(())
    }
}

/// How many times a batch aborted by a deadlock is tried in all.
const DEADLOCK_ATTEMPTS: u32 = 3;

/// Whether PostgreSQL aborted the transaction to break a deadlock (SQLSTATE 40P01).
fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.code().as_deref() == Some("40P01"))
}

/// `event` with NUL in its id and type replaced (see [`pg_text`]).
fn without_nul(event: &NewEvent) -> NewEvent {
    NewEvent {
        id: pg_text(&event.id).into_owned(),
        event_type: pg_text(&event.event_type).into_owned(),
        payload: event.payload.clone(),
        received_at: event.received_at,
        processed: event.processed.clone(),
    }
}

impl BatchRows for PgConnection {
    async fn insert_rows(
        &mut self,
        events: &[NewEvent],
        ids: &[String],
        which: &[usize],
    ) -> sqlx::Result<Vec<bool>> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let mut row_ids = Vec::with_capacity(which.len());
        let mut types = Vec::with_capacity(which.len());
        let mut payloads = Vec::with_capacity(which.len());
        let mut received = Vec::with_capacity(which.len());
        let mut due = Vec::with_capacity(which.len());
        for &i in which {
            let e = &events[i];
            row_ids.push(ids[i].as_str());
            types.push(e.event_type.as_str());
            payloads.push(&e.payload[..]);
            received.push(e.received_at);
            due.push(first_due(e));
        }
        // Rows are inserted in array order, so `seq` keeps arrival order.
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO events (id, event_type, payload, received_at, next_attempt_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::int8[], $5::int8[])
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
        )
        .bind(&row_ids)
        .bind(&types)
        .bind(&payloads)
        .bind(&received)
        .bind(&due)
        .fetch_all(&mut *self)
        .await?;
        if inserted.len() == which.len() {
            return Ok(vec![true; which.len()]);
        }
        let inserted: std::collections::HashSet<&str> =
            inserted.iter().map(String::as_str).collect();
        Ok(row_ids.iter().map(|id| inserted.contains(id)).collect())
    }

    async fn stored_bodies(&mut self, ids: &[&str]) -> sqlx::Result<HashMap<String, Vec<u8>>> {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, payload FROM events WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&mut *self)
                .await?;
        Ok(rows.into_iter().collect())
    }
}
