//! Group commit: one task owns the write connection and commits every webhook waiting at that
//! moment in a single transaction, then answers each one.
//!
//! A durable commit (`synchronous=FULL`) costs an fsync whether it carries one row or a
//! thousand, so batching whatever queued up during the previous commit is what lets gc-status
//! acknowledge tens of thousands of webhooks a second while still never answering 2xx before
//! the row is on disk.
//!
//! Events processed as they arrived (inline processing: the webhook handler interprets each
//! one, in parallel, outside any lock) are finished by the writer too, marked done with their
//! statistics or dead with their letters, but not in the commit that acknowledges them: their
//! verdicts are held and applied in rounds of up to [`HELD_VERDICTS`], each a transaction of
//! its own, once no webhook has come for [`HELD_IDLE`] or the oldest has waited [`HELD_FOR`].
//! During a burst only the inserts stand between a webhook and its answer. Profiled with
//! random ids and real-size bodies, applying 30 verdicts in the batch's commit cost three
//! times the insert of their 30 events (2.7 ms against 0.9 ms), and each acknowledgement
//! waited for it; bounded rounds keep that wait off most commits and short for the rest (a
//! round costs about 80 µs a verdict, so unbounded ones held webhooks up for 40 ms). A verdict
//! never applied (an error, a crash) costs nothing but time: the workers take its event
//! after [`INLINE_GRACE_MS`].
//! PostgreSQL, whose writers run side by side, applies them in a task beside the writer
//! instead (`worker::inline`).

use std::{
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::body::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::{
    sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use super::{
    records::InlineApplied, retry_reason, work::apply_verdicts, Statements, WriteGate, WriterConn,
};
use crate::server::{
    domain::{now_ms, Effect, ProcessError},
    health::Health,
    rates::RateMeter,
};

/// One webhook to store.
#[derive(Debug)]
pub struct NewEvent {
    pub id: String,
    pub event_type: String,
    pub payload: Bytes,
    /// Unix epoch milliseconds.
    pub received_at: i64,
    /// The processor's verdict, when the event was processed as it arrived (inline
    /// processing): the writer applies it once the event is committed (see the module doc),
    /// instead of waiting for a worker's claim. `None`: the workers take it.
    pub processed: Option<Result<Effect, ProcessError>>,
}

impl NewEvent {
    /// Whether the writer finishes this event with its verdict (stored otherwise, the workers
    /// leave it alone for [`INLINE_GRACE_MS`]).
    fn goes_inline(&self) -> bool {
        matches!(
            &self.processed,
            Some(Ok(_)) | Some(Err(ProcessError::Permanent(_)))
        )
    }
}

/// How long the workers leave an event with a verdict before they claim it: the writer
/// normally applies it within [`HELD_FOR`]; only an event whose verdict was never applied (an
/// error, a crash) waits this long.
pub const INLINE_GRACE_MS: i64 = 5_000;

/// How long held verdicts wait for a moment without webhooks before they are applied.
pub const HELD_IDLE: Duration = Duration::from_millis(20);

/// Verdicts the writer holds at most before it applies them, even while webhooks wait.
pub const HELD_VERDICTS: usize = 128;

/// The longest a held verdict waits to be applied while webhooks keep coming: what the
/// statistics may lag behind the acknowledgements under load.
pub const HELD_FOR: Duration = Duration::from_millis(50);

/// How the writer applies inline verdicts.
pub struct InlineSettings {
    /// Whether events marked done are also queued for the sink.
    pub forwarding: bool,
    /// When an event whose first attempt failed is tried again, from `now`.
    pub first_retry: Box<dyn Fn(i64) -> i64 + Send + Sync>,
    /// Counts events finished.
    pub processed: Arc<RateMeter>,
    /// Where the verdicts go to be applied by a task of their own instead of the writer
    /// (PostgreSQL: see `worker::inline`).
    pub apart: Option<mpsc::Sender<InlineBatch>>,
}

/// Committed events and their verdicts, for the inline applier (see [`InlineSettings::apart`]).
pub type InlineBatch = Vec<(String, Result<Effect, ProcessError>)>;

/// One application of inline verdicts: its time, the retry time of first failures, and
/// whether done events are queued for the sink.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Apply {
    pub now: i64,
    pub retry_at: i64,
    pub forwarding: bool,
}

/// What became of a stored webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// A new row was committed.
    New,
    /// The same event (same id, same body) was already stored; nothing was written.
    Duplicate,
}

