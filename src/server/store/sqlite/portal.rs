//! The portal's statements on SQLite.

use std::collections::BTreeMap;

use sqlx::SqliteConnection;

use crate::server::store::portal::{shared_portal_statements, PortalSql};

impl PortalSql for SqliteConnection {
    async fn merge_samples(
        &mut self,
        minute: i64,
        peaks: &BTreeMap<String, i64>,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO queue_samples (queue_id, minute, waiting)
             SELECT key, ?1, value FROM json_each(?2) WHERE true
             ON CONFLICT (queue_id, minute) DO UPDATE
                SET waiting = max(waiting, excluded.waiting)",
        )
        .bind(minute)
        .bind(serde_json::json!(peaks).to_string())
        .execute(self)
        .await?;
        Ok(())
    }

    shared_portal_statements!();
}
