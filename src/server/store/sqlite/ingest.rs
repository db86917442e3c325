//! The writer's connection and statements on SQLite: multi-row `INSERT … ON CONFLICT DO
//! NOTHING`.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::{Connection as _, Executor as _, QueryBuilder, Sqlite, SqliteConnection};

use crate::server::store::{
    records::InlineApplied,
    writer::{
        apply_held, first_due, insert_batch, Apply, BatchRows, InlineBatch, NewEvent, Receipt,
    },
};

/// Rows per INSERT statement: 5 parameters each, well under SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 256;

/// The ingest writer's connection.
///
/// Its commits of webhooks are durable (`synchronous=FULL`, set when it was opened): each
/// ends with the fsync that lets the webhook be acknowledged. Its rounds of inline verdicts
/// are not acknowledged to anyone, so they commit without that fsync (`NORMAL`, still atomic
/// in WAL): measured with random ids and real-size bodies, the fsync and the page writes it
/// waits for were two thirds of a round's time (a 128-verdict round 8.7 ms with it, 3.8 ms
/// without). A power cut can take the last round away whole, never part of it, and never a
/// webhook: the next ingest commit's fsync covers the round's pages too, and until then the
/// round's events are still pending in the durable state, so the workers process them
/// (the statistics' merges are idempotent).
///
/// Every statement is a round trip to the connection's thread, and under load each cost
/// about a quarter of a millisecond of the writer's serial cycle (measured: `BEGIN` alone
/// took 0.27 ms of a 1.9 ms commit), so the writer spends as few as it can: a batch that
/// fits one `INSERT` is that statement alone, committed by itself; a round sets `NORMAL` in
/// the statement that begins it, and the next webhook commit sets `FULL` back.
pub struct SqliteWriter {
    conn: SqliteConnection,
    /// Whether the connection commits without an fsync (after a round of verdicts): no
    /// webhook is committed until it is set back.
    relaxed: bool,
}

impl SqliteWriter {
    pub(in crate::server::store) fn new(conn: SqliteConnection) -> Self {
        SqliteWriter {
            conn,
            relaxed: false,
        }
    }

    /// Stores `events` durably (one fsync for the batch, see `writer`).
    ///
    /// A batch that fits one statement is inserted without `BEGIN`/`COMMIT`: the statement is
    /// its own transaction. Should the batch need more (an id taken by another body, see
    /// [`insert_batch`]), each further statement commits by itself as well; nobody is
    /// answered before all have, and a sender answered 503 after a partial batch redelivers,
    /// which stores the rest and finds the others stored.
    pub(crate) async fn commit_batch(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Receipt>> {
        if self.relaxed {
            self.conn.execute("PRAGMA synchronous = FULL").await?;
            self.relaxed = false;
        }
        if events.len() <= ROWS_PER_STATEMENT {
            return insert_batch(&mut self.conn, events).await;
        }
        let mut tx = self.conn.begin().await?;
        let receipts = insert_batch(&mut *tx, events).await?;
        tx.commit().await?;
        Ok(receipts)
    }

    /// Applies a round of inline verdicts in one transaction committed without an fsync
    /// (see the type's doc).
    pub(crate) async fn apply_verdicts(
        &mut self,
        verdicts: &InlineBatch,
        apply: Apply,
    ) -> sqlx::Result<InlineApplied> {
        self.relaxed = true;
        // One round trip to the database's thread for both.
        let mut tx = self
            .conn
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN")
            .await?;
        let applied = apply_held(&mut *tx, verdicts, apply).await?;
        tx.commit().await?;
        Ok(applied)
    }

    pub(crate) async fn close(self) -> sqlx::Result<()> {
        self.conn.close().await
    }
}

impl BatchRows for SqliteConnection {
    async fn insert_rows(
        &mut self,
        events: &[NewEvent],
        ids: &[String],
        which: &[usize],
    ) -> sqlx::Result<Vec<bool>> {
        let mut new = vec![false; which.len()];
        for (chunk_no, chunk) in which.chunks(ROWS_PER_STATEMENT).enumerate() {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (id, event_type, payload, received_at, next_attempt_at) ",
            );
            insert.push_values(chunk, |mut row, &i| {
                let e = &events[i];
                row.push_bind(ids[i].as_str())
                    .push_bind(e.event_type.as_str())
                    .push_bind(&e.payload[..])
                    .push_bind(e.received_at)
                    .push_bind(first_due(e));
            });
            insert.push(" ON CONFLICT (id) DO NOTHING");
            let done = insert
                .build()
                .persistent(chunk.len() == ROWS_PER_STATEMENT)
                .execute(&mut *self)
                .await?;
            let inserted = done.rows_affected() as usize;
            let offset = chunk_no * ROWS_PER_STATEMENT;
            if inserted == chunk.len() {
                new[offset..offset + chunk.len()].fill(true);
            } else if inserted > 0 {
                // Some were already stored. New rows got consecutive `seq`s ending at the last
                // insert rowid (`seq` is the rowid, assigned as max + 1), so read exactly those.
                let first_new_seq = done.last_insert_rowid() - inserted as i64 + 1;
                let new_ids: HashSet<String> =
                    sqlx::query_scalar("SELECT id FROM events WHERE seq >= ?")
                        .bind(first_new_seq)
                        .fetch_all(&mut *self)
                        .await?
                        .into_iter()
                        .collect();
                for (k, &i) in chunk.iter().enumerate() {
                    new[offset + k] = new_ids.contains(&ids[i]);
                }
            }
        }
        Ok(new)
    }

