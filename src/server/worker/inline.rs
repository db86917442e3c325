//! The inline applier (PostgreSQL): finishes events that were processed as they arrived, in
//! transactions of its own beside the ingest writer's.
//!
//! On SQLite the writer applies the verdicts itself, held and coalesced between its batches
//! (one writer at a time there: a task of its own would only wait for the write gate, as it
//! did when profiled). PostgreSQL runs writers side
//! by side: there the writer commits the events, answers the senders and hands the verdicts
//! here, and this task applies them in one short transaction per round — coalescing whatever
//! queued up meanwhile — with `synchronous_commit=off` (losing the last of them to a crash only
//! means the workers process those events again), while the next batch commits. Measured with
//! random ids and real-size bodies, applying them in the writer's transaction instead halved
//! PostgreSQL's acknowledgements per second.
//!
//! Nothing depends on this task for safety: events wait for it only [`INLINE_GRACE_MS`]; after
//! a crash, or if its queue is full, the workers claim them as usual.
//!
//! [`INLINE_GRACE_MS`]: crate::server::store::writer::INLINE_GRACE_MS

use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::retry::Backoff;
use crate::server::domain::now_ms;
use crate::server::{rates::RateMeter, store::writer::InlineBatch, store::Db};

/// Committed batches that may wait for the applier; beyond that the workers take over.
const QUEUE: usize = 1024;
/// Most events applied in one transaction.
const MAX_ROUND: usize = 4096;

pub fn channel() -> (mpsc::Sender<InlineBatch>, mpsc::Receiver<InlineBatch>) {
    mpsc::channel(QUEUE)
}

/// Applies inline verdicts until `stop` is cancelled or every sender is gone.
pub async fn run(
    db: Db,
    mut batches: mpsc::Receiver<InlineBatch>,
    backoff: Backoff,
    processed: Arc<RateMeter>,
    wake_workers: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut round = InlineBatch::new();
    loop {
        let first = tokio::select! {
            batch = batches.recv() => batch,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { return };
        round.extend(first);
        while round.len() < MAX_ROUND {
            match batches.try_recv() {
                Ok(more) => round.extend(more),
                Err(_) => break,
            }
        }
        let now = now_ms();
        match db
            .complete_inline(&round, now, backoff.retry_at(now, 1))
            .await
        {
            Ok(applied) => {
                metrics::counter!("gc_status_events_processed_total").increment(applied.done);
                metrics::counter!("gc_status_events_dead_lettered_total").increment(applied.dead);
                processed.record(applied.done + applied.dead);
                if applied.for_workers > 0 {
                    wake_workers.notify_one();
                }
            }
            Err(err) => tracing::warn!(
                error = %err,
                events = round.len(),
                "applying inline results failed; the workers take these events over"
            ),
        }
        round.clear();
    }
}
