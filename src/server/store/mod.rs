//! All SQL lives here, behind one [`Db`]: the embedded SQLite backend (one file, one process)
//! and the PostgreSQL backend (several replicas sharing one queue), each with its own SQL and
//! its own migrations. Handlers, workers, pages and the CLI never know which one runs.
//!
//! Every intent on an event's life is written once, in the modules below (`work`,
//! `dead_letters`, `deliveries`, `stats`, `portal`, `events`), generic over small statement
//! traits (`WorkSql`, `DeadLetterSql`, …) that each backend implements on its connection type
//! with its SQL text and binds, as [`writer`] does with `BatchRows`. Statements the same on
//! both are written once too: each module's `shared_*_statements!` macro expands them into both
//! backends' impls (sqlx's SQLite driver binds `$N` by position). What is truly one backend's
//! stays in its folder: SQLite's write gate, `BEGIN IMMEDIATE` and WAL keeper; PostgreSQL's
//! `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY` and shared rates.

use std::{borrow::Cow, time::Duration};

/// Runs `$body` with `$tx` bound to `&mut` the running backend's connection inside a write
/// transaction, and commits when the body returns `Ok` (an error drops, so rolls back, the
/// transaction). The body is compiled once per backend, so it calls the generic intent.
///
/// SQLite: a pooled connection, then the write gate (see [`WriteGate`]), then `BEGIN
/// IMMEDIATE`, which takes the write lock at once instead of upgrading a read lock halfway
/// (which could fail busy). PostgreSQL: a pool transaction.
macro_rules! write_tx {
    ($db:expr, |$tx:ident| $body:expr) => {
        async {
            match $db {
                $crate::server::store::Db::Sqlite(db) => {
                    let mut writing = db.writing().await?;
                    let mut tx =
                        sqlx::Connection::begin_with(&mut *writing, "BEGIN IMMEDIATE").await?;
                    let out = {
                        let $tx: &mut sqlx::SqliteConnection = &mut tx;
                        $body
                    };
                    if out.is_ok() {
                        tx.commit().await?;
                    }
                    out
                }
                $crate::server::store::Db::Postgres(db) => {
                    let mut tx = db.pool().begin().await?;
                    let out = {
                        let $tx: &mut sqlx::PgConnection = &mut tx;
                        $body
                    };
                    if out.is_ok() {
                        tx.commit().await?;
                    }
                    out
                }
            }
        }
        .await
    };
}

/// Runs `$body` with `$conn` bound to `&mut` a pooled connection of the running backend, for
/// reads (outside SQLite's write gate).
macro_rules! read_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        async {
            match $db {
                $crate::server::store::Db::Sqlite(db) => {
                    let mut pooled = db.pool().acquire().await?;
                    let $conn: &mut sqlx::SqliteConnection = &mut pooled;
                    $body
                }
                $crate::server::store::Db::Postgres(db) => {
                    let mut pooled = db.pool().acquire().await?;
                    let $conn: &mut sqlx::PgConnection = &mut pooled;
                    $body
                }
            }
        }
        .await
    };
}

pub mod copy;
mod dead_letters;
mod deliveries;
mod events;
mod figures;
mod portal;
mod postgres;
pub mod records;
mod sqlite;
mod stats;
mod work;
pub mod writer;

use self::writer::{NewEvent, Receipt};
use self::{
    dead_letters::DeadLetterSql, deliveries::DeliverySql, events::EventSql, portal::PortalSql,
    stats::StatsSql, work::WorkSql,
};
pub use self::{
    deliveries::DeliveryState,
    postgres::{create_test_database, PgDb},
    records::*,
    sqlite::{SqliteDb, WalLimit, WriteGate},
};

/// What the statements written once need to know of a backend.
pub(crate) trait Dialect {
    /// Text as the backend stores it: PostgreSQL's `text` cannot hold NUL, which a JSON
    /// string may carry (`\u0000`), so it becomes U+FFFD there instead of failing the
    /// statement (and its batch); SQLite stores any text.
    fn text(text: &str) -> Cow<'_, str>;
    /// A list of text bound as one parameter ...
    type Texts;
    fn texts(items: &[String]) -> Self::Texts;
    fn ids(items: &[&str]) -> Self::Texts;
    /// ... and the SQL around that parameter that makes `column <IN_TEXTS>` true for the
    /// list's members.
    const IN_TEXTS: (&'static str, &'static str);
    /// A list of event seqs bound as one parameter.
    type Seqs;
    fn seqs(seqs: &[i64]) -> Self::Seqs;
    /// Whether writers lock rows (and may deadlock over them), or the whole database.
    const LOCKS_ROWS: bool;
}

