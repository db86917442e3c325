//! The writer's statements on SQLite: multi-row `INSERT … ON CONFLICT DO NOTHING`.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqliteConnection};

use crate::server::store::writer::{first_due, insert_batch, BatchRows, NewEvent, Receipt};

/// Rows per INSERT statement: 5 parameters each, well under SQLite's 32,766 limit.
const ROWS_PER_STATEMENT: usize = 256;

/// Stores `events` in one transaction (one fsync, see `writer`).
pub async fn commit_batch(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> sqlx::Result<Vec<Receipt>> {
    let mut tx = conn.begin().await?;
    let receipts = insert_batch(&mut *tx, events).await?;
    tx.commit().await?;
    Ok(receipts)
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
