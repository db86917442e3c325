//! The admin JSON API for dead letters, behind `Authorization: Bearer <GC_STATUS_ADMIN_TOKEN>`
//! ([`require_token`]); its routes are laid out in `server::http`.

use axum::{
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::Response,
    Extension, Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AdminAccess, AdminDenied};
use crate::server::{
    audit,
    client::{self, ClientIp},
    dead_letters,
    domain::{DeadLetter, DeadLetterPage, FilterText, Selection},
    error::ApiError,
    store::Db,
};

/// Middleware over the admin API: accepts the request only with the admin token as a bearer
/// token (401 without one, 403 if wrong, 429 while the client is locked out for guessing).
pub async fn require_token(
    State(admin): State<AdminAccess>,
    State(db): State<Db>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !admin.enabled() {
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
    if presented.is_empty() {
        return Err(AdminDenied::Missing.into());
    }
    let client = client::of(request.extensions());
    if let Err(denied) = admin.check_from(client, presented) {
        if let AdminDenied::Wrong {
            audit: Some(failures),
        } = denied
        {
            audit::failed_secrets(&db, "admin API", client, "admin_token_failed", failures).await;
        }
        return Err(denied.into());
    }
    Ok(next.run(request).await)
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
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

pub async fn list_dead_letters(
    State(db): State<Db>,
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
    Ok(Json(db.list_dead_letters(&filter, limit, offset).await?))
}

pub async fn get_dead_letter(
    State(db): State<Db>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    db.get_dead_letter(&id)
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

fn api_actor(client: ClientIp) -> String {
    format!("admin API from {client}")
}

pub async fn replay_dead_letter(
    State(db): State<Db>,
    State(admin): State<AdminAccess>,
    Extension(client): Extension<ClientIp>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::replay(
        &db,
        admin.wake_workers(),
        &api_actor(client),
        &Selection::Ids(vec![id]),
    )
    .await?;
    Ok(Json(json!({ "replayed": n })))
}

pub async fn replay_dead_letters(
    State(db): State<Db>,
    State(admin): State<AdminAccess>,
    Extension(client): Extension<ClientIp>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::replay(
        &db,
        admin.wake_workers(),
        &api_actor(client),
        &selection(&body)?,
    )
    .await?;
    Ok(Json(json!({ "replayed": n })))
}

pub async fn discard_dead_letter(
    State(db): State<Db>,
    Extension(client): Extension<ClientIp>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::discard(&db, &api_actor(client), &Selection::Ids(vec![id])).await?;
    Ok(Json(json!({ "discarded": n })))
}

pub async fn discard_dead_letters(
    State(db): State<Db>,
    Extension(client): Extension<ClientIp>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let n = dead_letters::discard(&db, &api_actor(client), &selection(&body)?).await?;
    Ok(Json(json!({ "discarded": n })))
}