/// The writer's answer for one webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The id the event is stored under: its own, or a derived one when that id was reused.
    pub id: String,
    pub stored: Stored,
    /// The sender's id already named a different body (see [`insert_batch`]).
    pub id_reused: bool,
}

/// Why a webhook could not be stored. All but [`StoreError::Failed`] mean "answer 503, the
/// sender retries"; `Failed` is an unexpected database error (500, logged in detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the writer queue is full")]
    Overloaded,
    #[error("the commit did not finish in time")]
    TimedOut,
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("the database refused the write")]
    Failed,
    #[error("the writer has stopped")]
    Stopped,
}

impl StoreError {
    /// Whether the sender should simply try again later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Failed)
    }
}

type Reply = oneshot::Sender<Result<Receipt, StoreError>>;

/// A queued webhook: the event, where to answer, and its share of the queue's byte budget
/// (given back when the item leaves the queue).
type Queued = (NewEvent, Reply, OwnedSemaphorePermit);

/// The handle request handlers use to store events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct IngestWriter {
    queue: mpsc::Sender<Queued>,
    /// Bytes of payload the queue may still take: bounds its memory whatever the count.
    bytes: Arc<Semaphore>,
    timeout: Duration,
}

/// The writer's limits and collaborators.
pub struct WriterSettings {
    /// Webhooks that may wait at once.
    pub queue_capacity: usize,
    /// Payload bytes that may wait at once.
    pub queue_bytes: usize,
    pub max_batch: usize,
    pub timeout: Duration,
    pub gate: WriteGate,
    /// Notified after each commit with new rows (workers wake).
    pub committed: Arc<Notify>,
    /// Counts new rows.
    pub ingested: Arc<RateMeter>,
    /// Applies the verdicts of events processed inline in their commit (see the module doc).
    pub inline: Option<InlineSettings>,
    /// Where storage faults are reported (and cleared after the next good commit).
    pub health: Health,
    /// The database file, watched before each commit: if it is removed or replaced, SQLite
    /// would go on writing into a file that no longer exists (and is lost at exit), so the
    /// writer refuses instead.
    pub file: Option<std::path::PathBuf>,
}

/// The identity of a file (device and inode), to notice its removal or replacement.
fn file_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

const FILE_GONE: &str =
    "the database file was removed or replaced; restore it and restart gc-status";

impl IngestWriter {
    /// Starts the writer task. It stops after every handle is dropped and the queue is drained.
    /// Every transaction enters `gate` first. After each commit, `committed` is notified (workers wake) and `ingested` counts the
    /// new rows.
    pub fn spawn(conn: WriterConn, settings: WriterSettings) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let budget = settings.queue_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let writer = IngestWriter {
            queue,
            bytes: Arc::new(Semaphore::new(budget)),
            timeout: settings.timeout,
        };
        // On SQLite the writer runs on a thread of its own. Each statement of a commit is a
        // round trip to the database's thread, which wakes the writer from outside the
        // runtime; on the shared runtime that wake-up waited in the global queue behind every
        // connection's task (profiled: about a millisecond per statement under load, most of a
        // commit's time). Alone on its thread, the writer runs the moment its answer is there.
        // PostgreSQL's connections are sockets of the shared runtime's reactor, pooled with
        // everyone else's: its writer stays on that runtime.
        if matches!(conn, WriterConn::Postgres(_)) {
            return (writer, tokio::spawn(run(conn, rx, settings)));
        }
        let (finished, done) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gc-status-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(conn, rx, settings)),
                    Err(err) => {
                        tracing::error!(error = %err, "the writer's runtime could not start")
                    }
                }
                let _ = finished.send(());
            });
        if let Err(err) = thread {
            tracing::error!(error = %err, "the writer's thread could not start");
        }
        let task = tokio::spawn(async move {
            let _ = done.await;
        });
        (writer, task)
    }

    /// Stores `event` and resolves once its transaction has committed (or failed).
    pub async fn store(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let size = u32::try_from(event.payload.len().max(1)).unwrap_or(u32::MAX);
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(size)
            .map_err(|_| StoreError::Overloaded)?;
        let (reply, committed) = oneshot::channel();
        self.queue
            .try_send((event, reply, permit))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::Stopped,
            })?;
        match tokio::time::timeout(self.timeout, committed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::TimedOut),
        }
    }
}

