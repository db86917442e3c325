//! What a signed-in session carries, and when it ends: past its idle or absolute timeout, or
//! once the secret that granted it is no longer the configured one.

use std::time::Duration;

use axum::http::HeaderValue;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::Portal;
use crate::{model::Role, server::domain::now_ms};

/// The path of the sign-in page.
pub const LOGIN_PATH: &str = "/login";
/// A signed-in session's last-seen time is written back at most this often (it is what the
/// idle timeout counts from), so browsing does not write to the database on every request.
const TOUCH_EVERY_MS: i64 = 60_000;
/// How long a viewer link's session lasts. Wall displays keep one page open for weeks with
/// only the stream's requests, so viewer sessions have no idle timeout.
const VIEWER_SESSION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Session key of [`SignedIn`].
pub const SESSION_KEY: &str = "signed_in";

/// What a session carries once someone signed in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub role: Role,
    /// Epoch ms; the absolute timeout counts from here.
    pub signed_in_at: i64,
    /// Epoch ms; the idle timeout counts from here.
    pub seen_at: i64,
    /// For state-changing requests that carry neither `Origin` nor `Sec-Fetch-Site`.
    pub csrf: String,
    /// The [`Grant`](super::Grant) of the secret that signed it in (sessions from before
    /// grants were recorded have none, and end).
    #[serde(default)]
    pub grant: String,
}

/// The visitor's sign-in, if any and still valid: past the absolute or idle timeout, or when
/// its secret changed, the session is ended. An active session's last-seen time is refreshed
/// (at most once a minute).
pub async fn signed_in(session: &Session, portal: &Portal) -> Option<SignedIn> {
    let mut current: SignedIn = session.get(SESSION_KEY).await.ok().flatten()?;
    let now = now_ms();
    let granted = portal
        .grant(current.role)
        .is_some_and(|grant| grant.matches(&current.grant));
    let (max, idle) = match current.role {
        Role::Viewer => (VIEWER_SESSION, None),
        Role::Admin => (portal.session_max, Some(portal.session_idle)),
    };
    let expired = |since: i64, limit: Duration| {
        now.saturating_sub(since) > i64::try_from(limit.as_millis()).unwrap_or(i64::MAX)
    };
    if !granted
        || expired(current.signed_in_at, max)
        || idle.is_some_and(|idle| expired(current.seen_at, idle))
    {
        let _ = session.flush().await;
        return None;
    }
    if idle.is_some() && now.saturating_sub(current.seen_at) > TOUCH_EVERY_MS {
        current.seen_at = now;
        // Modifying the session makes tower-sessions save it with a new idle expiry.
        let _ = session.insert(SESSION_KEY, &current).await;
    }
    Some(current)
}

/// Starts a session for `role` under a new session id (so an id planted before sign-in is
/// worthless afterwards). Fails when `role`'s sign-in is not configured.
pub async fn sign_in(session: &Session, portal: &Portal, role: Role) -> anyhow::Result<SignedIn> {
    let grant = portal
        .grant(role)
        .ok_or_else(|| anyhow::anyhow!("{role:?} sign-in is not configured"))?;
    let now = now_ms();
    let signed = SignedIn {
        role,
        signed_in_at: now,
        seen_at: now,
        csrf: hex::encode(rand::rng().random::<[u8; 16]>()),
        grant: grant.as_str().to_owned(),
    };
    session.cycle_id().await?;
    if role == Role::Viewer {
        let until = tower_sessions::cookie::time::OffsetDateTime::now_utc()
            + tower_sessions::cookie::time::Duration::try_from(VIEWER_SESSION)?;
        session.set_expiry(Some(tower_sessions::Expiry::AtDateTime(until)));
    }
    session.insert(SESSION_KEY, &signed).await?;
    Ok(signed)
}

/// Ends the session: its record is deleted and the cookie removed.
pub async fn sign_out(session: &Session) -> anyhow::Result<()> {
    session.flush().await?;
    Ok(())
}

