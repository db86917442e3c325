//! Who may see and do what in the portal: sign-in sessions (admins, and viewers when a viewer
//! token is set), the cross-site check on every state-changing browser request, and which
//! pages may be framed.
//!
//! The webhook endpoint and the bearer-token admin API are outside all of this: they
//! authenticate each request themselves and never read cookies.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
    Json,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_sessions::Session;

use super::{config::Config, domain::now_ms, ingest::WEBHOOK_PATH, state::AppState};
use crate::{
    model::{BoardSettings, Role, Thresholds},
    pages::format::encode_component,
};

/// The path of the sign-in page.
pub const LOGIN_PATH: &str = "/login";
/// Where the bearer-token admin API lives (no cookies, so no cross-site risk).
const ADMIN_API_PREFIX: &str = "/api/v2/admin/";
/// A signed-in session's last-seen time is written back at most this often (it is what the
/// idle timeout counts from), so browsing does not write to the database on every request.
const TOUCH_EVERY_MS: i64 = 60_000;
/// How long a viewer link's session lasts. Wall displays keep one page open for weeks with
/// only the stream's requests, so viewer sessions have no idle timeout.
const VIEWER_SESSION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Session key of [`SignedIn`].
const SESSION_KEY: &str = "signed_in";

/// Portal settings, from the configuration.
#[derive(Debug, Clone)]
pub struct Portal {
    /// SHA-256 of `GC_STATUS_VIEWER_TOKEN`; when set, viewing needs it.
    viewer_token: Option<[u8; 32]>,
    pub session_idle: Duration,
    pub session_max: Duration,
    /// `scheme://host[:port]` the portal is reached at, when configured.
    public_origin: Option<String>,
    /// Cookies are `Secure` and `__Host-` prefixed (the portal is served over https).
    pub secure_cookies: bool,
    /// `frame-ancestors` of the widget: itself and the origins allowed to frame it.
    widget_csp: HeaderValue,
    pub board: BoardSettings,
}

impl Portal {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let public_origin = match config.public_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(origin_of(url).ok_or_else(|| {
                anyhow::anyhow!(
                    "GC_STATUS_PUBLIC_URL `{url}` must be an http(s) URL such as https://status.example.com"
                )
            })?),
        };
        let secure_cookies = public_origin
            .as_deref()
            .is_some_and(|o| o.starts_with("https://"));
        let mut frame_ancestors = Vec::new();
        for origin in &config.frame_ancestors {
            let origin = origin.trim();
            if origin.is_empty() {
                continue;
            }
            if origin.contains(['\'', ';', ' ', '"']) || !origin.contains("://") {
                anyhow::bail!(
                    "GC_STATUS_FRAME_ANCESTORS entry `{origin}` must be an origin such as https://portal.example.com"
                );
            }
            frame_ancestors.push(origin.trim_end_matches('/').to_owned());
        }
        let percent = |p: Option<f64>| p.map(|p| (p / 100.0).clamp(0.0, 1.0));
        Ok(Portal {
            viewer_token: config
                .viewer_token
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret)
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(digest),
            session_idle: Duration::from_secs(config.session_idle_minutes.max(1) * 60),
            session_max: Duration::from_secs(config.session_max_hours.max(1) * 3600),
            public_origin,
            secure_cookies,
            widget_csp: {
                let mut sources = vec!["'self'".to_owned()];
                sources.extend(frame_ancestors.iter().cloned());
                HeaderValue::from_str(&format!("frame-ancestors {}", sources.join(" ")))?
            },
            board: BoardSettings {
                thresholds: Thresholds {
                    waiting: config.alert_waiting,
                    longest_wait_secs: config.alert_longest_wait_secs,
                    service_level: percent(config.alert_service_level),
                },
                stale_after_secs: config.stale_after_secs,
                frame_origins: frame_ancestors
                    .iter()
                    .filter(|o| !o.contains('*'))
                    .cloned()
                    .collect(),
            },
        })
    }

    /// Whether viewing the dashboard needs a viewer sign-in.
    pub fn viewers_need_token(&self) -> bool {
        self.viewer_token.is_some()
    }

    fn viewer_token_matches(&self, presented: &str) -> bool {
        self.viewer_token
            .as_ref()
            .is_some_and(|expected| bool::from(digest(presented.trim()).ct_eq(expected)))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    Some(format!("{scheme}://{}", uri.authority()?).to_ascii_lowercase())
}

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
}

