//! Background processing: claim due events under a lease → interpret → complete (done with its
//! statistics, retry with backoff, or dead letter) in one transaction.
//!
//! A crash at any point loses nothing: an unfinished claim's lease expires and the event is
//! claimed again (the crash counts as an attempt, so an event that kills the process ends in
//! the dead letters instead of looping). Statistics merges are idempotent, so an event applied
//! twice still counts once.

pub mod inline;
pub mod retry;

use std::{sync::Arc, time::Duration};

use futures_util::{future::BoxFuture, StreamExt as _};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use self::retry::Backoff;
use super::{
    config::WorkerConfig,
    domain::{ClaimedEvent, Effect, Outcome, ProcessError, QueueOfConversation},
    rates::RateMeter,
    store::{ClaimRequest, Completed, Db},
};
use crate::server::domain::interpret::{self, Rules};
use crate::server::domain::now_ms;

/// Turns one claimed event into its effect. Errors say whether a retry can help.
pub trait Processor: Send + Sync + 'static {
    fn process(&self, event: &ClaimedEvent) -> Result<Effect, ProcessError>;

    /// Whether events may be processed as they arrive, in the request that delivers them and
    /// the commit that stores them (pure and quick, like interpreting statistics). A
    /// processor that calls out (a downstream) must not: it runs in the workers only.
    fn inline(&self) -> bool {
        false
    }
}

/// Where a conversation queued, asked of an outside service (the Genesys Cloud connector's
/// conversation details) when no stored event says. `Ok(None)`: not known there yet.
pub trait ConversationLookup: Send + Sync + 'static {
    fn queue_of<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<QueueOfConversation>, String>>;
}

/// Lookups one batch makes at once.
const LOOKUPS_AT_ONCE: usize = 8;

/// How long after its receipt a conversation Genesys's details do not know yet (404) is
/// retried whatever the attempt limit: analytics catches up with a new one within seconds.
const ANALYTICS_LAG_MS: i64 = 60_000;

/// The processor's verdict on `event`. A panic is that event's permanent failure, never the
/// caller's: the worker, its batch, or the request that delivered it go on.
pub fn verdict(processor: &dyn Processor, event: &ClaimedEvent) -> Result<Effect, ProcessError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| processor.process(event))) {
        Ok(verdict) => verdict,
        Err(panic) => {
            let message = panic_message(&*panic);
            tracing::error!(event_id = %event.id, %message, "processing panicked; dead-lettering the event");
            Err(ProcessError::Permanent(format!(
                "processing panicked: {message}"
            )))
        }
    }
}

/// The text a panic carried (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// The production processor: queue statistics from the event's payload.
pub struct StatsProcessor {
    pub rules: Rules,
}

impl Processor for StatsProcessor {
    fn process(&self, event: &ClaimedEvent) -> Result<Effect, ProcessError> {
        self.interpret(event)
    }

    fn inline(&self) -> bool {
        true
    }
}

impl StatsProcessor {
    fn interpret(&self, event: &ClaimedEvent) -> Result<Effect, ProcessError> {
        interpret::interpret(
            &event.event_type,
            &event.payload,
            event.received_at,
            &self.rules,
        )
    }
}

/// [`StatsProcessor`] with a poison event type that hangs its worker thread forever
/// (`GC_STATUS_FAULT_HANG_ON_TYPE`): how the crash-loop tests make the real binary hold an
/// event until it is killed.
pub struct HangingProcessor {
    pub inner: StatsProcessor,
    pub hang_on_type: String,
}

impl Processor for HangingProcessor {
    fn process(&self, event: &ClaimedEvent) -> Result<Effect, ProcessError> {
        if event.event_type == self.hang_on_type {
            tracing::warn!(event_id = %event.id, "fault injection: hanging on this event");
            let hang = || loop {
                std::thread::sleep(Duration::from_secs(3600));
            };
            // Hand this thread's other tasks to the runtime first, so only this worker hangs.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(hang),
                _ => hang(),
            }
        }
        self.inner.process(event)
    }
}

/// Worker settings, resolved from [`WorkerConfig`].
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub workers: usize,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub lease: Duration,
    pub batch: usize,
    pub retention: Duration,
    /// How often an idle worker looks for due retries.
    pub poll: Duration,
    /// How long shutdown waits for an in-flight batch before releasing its leases.
    pub grace: Duration,
    /// Open conversations older than this lost their end event and are pruned.
    pub max_waiting: Duration,
}

