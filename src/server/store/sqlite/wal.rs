//! Keeps the SQLite WAL under its bound (`GC_STATUS_WAL_LIMIT_MB`) while writes never stop.
//!
//! Why the WAL needs keeping: SQLite starts the WAL over from its beginning only when a writer
//! begins a transaction at a moment when every frame has been copied back into the database
//! file and no reader still reads from the WAL. A PASSIVE checkpoint lets writers go on while
//! it copies, and under steady traffic gc-status's commits come back to back (the ingest
//! writer's group commits, the workers, the periodic tasks): every PASSIVE checkpoint ended
//! with newer frames already appended behind it, so the WAL was never fully copied at the
//! moment a writer began, never restarted, and grew by every commit until the disk was full.
//! No reader was to blame: sampled under load, the checkpoints had copied every frame they
//! saw; they just never caught up with the writers.
//!
//! So the keeper copies in two steps. Every tenth of a second a PASSIVE checkpoint copies what
//! was committed meanwhile, while writes go on (and says how long the WAL is); while the WAL
//! grows fast it looks more often, so that no more than an eighth of the bound is written
//! between two looks (random-id traffic writes tens of megabytes a second). Once the WAL
//! holds a quarter of its bound, or will at its present pace by the time a restart decided at
//! the next look has taken effect, a RESTART checkpoint runs *inside the write gate*, between two
//! commits: with no writer running it copies the few frames the PASSIVE one left, flushes them,
//! waits briefly for readers of older snapshots, and the next commit starts the WAL over from
//! its beginning. What the PASSIVE checkpoints copied is flushed to disk *before* the gate is
//! taken (a PASSIVE checkpoint that writers overtake never flushes the database file, so the
//! restart's own flush would otherwise write all of it back while every writer waits: 20 ms
//! rather than 6). Webhooks that arrive meanwhile queue for the writer as they do behind any commit
//! and join the next batch. The file itself is kept (commits then overwrite it in place, which
//! costs less at each fsync than growing a file) and cut back to half the bound should a large
//! transaction have grown it; after a quiet second it is emptied. A restart put off by a reader
//! is tried again after a growing pause, so a reader that pins its snapshot cannot make the
//! keeper hold up writes over and over, except once the WAL nears half its bound: then it is
//! tried at every look, and once readers have put it off, it waits longer for them (writes wait
//! meanwhile); `/readyz` says so once the bound is passed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use tokio_util::sync::CancellationToken;

use super::{SqliteDb, WriteGate};
use crate::server::health::Health;

/// How often the WAL is checkpointed (PASSIVE) and looked at, unless it grows fast.
const TICK: Duration = Duration::from_millis(100);

/// The shortest pause between two looks, however fast the WAL grows.
const MIN_TICK: Duration = Duration::from_millis(10);

/// Looks without a new frame after which the WAL file is emptied (a quiet second).
const QUIET_TICKS: u32 = 10;

/// Longest a restart waits for readers of older snapshots while it holds the write gate.
/// Readers are single statements of a millisecond or two; one that takes longer only puts the
/// restart off (the bound leaves room for many tries).
const READER_WAIT: Duration = Duration::from_millis(25);

/// How long a restart waits for readers once the WAL is past half its bound and readers put
/// the last try off (a status snapshot over a busy day's conversations can read for a few
/// hundred milliseconds, and random-id traffic writes the other half of the bound in less):
/// writes then wait for the readers, and webhooks are answered a little later rather than the
/// WAL passing its bound.
const NEAR_BOUND_READER_WAIT: Duration = Duration::from_millis(250);

/// The longest pause between restarts that readers put off.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A WAL frame's header, before each page.
const FRAME_HEADER: u64 = 24;

/// The WAL's bound and the sizes derived from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalLimit {
    /// The WAL file never grows past this under steady traffic; `/readyz` says so if it does.
    pub bound: u64,
}