async fn run(mut conn: WriterConn, mut rx: mpsc::Receiver<Queued>, settings: WriterSettings) {
    let max_batch = settings.max_batch.max(1);
    let identity = settings.file.as_deref().and_then(file_identity);
    let mut batch = Vec::with_capacity(max_batch);
    let mut held = Held::default();
    loop {
        // `recv_many` waits for one submission, then takes every one already queued: the
        // batch grows by itself exactly when load does. Held verdicts are applied once no
        // webhook has come for a moment.
        let received = match held.since {
            Some(since) => {
                tokio::select! {
                    biased;
                    n = rx.recv_many(&mut batch, max_batch) => n,
                    () = tokio::time::sleep_until((since + HELD_IDLE).into()) => {
                        held.apply(&mut conn, &settings).await;
                        continue;
                    }
                }
            }
            None => rx.recv_many(&mut batch, max_batch).await,
        };
        if received == 0 {
            break;
        }
        // Give request tasks that are already runnable one turn to enqueue before the batch
        // is closed: it costs microseconds and makes batches (and throughput) markedly larger.
        tokio::task::yield_now().await;
        let waited = std::time::Instant::now();
        let writing = settings.gate.enter().await;
        metrics::histogram!("gc_status_ingest_gate_wait_seconds")
            .record(waited.elapsed().as_secs_f64());
        // Whatever arrived while a worker held the gate joins this commit too.
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // A sender that already gave up (timed out, answered 503) will deliver again: under
        // overload, commits are better spent on rows someone is waiting for.
        let before = batch.len();
        batch.retain(|(_, reply, _)| !reply.is_closed());
        let abandoned = before - batch.len();
        if abandoned > 0 {
            metrics::counter!("gc_status_ingest_abandoned_total").increment(abandoned as u64);
        }
        if batch.is_empty() {
            continue;
        }
        let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch
            .drain(..)
            .map(|(event, reply, _permit)| (event, reply))
            .unzip();
        if let (Some(path), Some(expected)) = (&settings.file, identity) {
            if file_identity(path) != Some(expected) {
                drop(writing);
                tracing::error!(file = %path.display(), "{FILE_GONE}; answering 503");
                settings.health.fail("storage", FILE_GONE);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(FILE_GONE)));
                }
                continue;
            }
        }
        let committing = std::time::Instant::now();
        let outcome = conn.commit_batch(&events).await;
        drop(writing);
        metrics::histogram!("gc_status_ingest_commit_seconds")
            .record(committing.elapsed().as_secs_f64());
        metrics::histogram!("gc_status_ingest_batch_events").record(events.len() as f64);
        match outcome {
            Ok(stored) => {
                settings.health.recover("storage");
                let mut for_workers = 0;
                let mut verdicts = InlineBatch::new();
                for (event, receipt) in events.into_iter().zip(&stored) {
                    if receipt.stored != Stored::New {
                        continue;
                    }
                    match (event.goes_inline(), event.processed) {
                        (true, Some(verdict)) => verdicts.push((receipt.id.clone(), verdict)),
                        _ => for_workers += 1,
                    }
                }
                let new = for_workers + verdicts.len();
                if new > 0 {
                    settings.ingested.record(new as u64);
                }
                if for_workers > 0 {
                    settings.committed.notify_one();
                }
                for (reply, result) in replies.into_iter().zip(stored) {
                    // The requester may have timed out; its sender will retry and dedupe.
                    let _ = reply.send(Ok(result));
                }
                match settings.inline.as_ref().and_then(|i| i.apart.as_ref()) {
                    // A full applier queue is no loss: the workers take these events once
                    // their grace period ends.
                    Some(apart) if !verdicts.is_empty() => {
                        if apart.try_send(verdicts).is_err() {
                            metrics::counter!("gc_status_inline_overflow_total").increment(1);
                        }
                    }
                    Some(_) => {}
                    None => held.add(verdicts),
                }
                if held.due() {
                    held.apply(&mut conn, &settings).await;
                }
            }
            Err(err) => {
                let count = replies.len();
                let error = match retry_reason(&err) {
                    Some(reason) => {
                        tracing::error!(error = %err, events = count, "commit failed ({reason}); answering 503");
                        settings.health.fail("storage", reason);
                        StoreError::Unavailable(reason)
                    }
                    None => {
                        tracing::error!(error = %err, events = count, "commit failed unexpectedly; answering 500");
                        StoreError::Failed
                    }
                };
                for reply in replies {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
    if !held.verdicts.is_empty() {
        held.apply(&mut conn, &settings).await;
    }
    conn.close().await;
}

/// Verdicts of committed events that the writer has yet to apply (see the module doc).
#[derive(Default)]
struct Held {
    verdicts: InlineBatch,
    /// When the oldest of them was committed (or, for those a round left, that round).
    since: Option<std::time::Instant>,
}

impl Held {
    fn add(&mut self, verdicts: InlineBatch) {
        if verdicts.is_empty() {
            return;
        }
        self.since.get_or_insert_with(std::time::Instant::now);
        self.verdicts.extend(verdicts);
    }

    /// Whether to apply them now although webhooks wait.
    fn due(&self) -> bool {
        self.verdicts.len() >= HELD_VERDICTS
            || self.since.is_some_and(|at| at.elapsed() >= HELD_FOR)
    }

    /// Applies the oldest [`HELD_VERDICTS`] held verdicts in one transaction inside the write
    /// gate. If that fails they are dropped: their events stay pending, and the workers take
    /// them after [`INLINE_GRACE_MS`].
    async fn apply(&mut self, conn: &mut WriterConn, settings: &WriterSettings) {
        let take = self.verdicts.len().min(HELD_VERDICTS);
        let verdicts: InlineBatch = self.verdicts.drain(..take).collect();
        // What is left waits for the next round, behind the next batch of webhooks.
        self.since = (!self.verdicts.is_empty()).then(std::time::Instant::now);
        let Some(inline) = &settings.inline else {
            return;
        };
        let now = now_ms();
        let apply = Apply {
            now,
            retry_at: (inline.first_retry)(now),
            forwarding: inline.forwarding,
        };
        let writing = settings.gate.enter().await;
        let applying = std::time::Instant::now();
        let outcome = conn.apply_verdicts(&verdicts, apply).await;
        drop(writing);
        metrics::histogram!("gc_status_inline_apply_seconds")
            .record(applying.elapsed().as_secs_f64());
        match outcome {
            Ok(applied) => {
                metrics::counter!("gc_status_events_processed_total").increment(applied.done);
                metrics::counter!("gc_status_events_dead_lettered_total").increment(applied.dead);
                inline.processed.record(applied.done + applied.dead);
                if applied.for_workers > 0 {
                    settings.committed.notify_one();
                }
            }
            Err(err) => tracing::warn!(
                error = %err,
                events = verdicts.len(),
                "applying inline verdicts failed; the workers take these events"
            ),
        }
    }
}

/// The two statements a backend provides for [`insert_batch`], inside the transaction it
/// holds.
pub(crate) trait BatchRows {
    /// Inserts the rows `which` (indexes into `events`, stored under `ids`), skipping ids
    /// already stored; returns for each whether it was new.
    async fn insert_rows(
        &mut self,
        events: &[NewEvent],
        ids: &[String],
        which: &[usize],
    ) -> sqlx::Result<Vec<bool>>;

    /// The stored bodies of the events `ids`.
    async fn stored_bodies(&mut self, ids: &[&str]) -> sqlx::Result<HashMap<String, Vec<u8>>>;
}

/// Applies `verdicts` at `apply`'s time, in the caller's transaction.
pub(crate) async fn apply_held(
    tx: &mut impl Statements,
    verdicts: &InlineBatch,
    apply: Apply,
) -> sqlx::Result<InlineApplied> {
    apply_verdicts(tx, verdicts, apply.now, apply.retry_at, apply.forwarding).await
}

/// The due time of a new row: an event with a verdict waits [`INLINE_GRACE_MS`] before the
/// workers may claim it (the writer normally finishes it within [`HELD_FOR`]).
pub(crate) fn first_due(event: &NewEvent) -> i64 {
    if event.goes_inline() {
        event.received_at.saturating_add(INLINE_GRACE_MS)
    } else {
        event.received_at
    }
}

/// Whether any of `events` goes to the workers rather than being finished by its verdict.
pub(crate) fn any_for_workers(events: &[NewEvent]) -> bool {
    events.iter().any(|e| !e.goes_inline())
}

/// Inserts `events` inside the caller's transaction; returns for each the id it is stored
/// under and whether it was new.
///
/// A redelivery is the *same* event: same id **and** same body. Senders that reuse an id for
/// different events (a conversation id sent with every state change) must not lose the later
/// ones, so an event whose id is taken by a different body is stored under a derived id,
/// `<id>~<first 16 hex digits of the body's SHA-256>`: deterministic, so its own redelivery is
/// still recognised.
///
/// Each distinct (id, body) is resolved against what is stored under that id before any id is
/// derived: when a batch holds a new body A under a reused id *and* a redelivery of the body B
/// already stored under it, B is the duplicate and A gets the derived id (not the other way
/// round, which would store B twice). A derived id that turns out to be taken by yet another
/// body is derived again, longer.
#[tracing::instrument(skip_all, fields(events = events.len()))]
pub(crate) async fn insert_batch(
    tx: &mut impl BatchRows,
    events: &[NewEvent],
) -> sqlx::Result<Vec<Receipt>> {
    // Within the batch, identical deliveries follow their first copy (`leader`).
    let mut leader: Vec<usize> = (0..events.len()).collect();
    let mut first_copy: HashMap<(&str, &[u8]), usize> = HashMap::with_capacity(events.len());
    let mut bodies_per_id: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    let mut distinct = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        match first_copy.entry((event.id.as_str(), &event.payload[..])) {
            Entry::Occupied(first) => leader[i] = *first.get(),
            Entry::Vacant(slot) => {
                slot.insert(i);
                *bodies_per_id.entry(event.id.as_str()).or_default() += 1;
                distinct.push(i);
            }
        }
    }
    // How far each distinct event's id is derived: 0 is its own id.
    let mut level = vec![0u8; events.len()];
    // Ids that several distinct bodies of this batch claim: the stored body (if any) keeps
    // the id, the others derive theirs from the start. This costs a read only for batches
    // that hold such a clash, which the common batch does not.
    let contested: Vec<&str> = bodies_per_id
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&id, _)| id)
        .collect();
    if !contested.is_empty() {
        let stored = tx.stored_bodies(&contested).await?;
        let mut id_holder: HashMap<&str, usize> = HashMap::new();
        for &i in &distinct {
            let id = events[i].id.as_str();
            if bodies_per_id[id] < 2 {
                continue;
            }
            if let Some(body) = stored.get(id) {
                if body[..] != events[i].payload[..] {
                    level[i] = 1;
                }
            } else {
                id_holder.entry(id).or_insert(i);
            }
        }
        for &i in &distinct {
            let id = events[i].id.as_str();
            if let Some(&holder) = id_holder.get(id) {
                if holder != i {
                    level[i] = 1;
                }
            }
        }
    }
    let mut ids: Vec<String> = (0..events.len())
        .map(|i| derived_id(&events[i], level[i]))
        .collect();
    let mut stored = vec![Stored::Duplicate; events.len()];

    let mut pending = distinct.clone();
    loop {
        let inserted = tx.insert_rows(events, &ids, &pending).await?;
        let taken: Vec<usize> = pending
            .iter()
            .zip(&inserted)
            .filter_map(|(&i, &new)| {
                if new {
                    stored[i] = Stored::New;
                }
                (!new).then_some(i)
            })
            .collect();
        if taken.is_empty() {
            break;
        }
        // Taken ids: the same body is a redelivery, another body moves on to a derived id.
        let names: Vec<&str> = taken.iter().map(|&i| ids[i].as_str()).collect();
        let stored_bodies = tx.stored_bodies(&names).await?;
        let mut again = Vec::new();
        for i in taken {
            let same_body = stored_bodies
                .get(&ids[i])
                .is_some_and(|body| body[..] == events[i].payload[..]);
            if !same_body {
                if level[i] >= MAX_DERIVATION {
                    return Err(sqlx::Error::Protocol(format!(
                        "no free id for a body under `{}`: every derived id is taken by another body",
                        events[i].id
                    )));
                }
                level[i] += 1;
                ids[i] = derived_id(&events[i], level[i]);
                again.push(i);
            }
        }
        if again.is_empty() {
            break;
        }
        pending = again;
    }

    let receipts = (0..events.len())
        .map(|i| {
            let first = leader[i];
            Receipt {
                id: ids[first].clone(),
                stored: if first == i {
                    stored[i]
                } else {
                    Stored::Duplicate
                },
                id_reused: level[first] > 0,
            }
        })
        .collect();
    Ok(receipts)
}

