//! Which portal routes need which sign-in, each a layer on the sub-router it governs:
//! - [`exchange_viewer_link`] (every page): `?token=<viewer token>` becomes a viewer session
//!   and is removed from the URL; in a frame (the widget in a portal on another site, where a
//!   `SameSite=Strict` cookie is never sent) the token stays in the URL and admits that one
//!   request instead, writing no session;
//! - [`require_viewer`] (the dashboard, the widget, the status API and stream): with
//!   `GC_STATUS_VIEWER_TOKEN` set, a session (or the viewer token as a bearer token, for the
//!   JSON API) is needed;
//! - [`require_admin_page`] (`/admin/…`): without an admin session, the sign-in form (and
//!   back after it).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, StatusCode, Uri},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
    Json,
};
use serde_json::json;
use tower_sessions::Session;

use super::{
    signin::{sign_in, signed_in, LOGIN_PATH},
    Portal,
};
use crate::{
    model::Role,
    server::{
        audit,
        guard::{SignInGuard, Verdict},
        store::Db,
    },
};

/// A request admitted by the viewer token in its URL (a framed widget), without a session.
#[derive(Clone, Copy, Debug)]
struct ViewerByToken;

/// Whether the browser loads this page into a frame (`Sec-Fetch-Dest`).
fn framed(request: &Request) -> bool {
    request
        .headers()
        .get("sec-fetch-dest")
        .is_some_and(|dest| matches!(dest.as_bytes(), b"iframe" | b"frame"))
}

/// Middleware: exchanges a valid `?token=` for a viewer session and redirects to the same URL
/// without it; in a frame, admits the request by the token instead. A wrong token counts as a
/// failed sign-in of the client.
pub async fn exchange_viewer_link(
    State(portal): State<Arc<Portal>>,
    State(guard): State<SignInGuard>,
    State(db): State<Db>,
    mut request: Request,
    next: Next,
) -> Response {
    let uri = request.uri().clone();
    let Some(token) = query_param(&uri, "token") else {
        return next.run(request).await;
    };
    if !portal.viewers_need_token() {
        return next.run(request).await;
    }
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return next.run(request).await;
    };
    let client = crate::server::client::of(request.extensions());
    match guard.attempt(client, "viewer token", || {
        portal.viewer_token_matches(&token)
    }) {
        Err(throttled) => {
            return viewer_needed(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many wrong viewer links from this address; try again in {} s.",
                    throttled.retry_after_secs()
                ),
            )
        }
        Ok(Verdict::Denied { audit: due }) => {
            if let Some(failures) = due {
                audit::failed_secrets(&db, "viewer link", client, "viewer_token_failed", failures)
                    .await;
            }
            return viewer_needed(
                StatusCode::UNAUTHORIZED,
                "This viewer link is not valid; ask for a new one.",
            );
        }
        Ok(Verdict::Granted) => {}
    }
    if framed(&request) {
        request.extensions_mut().insert(ViewerByToken);
        return next.run(request).await;
    }
    let already_admin = signed_in(&session, &portal)
        .await
        .is_some_and(|s| s.role == Role::Admin);
    if !already_admin {
        if let Err(err) = sign_in(&session, &portal, Role::Viewer).await {
            tracing::error!("cannot start a viewer session: {err:#}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    Redirect::to(&without_param(&uri, "token")).into_response()
}

/// Middleware: with a viewer token configured, viewing needs a session, or the token as a
/// bearer token (the JSON API) or in the URL (a framed widget and its stream). A wrong token
/// counts as a failed sign-in of the client.
pub async fn require_viewer(
    State(portal): State<Arc<Portal>>,
    State(guard): State<SignInGuard>,
    State(db): State<Db>,
    request: Request,
    next: Next,
) -> Response {
    if !portal.viewers_need_token() || request.extensions().get::<ViewerByToken>().is_some() {
        return next.run(request).await;
    }
    if let Some(session) = request.extensions().get::<Session>() {
        if signed_in(session, &portal).await.is_some() {
            return next.run(request).await;
        }
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(token) = bearer.or_else(|| query_param(request.uri(), "token")) {
        let client = crate::server::client::of(request.extensions());
        match guard.attempt(client, "viewer token", || {
            portal.viewer_token_matches(&token)
        }) {
            Ok(Verdict::Granted) => return next.run(request).await,
            Ok(Verdict::Denied { audit: due }) => {
                if let Some(failures) = due {
                    audit::failed_secrets(
                        &db,
                        "viewer token",
                        client,
                        "viewer_token_failed",
                        failures,
                    )
                    .await;
                }
            }
            Err(throttled) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(
                        header::RETRY_AFTER,
                        throttled.retry_after_secs().to_string(),
                    )],
                    Json(json!({
                        "error": "too_many_attempts",
                        "detail": "too many wrong viewer tokens from this address; retry later",
                    })),
                )
                    .into_response()
            }
        }
    }
    if request.uri().path().starts_with("/api/") {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "viewer_token_required",
                "detail": "open the dashboard's viewer link, or send `Authorization: Bearer <GC_STATUS_VIEWER_TOKEN>`",
            })),
        )
            .into_response()
    } else {
        viewer_needed(
            StatusCode::UNAUTHORIZED,
            "This dashboard needs its viewer link (ending in ?token=…). Ask your gc-status admin for it.",
        )
    }
}

/// Middleware: admin pages need an admin session; without one, the sign-in form.
pub async fn require_admin_page(
    State(portal): State<Arc<Portal>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(session) = request.extensions().get::<Session>() {
        if signed_in(session, &portal)
            .await
            .is_some_and(|s| s.role == Role::Admin)
        {
            return next.run(request).await;
        }
    }
    let uri = request.uri();
    let back = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let next_param: String = form_urlencoded::byte_serialize(back.as_bytes()).collect();
    Redirect::to(&format!("{LOGIN_PATH}?next={next_param}")).into_response()
}

fn viewer_needed(status: StatusCode, message: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>gc-status: viewer link needed</title>\
         <link rel=\"stylesheet\" href=\"/pkg/gc-status.css\"></head>\
         <body><main class=\"narrow\"><h1>gc-status</h1><p role=\"alert\">{message}</p>\
         <p><a href=\"{LOGIN_PATH}\">Admins sign in here.</a></p></main></body></html>"
    );
    (status, Html(page)).into_response()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn without_param(uri: &Uri, name: &str) -> String {
    let kept: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .filter(|(key, _)| key != name)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    if kept.is_empty() {
        uri.path().to_owned()
    } else {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish();
        format!("{}?{query}", uri.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_taken_out_of_the_url() {
        let uri: Uri = "/widget/q1?token=abc&theme=dark".parse().expect("uri");
        assert_eq!(query_param(&uri, "token").as_deref(), Some("abc"));
        assert_eq!(without_param(&uri, "token"), "/widget/q1?theme=dark");
        let uri: Uri = "/?token=a%2Bb".parse().expect("uri");
        assert_eq!(query_param(&uri, "token").as_deref(), Some("a+b"));
        assert_eq!(without_param(&uri, "token"), "/");
    }
}