impl Dialect for sqlx::SqliteConnection {
    fn text(text: &str) -> Cow<'_, str> {
        Cow::Borrowed(text)
    }
    /// A JSON array, read back with `json_each` (SQLite has no array type).
    type Texts = String;
    fn texts(items: &[String]) -> String {
        serde_json::json!(items).to_string()
    }
    fn ids(items: &[&str]) -> String {
        serde_json::json!(items).to_string()
    }
    const IN_TEXTS: (&'static str, &'static str) = ("IN (SELECT value FROM json_each(", "))");
    type Seqs = String;
    fn seqs(seqs: &[i64]) -> String {
        serde_json::json!(seqs).to_string()
    }
    const LOCKS_ROWS: bool = false;
}

impl Dialect for sqlx::PgConnection {
    fn text(text: &str) -> Cow<'_, str> {
        postgres::pg_text(text)
    }
    type Texts = Vec<String>;
    fn texts(items: &[String]) -> Vec<String> {
        items
            .iter()
            .map(|t| postgres::pg_text(t).into_owned())
            .collect()
    }
    fn ids(items: &[&str]) -> Vec<String> {
        items
            .iter()
            .map(|t| postgres::pg_text(t).into_owned())
            .collect()
    }
    const IN_TEXTS: (&'static str, &'static str) = ("= ANY(", ")");
    type Seqs = Vec<i64>;
    fn seqs(seqs: &[i64]) -> Vec<i64> {
        seqs.to_vec()
    }
    const LOCKS_ROWS: bool = true;
}

/// Every statement an intent may run: what each backend's connection type implements.
pub(crate) trait Statements:
    Dialect + EventSql + WorkSql + DeadLetterSql + DeliverySql + StatsSql + PortalSql + Send
{
}

impl<T> Statements for T where
    T: Dialect + EventSql + WorkSql + DeadLetterSql + DeliverySql + StatsSql + PortalSql + Send
{
}

/// The lead of one task among replicas (see [`Db::try_lead`]); dropping it gives it up.
pub struct Lead(#[allow(dead_code)] Option<sqlx::PgConnection>);

/// The advisory-lock key of a task: a stable 64-bit number from its name.
fn lead_key(task: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("gc-status lead: {task}"));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// One of the backend's periodic tasks (see [`Db::maintenance_tasks`]): started with the
/// token that stops it.
pub struct Maintenance {
    pub name: &'static str,
    pub run: Box<
        dyn FnOnce(
                tokio_util::sync::CancellationToken,
            ) -> futures_util::future::BoxFuture<'static, ()>
            + Send,
    >,
}

/// The database gc-status stores events in. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

/// The ingest writer's own connection (see [`writer`]).
pub enum WriterConn {
    Sqlite(sqlite::ingest::SqliteWriter),
    Postgres(postgres::PgWriter),
}

impl WriterConn {
    /// Stores `events` in one transaction and returns a receipt for each.
    pub(crate) async fn commit_batch(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Receipt>> {
        match self {
            WriterConn::Sqlite(writer) => writer.commit_batch(events).await,
            WriterConn::Postgres(writer) => writer.commit_batch(events).await,
        }
    }

    /// Finishes committed events with their inline verdicts, in one transaction of their own.
    pub(crate) async fn apply_verdicts(
        &mut self,
        verdicts: &writer::InlineBatch,
        apply: writer::Apply,
    ) -> sqlx::Result<records::InlineApplied> {
        match self {
            WriterConn::Sqlite(writer) => writer.apply_verdicts(verdicts, apply).await,
            WriterConn::Postgres(writer) => writer.apply_verdicts(verdicts, apply).await,
        }
    }

    pub(crate) async fn close(self) {
        let closed = match self {
            WriterConn::Sqlite(writer) => writer.close().await,
            WriterConn::Postgres(writer) => writer.close().await,
        };
        if let Err(err) = closed {
            tracing::warn!(error = %err, "closing the writer connection failed");
        }
    }
}

/// Which backend a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend for `database_url`, or a message saying what URLs work.
    pub fn of(database_url: &str) -> anyhow::Result<Backend> {
        let scheme = database_url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres" | "postgresql") => Ok(Backend::Postgres),
            _ => anyhow::bail!(
                "GC_STATUS_DATABASE_URL `{}` is not a database gc-status can use: use \
                 sqlite://data/gc-status.db (one instance, the default) or \
                 postgres://user:password@host/database (several replicas)",
                redact_url(database_url)
            ),
        }
    }
}

/// How to open the database.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// How long a write may wait for a lock (SQLite) or a pooled connection (PostgreSQL).
    pub busy_timeout: Duration,
    /// SQLite only: the database's size limit (`GC_STATUS_MAX_DATABASE_MB`).
    pub max_bytes: Option<u64>,
    /// PostgreSQL only: connections per process (`GC_STATUS_DATABASE_POOL`).
    pub pool_size: u32,
    /// SQLite only: the WAL's bound (`GC_STATUS_WAL_LIMIT_MB`).
    pub wal_limit: WalLimit,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            busy_timeout: Duration::from_secs(5),
            max_bytes: None,
            pool_size: 16,
            wal_limit: WalLimit::default(),
        }
    }
}