/// The visitor's sign-in, if any and still valid: past the absolute or idle timeout the
/// session is ended. An active session's last-seen time is refreshed (at most once a minute).
pub async fn signed_in(session: &Session, portal: &Portal) -> Option<SignedIn> {
    let mut current: SignedIn = session.get(SESSION_KEY).await.ok().flatten()?;
    let now = now_ms();
    if current.role == Role::Viewer {
        let max = i64::try_from(VIEWER_SESSION.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(current.signed_in_at) > max {
            let _ = session.flush().await;
            return None;
        }
        return Some(current);
    }
    let max = i64::try_from(portal.session_max.as_millis()).unwrap_or(i64::MAX);
    let idle = i64::try_from(portal.session_idle.as_millis()).unwrap_or(i64::MAX);
    if now.saturating_sub(current.signed_in_at) > max || now.saturating_sub(current.seen_at) > idle
    {
        let _ = session.flush().await;
        return None;
    }
    if now.saturating_sub(current.seen_at) > TOUCH_EVERY_MS {
        current.seen_at = now;
        // Modifying the session makes tower-sessions save it with a new idle expiry.
        let _ = session.insert(SESSION_KEY, &current).await;
    }
    Some(current)
}

/// Starts a session for `role` under a new session id (so an id planted before sign-in is
/// worthless afterwards).
pub async fn sign_in(session: &Session, role: Role) -> anyhow::Result<SignedIn> {
    let now = now_ms();
    let signed = SignedIn {
        role,
        signed_in_at: now,
        seen_at: now,
        csrf: hex::encode(rand::rng().random::<[u8; 16]>()),
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

/// Middleware over every route: a state-changing request from a browser page on another site
/// is refused with 403 (`Sec-Fetch-Site`, else `Origin`, else the session's CSRF token in
/// `X-CSRF-Token`). Webhooks and the bearer-token admin API are exempt: cookies play no part
/// in them.
pub async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method();
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let path = request.uri().path();
    if safe || path == WEBHOOK_PATH || path.starts_with(ADMIN_API_PREFIX) {
        return next.run(request).await;
    }
    let verdict = same_site(request.headers(), state.portal.public_origin.as_deref());
    let allowed = match verdict {
        Some(same) => same,
        // Neither header: not a current browser. Without a cookie there is no session to
        // ride on; with one, only the session's CSRF token will do.
        None => {
            csrf_cookie_free(request.headers())
                || match request.extensions().get::<Session>() {
                    Some(session) => csrf_matches(session, request.headers()).await,
                    None => false,
                }
        }
    };
    if allowed {
        next.run(request).await
    } else {
        tracing::warn!(%path, "refused a cross-site request");
        (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "cross_site",
                "detail": "state-changing requests must come from gc-status's own pages",
            })),
        )
            .into_response()
    }
}

/// `Some(true)` for a same-origin request, `Some(false)` for a cross-site one, `None` when
/// the request says nothing about where it comes from.
fn same_site(headers: &HeaderMap, public_origin: Option<&str>) -> Option<bool> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return Some(matches!(site.as_bytes(), b"same-origin" | b"none"));
    }
    let origin = headers
        .get(header::ORIGIN)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    if public_origin == Some(origin.as_str()) {
        return Some(true);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    Some(host.is_some() && origin_host == host.as_deref())
}

async fn csrf_matches(session: &Session, headers: &HeaderMap) -> bool {
    let Some(presented) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match session.get::<SignedIn>(SESSION_KEY).await.ok().flatten() {
        Some(signed) => bool::from(signed.csrf.as_bytes().ct_eq(presented.as_bytes())),
        None => false,
    }
}

/// A request with no cookie at all cannot ride on anyone's session: nothing to forge. (It
/// still meets each endpoint's own checks, so a session-less replay is refused there.)
fn csrf_cookie_free(headers: &HeaderMap) -> bool {
    headers.get(header::COOKIE).is_none()
}

