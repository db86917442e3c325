//! The PostgreSQL backend: several gc-status replicas share one database and one queue.
//!
//! Claims take rows with `FOR UPDATE SKIP LOCKED`, so replicas never wait for each other's
//! work; every statistics merge is one `INSERT … ON CONFLICT DO UPDATE` with `LEAST`/`GREATEST`,
//! atomic under concurrency; migrations run under sqlx's advisory lock, so replicas starting
//! together apply them once. After a commit that leaves work for the workers, the writer sends
//! one throttled `NOTIFY` that wakes the other replicas' workers (polling stays the fallback).

mod dead_letters;
mod deliveries;
mod ingest;
mod portal;
mod stats;
mod work;

use std::{borrow::Cow, str::FromStr, sync::Arc};

use anyhow::Context as _;
use sqlx::{
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
    ConnectOptions as _, Executor as _, PgPool,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(super) use self::ingest::PgWriter;
use super::{redact_url, OpenOptions};

/// Migrations embedded in the binary; applied on start-up under an advisory lock.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The channel a replica's writer notifies after committing work for the workers.
pub const WORK_CHANNEL: &str = "gc_status_work";

/// The database: this process's pool for reads and for work-queue, statistics and admin
/// writes (the ingest writer has a connection of its own, see [`open`]).
#[derive(Clone, Debug)]
pub struct PgDb {
    pool: PgPool,
    /// Whether events marked done are also queued for the sink (see `deliveries`).
    forwarding: bool,
}

/// Opens the database, applies migrations, and returns it with the ingest writer.
pub(super) async fn open(
    database_url: &str,
    options: &OpenOptions,
) -> anyhow::Result<(PgDb, PgWriter)> {
    let connect = PgConnectOptions::from_str(database_url)
        .with_context(|| {
            format!(
                "GC_STATUS_DATABASE_URL `{}` is not a PostgreSQL URL \
                 (e.g. postgres://gc_status:password@db.internal/gc_status)",
                redact_url(database_url)
            )
        })?
        .application_name("gc-status")
        // Statements are logged by the server when needed; at debug level sqlx would log
        // every claim and insert.
        .disable_statement_logging();
    let unreachable = || {
        format!(
            "cannot connect to PostgreSQL at {} (is the server running, and may this user \
             connect to this database?)",
            redact_url(database_url)
        )
    };
    // The ingest writer's own connection commits as durably as the server is configured to
    // (`synchronous_commit`, normally on): a webhook is acknowledged only after that.
    let writer_pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(options.busy_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // A statement stuck behind a lock fails (503, retried) instead of hanging.
                conn.execute("SET lock_timeout = '5s'").await?;
                Ok(())
            })
        })
        .connect_with(connect.clone())
        .await
        .with_context(unreachable)?;
    MIGRATOR
        .run(&writer_pool)
        .await
        .context("cannot apply database migrations")?;
    // Everything else (worker progress, statistics, admin actions) commits without waiting
    // for the WAL flush, as the SQLite backend's pool skips the fsync: losing the last few
    // milliseconds of it to a server crash only means an event is processed again, which the
    // lease and the idempotent merges absorb. It halves the flushes under load.
    let pool = PgPoolOptions::new()
        .max_connections(options.pool_size.saturating_sub(1).max(2))
        .acquire_timeout(options.busy_timeout)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET lock_timeout = '5s'").await?;
                conn.execute("SET synchronous_commit = off").await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await
        .with_context(unreachable)?;
    let db = PgDb {
        pool,
        forwarding: false,
    };
    Ok((db, PgWriter::new(writer_pool)))
}

/// Why a PostgreSQL error means "try again later" (see [`super::retry_reason`]), by SQLSTATE.
pub(super) fn retry_reason(e: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
    let code = e.code()?;
    match &code[..] {
        // serialization failure, deadlock, lock timeout, query canceled
        "40001" | "40P01" | "55P03" | "57014" => Some("the database is busy"),
        "53100" => Some("the database server's disk is full"),
        "53200" | "53300" => Some("the database server is out of memory or connections"),
        "25006" => Some("the database is read-only (a standby?)"),
        c if c.starts_with("08") || c.starts_with("57P") => {
            Some("the database server cannot be reached")
        }
        _ => None,
    }
}

/// Text as PostgreSQL stores it: `text` cannot hold NUL, which a JSON string may carry
/// (`\u0000`), so it becomes U+FFFD instead of failing the statement (and its batch).
pub(crate) fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// JSON for a `jsonb` parameter: `jsonb` refuses the `\u0000` escape, so it becomes U+FFFD.
pub(crate) fn pg_json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.contains("\\u0000") {
        text.replace("\\u0000", "\\ufffd")
    } else {
        text
    }
}

impl PgDb {
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This handle, queueing every event it marks done for the sink from now on (or not).
    pub fn with_forwarding(mut self, forwarding: bool) -> Self {
        self.forwarding = forwarding;
        self
    }

    pub(super) fn forwarding(&self) -> bool {
        self.forwarding
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Wakes `work` whenever another replica's writer commits events for the workers, until
    /// `stop`. Losing the connection only delays wake-ups: the workers poll anyway.
    pub async fn listen_for_work(&self, work: Arc<Notify>, stop: CancellationToken) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(WORK_CHANNEL).await?;
                loop {
                    listener.recv().await?;
                    work.notify_one();
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                result = listener => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "listening for other replicas' work failed; polling meanwhile");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Creates a new, empty database on the server `server_url` names and returns its URL (for
/// tests and benchmarks: one database per test, on a throwaway cluster).
pub async fn create_test_database(server_url: &str) -> anyhow::Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "gc_status_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let options = PgConnectOptions::from_str(server_url)?;
    let mut conn = options.connect().await.with_context(|| {
        format!(
            "cannot connect to the test PostgreSQL server {}",
            redact_url(server_url)
        )
    })?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    Ok(with_database(server_url, &name))
}

/// `url` naming the database `name` instead (query parameters, such as `host`, kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}