/// Opens the database (creating it if needed), applies migrations, and returns it with a
/// dedicated connection for the ingest writer.
pub async fn open(database_url: &str, busy_timeout: Duration) -> anyhow::Result<(Db, WriterConn)> {
    open_with(
        database_url,
        &OpenOptions {
            busy_timeout,
            ..OpenOptions::default()
        },
    )
    .await
}

/// [`open`] with every option.
pub async fn open_with(
    database_url: &str,
    options: &OpenOptions,
) -> anyhow::Result<(Db, WriterConn)> {
    match Backend::of(database_url)? {
        Backend::Sqlite => {
            let (db, conn) = sqlite::open_with(
                database_url,
                options.busy_timeout,
                options.max_bytes,
                options.wal_limit,
            )
            .await?;
            Ok((
                Db::Sqlite(db),
                WriterConn::Sqlite(sqlite::ingest::SqliteWriter::new(conn)),
            ))
        }
        Backend::Postgres => {
            let (db, writer) = postgres::open(database_url, options).await?;
            Ok((Db::Postgres(db), WriterConn::Postgres(writer)))
        }
    }
}

/// Why a database error means "try again later", or `None` for any other error (a bug, a
/// corrupt file): only the former answer 503, the rest an opaque 500 logged in detail.
pub fn retry_reason(err: &sqlx::Error) -> Option<&'static str> {
    match err {
        sqlx::Error::PoolTimedOut => Some("the database is busy"),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Some("the database is closed"),
        sqlx::Error::Io(_) => Some("the database cannot be reached"),
        sqlx::Error::Database(e) => match e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
            Some(_) => sqlite::retry_reason(e.as_ref()),
            None => postgres::retry_reason(e.as_ref()),
        },
        _ => None,
    }
}

/// The database file a SQLite URL names (`None` for PostgreSQL or an in-memory database).
pub fn database_file(database_url: &str) -> Option<std::path::PathBuf> {
    match Backend::of(database_url).ok()? {
        Backend::Sqlite => sqlite::database_file(database_url),
        Backend::Postgres => None,
    }
}

