//! The audit trail: who did what to the dead letters, and who signed in.

use super::{
    client::ClientIp,
    domain::now_ms,
    store::{AuditRecord, Db},
};

/// Appends one entry now. A failure is logged, never the caller's: the action it records
/// already happened.
pub async fn record(
    db: &Db,
    actor: &str,
    action: &str,
    count: Option<u64>,
    detail: serde_json::Value,
) {
    let record = AuditRecord {
        at: now_ms(),
        actor,
        action,
        count: count.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        detail,
    };
    if let Err(err) = db.record_audit(&record).await {
        tracing::error!(error = %err, action, "cannot record the audit entry");
    }
}

/// Records `failures` wrong secrets from `client` at once (the sign-in guard hands them over
/// at most once a minute per client, so a flood writes one row a minute, not one a guess).
pub async fn failed_secrets(
    db: &Db,
    via: &str,
    client: Option<ClientIp>,
    action: &str,
    failures: u32,
) {
    let actor = match client {
        Some(ip) => format!("{via} from {ip}"),
        None => format!("{via} from an unknown address"),
    };
    record(
        db,
        &actor,
        action,
        Some(failures.into()),
        serde_json::json!({}),
    )
    .await;
}
