//! Read queries on the `events` table.

use sqlx::Row as _;

use super::{Db, MIGRATOR};
use crate::model::EventCounts;

impl Db {
    /// How many events are in each status.
    pub async fn event_counts(&self) -> sqlx::Result<EventCounts> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM events GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = EventCounts::default();
        for row in rows {
            let n: i64 = row.try_get("n")?;
            match row.try_get::<&str, _>("status")? {
                "pending" => counts.pending = n,
                "processing" => counts.processing = n,
                "done" => counts.done = n,
                _ => {}
            }
            counts.total += n;
        }
        Ok(counts)
    }

    /// Ready means: the database answers and every embedded migration has been applied.
    pub async fn is_ready(&self) -> sqlx::Result<bool> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied >= MIGRATOR.migrations.len() as i64)
    }

    /// The stored payload of one event, byte for byte.
    pub async fn event_payload(&self, id: &str) -> sqlx::Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT payload FROM events WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Ids of all stored events (tests and the benchmark's loss check).
    pub async fn event_ids(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM events ORDER BY seq")
            .fetch_all(&self.pool)
            .await
    }
}