/// Middleware over the portal's pages, streams and server functions:
/// - `?token=<viewer token>` is exchanged for a viewer session and removed from the URL;
/// - `/admin/…` without an admin session leads to the sign-in form (and back after it);
/// - with `GC_STATUS_VIEWER_TOKEN` set, everything else but sign-in needs a session (or the
///   viewer token as a bearer token, for the JSON API).
pub async fn gate_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let portal = &state.portal;
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return next.run(request).await;
    };
    let uri = request.uri().clone();
    let path = uri.path();

    if let Some(token) = query_param(&uri, "token") {
        if portal.viewer_token.is_none() {
            return next.run(request).await;
        }
        if !portal.viewer_token_matches(&token) {
            tracing::warn!("a wrong viewer link was used");
            return viewer_needed("This viewer link is not valid; ask for a new one.");
        }
        let already_admin = signed_in(&session, portal)
            .await
            .is_some_and(|s| s.role == Role::Admin);
        if !already_admin {
            if let Err(err) = sign_in(&session, Role::Viewer).await {
                tracing::error!("cannot start a viewer session: {err:#}");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        }
        return Redirect::to(&without_param(&uri, "token")).into_response();
    }

    let visitor = signed_in(&session, portal).await;
    if path == "/admin" || path.starts_with("/admin/") {
        if visitor.as_ref().is_some_and(|s| s.role == Role::Admin) {
            return next.run(request).await;
        }
        let back = uri.path_and_query().map_or(path, |pq| pq.as_str());
        return Redirect::to(&format!("{LOGIN_PATH}?next={}", encode_component(back)))
            .into_response();
    }

    let open = matches!(
        path,
        LOGIN_PATH | "/api/login" | "/api/logout" | "/api/v2/session" | "/metrics"
    );
    if !portal.viewers_need_token() || open || visitor.is_some() {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| portal.viewer_token_matches(t)) {
        return next.run(request).await;
    }
    if path.starts_with("/api/") {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "viewer_token_required",
                "detail": "open the dashboard's viewer link, or send `Authorization: Bearer <GC_STATUS_VIEWER_TOKEN>`",
            })),
        )
            .into_response()
    } else {
        viewer_needed("This dashboard needs its viewer link (ending in ?token=…). Ask your gc-status admin for it.")
    }
}

fn viewer_needed(message: &str) -> Response {
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>gc-status: viewer link needed</title>\
         <link rel=\"stylesheet\" href=\"/pkg/gc-status.css\"></head>\
         <body><main class=\"narrow\"><h1>gc-status</h1><p role=\"alert\">{message}</p>\
         <p><a href=\"{LOGIN_PATH}\">Admins sign in here.</a></p></main></body></html>"
    );
    (StatusCode::UNAUTHORIZED, Html(page)).into_response()
}

/// Middleware: the widget may be framed by the configured portal origins; no other page may
/// be framed at all (clickjacking). Also the usual hardening headers.
pub async fn frame_policy(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Webhook answers are JSON for machines: nothing to frame, and their path stays lean.
    if request.uri().path() == WEBHOOK_PATH {
        return next.run(request).await;
    }
    let widget = request.uri().path() == "/widget" || request.uri().path().starts_with("/widget/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if widget {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            state.portal.widget_csp.clone(),
        );
    } else {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| decode_component(value))
}

fn without_param(uri: &Uri, name: &str) -> String {
    let kept: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    }
}

