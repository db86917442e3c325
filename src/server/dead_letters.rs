//! Replaying and discarding dead letters, each with its audit entry: the one service the
//! admin API, the console and the CLI call, so all three act and record alike.

use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{
    audit,
    domain::{now_ms, Selection},
    store::Db,
};

/// Puts the selection back to be processed again, wakes the workers (of this process; other
/// replicas find it at their next poll) and records it in the audit trail under `actor`.
pub async fn replay(
    db: &Db,
    wake_workers: &Notify,
    actor: &str,
    selection: &Selection,
) -> sqlx::Result<u64> {
    let replayed = db.replay_dead_letters(selection, now_ms()).await?;
    metrics::counter!("gc_status_events_replayed_total").increment(replayed);
    if replayed > 0 {
        tracing::info!(events = replayed, "dead letters replayed");
        wake_workers.notify_waiters();
    }
    audit::record(db, actor, "replay", Some(replayed), detail(selection)).await;
    Ok(replayed)
}

/// Deletes the selection for good and records it in the audit trail under `actor`.
pub async fn discard(db: &Db, actor: &str, selection: &Selection) -> sqlx::Result<u64> {
    let discarded = db.discard_dead_letters(selection).await?;
    metrics::counter!("gc_status_events_discarded_total").increment(discarded);
    if discarded > 0 {
        tracing::info!(events = discarded, "dead letters discarded");
    }
    audit::record(db, actor, "discard", Some(discarded), detail(selection)).await;
    Ok(discarded)
}

/// What an audit entry says was selected: the ids, or the filter.
fn detail(selection: &Selection) -> Value {
    match selection {
        Selection::Ids(ids) => json!({ "ids": ids }),
        Selection::Filter(filter) => json!({ "filter": filter }),
    }
}
