//! All SQL lives here: opening the database, the group-commit writer and the read queries.
//!
//! Handlers talk to [`Db`] and [`writer::IngestWriter`] only, so another backend (PostgreSQL
//! for several instances sharing one queue) can be added without touching them.

pub mod events;
pub mod stats;
pub mod work;
pub mod writer;

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context as _;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions as _, SqliteConnection, SqlitePool,
};

/// Migrations embedded in the binary; applied on start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Read access to the database (a small pool; all ingest writes go through the writer).
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
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
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await
        .with_context(|| format!("cannot open the database {}", file.display()))?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply database migrations")?;
    let writer = options
        .connect()
        .await
        .with_context(|| format!("cannot open the database {} for writing", file.display()))?;
    Ok((Db { pool }, writer))
}

impl Db {
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
