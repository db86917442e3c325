//! The portal's own tables, written once for both backends: sign-in sessions, the audit
//! trail and per-minute queue samples.

use std::collections::{BTreeMap, HashMap};

use super::{
    records::{sparklines, AuditRecord, SPARKLINE_MINUTES},
    Db, Statements,
};
use crate::model::AuditEntry;

/// The portal's statements.
pub(crate) trait PortalSql {
    async fn load_session(&mut self, id: &str, now: i64) -> sqlx::Result<Option<(String, i64)>>;
    async fn save_session(
        &mut self,
        id: &str,
        data: &str,
        expires_at: i64,
        only_new: bool,
    ) -> sqlx::Result<bool>;
    async fn delete_session(&mut self, id: &str) -> sqlx::Result<()>;
    async fn prune_sessions(&mut self, now: i64) -> sqlx::Result<u64>;
    /// (id, data) of every session still valid at `now`.
    async fn list_sessions(&mut self, now: i64) -> sqlx::Result<Vec<(String, String)>>;
    async fn prune_audit(&mut self, before: i64) -> sqlx::Result<u64>;
    async fn record_audit(&mut self, record: &AuditRecord<'_>) -> sqlx::Result<()>;
    async fn list_audit(&mut self, before: i64, limit: i64) -> sqlx::Result<Vec<AuditEntry>>;
    /// Stores each queue's waiting count for `minute` (one row per queue), keeping the
    /// minute's peak.
    async fn merge_samples(
        &mut self,
        minute: i64,
        peaks: &BTreeMap<String, i64>,
    ) -> sqlx::Result<()>;
    async fn forget_samples_before(&mut self, minute: i64) -> sqlx::Result<()>;
    /// (queue, minute, waiting) of the samples in `[first, last]`.
    async fn samples_between(
        &mut self,
        first: i64,
        last: i64,
    ) -> sqlx::Result<Vec<(String, i64, i64)>>;
}

/// The [`PortalSql`] statements the same on both backends, for each backend's impl.
macro_rules! shared_portal_statements {
    () => {
        async fn load_session(
            &mut self,
            id: &str,
            now: i64,
        ) -> sqlx::Result<Option<(String, i64)>> {
            sqlx::query_as(
                "SELECT data, expires_at FROM sessions WHERE id = $1 AND expires_at > $2",
            )
            .bind(<Self as $crate::server::store::Dialect>::text(id))
            .bind(now)
            .fetch_optional(self)
            .await
        }

        async fn save_session(
            &mut self,
            id: &str,
            data: &str,
            expires_at: i64,
            only_new: bool,
        ) -> sqlx::Result<bool> {
            use $crate::server::store::Dialect;
            let sql = if only_new {
                "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING"
            } else {
                "INSERT INTO sessions (id, data, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE
                    SET data = excluded.data, expires_at = excluded.expires_at"
            };
            let written = sqlx::query(sql)
                .bind(<Self as Dialect>::text(id))
                .bind(<Self as Dialect>::text(data))
                .bind(expires_at)
                .execute(self)
                .await?
                .rows_affected();
            Ok(written > 0)
        }

        async fn delete_session(&mut self, id: &str) -> sqlx::Result<()> {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(<Self as $crate::server::store::Dialect>::text(id))
                .execute(self)
                .await?;
            Ok(())
        }

        async fn prune_sessions(&mut self, now: i64) -> sqlx::Result<u64> {
            Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(self)
                .await?
                .rows_affected())
        }

        async fn list_sessions(&mut self, now: i64) -> sqlx::Result<Vec<(String, String)>> {
            sqlx::query_as("SELECT id, data FROM sessions WHERE expires_at > $1 ORDER BY id")
                .bind(now)
                .fetch_all(self)
                .await
        }

        async fn prune_audit(&mut self, before: i64) -> sqlx::Result<u64> {
            Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1")
                .bind(before)
                .execute(self)
                .await?
                .rows_affected())
        }