/// A local path to return to after sign-in: only same-site paths, never `//host` or a URL.
pub fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control())
        && HeaderValue::from_str(next).is_ok()
        && next != LOGIN_PATH;
    if ok {
        next.to_owned()
    } else {
        "/admin/dead-letters".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::config::Config;

    async fn store() -> (
        Arc<super::super::sessions::DbSessionStore>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let (db, _writer) = crate::server::store::open(&url, Duration::from_secs(5))
            .await
            .expect("open");
        (
            Arc::new(super::super::sessions::DbSessionStore::new(db)),
            dir,
        )
    }

    fn portal(admin_token: &str) -> Portal {
        let mut config = Config::for_database("sqlite://unused.db");
        config.admin_token = Some(admin_token.into());
        Portal::from_config(&config).expect("defaults")
    }

    #[tokio::test]
    async fn sessions_end_after_the_idle_and_the_absolute_timeout() {
        let (store, _dir) = store().await;
        let portal = portal("admin-secret");
        let grant = portal.grant(Role::Admin).expect("admin sign-in").as_str();
        let now = now_ms();
        let minute = 60_000;
        let check = |signed_in_at: i64, seen_at: i64| {
            let session = Session::new(None, store.clone(), None);
            let portal = portal.clone();
            let record = SignedIn {
                role: Role::Admin,
                signed_in_at,
                seen_at,
                csrf: "t".into(),
                grant: grant.to_owned(),
            };
            async move {
                session.insert(SESSION_KEY, &record).await.expect("insert");
                signed_in(&session, &portal).await.map(|s| s.seen_at)
            }
        };
        // Defaults: 30 minutes idle, 12 hours in all.
        assert_eq!(check(now, now).await, Some(now));
        assert_eq!(
            check(now - 29 * minute, now - 29 * minute)
                .await
                .map(|seen| seen >= now),
            Some(true),
            "activity is recorded"
        );
        assert_eq!(
            check(now - 31 * minute, now - 31 * minute).await,
            None,
            "idle too long"
        );
        assert_eq!(
            check(now - 13 * 60 * minute, now).await,
            None,
            "signed in too long ago"
        );
    }

    #[tokio::test]
    async fn a_session_ends_once_the_secret_that_granted_it_changes_or_is_removed() {
        let (store, _dir) = store().await;
        let before = portal("old-secret");
        let session = Session::new(None, store.clone(), None);
        sign_in(&session, &before, Role::Admin)
            .await
            .expect("signs in");
        assert!(signed_in(&session, &before).await.is_some());
        let recorded: SignedIn = session
            .get(SESSION_KEY)
            .await
            .expect("read")
            .expect("signed in");
        assert!(!recorded.grant.contains("old-secret"), "never the secret");

        let rotated = portal("new-secret");
        assert!(signed_in(&session, &rotated).await.is_none());
        assert!(
            session
                .get::<SignedIn>(SESSION_KEY)
                .await
                .ok()
                .flatten()
                .is_none(),
            "the session is ended, not only refused"
        );

        let session = Session::new(None, store.clone(), None);
        sign_in(&session, &before, Role::Admin)
            .await
            .expect("signs in");
        let disabled =
            Portal::from_config(&Config::for_database("sqlite://unused.db")).expect("defaults");
        assert!(signed_in(&session, &disabled).await.is_none());
        assert!(sign_in(&session, &disabled, Role::Admin).await.is_err());
    }

    #[test]
    fn only_local_paths_are_returned_to_after_sign_in() {
        assert_eq!(
            safe_next("/admin/dead-letters?type=x"),
            "/admin/dead-letters?type=x"
        );
        for evil in [
            "//evil.test/",
            "https://evil.test",
            "/\\evil.test",
            "/login",
            "x",
        ] {
            assert_eq!(safe_next(evil), "/admin/dead-letters", "{evil}");
        }
    }
}
