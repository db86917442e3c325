//! Sign-in sessions: tower-sessions with its records in gc-status's own database.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tower_sessions::{
    cookie::{time::OffsetDateTime, SameSite},
    session::{Id, Record},
    session_store, Expiry, SessionManagerLayer, SessionStore,
};

use crate::server::{domain::now_ms, store::Db};

/// Session records in the `sessions` table.
#[derive(Clone, Debug)]
pub struct DbSessionStore {
    db: Db,
}

impl DbSessionStore {
    pub fn new(db: Db) -> Self {
        DbSessionStore { db }
    }
}

fn backend(err: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn expires_ms(record: &Record) -> i64 {
    i64::try_from(record.expiry_date.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data).map_err(backend)?;
        // A fresh random id collides with an existing one practically never; if it does, draw
        // another rather than take over someone's session.
        loop {
            let written = self
                .db
                .save_session(&record.id.to_string(), &data, expires_ms(record), true)
                .await
                .map_err(backend)?;
            if written {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_string(&record.data).map_err(backend)?;
        self.db
            .save_session(&record.id.to_string(), &data, expires_ms(record), false)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some((data, expires_at)) = self
            .db
            .load_session(&id.to_string(), now_ms())
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        // A record that no longer parses (written by another version) is no session.
        let Ok(data) = serde_json::from_str(&data) else {
            return Ok(None);
        };
        let expiry_date =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(expires_at) * 1_000_000)
                .map_err(backend)?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.db
            .delete_session(&id.to_string())
            .await
            .map_err(backend)
    }
}

/// Cookie settings: HttpOnly, SameSite=Strict, Path=/; over https also `Secure` with the
/// `__Host-` prefix (which browsers only accept with those), so no sub-domain can set it.
pub fn layer(db: Db, secure: bool, idle: Duration) -> SessionManagerLayer<DbSessionStore> {
    let name = if secure {
        "__Host-gc-status-session"
    } else {
        "gc-status-session"
    };
    let idle = tower_sessions::cookie::time::Duration::try_from(idle)
        .unwrap_or(tower_sessions::cookie::time::Duration::HOUR);
    SessionManagerLayer::new(DbSessionStore::new(db))
        .with_name(name)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_path("/")
        .with_secure(secure)
        .with_expiry(Expiry::OnInactivity(idle))
}

/// Deletes expired sessions, and audit entries past `audit_retention`, every few minutes
/// until `stop`.
pub async fn prune_periodically(db: Db, audit_retention: Duration, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(300);
    crate::server::periodic::every(EVERY, stop, || {
        let db = db.clone();
        async move {
            let now = now_ms();
            if let Err(err) = db.prune_sessions(now).await {
                tracing::warn!(error = %err, "pruning expired sessions failed; retrying later");
            }
            let keep_ms = i64::try_from(audit_retention.as_millis()).unwrap_or(i64::MAX);
            if let Err(err) = db.prune_audit(now.saturating_sub(keep_ms)).await {
                tracing::warn!(error = %err, "pruning old audit entries failed; retrying later");
            }
        }
    })
    .await
}
