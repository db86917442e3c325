//! All SQL lives here: opening the database, the group-commit writer and the read queries.
//!
//! Handlers talk to [`Db`] and [`writer::IngestWriter`] only, so another backend (PostgreSQL
//! for several instances sharing one queue) can be added without touching them.

pub mod events;
pub mod stats;
pub mod work;
pub mod writer;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions as _, SqliteConnection, SqlitePool,
};

/// Migrations embedded in the binary; applied on start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The database: a small pool for reads and for work-queue, admin and statistics writes
/// (ingest inserts go through the dedicated writer connection).
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
    write_gate: WriteGate,
}

/// Serialises this process's write transactions before they reach SQLite.
///
/// SQLite allows one writer at a time and makes the others wait in its busy handler, which
/// sleeps in steps of up to 100 ms and is not woken when the lock frees: one worker
/// transaction could stall every webhook behind it for tens of milliseconds. Taking this fair
/// async lock first means SQLite never sees contention from inside the process, and a webhook
/// waits at most for the one transaction ahead of it. (Other processes, such as the CLI, still
/// meet the busy timeout.)
#[derive(Clone, Debug, Default)]
pub struct WriteGate(Arc<tokio::sync::Mutex<()>>);

impl WriteGate {
    pub async fn enter(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// Connection settings shared by the pool and the writer.
///
/// WAL lets readers run beside the single writer; `synchronous=FULL` makes a commit durable
/// across power loss, which is what "acknowledged" promises.
fn connect_options(
    database_url: &str,
    busy_timeout: Duration,
) -> anyhow::Result<SqliteConnectOptions> {
    let options = SqliteConnectOptions::from_str(database_url)
        .with_context(|| format!("GC_STATUS_DATABASE_URL `{database_url}` is not a SQLite URL (e.g. sqlite://data/gc-status.db)"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout);
    Ok(options)
}

/// Opens (creating if needed) the database, applies migrations and returns the read pool and
/// a dedicated connection for the writer.
pub async fn open(
    database_url: &str,
    busy_timeout: Duration,
) -> anyhow::Result<(Db, SqliteConnection)> {
    let options = connect_options(database_url, busy_timeout)?;
    let file = options.get_filename();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() && file != Path::new(":memory:") {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the database directory {}", dir.display())
            })?;
        }
    }
    // Pool writes are worker progress and admin actions: losing the last of them to a power
    // cut only means an event is processed again, which the idempotent statistics absorb. So
    // they skip the fsync (`NORMAL`, still atomic in WAL); ingest commits stay `FULL`.
    // No connection checkpoints on commit (that would run inside the write gate); the
    // maintenance task checkpoints instead (`Db::checkpoint`).
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(
            options
                .clone()
                .synchronous(SqliteSynchronous::Normal)
                .pragma("wal_autocheckpoint", "0"),
        )
        .await
        .with_context(|| format!("cannot open the database {}", file.display()))?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply database migrations")?;
    let writer = options
        .clone()
        .pragma("wal_autocheckpoint", "0")
        .connect()
        .await
        .with_context(|| format!("cannot open the database {} for writing", file.display()))?;
    let db = Db {
        pool,
        write_gate: WriteGate::default(),
    };
    Ok((db, writer))
}

impl Db {
    pub fn write_gate(&self) -> WriteGate {
        self.write_gate.clone()
    }

    /// Copies the WAL back into the database file without blocking writers (PASSIVE), so
    /// the WAL stays small. Runs outside the write gate, off the ingest path.
    pub async fn checkpoint(&self) -> sqlx::Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
