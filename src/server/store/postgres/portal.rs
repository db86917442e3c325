//! The portal's own tables on PostgreSQL: sign-in sessions, the audit trail, queue samples.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row as _;

use super::{pg_text, PgDb};
use crate::{
    model::AuditEntry,
    server::store::records::{sparklines, AuditRecord, SPARKLINE_MINUTES},
};

impl PgDb {
    /// A stored session's data (JSON) and expiry unless it expired before `now`.
    pub async fn load_session(&self, id: &str, now: i64) -> sqlx::Result<Option<(String, i64)>> {
        sqlx::query_as("SELECT data, expires_at FROM sessions WHERE id = $1 AND expires_at > $2")
            .bind(pg_text(id))
            .bind(now)
            .fetch_optional(&self.pool)
            .await
    }

    /// Stores a session, or replaces it; `only_new` refuses to overwrite an existing id.
    pub async fn save_session(
        &self,
        id: &str,
        data: &str,
        expires_at: i64,
        only_new: bool,
    ) -> sqlx::Result<bool> {
        let sql = if only_new {
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING"
        } else {
            "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"
        };
        let written = sqlx::query(sql)
            .bind(pg_text(id))
            .bind(pg_text(data))
            .bind(expires_at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(written > 0)
    }

    pub async fn delete_session(&self, id: &str) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(pg_text(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn prune_sessions(&self, now: i64) -> sqlx::Result<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Appends one entry to the audit trail.
    pub async fn record_audit(&self, record: &AuditRecord<'_>) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, count, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(record.at)
        .bind(pg_text(record.actor))
        .bind(pg_text(record.action))
        .bind(record.count)
        .bind(pg_text(&record.detail.to_string()))
        .execute(&self.pool)
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
              WHERE id < $1 ORDER BY id DESC LIMIT $2",
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

    /// Records each queue's waiting count for `minute`, keeping the minute's peak (every
    /// replica samples; the peak makes that harmless), and forgets samples older than two
    /// sparklines.
    pub async fn record_samples(&self, minute: i64, waiting: &[(String, i64)]) -> sqlx::Result<()> {
        // One row per queue, in key order (see `stats`).
        let mut peaks: BTreeMap<String, i64> = BTreeMap::new();
        for (queue, n) in waiting {
            let peak = peaks.entry(pg_text(queue).into_owned()).or_insert(*n);
            *peak = (*peak).max(*n);
        }
        let (queues, counts): (Vec<String>, Vec<i64>) = peaks.into_iter().unzip();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO queue_samples AS s (queue_id, minute, waiting)
             SELECT q, $1, w FROM UNNEST($2::text[], $3::int8[]) AS x(q, w)
             ON CONFLICT (queue_id, minute) DO UPDATE
                SET waiting = GREATEST(s.waiting, excluded.waiting)",
        )
        .bind(minute)
        .bind(&queues)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM queue_samples WHERE minute < $1")
            .bind(minute - 2 * SPARKLINE_MINUTES)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The last sparkline's minutes up to `minute` per queue, oldest first.
    pub async fn samples(&self, minute: i64) -> sqlx::Result<HashMap<String, Vec<Option<i64>>>> {
        let first = minute - SPARKLINE_MINUTES + 1;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT queue_id, minute, waiting FROM queue_samples WHERE minute BETWEEN $1 AND $2",
        )
        .bind(first)
        .bind(minute)
        .fetch_all(&self.pool)
        .await?;
        Ok(sparklines(first, rows))
    }

    /// Publishes this replica's rates and returns the sums over every replica that published
    /// within the last minute (the rates' own window); forgets replicas gone for an hour.
    pub async fn shared_rates(
        &self,
        replica: &str,
        ingested: f64,
        processed: f64,
        now: i64,
    ) -> sqlx::Result<(f64, f64)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO replica_rates (replica, ingested, processed, published_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (replica) DO UPDATE SET ingested = excluded.ingested,
                 processed = excluded.processed, published_at = excluded.published_at",
        )
        .bind(replica)
        .bind(ingested)
        .bind(processed)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM replica_rates WHERE published_at < $1")
            .bind(now - 3_600_000)
            .execute(&mut *tx)
            .await?;
        let sums: (Option<f64>, Option<f64>) = sqlx::query_as(
            "SELECT SUM(ingested), SUM(processed) FROM replica_rates WHERE published_at >= $1",
        )
        .bind(now - 60_000)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((sums.0.unwrap_or(ingested), sums.1.unwrap_or(processed)))
    }
}
