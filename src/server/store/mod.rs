//! All SQL lives here, behind one [`Db`]: the embedded SQLite backend (one file, one process)
//! and the PostgreSQL backend (several replicas sharing one queue), each with its own SQL and
//! its own migrations. Handlers, workers, pages and the CLI never know which one runs.

pub mod copy;
mod postgres;
pub mod records;
mod sqlite;
pub mod writer;

use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use self::writer::{NewEvent, Receipt};
pub use self::{
    postgres::{create_test_database, PgDb},
    records::*,
    sqlite::{SqliteDb, WalKeeper, WalLimit, WriteGate},
};
use crate::{
    model::{AuditEntry, EventCounts, QueueStatus},
    server::domain::{
        ClaimedEvent, DeadLetter, DeadLetterFilter, DeadLetterPage, DeliveryOutcome, Effect,
        Outcome, ProcessError, Selection,
    },
};

/// The database gc-status stores events in. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

/// The ingest writer's own connection (see [`writer`]).
pub enum WriterConn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(postgres::PgWriter),
}

impl WriterConn {
    /// Stores `events` in one transaction and returns a receipt for each.
    pub(crate) async fn commit_batch(&mut self, events: &[NewEvent]) -> sqlx::Result<Vec<Receipt>> {
        match self {
            WriterConn::Sqlite(conn) => sqlite::ingest::commit_batch(conn, events).await,
            WriterConn::Postgres(writer) => writer.commit_batch(events).await,
        }
    }