fn decode_component(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /api/v2/session`: who the cookie's session is signed in as, and its CSRF token, for a
/// client that sends neither `Origin` nor `Sec-Fetch-Site` (it then needs `X-CSRF-Token`).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/api/v2/session", axum::routing::get(describe_session))
}

async fn describe_session(State(state): State<AppState>, session: Session) -> Response {
    match signed_in(&session, &state.portal).await {
        Some(signed) => Json(json!({ "role": signed.role, "csrf": signed.csrf })).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "not_signed_in", "detail": "sign in at /login" })),
        )
            .into_response(),
    }
}

/// The signed-in admin for a server function, or a 403 with what to do.
pub async fn require_admin() -> Result<SignedIn, leptos::prelude::ServerFnError> {
    let portal = leptos::prelude::expect_context::<Arc<Portal>>();
    let session = leptos_axum::extract::<Session>().await.ok();
    let signed = match &session {
        Some(session) => signed_in(session, &portal).await,
        None => None,
    };
    match signed {
        Some(s) if s.role == Role::Admin => Ok(s),
        _ => {
            if let Some(options) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
                options.set_status(StatusCode::FORBIDDEN);
            }
            Err(leptos::prelude::ServerFnError::new(
                "sign in as an admin to do this",
            ))
        }
    }
}

/// The visitor's role for a server function (no session: `None`).
pub async fn visitor_role() -> Option<Role> {
    let portal = leptos::prelude::expect_context::<Arc<Portal>>();
    let session = leptos_axum::extract::<Session>().await.ok()?;
    signed_in(&session, &portal).await.map(|s| s.role)
}

/// The client address of the current server-function request, for logs and the audit trail.
pub async fn client_ip() -> Option<std::net::IpAddr> {
    leptos_axum::extract::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .await
        .ok()
        .map(|axum::extract::ConnectInfo(addr)| addr.ip())
}

/// Who the audit trail names for the current server-function request: `what` and the
/// client's address, e.g. "admin session from 10.0.0.7".
pub async fn actor(what: &str) -> String {
    match client_ip().await {
        Some(ip) => format!("{what} from {ip}"),
        None => format!("{what} from an unknown address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert_eq!(
            same_site(&headers(&[("sec-fetch-site", "same-origin")]), None),
            Some(true)
        );
        assert_eq!(
            same_site(&headers(&[("sec-fetch-site", "cross-site")]), None),
            Some(false)
        );
        assert_eq!(
            same_site(&headers(&[("sec-fetch-site", "same-site")]), None),
            Some(false)
        );
        let same = headers(&[
            ("origin", "http://127.0.0.1:3000"),
            ("host", "127.0.0.1:3000"),
        ]);
        assert_eq!(same_site(&same, None), Some(true));
        let other = headers(&[("origin", "http://evil.test"), ("host", "127.0.0.1:3000")]);
        assert_eq!(same_site(&other, None), Some(false));
        let null = headers(&[("origin", "null"), ("host", "127.0.0.1:3000")]);
        assert_eq!(same_site(&null, None), Some(false));
        // Behind a proxy that rewrites Host, the configured public origin counts.
        let proxied = headers(&[
            ("origin", "https://status.example.com"),
            ("host", "10.0.0.5:3000"),
        ]);
        assert_eq!(
            same_site(&proxied, Some("https://status.example.com")),
            Some(true)
        );
        assert_eq!(same_site(&headers(&[]), None), None);
    }

    #[tokio::test]
    async fn sessions_end_after_the_idle_and_the_absolute_timeout() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let (db, _writer) = crate::server::store::open(&url, Duration::from_secs(5))
            .await
            .expect("open");
        let portal = Portal::from_config(&Config::for_database(url)).expect("defaults");
        let store = Arc::new(crate::server::sessions::DbSessionStore::new(db));
        let now = now_ms();
        let minute = 60_000;
        let check = |signed_in_at: i64, seen_at: i64| {
            let session = Session::new(None, store.clone(), None);
            let portal = portal.clone();
            async move {
                let record = SignedIn {
                    role: Role::Admin,
                    signed_in_at,
                    seen_at,
                    csrf: "t".into(),
                };
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

    #[test]
    fn the_token_is_taken_out_of_the_url() {
        let uri: Uri = "/widget/q1?token=abc&theme=dark".parse().expect("uri");
        assert_eq!(query_param(&uri, "token").as_deref(), Some("abc"));
        assert_eq!(without_param(&uri, "token"), "/widget/q1?theme=dark");
        let uri: Uri = "/?token=a%2Bb".parse().expect("uri");
        assert_eq!(query_param(&uri, "token").as_deref(), Some("a+b"));
        assert_eq!(without_param(&uri, "token"), "/");
        assert_eq!(encode_component("/admin?x=1&y"), "%2Fadmin%3Fx%3D1%26y");
    }
}