/// `database_url` without a password, for messages.
pub fn redact_url(database_url: &str) -> String {
    match url::Url::parse(database_url) {
        Ok(mut url) if url.password().is_some() => {
            // Only fails for URLs that cannot carry credentials, which this one does.
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(_) => database_url.to_owned(),
        Err(_) if database_url.contains('@') => {
            "(a database URL that does not parse; its credentials are not shown)".to_owned()
        }
        Err(_) => database_url.to_owned(),
    }
}

impl Db {
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// This handle, queueing every event it marks done for the sink from now on (or not).
    pub fn with_forwarding(self, forwarding: bool) -> Self {
        match self {
            Db::Sqlite(db) => Db::Sqlite(db.with_forwarding(forwarding)),
            Db::Postgres(db) => Db::Postgres(db.with_forwarding(forwarding)),
        }
    }

    /// Whether events this handle marks done are queued for the sink.
    pub fn forwarding(&self) -> bool {
        match self {
            Db::Sqlite(db) => db.forwarding(),
            Db::Postgres(db) => db.forwarding(),
        }
    }

    /// The gate this process's SQLite writers take turns through (a PostgreSQL database needs
    /// none: each gets a gate nobody else enters).
    pub fn write_gate(&self) -> WriteGate {
        match self {
            Db::Sqlite(db) => db.write_gate(),
            Db::Postgres(_) => WriteGate::default(),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(db) => db.close().await,
            Db::Postgres(db) => db.close().await,
        }
    }

    /// Wakes `work` whenever another process commits events for the workers, until `stop`:
    /// PostgreSQL replicas `NOTIFY` each other; a SQLite file has one process, so this only
    /// waits for `stop`.
    pub async fn listen_for_work(
        &self,
        work: std::sync::Arc<tokio::sync::Notify>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        match self {
            Db::Sqlite(_) => stop.cancelled().await,
            Db::Postgres(db) => db.listen_for_work(work, stop).await,
        }
    }

    /// Takes the lead for `task` among the replicas sharing this database, if no other replica
    /// holds it: on PostgreSQL a session advisory lock on a connection of its own, held while
    /// the returned [`Lead`] lives (and released if that connection is lost); a SQLite file
    /// has one process, which always leads.
    pub async fn try_lead(&self, task: &str) -> sqlx::Result<Option<Lead>> {
        match self {
            Db::Sqlite(_) => Ok(Some(Lead(None))),
            Db::Postgres(db) => {
                // Out of the pool: a pooled connection would keep the lock after its holder
                // is gone; this one is closed with the lead.
                let mut conn = db.pool().acquire().await?.detach();
                let key = lead_key(task);
                let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await?;
                Ok(held.then_some(Lead(Some(conn))))
            }
        }
    }

    /// Ready means: the database answers and every embedded migration has been applied.
    pub async fn is_ready(&self) -> sqlx::Result<bool> {
        let (applied, embedded) = match self {
            Db::Sqlite(db) => {
                let mut conn = db.pool().acquire().await?;
                (
                    conn.migrations_applied().await?,
                    sqlite::MIGRATOR.migrations.len(),
                )
            }
            Db::Postgres(db) => {
                let mut conn = db.pool().acquire().await?;
                (
                    conn.migrations_applied().await?,
                    postgres::MIGRATOR.migrations.len(),
                )
            }
        };
        Ok(applied >= embedded as i64)
    }

    /// The events/s to show, from this process's own (`ingested`, `processed`): on SQLite
    /// those; on PostgreSQL the sums over every replica (this one's published as `replica`).
    pub async fn shared_rates(
        &self,
        replica: &str,
        ingested: f64,
        processed: f64,
        now: i64,
    ) -> sqlx::Result<(f64, f64)> {
        match self {
            Db::Sqlite(_) => Ok((ingested, processed)),
            Db::Postgres(db) => db.shared_rates(replica, ingested, processed, now).await,
        }
    }

    /// The backend's own periodic upkeep, to run (supervised) until shutdown, reporting to
    /// `health`. SQLite: the WAL keeper, which keeps the WAL under its bound. PostgreSQL
    /// manages its own WAL (and autovacuum its tables): none.
    pub async fn maintenance_tasks(
        &self,
        health: crate::server::health::Health,
    ) -> anyhow::Result<Vec<Maintenance>> {
        match self {
            Db::Sqlite(db) => {
                let keeper = db.wal_keeper(health).await?;
                Ok(vec![Maintenance {
                    name: "WAL keeper",
                    run: Box::new(move |stop| Box::pin(keeper.run(stop))),
                }])
            }
            Db::Postgres(_) => Ok(Vec::new()),
        }
    }
}

/// Keeps a test's database alive (a SQLite file's directory) while the test runs.
#[cfg(test)]
pub(crate) struct TestStore {
    _dir: Option<tempfile::TempDir>,
}

/// A fresh, migrated database for a unit test on the backend under test: with
/// `GC_STATUS_TEST_BACKEND=postgres`, a new database on the server `GC_STATUS_TEST_POSTGRES`
/// names; else a SQLite file.
#[cfg(test)]
pub(crate) async fn test_store() -> (TestStore, Db, WriterConn) {
    let options = OpenOptions {
        pool_size: 4,
        ..OpenOptions::default()
    };
    let backend = std::env::var("GC_STATUS_TEST_BACKEND").unwrap_or_default();
    match std::env::var("GC_STATUS_TEST_POSTGRES") {
        Ok(server) if backend == "postgres" => {
            let url = postgres::create_test_database(&server)
                .await
                .expect("create a test database");
            let (db, writer) = open_with(&url, &options).await.expect("open");
            (TestStore { _dir: None }, db, writer)
        }
        _ => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            let (db, writer) = open_with(&url, &options).await.expect("open");
            (TestStore { _dir: Some(dir) }, db, writer)
        }
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show_in_a_redacted_url() {
        assert_eq!(
            redact_url("postgres://gc:s%40cret@db.example:5432/gc_status"),
            "postgres://gc:***@db.example:5432/gc_status"
        );
        assert_eq!(
            redact_url("postgres://gc@db.example/gc_status"),
            "postgres://gc@db.example/gc_status"
        );
        assert_eq!(
            redact_url("sqlite://data/gc-status.db"),
            "sqlite://data/gc-status.db"
        );
        assert!(!redact_url("postgres://gc:pa@ss@[bad/x").contains("pa@ss"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_keep_the_peak_of_each_minute_and_leave_gaps() {
        let (_store, db, _writer) = test_store().await;
        db.record_samples(1000, &[("q".into(), 3)])
            .await
            .expect("write");
        db.record_samples(1000, &[("q".into(), 1)])
            .await
            .expect("write");
        db.record_samples(1002, &[("q".into(), 4)])
            .await
            .expect("write");
        let series = db.samples(1002).await.expect("read");
        let q = &series["q"];
        assert_eq!(q.len(), SPARKLINE_MINUTES as usize);
        assert_eq!(&q[q.len() - 3..], &[Some(3), None, Some(4)]);
        // Samples older than two sparklines are pruned.
        db.record_samples(1000 + 3 * SPARKLINE_MINUTES, &[("q".into(), 0)])
            .await
            .expect("write");
        assert!(db.samples(1002).await.expect("read").is_empty());
    }
}
