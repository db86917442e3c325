//! Read queries on the `events` table.

use super::{SqliteDb, MIGRATOR};

impl SqliteDb {
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
