//! Read queries on the `events` table, and the maintained totals.

use sqlx::PgConnection;

use super::{PgDb, MIGRATOR};
use crate::server::store::records::EventState;

impl PgDb {
    /// Ready means: the database answers and every embedded migration has been applied.
    pub async fn is_ready(&self) -> sqlx::Result<bool> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await?;
        Ok(applied >= MIGRATOR.migrations.len() as i64)
    }

    /// The stored payload of one event, byte for byte.
    pub async fn event_payload(&self, id: &str) -> sqlx::Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT payload FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Ids of all stored events in arrival order.
    pub async fn event_ids(&self) -> sqlx::Result<Vec<String>> {
        sqlx::query_scalar("SELECT id FROM events ORDER BY seq")
            .fetch_all(&self.pool)
            .await
    }

    /// One event's processing state.
    pub async fn event_state(&self, id: &str) -> sqlx::Result<Option<EventState>> {
        let row: Option<(String, i64, i64, String)> = sqlx::query_as(
            "SELECT status, attempts, next_attempt_at, errors::text FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(status, attempts, next_attempt_at, errors)| EventState {
                status,
                attempts,
                next_attempt_at,
                errors: serde_json::from_str(&errors).unwrap_or_default(),
            }),
        )
    }

    /// Recounts the maintained totals from the tables (part of `rebuild-stats`).
    pub async fn recount_totals(&self) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE event_totals SET n = CASE name
                 WHEN 'done' THEN (SELECT COUNT(*) FROM events WHERE status = 'done')
                 WHEN 'dead_events' THEN (SELECT COUNT(*) FROM events WHERE status = 'dead')
                 ELSE (SELECT COUNT(*) FROM dead_letters) END",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Adds to the maintained counts (`event_totals`) in the transaction that changed them.
///
/// Every completing transaction on every replica meets on these rows: one row at a time, in
/// the same order everywhere, so two transactions never wait for each other in opposite
/// orders (a deadlock); callers do this last, so the locks are held only for the commit.
pub(super) async fn add_totals(
    tx: &mut PgConnection,
    done: i64,
    dead_events: i64,
    dead_letters: i64,
) -> sqlx::Result<()> {
    // Alphabetical: the order every transaction takes the rows in.
    for (name, delta) in [
        ("dead_events", dead_events),
        ("dead_letters", dead_letters),
        ("done", done),
    ] {
        if delta != 0 {
            sqlx::query("UPDATE event_totals SET n = n + $2 WHERE name = $1")
                .bind(name)
                .bind(delta)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}