impl WorkerSettings {
    pub fn from_config(c: &WorkerConfig) -> Self {
        WorkerSettings {
            workers: c.workers,
            max_attempts: c.max_attempts.max(1),
            backoff: Backoff {
                base: Duration::from_millis(c.retry_base_ms),
                cap: Duration::from_millis(c.retry_cap_ms.max(c.retry_base_ms)),
            },
            lease: Duration::from_secs(c.lease_secs.max(1)),
            batch: c.worker_batch.clamp(1, 5000),
            retention: Duration::from_secs(c.retention_days * 24 * 3600),
            poll: Duration::from_millis(200),
            grace: Duration::from_secs(5),
            max_waiting: Duration::from_secs(c.max_waiting_secs),
        }
    }
}

/// Events never attempted are read this many claim batches at a time (their completion is
/// one cheap statement per kind, so larger rounds pay).
const FRESH_BATCH_FACTOR: usize = 5;

/// `poll` stretched or shrunk by up to half at random: workers on several replicas (or
/// restarted together) then do not poll the shared database in lockstep.
fn jittered(poll: Duration) -> Duration {
    poll.mul_f64(rand::random_range(0.5..1.5))
}

/// A handle that runs batches; cheap to clone.
#[derive(Clone)]
pub struct Worker {
    db: Db,
    processor: Arc<dyn Processor>,
    settings: Arc<WorkerSettings>,
    processed: Arc<RateMeter>,
    lookup: Option<Arc<dyn ConversationLookup>>,
}

impl Worker {
    pub fn new(
        db: Db,
        processor: Arc<dyn Processor>,
        settings: WorkerSettings,
        processed: Arc<RateMeter>,
    ) -> Self {
        Worker {
            db,
            processor,
            settings: Arc::new(settings),
            processed,
            lookup: None,
        }
    }