        async fn record_audit(
            &mut self,
            record: &$crate::server::store::records::AuditRecord<'_>,
        ) -> sqlx::Result<()> {
            use $crate::server::store::Dialect;
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, count, detail)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(record.at)
            .bind(<Self as Dialect>::text(record.actor))
            .bind(<Self as Dialect>::text(record.action))
            .bind(record.count)
            .bind(<Self as Dialect>::text(&record.detail.to_string()).into_owned())
            .execute(self)
            .await?;
            Ok(())
        }

        async fn list_audit(
            &mut self,
            before: i64,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::model::AuditEntry>> {
            let rows: Vec<(i64, i64, String, String, Option<i64>, String)> = sqlx::query_as(
                "SELECT id, at, actor, action, count, detail FROM audit_log
                  WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(self)
            .await?;
            Ok(rows
                .into_iter()
                .map(
                    |(id, at, actor, action, count, detail)| $crate::model::AuditEntry {
                        id,
                        at,
                        actor,
                        action,
                        count,
                        detail,
                        zone: Default::default(),
                    },
                )
                .collect())
        }

        async fn forget_samples_before(&mut self, minute: i64) -> sqlx::Result<()> {
            sqlx::query("DELETE FROM queue_samples WHERE minute < $1")
                .bind(minute)
                .execute(self)
                .await?;
            Ok(())
        }

        async fn samples_between(
            &mut self,
            first: i64,
            last: i64,
        ) -> sqlx::Result<Vec<(String, i64, i64)>> {
            sqlx::query_as(
                "SELECT queue_id, minute, waiting FROM queue_samples
                  WHERE minute BETWEEN $1 AND $2",
            )
            .bind(first)
            .bind(last)
            .fetch_all(self)
            .await
        }
    };
}
pub(crate) use shared_portal_statements;

/// See [`Db::record_samples`].
async fn record_samples(
    tx: &mut impl Statements,
    minute: i64,
    waiting: &[(String, i64)],
) -> sqlx::Result<()> {
    // One row per queue, in key order (see `stats`): every replica samples, and the peak
    // makes that harmless.
    let mut peaks: BTreeMap<String, i64> = BTreeMap::new();
    for (queue, n) in waiting {
        let peak = peaks.entry(queue.clone()).or_insert(*n);
        *peak = (*peak).max(*n);
    }
    if !peaks.is_empty() {
        tx.merge_samples(minute, &peaks).await?;
    }
    tx.forget_samples_before(minute - 2 * SPARKLINE_MINUTES)
        .await
}

impl Db {
    /// A stored session's data (JSON) and expiry (epoch ms) unless it expired before `now`.
    pub async fn load_session(&self, id: &str, now: i64) -> sqlx::Result<Option<(String, i64)>> {
        read_conn!(self, |conn| conn.load_session(id, now).await)
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
        write_tx!(self, |tx| {
            tx.save_session(id, data, expires_at, only_new).await
        })
    }

    pub async fn delete_session(&self, id: &str) -> sqlx::Result<()> {
        write_tx!(self, |tx| tx.delete_session(id).await)
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn prune_sessions(&self, now: i64) -> sqlx::Result<u64> {
        write_tx!(self, |tx| tx.prune_sessions(now).await)
    }

    /// (id, data) of every session still valid at `now`, for `gc-status sessions`.
    pub async fn list_sessions(&self, now: i64) -> sqlx::Result<Vec<(String, String)>> {
        read_conn!(self, |conn| conn.list_sessions(now).await)
    }

    /// Deletes audit entries older than `before` (the audit retention).
    pub async fn prune_audit(&self, before: i64) -> sqlx::Result<u64> {
        write_tx!(self, |tx| tx.prune_audit(before).await)
    }

    /// Appends one entry to the audit trail.
    pub async fn record_audit(&self, record: &AuditRecord<'_>) -> sqlx::Result<()> {
        write_tx!(self, |tx| tx.record_audit(record).await)
    }

    /// Audit entries newest first, before entry `before` (exclusive) when given.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> sqlx::Result<Vec<AuditEntry>> {
        let before = before.unwrap_or(i64::MAX);
        read_conn!(self, |conn| conn.list_audit(before, limit).await)
    }

    /// Records each queue's waiting count for `minute` (epoch minutes), keeping the minute's
    /// peak, and forgets samples older than two sparklines.
    pub async fn record_samples(&self, minute: i64, waiting: &[(String, i64)]) -> sqlx::Result<()> {
        write_tx!(self, |tx| record_samples(tx, minute, waiting).await)
    }

    /// The last [`SPARKLINE_MINUTES`] minutes up to `minute` per queue, oldest first; `None`
    /// where no sample was taken (gc-status was not running).
    pub async fn samples(&self, minute: i64) -> sqlx::Result<HashMap<String, Vec<Option<i64>>>> {
        let first = minute - SPARKLINE_MINUTES + 1;
        let rows = read_conn!(self, |conn| conn.samples_between(first, minute).await)?;
        Ok(sparklines(first, rows))
    }
}