impl WalLimit {
    pub const DEFAULT_MB: u64 = 64;

    pub fn from_mb(mb: u64) -> WalLimit {
        WalLimit {
            bound: mb.max(1).saturating_mul(1024 * 1024),
        }
    }

    /// Once the WAL holds this much, it is restarted between two commits: a quarter of the
    /// bound, so a restart put off by a slow reader has more chances before the bound.
    pub fn restart_at(self) -> u64 {
        self.bound / 4
    }

    /// Whether to restart a WAL that holds `used` bytes and grows by `rate` bytes a second,
    /// `ahead` being the time until a restart decided at the next look would take effect
    /// (the pause until then and the last restart's own flush, wait for the gate and
    /// checkpoint). Under heavy traffic a tenth of a second adds megabytes: a restart decided
    /// only once the WAL is past the mark would be late by a look, by its own time, and later
    /// still by each try that readers put off.
    pub fn plan(self, used: u64, rate: f64, ahead: Duration) -> Plan {
        let growth = (rate.max(0.0) * ahead.as_secs_f64()) as u64;
        let projected = used.saturating_add(growth);
        if projected >= self.kept_after_restart() {
            Plan::RestartNow
        } else if projected >= self.restart_at() {
            Plan::Restart
        } else {
            Plan::Wait
        }
    }

    /// The pause before the next look at a WAL that grows by `rate` bytes a second: a tick,
    /// or less, so that no more than an eighth of the bound is written in between.
    pub fn pause(self, rate: f64) -> Duration {
        if rate <= 0.0 {
            return TICK;
        }
        Duration::from_secs_f64((self.bound as f64 / 8.0 / rate).min(TICK.as_secs_f64()))
            .max(MIN_TICK)
    }

    /// What the WAL file is cut back to when it restarts (`journal_size_limit`): above
    /// [`Self::restart_at`], so that steady traffic overwrites the file in place, and below the
    /// bound.
    pub fn kept_after_restart(self) -> u64 {
        self.bound / 2
    }
}

impl Default for WalLimit {
    fn default() -> Self {
        WalLimit::from_mb(WalLimit::DEFAULT_MB)
    }
}

/// What the keeper does about the WAL at a tick (see [`WalLimit::plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Well short of the restart mark.
    Wait,
    /// Restart, unless readers put off the last try a moment ago.
    Restart,
    /// Restart at once, whoever put the last try off: the bound is near.
    RestartNow,
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Copies what it can without waiting for anyone.
    Passive,
    /// Waits (busy timeout) for writers and for readers of older snapshots, copies everything,
    /// and makes the next writer start the WAL over.
    Restart,
    /// A restart that also empties the WAL file.
    Truncate,
}

/// What a checkpoint achieved.
#[derive(Clone, Copy, Debug)]
struct Checkpoint {
    /// SQLite could not finish it (a reader or another process in the way).
    busy: bool,
    /// Frames in the WAL (-1 when another connection was checkpointing).
    frames: i64,
    /// Frames copied into the database file.
    copied: i64,
}

/// The task that keeps the WAL bounded (see the module doc). Owns a connection of its own,
/// whose busy timeout is the short [`READER_WAIT`] rather than the writers' store timeout.
pub struct WalKeeper {
    conn: SqliteConnection,
    wal: PathBuf,
    gate: WriteGate,
    limit: WalLimit,
    health: Health,
    /// Bytes of WAL file per frame.
    frame_bytes: u64,
    database_file: DatabaseFile,
    /// Why the last restart failed, for `/readyz` when the WAL then outgrows its bound.
    last_failure: Option<String>,
    /// How long the last restart took from its decision to its end (flush, gate, checkpoint):
    /// the WAL grows that much longer before a restart takes effect.
    restart_lead: Duration,
    /// The connection's busy timeout: how long a restart waits for readers.
    reader_wait: Duration,
}

