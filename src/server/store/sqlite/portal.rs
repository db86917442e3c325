//! The portal's own tables: sign-in sessions, the audit trail and per-minute queue samples.

use std::collections::HashMap;

use sqlx::Row as _;

use super::SqliteDb;
use crate::{
    model::AuditEntry,
    server::store::records::{sparklines, AuditRecord, SPARKLINE_MINUTES},
};

impl SqliteDb {
    /// A stored session's data (JSON) unless it expired before `now` (epoch ms).
    /// Returns the data and its expiry (epoch ms).
    pub async fn load_session(&self, id: &str, now: i64) -> sqlx::Result<Option<(String, i64)>> {
        sqlx::query_as("SELECT data, expires_at FROM sessions WHERE id = ? AND expires_at > ?")
            .bind(id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
    }

    /// Stores a session, or replaces it; `only_new` refuses to overwrite an existing id.
    /// Returns whether the row was written.
    pub async fn save_session(
        &self,
        id: &str,
        data: &str,
        expires_at: i64,
        only_new: bool,
    ) -> sqlx::Result<bool> {
        let sql = if only_new {
            "INSERT INTO sessions (id, data, expires_at) VALUES (?, ?, ?)
             ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO sessions (id, data, expires_at) VALUES (?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"
        };
        let mut w = self.writing().await?;
        let written = sqlx::query(sql)
            .bind(id)
            .bind(data)
            .bind(expires_at)
            .execute(&mut *w)
            .await?
            .rows_affected();
        Ok(written > 0)
    }

    pub async fn delete_session(&self, id: &str) -> sqlx::Result<()> {
        let mut w = self.writing().await?;
        sqlx::query("DELETE FROM sessions WHERE id = ?")
            .bind(id)
            .execute(&mut *w)
            .await?;
        Ok(())
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn prune_sessions(&self, now: i64) -> sqlx::Result<u64> {
        let mut w = self.writing().await?;
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *w)
            .await?
            .rows_affected())
    }

    /// Appends one entry to the audit trail.
    pub async fn record_audit(&self, record: &AuditRecord<'_>) -> sqlx::Result<()> {
        let mut w = self.writing().await?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, count, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(record.at)
        .bind(record.actor)
        .bind(record.action)
        .bind(record.count)
        .bind(record.detail.to_string())
        .execute(&mut *w)
        .await?;
        Ok(())
    }

    /// Audit entries newest first, before entry `before` (exclusive) when given.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> sqlx::Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, count, detail FROM audit_log
              WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    count: r.try_get("count")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Records each queue's waiting count for `minute` (epoch minutes), keeping the minute's
    /// peak, and forgets samples older than two sparklines.
    pub async fn record_samples(&self, minute: i64, waiting: &[(String, i64)]) -> sqlx::Result<()> {
        let mut w = self.writing().await?;
        let mut tx = sqlx::Connection::begin(&mut *w).await?;
        sqlx::query(
            "INSERT INTO queue_samples (queue_id, minute, waiting)
             SELECT j.value ->> 0, ?1, j.value ->> 1 FROM json_each(?2) j WHERE true
             ON CONFLICT (queue_id, minute) DO UPDATE
                SET waiting = max(waiting, excluded.waiting)",
        )
        .bind(minute)
        .bind(serde_json::json!(waiting).to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM queue_samples WHERE minute < ?")
            .bind(minute - 2 * SPARKLINE_MINUTES)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The last [`SPARKLINE_MINUTES`] minutes up to `minute` per queue, oldest first; `None`
    /// where no sample was taken (gc-status was not running).
    pub async fn samples(&self, minute: i64) -> sqlx::Result<HashMap<String, Vec<Option<i64>>>> {
        let first = minute - SPARKLINE_MINUTES + 1;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT queue_id, minute, waiting FROM queue_samples WHERE minute BETWEEN ? AND ?",
        )
        .bind(first)
        .bind(minute)
        .fetch_all(&self.pool)
        .await?;
        Ok(sparklines(first, rows))
    }
}
