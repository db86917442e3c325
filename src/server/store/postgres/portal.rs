//! The portal's statements on PostgreSQL, and the replicas' shared rates (only PostgreSQL has
//! several processes to sum).

use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::{pg_text, PgDb};
use crate::server::store::portal::{shared_portal_statements, PortalSql};

impl PortalSql for PgConnection {
    async fn merge_samples(
        &mut self,
        minute: i64,
        peaks: &BTreeMap<String, i64>,
    ) -> sqlx::Result<()> {
        let (queues, counts): (Vec<String>, Vec<i64>) = peaks
            .iter()
            .map(|(queue, n)| (pg_text(queue).into_owned(), *n))
            .unzip();
        sqlx::query(
            "INSERT INTO queue_samples AS s (queue_id, minute, waiting)
             SELECT q, $1, w FROM UNNEST($2::text[], $3::int8[]) AS x(q, w)
             ON CONFLICT (queue_id, minute) DO UPDATE
                SET waiting = GREATEST(s.waiting, excluded.waiting)",
        )
        .bind(minute)
        .bind(&queues)
        .bind(&counts)
        .execute(self)
        .await?;
        Ok(())
    }

    shared_portal_statements!();
}

impl PgDb {
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