/// Derivations tried before a body is refused (unreachable short of a sender that takes
/// derived ids for other bodies on purpose).
const MAX_DERIVATION: u8 = 3;

/// The id an event is stored under at derivation `level`: 0 its own; 1 with the first 16 hex
/// digits of its body's SHA-256; 2 with all 64; 3 with all 64 and a marker.
pub(crate) fn derived_id(event: &NewEvent, level: u8) -> String {
    if level == 0 {
        return event.id.clone();
    }
    let digest = hex::encode(Sha256::digest(&event.payload));
    match level {
        1 => format!("{}~{}", event.id, &digest[..16]),
        2 => format!("{}~{digest}", event.id),
        _ => format!("{}~{digest}~{level}", event.id),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small event for the workers, stored under `id`.
    pub(crate) fn event(id: &str) -> NewEvent {
        NewEvent {
            id: id.to_owned(),
            event_type: "test".to_owned(),
            payload: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
            received_at: 1,
            processed: None,
        }
    }

    async fn receipts(conn: &mut WriterConn, events: &[NewEvent]) -> sqlx::Result<Vec<Receipt>> {
        conn.commit_batch(events).await
    }

    /// A fresh database on the backend under test, and a writer connection.
    async fn temp_store() -> (
        crate::server::store::TestStore,
        crate::server::store::Db,
        WriterConn,
    ) {
        crate::server::store::test_store().await
    }

    fn event_with(id: &str, body: &str) -> NewEvent {
        NewEvent {
            payload: Bytes::from(body.to_owned()),
            ..event(id)
        }
    }

    fn outcomes(receipts: &[Receipt]) -> Vec<Stored> {
        receipts.iter().map(|r| r.stored).collect()
    }

    #[tokio::test]
    async fn a_batch_mixing_new_stored_and_repeated_ids_is_told_apart() {
        let (_dir, db, mut conn) = temp_store().await;

        let first = receipts(&mut conn, &[event("a")]).await.expect("insert");
        assert_eq!(outcomes(&first), vec![Stored::New]);
        let mixed = [event("b"), event("a"), event("c"), event("b")];
        let stored = receipts(&mut conn, &mixed).await.expect("insert");
        assert_eq!(
            outcomes(&stored),
            vec![
                Stored::New,
                Stored::Duplicate,
                Stored::New,
                Stored::Duplicate
            ]
        );
        assert!(stored.iter().all(|r| !r.id_reused));
        let all_old = receipts(&mut conn, &[event("c"), event("a")])
            .await
            .expect("insert");
        assert_eq!(
            outcomes(&all_old),
            vec![Stored::Duplicate, Stored::Duplicate]
        );
        assert_eq!(db.event_ids().await.expect("ids"), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_redelivery_beside_a_new_body_under_the_same_id_is_stored_once() {
        let (_dir, db, mut conn) = temp_store().await;
        let b = r#"{"state":"queued"}"#;
        let a = r#"{"state":"connected"}"#;
        let first = receipts(&mut conn, &[event_with("x", b)])
            .await
            .expect("insert");
        assert_eq!(outcomes(&first), vec![Stored::New]);
        // The new body first, then the redelivery of the stored one, then the new one again.
        let batch = [event_with("x", a), event_with("x", b), event_with("x", a)];
        let second = receipts(&mut conn, &batch).await.expect("insert");
        assert_eq!(
            outcomes(&second),
            vec![Stored::New, Stored::Duplicate, Stored::Duplicate]
        );
        assert_eq!(second[1].id, "x", "the stored body keeps its id");
        assert_eq!(second[0].id, derived_id(&batch[0], 1));
        assert_eq!(second[2].id, second[0].id);
        let mut ids = db.event_ids().await.expect("ids");
        ids.sort();
        assert_eq!(ids, vec!["x".to_owned(), derived_id(&batch[0], 1)]);
    }

    #[tokio::test]
    async fn a_derived_id_taken_by_another_body_is_derived_again() {
        let (_dir, db, mut conn) = temp_store().await;
        let a = event_with("y", r#"{"n":1}"#);
        let squatter = event_with(&derived_id(&a, 1), r#"{"n":"another body"}"#);
        receipts(&mut conn, &[event_with("y", r#"{"n":0}"#), squatter])
            .await
            .expect("insert");
        let stored = receipts(&mut conn, &[event_with("y", r#"{"n":1}"#)])
            .await
            .expect("insert");
        assert_eq!(outcomes(&stored), vec![Stored::New]);
        assert_eq!(stored[0].id, derived_id(&a, 2));
        let again = receipts(&mut conn, &[event_with("y", r#"{"n":1}"#)])
            .await
            .expect("insert");
        assert_eq!(
            (again[0].id.as_str(), again[0].stored),
            (stored[0].id.as_str(), Stored::Duplicate)
        );
        assert_eq!(db.event_ids().await.expect("ids").len(), 3);
    }

    #[tokio::test]
    async fn a_reused_id_with_another_body_is_a_new_event_and_its_redelivery_is_not() {
        let (_dir, db, mut conn) = temp_store().await;
        let queued = event_with("conv-1", r#"{"state":"queued"}"#);
        let connected = event_with("conv-1", r#"{"state":"connected"}"#);
        let ended = event_with("conv-1", r#"{"state":"disconnected"}"#);

        let first = receipts(&mut conn, &[queued]).await.expect("insert");
        assert_eq!(
            (first[0].id.as_str(), first[0].stored),
            ("conv-1", Stored::New)
        );
        // Across batches, and two different bodies plus a redelivery within one batch.
        let second = receipts(
            &mut conn,
            &[
                event_with("conv-1", r#"{"state":"connected"}"#),
                ended,
                event_with("conv-1", r#"{"state":"disconnected"}"#),
            ],
        )
        .await
        .expect("insert");
        assert_eq!(
            outcomes(&second),
            vec![Stored::New, Stored::New, Stored::Duplicate]
        );
        assert!(second.iter().all(|r| r.id_reused));
        assert_eq!(second[0].id, derived_id(&connected, 1));
        assert_ne!(second[0].id, second[1].id);
        assert_eq!(second[1].id, second[2].id);
        // True redeliveries of every one are stored once, under the same ids.
        let again = receipts(
            &mut conn,
            &[
                event_with("conv-1", r#"{"state":"queued"}"#),
                event_with("conv-1", r#"{"state":"connected"}"#),
                event_with("conv-1", r#"{"state":"disconnected"}"#),
            ],
        )
        .await
        .expect("insert");
        assert_eq!(outcomes(&again), vec![Stored::Duplicate; 3]);
        assert_eq!(again[0].id, "conv-1");
        assert_eq!(again[1].id, second[0].id);
        assert_eq!(again[2].id, second[1].id);
        assert_eq!(db.event_ids().await.expect("ids").len(), 3);
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_is_stored_whole() {
        let (_dir, db, mut conn) = temp_store().await;
        let events: Vec<NewEvent> = (0..1_000).map(|i| event(&format!("e{i}"))).collect();
        let stored = receipts(&mut conn, &events).await.expect("insert");
        assert!(stored.iter().all(|r| r.stored == Stored::New));
        assert_eq!(db.event_ids().await.expect("ids").len(), events.len());
    }
}
