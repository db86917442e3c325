//! Group commit: one task owns the write connection and commits every webhook waiting at that
//! moment in a single transaction, then answers each one.
//!
//! A durable commit (`synchronous=FULL`) costs an fsync whether it carries one row or a
//! thousand, so batching whatever queued up during the previous commit is what lets gc-status
//! acknowledge tens of thousands of webhooks a second while still never answering 2xx before
//! the row is on disk.

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::body::Bytes;
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqliteConnection};
use tokio::{
    sync::{mpsc, oneshot, Notify},
    task::JoinHandle,
};

use super::WriteGate;
use crate::server::rates::RateMeter;

/// One webhook to store.
#[derive(Debug)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub payload: Bytes,
    /// Unix epoch milliseconds.
    pub received_at: i64,
}

/// What became of a stored webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new row was committed.
    New,
    /// An event with this id was already stored; nothing was written.
    Duplicate,
}

/// Why a webhook could not be stored; every variant means "answer 503, the sender retries".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the writer queue is full")]
    Overloaded,
    #[error("the commit did not finish in time")]
    TimedOut,
    #[error("the database refused the write")]
    Failed,
    #[error("the writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<Stored, StoreError>>;

/// The handle request handlers use to store events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct IngestWriter {
    queue: mpsc::Sender<(NewEvent, Reply)>,
    timeout: Duration,
}

/// Rows per INSERT statement: 5 parameters each, well under SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 256;

impl IngestWriter {
    /// Starts the writer task. It stops after every handle is dropped and the queue is drained.
    /// Every transaction enters `gate` first. After each commit, `committed` is notified (workers wake) and `ingested` counts the
    /// new rows.
    pub fn spawn(
        conn: SqliteConnection,
        queue_capacity: usize,
        max_batch: usize,
        timeout: Duration,
        gate: WriteGate,
        committed: Arc<Notify>,
        ingested: Arc<RateMeter>,
    ) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(queue_capacity.max(1));
        let task = tokio::spawn(run(conn, rx, max_batch.max(1), gate, committed, ingested));
        (IngestWriter { queue, timeout }, task)
    }

    /// Stores `event` and resolves once its transaction has committed (or failed).
    pub async fn store(&self, event: NewEvent) -> Result<Stored, StoreError> {
        let (reply, committed) = oneshot::channel();
        self.queue.try_send((event, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => StoreError::Stopped,
        })?;
        match tokio::time::timeout(self.timeout, committed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::TimedOut),
        }
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<(NewEvent, Reply)>,
    max_batch: usize,
    gate: WriteGate,
    committed: Arc<Notify>,
    ingested: Arc<RateMeter>,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // `recv_many` waits for one submission, then takes every one already queued: the batch
    // grows by itself exactly when load does.
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        // Give request tasks that are already runnable one turn to enqueue before the batch
        // is closed: it costs microseconds and makes batches (and throughput) markedly larger.
        tokio::task::yield_now().await;
        let writing = gate.enter().await;
        // Whatever arrived while a worker held the gate joins this commit too.
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.drain(..).unzip();
        let outcome = insert_batch(&mut conn, &events).await;
        drop(writing);
        match outcome {
            Ok(stored) => {
                let new = stored.iter().filter(|s| **s == Stored::New).count() as u64;
                if new > 0 {
                    ingested.record(new);
                    committed.notify_one();
                }
                for (reply, result) in replies.into_iter().zip(stored) {
                    // The requester may have timed out; its sender will retry and dedupe.
                    let _ = reply.send(Ok(result));
                }
            }
            Err(err) => {
                tracing::error!(error = %err, events = events.len(), "commit failed; answering 503");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Failed));
                }
            }
        }
    }
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the writer connection failed");
    }
}

/// Inserts `events` in one transaction; returns for each whether it was new or a duplicate.
#[tracing::instrument(skip_all, fields(events = events.len()))]
async fn insert_batch(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> sqlx::Result<Vec<Stored>> {
    // Within a batch, only the first event of an id reaches SQL; later ones are duplicates.
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    let mut unique = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if let Entry::Vacant(slot) = first_of.entry(event.id.as_str()) {
            slot.insert(i);
            unique.push(i);
        }
    }
    let mut results = vec![Stored::Duplicate; events.len()];

    let mut tx = conn.begin().await?;
    for chunk in unique.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, event_type, payload, received_at, next_attempt_at) ",
        );
        insert.push_values(chunk, |mut row, &i| {
            let e = &events[i];
            row.push_bind(e.id.as_str())
                .push_bind(e.event_type.as_str())
                .push_bind(&e.payload[..])
                .push_bind(e.received_at)
                .push_bind(e.received_at);
        });
        insert.push(" ON CONFLICT (id) DO NOTHING");
        let done = insert
            .build()
            .persistent(chunk.len() == ROWS_PER_STATEMENT)
            .execute(&mut *tx)
            .await?;
        let inserted = done.rows_affected() as usize;
        if inserted == chunk.len() {
            for &i in chunk {
                results[i] = Stored::New;
            }
        } else if inserted > 0 {
            // Some were already stored. New rows got consecutive `seq`s ending at the last
            // insert rowid (`seq` is the rowid, assigned as max + 1), so read exactly those.
            let first_new_seq = done.last_insert_rowid() - inserted as i64 + 1;
            let new_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM events WHERE seq >= ?")
                .bind(first_new_seq)
                .fetch_all(&mut *tx)
                .await?;
            for id in &new_ids {
                if let Some(&i) = first_of.get(id.as_str()) {
                    results[i] = Stored::New;
                }
            }
        }
    }
    tx.commit().await?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> NewEvent {
        NewEvent {
            id: id.to_owned(),
            event_type: "test".to_owned(),
            payload: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
            received_at: 1,
        }
    }

    /// A fresh database (kept while the returned directory lives) and a writer connection.
    async fn temp_store() -> (
        tempfile::TempDir,
        crate::server::store::Db,
        SqliteConnection,
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let (db, conn) = crate::server::store::open(&url, Duration::from_secs(1))
            .await
            .expect("open");
        (dir, db, conn)
    }

    #[tokio::test]
    async fn a_batch_mixing_new_stored_and_repeated_ids_is_told_apart() {
        let (_dir, db, mut conn) = temp_store().await;

        let first = insert_batch(&mut conn, &[event("a")])
            .await
            .expect("insert");
        assert_eq!(first, vec![Stored::New]);
        let mixed = [event("b"), event("a"), event("c"), event("b")];
        let stored = insert_batch(&mut conn, &mixed).await.expect("insert");
        assert_eq!(
            stored,
            vec![
                Stored::New,
                Stored::Duplicate,
                Stored::New,
                Stored::Duplicate
            ]
        );
        let all_old = insert_batch(&mut conn, &[event("c"), event("a")])
            .await
            .expect("insert");
        assert_eq!(all_old, vec![Stored::Duplicate, Stored::Duplicate]);
        assert_eq!(db.event_ids().await.expect("ids"), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_is_stored_whole() {
        let (_dir, db, mut conn) = temp_store().await;
        let events: Vec<NewEvent> = (0..ROWS_PER_STATEMENT * 2 + 7)
            .map(|i| event(&format!("e{i}")))
            .collect();
        let stored = insert_batch(&mut conn, &events).await.expect("insert");
        assert!(stored.iter().all(|s| *s == Stored::New));
        assert_eq!(db.event_ids().await.expect("ids").len(), events.len());
    }
}