impl SqliteDb {
    /// The WAL keeper of this database (one per process), reporting to `health`.
    pub async fn wal_keeper(&self, health: Health) -> anyhow::Result<WalKeeper> {
        let options = self.pool.connect_options();
        let file = options.get_filename();
        let mut conn = (*options)
            .clone()
            .busy_timeout(READER_WAIT)
            .connect()
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {} for checkpoints",
                    file.display()
                )
            })?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await?;
        Ok(WalKeeper {
            conn,
            wal: wal_file(file),
            gate: self.write_gate.clone(),
            limit: self.wal_limit,
            health,
            frame_bytes: page_size.max(512) as u64 + FRAME_HEADER,
            database_file: DatabaseFile::of(file)?,
            last_failure: None,
            restart_lead: Duration::ZERO,
            reader_wait: READER_WAIT,
        })
    }
}

/// The database file, to flush what checkpoints wrote into it without holding up writers.
///
/// Its descriptor is opened once per file and process and never closed: closing *any*
/// descriptor of a SQLite database drops every POSIX lock the process holds on it, SQLite's
/// included (<https://sqlite.org/howtocorrupt.html>, section 2.2). It is only ever used for
/// `fdatasync`, which changes nothing but when pages reach the disk.
struct DatabaseFile(Arc<std::fs::File>);

impl DatabaseFile {
    fn of(path: &Path) -> anyhow::Result<DatabaseFile> {
        static OPEN: Mutex<BTreeMap<PathBuf, Arc<std::fs::File>>> = Mutex::new(BTreeMap::new());
        let mut open = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = open.get(path) {
            return Ok(DatabaseFile(file.clone()));
        }
        let file = Arc::new(std::fs::File::open(path).with_context(|| {
            format!(
                "cannot open the database {} for checkpoints",
                path.display()
            )
        })?);
        open.insert(path.to_owned(), file.clone());
        Ok(DatabaseFile(file))
    }

    /// Waits until every page written to the file so far is on disk.
    async fn flush(&self) -> std::io::Result<()> {
        let file = self.0.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)?
    }
}