    pub(crate) async fn close(self) {
        let closed = match self {
            WriterConn::Sqlite(conn) => sqlx::Connection::close(conn).await,
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
            Ok((Db::Sqlite(db), WriterConn::Sqlite(conn)))
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
    match (database_url.find("://"), database_url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &database_url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!(
                "{}{user}:***{}",
                &database_url[..scheme_end + 3],
                &database_url[at..]
            )
        }
        _ => database_url.to_owned(),
    }
}

/// Calls the same method on whichever backend runs.
macro_rules! each_backend {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Db::Sqlite(db) => db.$method($($arg),*).await,
            Db::Postgres(db) => db.$method($($arg),*).await,
        }
    };
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

    /// The gate this process's SQLite writers take turns through (a PostgreSQL database needs
    /// none: each gets a gate nobody else enters).
    pub fn write_gate(&self) -> WriteGate {
        match self {
            Db::Sqlite(db) => db.write_gate(),
            Db::Postgres(_) => WriteGate::default(),
        }
    }

    pub async fn close(&self) {
        each_backend!(self.close())
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

    // --- events -------------------------------------------------------------------------

    /// Ready means: the database answers and every embedded migration has been applied.
    pub async fn is_ready(&self) -> sqlx::Result<bool> {
        each_backend!(self.is_ready())
    }

    /// The stored payload of one event, byte for byte.
    pub async fn event_payload(&self, id: &str) -> sqlx::Result<Option<Vec<u8>>> {
        each_backend!(self.event_payload(id))
    }

    /// Ids of all stored events in arrival order (tests and the benchmark's loss check).
    pub async fn event_ids(&self) -> sqlx::Result<Vec<String>> {
        each_backend!(self.event_ids())
    }

    /// Events processed so far in `status`, with attempts and errors (tests and the CLI).
    pub async fn event_state(&self, id: &str) -> sqlx::Result<Option<EventState>> {
        each_backend!(self.event_state(id))
    }

    // --- the work queue -----------------------------------------------------------------

    /// Claims up to `limit` due events, leased until `now + lease_ms` under `token`; events
    /// whose last allowed claim never finished go to the dead letters instead.
    pub async fn claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        token: i64,
        max_attempts: i64,
    ) -> sqlx::Result<Claimed> {
        each_backend!(self.claim_due(now, lease_ms, limit, token, max_attempts))
    }

    /// Records a claimed batch's outcomes in one transaction, for events still held under
    /// `token` (an event whose lease was lost is applied by its new holder only).
    pub async fn complete(
        &self,
        token: i64,
        now: i64,
        outcomes: &mut [(ClaimedEvent, Outcome)],
        unknown_conversation: impl Fn(&ClaimedEvent, String) -> Outcome,
    ) -> sqlx::Result<Completed> {
        each_backend!(self.complete(token, now, outcomes, unknown_conversation))
    }

    /// Applies the verdicts of events processed as they arrived, for events still pending
    /// and never attempted.
    pub async fn complete_inline(
        &self,
        verdicts: &[(String, Result<Effect, ProcessError>)],
        now: i64,
        retry_at: i64,
    ) -> sqlx::Result<InlineApplied> {
        each_backend!(self.complete_inline(verdicts, now, retry_at))
    }

    /// Due events never attempted (`part` of `parts`), read without a lease.
    pub async fn due_fresh(
        &self,
        now: i64,
        limit: i64,
        part: i64,
        parts: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        each_backend!(self.due_fresh(now, limit, part, parts))
    }

    /// Gives back leases still held under `token` (shutdown).
    pub async fn release(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        each_backend!(self.release(token, now))
    }

    /// Deletes up to `limit` done events processed before `cutoff`, and tombstones of
    /// discarded letters received before it.
    pub async fn prune(&self, cutoff: i64, limit: i64) -> sqlx::Result<u64> {
        each_backend!(self.prune(cutoff, limit))
    }

    /// The earliest time any pending event is due, if any (to sleep until then).
    pub async fn next_due_at(&self) -> sqlx::Result<Option<i64>> {
        each_backend!(self.next_due_at())
    }

    // --- dead letters -------------------------------------------------------------------

    /// Dead letters newest first, by offset (the admin API and CLI).
    pub async fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: i64,
        offset: i64,
    ) -> sqlx::Result<DeadLetterPage> {
        let page = PageBy::Offset { limit, offset };
        let (items, total) = each_backend!(self.dead_letter_page(filter, page))?;
        Ok(DeadLetterPage {
            items,
            total,
            limit,
            offset,
        })
    }

    /// Dead letters newest first, strictly older than `before` when given (cursor pages).
    pub async fn dead_letters_before(
        &self,
        filter: &DeadLetterFilter,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> sqlx::Result<(Vec<DeadLetter>, i64)> {
        let page = PageBy::Cursor { before, limit };
        each_backend!(self.dead_letter_page(filter, page))
    }

    pub async fn get_dead_letter(&self, id: &str) -> sqlx::Result<Option<DeadLetter>> {
        each_backend!(self.get_dead_letter(id))
    }

    /// Puts the selected dead letters back as pending with attempts reset.
    ///
    /// Works through the selection in chunks of [`BULK_CHUNK`], each its own short write
    /// transaction, so a replay of 100,000 letters never holds a lock for long: webhooks
    /// arriving meanwhile are acknowledged within their usual latency.
    pub async fn replay_dead_letters(&self, selection: &Selection, now: i64) -> sqlx::Result<u64> {
        let mut replayed = 0;
        let mut after = String::new();
        while let Some(ids) = each_backend!(self.next_selected(selection, &after))? {
            after = ids.last().cloned().unwrap_or_default();
            replayed += each_backend!(self.replay_chunk(&ids, now))?;
        }
        Ok(replayed)
    }

    /// Deletes the selected dead letters for good, in short transactions as replay does.
    /// Their event rows stay as tombstones until retention, so a redelivery is still
    /// recognised as a duplicate.
    pub async fn discard_dead_letters(&self, selection: &Selection) -> sqlx::Result<u64> {
        let mut discarded = 0;
        let mut after = String::new();
        while let Some(ids) = each_backend!(self.next_selected(selection, &after))? {
            after = ids.last().cloned().unwrap_or_default();
            discarded += each_backend!(self.discard_chunk(&ids))?;
        }
        Ok(discarded)
    }

    // --- forwarding ---------------------------------------------------------------------

    /// Leases up to `limit` due deliveries until `now + lease_ms` under `token`.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        token: i64,
    ) -> sqlx::Result<Vec<ClaimedEvent>> {
        each_backend!(self.claim_deliveries(now, lease_ms, limit, token))
    }

    /// Records delivery outcomes in one transaction, for deliveries still held under `token`.
    pub async fn complete_deliveries(
        &self,
        token: i64,
        now: i64,
        outcomes: &[(i64, DeliveryOutcome)],
    ) -> sqlx::Result<DeliveriesCompleted> {
        each_backend!(self.complete_deliveries(token, now, outcomes))
    }

    /// Queues done events received in `[since, until)` that were never queued for the sink.
    pub async fn queue_for_forwarding(
        &self,
        since: i64,
        until: i64,
        now: i64,
    ) -> sqlx::Result<u64> {
        each_backend!(self.queue_for_forwarding(since, until, now))
    }

    /// Gives back deliveries still leased under `token` (shutdown).
    pub async fn release_deliveries(&self, token: i64, now: i64) -> sqlx::Result<u64> {
        each_backend!(self.release_deliveries(token, now))
    }

    /// Deliveries still to make.
    pub async fn delivery_counts(&self) -> sqlx::Result<DeliveryCounts> {
        each_backend!(self.delivery_counts())
    }

    /// One event's forwarding state: (state, attempts, errors), `None` if never queued.
    pub async fn delivery_state(
        &self,
        id: &str,
    ) -> sqlx::Result<Option<(String, i64, Vec<Value>)>> {
        each_backend!(self.delivery_state(id))
    }

    // --- statistics ---------------------------------------------------------------------

    /// How many events are in each state.
    pub async fn event_counts(&self) -> sqlx::Result<EventCounts> {
        each_backend!(self.event_counts())
    }

    /// Receive time (epoch ms) of the newest stored event.
    pub async fn last_received_at(&self) -> sqlx::Result<Option<i64>> {
        each_backend!(self.last_received_at())
    }

    /// Every queue's statistics, busiest first.
    pub async fn queue_statuses(&self, w: &StatsWindow<'_>) -> sqlx::Result<Vec<QueueStatus>> {
        each_backend!(self.queue_statuses(w))
    }

    /// Recomputes all statistics from the done events. `interpret` returns the effect of a
    /// stored event (`None` to skip it).
    ///
    /// The reset and each chunk of [`REBUILD_CHUNK`] events are separate short transactions,
    /// so webhooks and workers keep their usual latency during a long rebuild. Merges are
    /// idempotent, so events the workers complete meanwhile are counted once either way.
    pub async fn rebuild_stats(
        &self,
        interpret: impl Fn(&str, &[u8], i64) -> Option<Effect>,
    ) -> sqlx::Result<u64> {
        each_backend!(self.reset_stats())?;
        let mut after = 0i64;
        let mut applied = 0u64;
        loop {
            let events = each_backend!(self.done_events_after(after, REBUILD_CHUNK))?;
            let Some((last, ..)) = events.last() else {
                break;
            };
            after = *last;
            let effects: Vec<Effect> = events
                .iter()
                .filter_map(|(_, event_type, payload, received_at)| {
                    interpret(event_type, payload, *received_at)
                })
                .collect();
            applied += effects.len() as u64;
            each_backend!(self.apply_effects(&effects))?;
        }
        self.recount_totals().await?;
        Ok(applied)
    }

    /// Recounts the maintained totals from the tables (part of `rebuild-stats`).
    pub async fn recount_totals(&self) -> sqlx::Result<()> {
        each_backend!(self.recount_totals())
    }

    /// Forgets conversations that ended before `ended_before`, and open ones whose last
    /// milestone is older than `open_before`.
    pub async fn prune_conversations(
        &self,
        ended_before: i64,
        open_before: i64,
        limit: i64,
    ) -> sqlx::Result<u64> {
        each_backend!(self.prune_conversations(ended_before, open_before, limit))
    }

    // --- the portal's tables ------------------------------------------------------------

    /// A stored session's data (JSON) and expiry unless it expired before `now`.
    pub async fn load_session(&self, id: &str, now: i64) -> sqlx::Result<Option<(String, i64)>> {
        each_backend!(self.load_session(id, now))
    }

    /// Stores a session, or replaces it; `only_new` refuses to overwrite an existing id.
    pub async fn save_session(
        &self,
        id: &str,
        data: &str,
        expires_at: i64,
        only_new: bool,
    ) -> sqlx::Result<bool> {
        each_backend!(self.save_session(id, data, expires_at, only_new))
    }

    pub async fn delete_session(&self, id: &str) -> sqlx::Result<()> {
        each_backend!(self.delete_session(id))
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn prune_sessions(&self, now: i64) -> sqlx::Result<u64> {
        each_backend!(self.prune_sessions(now))
    }

    /// Appends one entry to the audit trail.
    pub async fn record_audit(&self, record: &AuditRecord<'_>) -> sqlx::Result<()> {
        each_backend!(self.record_audit(record))
    }

    /// Audit entries newest first, before entry `before` (exclusive) when given.
    pub async fn list_audit(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> sqlx::Result<Vec<AuditEntry>> {
        each_backend!(self.list_audit(before, limit))
    }

    /// Records each queue's waiting count for `minute`, keeping the minute's peak.
    pub async fn record_samples(&self, minute: i64, waiting: &[(String, i64)]) -> sqlx::Result<()> {
        each_backend!(self.record_samples(minute, waiting))
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

    /// The last sparkline's minutes up to `minute` per queue, oldest first.
    pub async fn samples(&self, minute: i64) -> sqlx::Result<HashMap<String, Vec<Option<i64>>>> {
        each_backend!(self.samples(minute))
    }

    // --- housekeeping -------------------------------------------------------------------

    /// SQLite: the task that keeps the WAL under its bound, reporting to `health`.
    /// PostgreSQL manages its own WAL (and autovacuum its tables): `None`.
    pub async fn wal_keeper(
        &self,
        health: crate::server::health::Health,
    ) -> anyhow::Result<Option<WalKeeper>> {
        match self {
            Db::Sqlite(db) => Ok(Some(db.wal_keeper(health).await?)),
            Db::Postgres(_) => Ok(None),
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