    async fn stored_bodies(&mut self, ids: &[&str]) -> sqlx::Result<HashMap<String, Vec<u8>>> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, payload FROM events WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(json!(ids).to_string())
        .fetch_all(&mut *self)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::domain::{Effect, ProcessError};

    async fn writer() -> (tempfile::TempDir, SqliteWriter) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let (_db, conn) = super::super::open_with(
            &url,
            std::time::Duration::from_secs(5),
            None,
            Default::default(),
        )
        .await
        .expect("open");
        (dir, SqliteWriter::new(conn))
    }

    /// 2 is `FULL`: each commit ends with an fsync.
    async fn synchronous(writer: &mut SqliteWriter) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut writer.conn)
            .await
            .expect("pragma")
    }

    fn event(id: &str) -> NewEvent {
        NewEvent {
            processed: Some(Err(ProcessError::Permanent("unknown type".into()))),
            ..crate::server::store::writer::tests::event(id)
        }
    }

    #[tokio::test]
    async fn webhooks_are_committed_with_an_fsync_after_a_round_of_verdicts_without_one() {
        let (_dir, mut writer) = writer().await;
        assert_eq!(synchronous(&mut writer).await, 2);
        writer.commit_batch(&[event("a")]).await.expect("commit");
        let verdicts: InlineBatch = vec![
            ("a".to_owned(), Ok(Effect::Ignored)),
            ("b".to_owned(), Err(ProcessError::Permanent("bad".into()))),
        ];
        let apply = Apply {
            now: 2,
            retry_at: 3,
            forwarding: false,
        };
        let applied = writer
            .apply_verdicts(&verdicts, apply)
            .await
            .expect("apply");
        assert_eq!(applied.done, 1);
        assert_eq!(
            synchronous(&mut writer).await,
            1,
            "a round commits without an fsync"
        );
        let stored = writer.commit_batch(&[event("c")]).await.expect("commit");
        assert_eq!(stored.len(), 1);
        assert_eq!(
            synchronous(&mut writer).await,
            2,
            "webhooks are committed with one"
        );

        // A round that failed half-way leaves the connection relaxed too, and a batch larger
        // than one statement (its own transaction) is committed with an fsync as well.
        let mut failing = writer
            .conn
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN")
            .await
            .expect("begin");
        assert!(sqlx::query("SELECT no_such_column FROM events")
            .execute(&mut *failing)
            .await
            .is_err());
        drop(failing);
        writer.relaxed = true;
        let large: Vec<NewEvent> = (0..=ROWS_PER_STATEMENT)
            .map(|i| event(&format!("e{i}")))
            .collect();
        let stored = writer.commit_batch(&large).await.expect("commit");
        assert_eq!(stored.len(), large.len());
        assert_eq!(synchronous(&mut writer).await, 2);
        assert!(!writer.relaxed);
    }
}
