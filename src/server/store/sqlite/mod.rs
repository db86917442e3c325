//! The embedded backend: one SQLite file in WAL mode, a small pool, one writer connection
//! and a write gate that keeps this process's writers from queueing inside SQLite.

mod dead_letters;
mod deliveries;
pub(super) mod ingest;
mod portal;
mod stats;
mod wal;
mod work;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::{
    pool::PoolConnection,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions as _, Sqlite, SqliteConnection, SqlitePool,
};
pub use wal::WalLimit;

/// Migrations embedded in the binary; applied on start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The database: a small pool for reads and for work-queue, admin and statistics writes
/// (ingest inserts go through the dedicated writer connection).
#[derive(Clone, Debug)]
pub struct SqliteDb {
    pool: SqlitePool,
    write_gate: WriteGate,
    /// Whether events marked done are also queued for the sink (see `deliveries`).
    forwarding: bool,
    /// The WAL's bound (see [`wal::WalKeeper`]).
    wal_limit: WalLimit,
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

/// A pooled connection inside the write gate. Taken in that order — connection first, then
/// the gate — so nobody holds the gate while waiting for a connection (readers would then
/// hold up every writer, webhooks included).
pub(crate) struct Writing<'a> {
    conn: PoolConnection<Sqlite>,
    _gate: tokio::sync::MutexGuard<'a, ()>,
}

impl std::ops::Deref for Writing<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

/// Connection settings shared by the pool and the writer.
///
/// WAL lets readers run beside the single writer; `synchronous=FULL` makes a commit durable
/// across power loss, which is what "acknowledged" promises.
fn connect_options(
    database_url: &str,
    busy_timeout: Duration,
    wal_limit: WalLimit,
) -> anyhow::Result<SqliteConnectOptions> {
    let options = SqliteConnectOptions::from_str(database_url)
        .with_context(|| format!("GC_STATUS_DATABASE_URL `{database_url}` is not a SQLite URL (e.g. sqlite://data/gc-status.db)"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        // A statement that changes many rows inside a transaction first copies each page it
        // touches to a statement journal (to undo that statement alone), and past 64 KiB
        // SQLite spills that journal to a temporary file: profiled under load, the writer
        // wrote as many pages there as into the WAL. Kept in memory, it costs a memcpy.
        .pragma("temp_store", "memory")
        // Reads of the first 64 MiB of the file go straight to the OS's page cache instead of
        // being copied into SQLite's own: with random ids every insert and every verdict
        // lands on a different B-tree page, and measured with such webhooks (`real-shipped`)
        // this made ingestion about a fifth faster. The mapped pages are the OS's cache,
        // shared and reclaimable, but they count in the process's RSS: 64 MiB keeps it near
        // 110 MiB under load.
        .pragma("mmap_size", "67108864")
        // When the WAL restarts (see `WalKeeper`), its file is cut back to this instead of
        // keeping its largest size for ever.
        .pragma(
            "journal_size_limit",
            wal_limit.kept_after_restart().to_string(),
        );
    Ok(options)
}

/// Why a SQLite error means "try again later" (see [`super::retry_reason`]).
pub(super) fn retry_reason(e: &dyn sqlx::error::DatabaseError) -> Option<&'static str> {
    // SQLite reports extended result codes; the primary code is the low byte.
    let code: i64 = e.code()?.parse().ok()?;
    match code & 0xff {
        5 | 6 => Some("the database is busy"),
        13 => Some("the disk (or GC_STATUS_MAX_DATABASE_MB) is full"),
        8 => Some("the database is read-only"),
        10 => Some("the database file cannot be read or written"),
        14 => Some("the database file cannot be opened"),
        _ => None,
    }
}

/// The database file a SQLite URL names (`None` for an in-memory database).
pub(super) fn database_file(database_url: &str) -> Option<std::path::PathBuf> {
    let options = SqliteConnectOptions::from_str(database_url).ok()?;
    let file = options.get_filename();
    (file != Path::new(":memory:")).then(|| file.to_path_buf())
}

/// Opens (creating if needed) the database, applies migrations and returns the read pool and
/// a dedicated connection for the writer; with the database limited to `max_bytes`
/// (`GC_STATUS_MAX_DATABASE_MB`): past it, writes fail as on a full disk (503, retried) instead
/// of filling the disk.
pub async fn open_with(
    database_url: &str,
    busy_timeout: Duration,
    max_bytes: Option<u64>,
    wal_limit: WalLimit,
) -> anyhow::Result<(SqliteDb, SqliteConnection)> {
    let mut options = connect_options(database_url, busy_timeout, wal_limit)?;
    if let Some(max_bytes) = max_bytes {
        // SQLite's default page size; the limit is in pages and per connection.
        options = options.pragma("max_page_count", (max_bytes / 4096).max(1).to_string());
    }
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
    // No connection checkpoints on commit (that would run inside the write gate, and a
    // PASSIVE one cannot restart the WAL under steady writes anyway): `WalKeeper` does.
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
    let db = SqliteDb {
        pool,
        write_gate: WriteGate::default(),
        forwarding: false,
        wal_limit,
    };
    Ok((db, writer))
}

impl SqliteDb {
    pub(in crate::server::store) fn pool(&self) -> &SqlitePool {
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

    pub fn write_gate(&self) -> WriteGate {
        self.write_gate.clone()
    }

    /// A connection for a write transaction, inside the write gate (see [`Writing`]).
    pub(crate) async fn writing(&self) -> sqlx::Result<Writing<'_>> {
        let conn = self.pool.acquire().await?;
        let gate = self.write_gate.enter().await;
        Ok(Writing { conn, _gate: gate })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