/// The WAL file beside a database file.
fn wal_file(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

impl WalKeeper {
    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        metrics::gauge!("gc_status_wal_limit_bytes").set(self.limit.bound as f64);
        let (mut pause, mut looked, mut rate) = (TICK, Instant::now(), 0.0);
        // The WAL's length when it was last restarted: SQLite starts it over at the next
        // commit, so until then the same length is no reason to restart again.
        let mut restarted_at = None;
        let (mut last_frames, mut quiet_ticks) = (0, 0);
        let (mut retry_pause, mut next_try) = (TICK, Instant::now());
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => break,
            }
            let c = match self.checkpoint(Mode::Passive).await {
                Ok(c) if c.frames >= 0 => c,
                Ok(_) => continue, // another process is checkpointing
                Err(err) => {
                    tracing::warn!(error = %err, "WAL checkpoint failed; retrying");
                    continue;
                }
            };
            quiet_ticks = if c.frames == last_frames {
                quiet_ticks + 1
            } else {
                0
            };
            // What was added since the last look (after a restart the WAL counts from its
            // start again), and at what pace: traffic comes in bursts (and a restart holds
            // writes up for part of the time since), so a slower look only halves the pace.
            let grown = (c.frames - last_frames).max(0) as u64 * self.frame_bytes;
            rate = (grown as f64 / looked.elapsed().as_secs_f64().max(1e-3)).max(rate / 2.0);
            looked = Instant::now();
            last_frames = c.frames;
            pause = self.limit.pause(rate);
            let mut used = c.frames as u64 * self.frame_bytes;
            let quiet = c.frames > 0 && c.copied == c.frames && quiet_ticks >= QUIET_TICKS;
            let plan = self.limit.plan(used, rate, pause + self.restart_lead);
            let due = plan != Plan::Wait && restarted_at != Some(c.frames);
            // A restart that readers put off waits a growing pause, but never once the WAL
            // could pass half its bound before the next one took effect.
            if (due && (plan == Plan::RestartNow || Instant::now() >= next_try)) || quiet {
                // In a quiet moment no commit would start the WAL over: empty it instead.
                let mode = if quiet { Mode::Truncate } else { Mode::Restart };
                let put_off = retry_pause > TICK;
                let wait = if plan == Plan::RestartNow && put_off {
                    NEAR_BOUND_READER_WAIT
                } else {
                    READER_WAIT
                };
                if self.restart(mode, wait).await {
                    // Nothing of it is in use any more: the next commit starts it over.
                    used = 0;
                    restarted_at = Some(c.frames);
                    // The next tick's frames are counted from the WAL's start.
                    last_frames = 0;
                    retry_pause = TICK;
                    quiet_ticks = 0;
                } else {
                    retry_pause = (retry_pause * 2).min(MAX_RETRY_PAUSE);
                    next_try = Instant::now() + retry_pause;
                }
            }
            self.report(used);
        }
        if let Err(err) = self.conn.close().await {
            tracing::warn!(error = %err, "closing the WAL keeper's connection failed");
        }
    }

    /// The WAL file's size in bytes (0 when there is none).
    fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.wal).map_or(0, |m| m.len())
    }

    async fn checkpoint(&mut self, mode: Mode) -> sqlx::Result<Checkpoint> {
        let sql = match mode {
            Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
            Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        let (busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as(sql).fetch_one(&mut self.conn).await?;
        Ok(Checkpoint {
            busy: busy != 0,
            frames,
            copied,
        })
    }

    /// Checkpoints in `mode` inside the write gate, between two commits, waiting up to
    /// `reader_wait` for readers of an older snapshot; whether the WAL will start over.
    async fn restart(&mut self, mode: Mode, reader_wait: Duration) -> bool {
        if reader_wait != self.reader_wait {
            // A number of milliseconds: nothing from outside goes into the statement.
            let sql = format!("PRAGMA busy_timeout = {}", reader_wait.as_millis());
            match sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut self.conn)
                .await
            {
                Ok(_) => self.reader_wait = reader_wait,
                Err(err) => {
                    tracing::warn!(error = %err, "setting the checkpoint's busy timeout failed")
                }
            }
        }
        // The pages PASSIVE checkpoints copied are flushed to disk now, while writes go on,
        // so the checkpoint inside the gate only has its own few pages to flush.
        let decided = Instant::now();
        if let Err(err) = self.database_file.flush().await {
            tracing::warn!(error = %err, "flushing the database file failed; the restart flushes it");
        }
        let gate = self.gate.clone();
        let writing = gate.enter().await;
        let held = Instant::now();
        let outcome = self.checkpoint(mode).await;
        drop(writing);
        self.restart_lead = decided.elapsed();
        let held = held.elapsed();
        metrics::gauge!("gc_status_wal_checkpoint_seconds").set(held.as_secs_f64());
        metrics::histogram!("gc_status_wal_checkpoint_duration_seconds").record(held.as_secs_f64());
        match outcome {
            Ok(c) if !c.busy => {
                metrics::counter!("gc_status_wal_restarts_total").increment(1);
                self.last_failure = None;
                tracing::debug!(
                    ?mode,
                    frames = c.frames,
                    held_us = held.as_micros() as u64,
                    lead_us = self.restart_lead.as_micros() as u64,
                    "WAL restarted"
                );
                true
            }
            Ok(c) => {
                metrics::counter!("gc_status_wal_restarts_put_off_total").increment(1);
                let cause = format!(
                    "readers of an older snapshot (or another process) held its restart up \
                     for over {} ms ({} of {} frames copied)",
                    self.reader_wait.as_millis(),
                    c.copied,
                    c.frames
                );
                tracing::debug!(%cause, "WAL restart put off");
                self.last_failure = Some(cause);
                false
            }
            Err(err) => {
                metrics::counter!("gc_status_wal_restarts_put_off_total").increment(1);
                tracing::warn!(error = %err, "WAL restart failed; retrying");
                self.last_failure = Some(format!("its checkpoint failed: {err}"));
                false
            }
        }
    }

    /// Publishes the WAL's size (`used`: bytes of frames since it last started over), and
    /// tells `/readyz` when the file is over its bound.
    fn report(&mut self, used: u64) {
        let file = self.file_bytes();
        metrics::gauge!("gc_status_wal_bytes").set(file as f64);
        metrics::gauge!("gc_status_wal_used_bytes").set(used as f64);
        if file > self.limit.bound {
            let why = self
                .last_failure
                .as_deref()
                .unwrap_or("a transaction larger than the bound");
            self.health.fail(
                "wal",
                format!(
                    "the WAL is {} MiB, over its bound of {} MiB (GC_STATUS_WAL_LIMIT_MB): {why}",
                    file / (1024 * 1024),
                    self.limit.bound / (1024 * 1024)
                ),
            );
        } else {
            self.health.recover("wal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_restarts_well_before_its_bound_and_its_file_is_kept_between() {
        let limit = WalLimit::default();
        assert_eq!(limit.bound, 64 * 1024 * 1024);
        assert_eq!(limit.restart_at(), 16 * 1024 * 1024);
        assert_eq!(limit.kept_after_restart(), 32 * 1024 * 1024);
        let tiny = WalLimit::from_mb(0);
        assert!(tiny.restart_at() < tiny.kept_after_restart());
        assert!(tiny.kept_after_restart() < tiny.bound);
    }

    #[test]
    fn a_fast_growing_wal_is_restarted_ahead_of_its_pace_and_near_its_bound_at_once() {
        let limit = WalLimit::from_mb(16);
        let mb = 1024 * 1024;
        let mb_per_s = mb as f64;
        assert_eq!(limit.plan(mb, 10.0 * mb_per_s, TICK), Plan::Wait);
        // Past the restart mark (4 MiB) now or by the time a restart would take effect.
        assert_eq!(limit.plan(4 * mb, 0.0, TICK), Plan::Restart);
        assert_eq!(limit.plan(2 * mb, 30.0 * mb_per_s, TICK), Plan::Restart);
        // Past half the bound by then: no pause for readers any more.
        assert_eq!(limit.plan(5 * mb, 30.0 * mb_per_s, TICK), Plan::RestartNow);
        assert_eq!(limit.plan(20 * mb, 0.0, TICK), Plan::RestartNow);
        // A restart that takes two more ticks to take effect is decided that much earlier.
        assert_eq!(limit.plan(mb, 10.0 * mb_per_s, 3 * TICK), Plan::Restart);
    }

    #[test]
    fn the_keeper_looks_more_often_at_a_wal_that_grows_fast() {
        let limit = WalLimit::from_mb(16);
        let mb_per_s = 1024.0 * 1024.0;
        assert_eq!(limit.pause(0.0), TICK);
        assert_eq!(limit.pause(10.0 * mb_per_s), TICK);
        // An eighth of the bound (2 MiB) at 80 MiB/s: a look every 25 ms.
        let fast = limit.pause(80.0 * mb_per_s);
        assert!(fast > Duration::from_millis(24) && fast < Duration::from_millis(26));
        assert_eq!(limit.pause(f64::MAX), MIN_TICK);
        // The default bound keeps the tenth of a second at that pace.
        assert_eq!(WalLimit::default().pause(60.0 * mb_per_s), TICK);
    }

    #[test]
    fn the_wal_file_sits_beside_the_database() {
        assert_eq!(
            wal_file(Path::new("data/gc-status.db")),
            PathBuf::from("data/gc-status.db-wal")
        );
    }
}
