//! The admin JSON API for dead letters, behind `Authorization: Bearer <GC_STATUS_ADMIN_TOKEN>`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, Path, Query, Request, State},
    http::header::AUTHORIZATION,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use super::{
    dead_letters,
    domain::{DeadLetter, DeadLetterPage, FilterText, Selection},
    error::ApiError,
    state::AppState,
};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v2/admin/dead-letters", get(list_dead_letters))
        .route(
            "/api/v2/admin/dead-letters/replay",
            post(replay_dead_letters),
        )
        .route(
            "/api/v2/admin/dead-letters/discard",
            post(discard_dead_letters),
        )
        .route(
            "/api/v2/admin/dead-letters/{id}",
            get(get_dead_letter).delete(discard_dead_letter),
        )
        .route(
            "/api/v2/admin/dead-letters/{id}/replay",
            post(replay_dead_letter),
        )
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Who may run admin operations, and what follows one (metrics, waking workers). Shared by the
/// JSON API and the page's server functions.
#[derive(Clone, Debug)]
pub struct AdminAccess {
    /// SHA-256 of the admin token; `None` disables admin operations.
    token_digest: Option<Arc<[u8; 32]>>,
    wake_workers: Arc<Notify>,
    /// Wrong tokens per client address: guessing is slowed down, per client.
    failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
}

/// Wrong admin tokens from one client.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

/// Wrong tokens a client may send before each further one locks it out for a while.
const FREE_FAILURES: u32 = 5;
/// The longest lock-out: it doubles with each wrong token up to this.
const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// Clients remembered at most; beyond it the quiet ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Why an admin operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminDenied {
    #[error("send `Authorization: Bearer <GC_STATUS_ADMIN_TOKEN>`")]
    Missing,
    #[error("the admin token is not valid")]
    Wrong,
    #[error("admin operations are disabled: set GC_STATUS_ADMIN_TOKEN")]
    Disabled,
    #[error("too many wrong admin tokens from this address; retry in {retry_after_secs} s")]
    Throttled { retry_after_secs: u64 },
}

impl From<AdminDenied> for ApiError {
    fn from(denied: AdminDenied) -> Self {
        match denied {
            AdminDenied::Missing => ApiError::AdminUnauthorized,
            AdminDenied::Throttled { retry_after_secs } => {
                ApiError::TooManyRequests { retry_after_secs }
            }
            other => ApiError::Forbidden(other.to_string()),
        }
    }
}