    /// Looks up, with `lookup`, where conversations that no stored event places queued.
    pub fn with_lookup(mut self, lookup: Arc<dyn ConversationLookup>) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// Places the conversations of state changes without a queue that no stored event
    /// explains, by asking the lookup; one it does not know yet is retried with backoff
    /// (analytics lags a few seconds behind a new conversation).
    async fn look_up_unplaced(&self, outcomes: &mut [(ClaimedEvent, Outcome)], now: i64) {
        let Some(lookup) = &self.lookup else { return };
        let unplaced: Vec<String> = outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Done(Effect::Conversation(c)) if c.queue_id.is_none() => {
                    Some(c.conversation_id.clone())
                }
                _ => None,
            })
            .collect();
        if unplaced.is_empty() {
            return;
        }
        let placed = match self.db.placed_conversations(&unplaced).await {
            Ok(placed) => placed,
            // The completion checks again; without the answer, nothing is looked up.
            Err(_) => return,
        };
        let wanted: std::collections::BTreeSet<&String> =
            unplaced.iter().filter(|c| !placed.contains(*c)).collect();
        let answers: std::collections::HashMap<String, _> =
            futures_util::stream::iter(wanted.into_iter().cloned())
                .map(|id| async move {
                    let answer = lookup.queue_of(&id).await;
                    (id, answer)
                })
                .buffer_unordered(LOOKUPS_AT_ONCE)
                .collect()
                .await;
        for (event, outcome) in outcomes.iter_mut() {
            let Outcome::Done(Effect::Conversation(c)) = outcome else {
                continue;
            };
            match answers.get(&c.conversation_id) {
                Some(Ok(Some(found))) => {
                    metrics::counter!("gc_status_conversations_looked_up_total", "result" => "found")
                        .increment(1);
                    c.queue_id = Some(found.queue_id.clone());
                    if c.media_type.is_none() {
                        c.media_type.clone_from(&found.media_type);
                    }
                }
                Some(Ok(None)) => {
                    metrics::counter!("gc_status_conversations_looked_up_total", "result" => "not_yet")
                        .increment(1);
                    let error = format!(
                        "conversation {} is in no queue gc-status knows, and Genesys Cloud has \
                         no details of it yet (404): retried",
                        c.conversation_id
                    );
                    // Analytics lags a new conversation by seconds: while the event is young
                    // a 404 is "not yet" and spends none of the attempts' limit.
                    let young = now.saturating_sub(event.received_at) < ANALYTICS_LAG_MS;
                    *outcome = if young {
                        let attempt = u32::try_from(event.attempts).unwrap_or(u32::MAX);
                        Outcome::Retry {
                            at: self.settings.backoff.retry_at(now, attempt),
                            error,
                        }
                    } else {
                        self.failure(event, ProcessError::Transient(error), now)
                    };
                }
                Some(Err(why)) => {
                    metrics::counter!("gc_status_conversations_looked_up_total", "result" => "failed")
                        .increment(1);
                    let error = format!(
                        "conversation {} is in no queue gc-status knows, and its details could \
                         not be read: {why}",
                        c.conversation_id
                    );
                    *outcome = self.failure(event, ProcessError::Transient(error), now);
                }
                None => {}
            }
        }
    }

    /// Decides what happens to a claimed event given the processor's verdict. A panic in the
    /// processor is that event's permanent failure, never the worker's or its batch's.
    fn outcome(&self, event: &ClaimedEvent, now: i64) -> Outcome {
        match verdict(&*self.processor, event) {
            Ok(effect) => Outcome::Done(effect),
            Err(error) => self.failure(event, error, now),
        }
    }

    /// What a failed attempt leads to: a retry with backoff, or the dead letters.
    fn failure(&self, event: &ClaimedEvent, error: ProcessError, now: i64) -> Outcome {
        match error {
            ProcessError::Permanent(error) => Outcome::Dead { error },
            ProcessError::Transient(error)
                if event.attempts >= i64::from(self.settings.max_attempts) =>
            {
                Outcome::Dead {
                    error: format!("gave up after {} attempts: {error}", event.attempts),
                }
            }
            ProcessError::Transient(error) => {
                let attempt = u32::try_from(event.attempts).unwrap_or(u32::MAX);
                Outcome::Retry {
                    at: self.settings.backoff.retry_at(now, attempt),
                    error,
                }
            }
        }
    }

    /// Claims one batch due at `now` under `token`, processes it and records the outcomes.
    /// Returns how many events were claimed (0: nothing due).
    pub async fn run_batch(&self, token: i64, now: i64) -> anyhow::Result<usize> {
        self.run_batch_of(token, now, 0, 1).await
    }

    /// [`Self::run_batch`] for worker `part` of `parts`.
    ///
    /// With a pure processor, events never attempted take a shorter path: read without a
    /// lease, processed, and completed in one short transaction that changes only rows still
    /// untouched (as inline processing does). That halves the writes per event of a backlog
    /// and cannot apply anything twice. Retries, expired leases and failures go the leased way.
    async fn run_batch_of(
        &self,
        token: i64,
        now: i64,
        part: i64,
        parts: i64,
    ) -> anyhow::Result<usize> {
        if self.processor.inline() {
            let limit = (self.settings.batch * FRESH_BATCH_FACTOR) as i64;
            let fresh = self.db.due_fresh(now, limit, part, parts).await?;
            if !fresh.is_empty() {
                let verdicts: Vec<_> = fresh
                    .iter()
                    .map(|event| (event.id.clone(), verdict(&*self.processor, event)))
                    .collect();
                let retry_at = self.settings.backoff.retry_at(now, 1);
                let applied = self.db.complete_inline(&verdicts, now, retry_at).await?;
                metrics::counter!("gc_status_events_processed_total").increment(applied.done);
                metrics::counter!("gc_status_events_dead_lettered_total").increment(applied.dead);
                metrics::counter!("gc_status_events_retried_total").increment(applied.for_workers);
                self.processed.record(applied.done + applied.dead);
                return Ok(fresh.len());
            }
        }
        let request = ClaimRequest {
            token,
            lease_ms: self.settings.lease.as_millis() as i64,
            limit: self.settings.batch as i64,
        };
        let max_attempts = i64::from(self.settings.max_attempts);
        let claimed = self.db.claim_due(now, request, max_attempts).await?;
        if claimed.abandoned > 0 {
            metrics::counter!("gc_status_events_dead_lettered_total").increment(claimed.abandoned);
            metrics::counter!("gc_status_events_abandoned_total").increment(claimed.abandoned);
            tracing::warn!(
                events = claimed.abandoned,
                "dead-lettered events whose last allowed claim never finished"
            );
        }
        if claimed.events.is_empty() {
            return Ok(claimed.abandoned as usize);
        }
        let mut outcomes: Vec<(ClaimedEvent, Outcome)> = claimed
            .events
            .into_iter()
            .map(|event| {
                let outcome = self.outcome(&event, now);
                (event, outcome)
            })
            .collect();
        self.look_up_unplaced(&mut outcomes, now).await;
        let completed = self
            .db
            .complete(token, now, &mut outcomes, |event, reason| {
                self.failure(event, ProcessError::Transient(reason), now)
            })
            .await?;
        self.record(&completed, &outcomes, now);
        Ok(outcomes.len() + claimed.abandoned as usize)
    }

    fn record(&self, c: &Completed, outcomes: &[(ClaimedEvent, Outcome)], now: i64) {
        metrics::counter!("gc_status_events_processed_total").increment(c.done);
        metrics::counter!("gc_status_events_retried_total").increment(c.retried);
        metrics::counter!("gc_status_events_dead_lettered_total").increment(c.dead);
        self.processed.record(c.done + c.dead);
        let latency = metrics::histogram!("gc_status_processing_latency_seconds");
        for (event, outcome) in outcomes {
            if matches!(outcome, Outcome::Done(_)) {
                latency.record((now - event.received_at).max(0) as f64 / 1000.0);
            }
        }
        if c.lost_lease > 0 {
            tracing::warn!(
                events = c.lost_lease,
                "lease expired before completion; another claim owns these events"
            );
        }
    }

    /// Runs batches at `now` until nothing is due (tests and tools).
    pub async fn run_until_idle_at(&self, now: i64) -> anyhow::Result<usize> {
        let token = new_token();
        let mut total = 0;
        loop {
            let n = self.run_batch(token, now).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Starts the worker tasks and the pruner. They stop when `shutdown` is cancelled:
    /// no new claims, in-flight batches get a grace period, unfinished leases are released.
    pub fn spawn(self, wake: Arc<Notify>, shutdown: CancellationToken) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for part in 0..self.settings.workers {
            tasks.spawn(self.clone().work(part, wake.clone(), shutdown.clone()));
        }
        if self.settings.workers > 0 {
            tasks.spawn(self.prune_periodically(shutdown));
        }
        tasks
    }

    async fn work(self, part: usize, wake: Arc<Notify>, shutdown: CancellationToken) {
        let token = new_token();
        let parts = self.settings.workers.max(1) as i64;
        while !shutdown.is_cancelled() {
            let batch = self.run_batch_of(token, now_ms(), part as i64, parts);
            let result = tokio::select! {
                result = batch => result,
                () = grace_after(&shutdown, self.settings.grace) => {
                    break;
                }
            };
            match result {
                // Idle: sleep until ingestion wakes us (low latency for sparse traffic) or a
                // retry may be due.
                Ok(0) => {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(jittered(self.settings.poll)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                // A full batch: there is a backlog, keep going.
                Ok(n) if n >= self.settings.batch => {}
                // Caught up: let events accumulate for one poll interval instead of chasing
                // every commit. Claims stay large, and ingestion is not starved of the write
                // lock by a stream of tiny worker transactions.
                Ok(_) => {
                    tokio::select! {
                        () = tokio::time::sleep(jittered(self.settings.poll)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(err) => {
                    tracing::warn!("processing batch failed, retrying shortly: {err:#}");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
            }
        }
        match self.db.release(token, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "released unfinished leases"),
            Err(err) => tracing::warn!(error = %err, "could not release leases; they expire"),
        }
    }

    /// Prunes old events and conversations every minute until `shutdown`.
    async fn prune_periodically(self, shutdown: CancellationToken) {
        const EVERY: Duration = Duration::from_secs(60);
        let stop = shutdown.clone();
        crate::server::periodic::every(EVERY, shutdown, || self.clone().prune(stop.clone())).await
    }

    /// Deletes done events past retention and conversations no longer needed, in small
    /// batches that keep each write transaction short next to ingestion.
    async fn prune(self, shutdown: CancellationToken) {
        const CHUNK: i64 = 1000;
        // Conversations stay two days so "today" is complete in any time zone.
        const CONVERSATION_KEEP_MS: i64 = 48 * 3600 * 1000;
        let now = now_ms();
        let cutoff = now - self.settings.retention.as_millis() as i64;
        while !shutdown.is_cancelled() {
            match self.db.prune(cutoff, CHUNK).await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned old events"),
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "pruning failed");
                    break;
                }
            }
        }
        let open_before = now.saturating_sub(
            i64::try_from(self.settings.max_waiting.as_millis()).unwrap_or(i64::MAX),
        );
        while !shutdown.is_cancelled() {
            match self
                .db
                .prune_conversations(now - CONVERSATION_KEEP_MS, open_before, CHUNK)
                .await
            {
                Ok(n) if n == CHUNK as u64 => {}
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "pruning conversations failed");
                    break;
                }
            }
        }
    }
}

/// Resolves `grace` after `shutdown` is cancelled.
pub(crate) async fn grace_after(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

/// A claim token: identifies the leases of one worker task.
pub(crate) fn new_token() -> i64 {
    rand::random::<i64>() & i64::MAX
}

/// Recomputes all statistics from the done events with the production interpretation.
pub async fn rebuild_stats(db: &Db, rules: &Rules) -> anyhow::Result<u64> {
    let applied = db
        .rebuild_stats(|event_type, payload, received_at| {
            interpret::interpret(event_type, payload, received_at, rules).ok()
        })
        .await?;
    Ok(applied)
}