impl AdminAccess {
    pub fn new(token: Option<&str>, wake_workers: Arc<Notify>) -> Self {
        let token_digest = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(digest(t)));
        AdminAccess {
            token_digest,
            wake_workers,
            failures: Arc::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Compares `presented` with the admin token in constant time (as SHA-256 digests, which
    /// also hides the token's length).
    pub fn check(&self, presented: &str) -> Result<(), AdminDenied> {
        let expected = self.token_digest.as_ref().ok_or(AdminDenied::Disabled)?;
        let presented = presented.trim();
        if presented.is_empty() {
            return Err(AdminDenied::Missing);
        }
        if bool::from(digest(presented).ct_eq(&**expected)) {
            Ok(())
        } else {
            Err(AdminDenied::Wrong)
        }
    }

    /// [`Self::check`] for a request from `client`: after [`FREE_FAILURES`] wrong tokens from
    /// one address, each further one locks that address out for a doubling time (429), and
    /// is logged. Other addresses, and so the real admin elsewhere, are not slowed down.
    pub fn check_from(&self, client: Option<IpAddr>, presented: &str) -> Result<(), AdminDenied> {
        let Some(client) = client else {
            return self.check(presented);
        };
        let now = Instant::now();
        if let Some(f) = self.failures_of().get(&client) {
            if f.blocked_until > now {
                let wait = f.blocked_until - now;
                return Err(AdminDenied::Throttled {
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
        }
        let result = self.check(presented);
        let mut failures = self.failures_of();
        match result {
            Err(AdminDenied::Wrong) => {
                if failures.len() >= MAX_TRACKED_CLIENTS {
                    failures.retain(|_, f| now.duration_since(f.last) < MAX_LOCKOUT);
                }
                let f = failures.entry(client).or_insert(Failures {
                    count: 0,
                    last: now,
                    blocked_until: now,
                });
                f.count = f.count.saturating_add(1);
                f.last = now;
                if f.count > FREE_FAILURES {
                    let doublings = (f.count - FREE_FAILURES - 1).min(16);
                    let lockout = Duration::from_secs(1u64 << doublings).min(MAX_LOCKOUT);
                    f.blocked_until = now + lockout;
                    tracing::warn!(%client, failures = f.count, lockout_secs = lockout.as_secs(), "repeated wrong admin tokens; locking the address out");
                } else {
                    tracing::warn!(%client, failures = f.count, "wrong admin token");
                }
            }
            Ok(()) => {
                failures.remove(&client);
            }
            Err(_) => {}
        }
        result
    }

    fn failures_of(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a replay and wakes the workers to process it.
    /// What wakes this process's workers (a replay has work for them).
    pub fn wake_workers(&self) -> &Notify {
        &self.wake_workers
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Accepts the request only with the configured bearer token: 401 without one, 403 if wrong.
async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.admin.enabled() {
        return Err(AdminDenied::Disabled.into());
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .unwrap_or_default();
    let client = crate::server::serve::client_addr(request.extensions()).map(|a| a.ip());
    state.admin.check_from(client, presented)?;
    Ok(next.run(request).await)
}

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    queue: Option<String>,
    error: Option<String>,
    since: Option<String>,
    until: Option<String>,
    stage: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_dead_letters(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let filter = FilterText {
        event_type: params.event_type,
        queue: params.queue,
        error: params.error,
        since: params.since,
        until: params.until,
        stage: params.stage,
    }
    .parse()?;
    let limit = params.limit.unwrap_or(50).clamp(1, 500);
    let offset = params.offset.unwrap_or(0).max(0);
    Ok(Json(
        state.db.list_dead_letters(&filter, limit, offset).await?,
    ))
}

async fn get_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    state
        .db
        .get_dead_letter(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter with id `{id}`")))
}

/// `{"ids": [...]}` or `{"filter": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    ids: Option<Vec<String>>,
    filter: Option<FilterText>,
}

fn selection(body: &[u8]) -> Result<Selection, ApiError> {
    let request: BulkRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"ids\": [...]}} or {{\"filter\": {{...}}}}: {e}"
        ))
    })?;
    match (request.ids, request.filter) {
        (Some(ids), None) => Ok(Selection::Ids(ids)),
        (None, Some(filter)) => Ok(Selection::Filter(filter.parse()?)),
        _ => Err(ApiError::BadRequest(
            "give exactly one of `ids` or `filter` (an empty filter selects all)".into(),
        )),
    }
}

fn api_actor(addr: SocketAddr) -> String {
    format!("admin API from {}", addr.ip())
}

async fn replay_dead_letter(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::replay(
        &state.db,
        state.admin.wake_workers(),
        &api_actor(addr),
        &Selection::Ids(vec![id]),
    )
    .await?;
    Ok(Json(json!({ "replayed": n })))
}

async fn replay_dead_letters(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::replay(
        &state.db,
        state.admin.wake_workers(),
        &api_actor(addr),
        &selection(&body)?,
    )
    .await?;
    Ok(Json(json!({ "replayed": n })))
}

async fn discard_dead_letter(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::discard(&state.db, &api_actor(addr), &Selection::Ids(vec![id])).await?;
    Ok(Json(json!({ "discarded": n })))
}

async fn discard_dead_letters(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::discard(&state.db, &api_actor(addr), &selection(&body)?).await?;
    Ok(Json(json!({ "discarded": n })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_tokens_are_checked() {
        let access = AdminAccess::new(Some(" s3cret "), Arc::new(Notify::new()));
        assert_eq!(access.check("s3cret"), Ok(()));
        assert_eq!(access.check("s3cre"), Err(AdminDenied::Wrong));
        assert_eq!(access.check(""), Err(AdminDenied::Missing));
        let disabled = AdminAccess::new(Some("  "), Arc::new(Notify::new()));
        assert_eq!(disabled.check("anything"), Err(AdminDenied::Disabled));
    }
}
