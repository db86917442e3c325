//! The HTTP edge: every route of gc-status, the policies over each group of routes, and the
//! accept loop ([`serve`]), in one place.
//!
//! Every request meets, outermost first:
//! 1. the request log (`TraceLayer`: method, path, status, latency; never the query,
//!    headers or bodies, which carry tokens);
//! 2. the client address ([`client::resolve`]: the peer, or `X-Forwarded-For` from a trusted
//!    proxy), which every per-client limit and the audit trail use;
//! 3. the trailing-slash redirect (`/widget/` → `/widget`), so every path reaches its route
//!    with the route's own layers instead of a fallback without them.
//!
//! Then its group's own policies, attached to the group's router:
//! - **webhooks**: in-flight limit (503 at once), total time limit; they authenticate
//!   themselves, read no cookies and get no framing headers;
//! - **operations** (`/healthz`, `/readyz`, `/metrics`): never limited, so overload stays
//!   visible;
//! - **admin API**: the admin bearer token, in-flight limit, body and total time limits; no
//!   cookies, so no cross-site check;
//! - **portal** (pages, server functions, `/api/v2/queues`, `/api/v2/session`, assets): in-
//!   flight limit, body and total time limits, framing headers, compression, then the session
//!   cookie → cross-site check → viewer link → the group's sign-in gate (viewers, admins, or
//!   none for sign-in itself);
//! - **status stream**: like the portal's viewing routes, but it holds its read slot for its
//!   whole life and ends after a lifetime instead of a total time limit.

pub mod health;
pub mod serve;
pub mod state;

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue, Method, StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{delete, get, patch, post, put, MethodRouter},
    Router,
};
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, handle_server_fns_with_context};
use tower_http::{
    compression::CompressionLayer,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
    CompressionLevel, LatencyUnit,
};

use self::state::AppState;
use super::{
    admin::api as admin_api,
    api, client,
    ingest::{self, WEBHOOK_PATH},
    limits,
    portal::{csrf, gate, sessions, signin::LOGIN_PATH},
};
use crate::app::{shell, App};

/// Compression level (gzip 1–9, brotli 0–11) of pages and assets.
const ASSET_COMPRESSION: i32 = 6;

/// The server functions anyone may call: signing in and out.
const OPEN_SERVER_FNS: [&str; 2] = ["/api/login", "/api/logout"];

/// Which sign-in a page needs, from its path (decided once, when the router is built).
#[derive(Clone, Copy, PartialEq, Eq)]
enum PageGroup {
    /// The sign-in page.
    Open,
    /// The dashboard and the widget (a viewer session when a viewer token is set).
    Viewing,
    /// The dead-letter console and audit trail.
    Admin,
}

fn page_group(path: &str) -> PageGroup {
    if path == LOGIN_PATH {
        PageGroup::Open
    } else if path == "/admin" || path.starts_with("/admin/") {
        PageGroup::Admin
    } else {
        PageGroup::Viewing
    }
}

fn is_widget(path: &str) -> bool {
    path == "/widget" || path.starts_with("/widget/")
}

/// The whole router.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let timeout =
        || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout);
    let read_bodies =
        || middleware::from_fn_with_state(state.limits.clone(), limits::read_body_in_time);

    let webhooks = Router::new()
        .route(WEBHOOK_PATH, post(ingest::receive_webhook))
        .layer(timeout())
        .layer(state.limits.webhooks_in_flight());

    let operations = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(api::render_metrics));

    let admin_api = Router::new()
        .route(
            "/api/v2/admin/dead-letters",
            get(admin_api::list_dead_letters),
        )
        .route(
            "/api/v2/admin/dead-letters/replay",
            post(admin_api::replay_dead_letters),
        )
        .route(
            "/api/v2/admin/dead-letters/discard",
            post(admin_api::discard_dead_letters),
        )
        .route(
            "/api/v2/admin/dead-letters/{id}",
            get(admin_api::get_dead_letter).delete(admin_api::discard_dead_letter),
        )
        .route(
            "/api/v2/admin/dead-letters/{id}/replay",
            post(admin_api::replay_dead_letter),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin_api::require_token,
        ))
        .layer(read_bodies())
        .layer(timeout())
        .layer(state.limits.reads_in_flight())
        .layer(deny_framing());

    let portal = portal(&state)
        .layer(read_bodies())
        .layer(timeout())
        .layer(state.limits.reads_in_flight())
        // The page's assets, for a wallboard on a slow office link: the wasm is a quarter of
        // its size compressed.
        .layer(CompressionLayer::new().quality(CompressionLevel::Precise(ASSET_COMPRESSION)));
    let stream = Router::new()
        .route("/api/v2/stream", get(api::stream_status))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gate::require_viewer,
        ))
        .layer(deny_framing());
    let cookies = Router::new()
        .merge(portal)
        .merge(stream)
        .layer(middleware::from_fn_with_state(
            state.portal.clone(),
            csrf::refuse_cross_site,
        ))
        .layer(sessions::layer(
            state.db.clone(),
            state.portal.secure_cookies,
            state.portal.session_idle,
        ));

    Router::new()
        .merge(webhooks)
        .merge(operations)
        .merge(admin_api)
        .merge(cookies)
        .layer(middleware::from_fn(redirect_trailing_slash))
        .layer(middleware::from_fn_with_state(
            state.proxies.clone(),
            client::resolve,
        ))
        // Outermost: every request is logged, including those shed by a limit.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                // The response line has the status already; a failure line per shed request
                // would only flood the log under the very overload it reports.
                .on_failure(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                ),
        )
        .with_state(state)
}

/// Pages, server functions, the JSON status and the session endpoint, each under the gate of
/// its group; the fallback serves the assets and renders "not found" with the same contexts.
fn portal(state: &AppState) -> Router<AppState> {
    let context_state = state.clone();
    let context = move || {
        provide_context(context_state.db.clone());
        provide_context(context_state.status.clone());
        provide_context(context_state.admin.clone());
        provide_context(context_state.portal.clone());
        provide_context(context_state.guard.clone());
    };
    let shell_options = state.leptos_options.clone();
    let app = move || shell(shell_options.clone());

    let mut open = Router::new().route("/api/v2/session", get(csrf::describe_session));
    let mut viewing = Router::new().route("/api/v2/queues", get(api::list_queues));
    let mut widget = Router::new();
    let mut admin_pages = Router::new();
    for listing in generate_route_list(App) {
        let path = listing.path().to_owned();
        let render = get(leptos_axum::render_app_async_with_context(
            context.clone(),
            app.clone(),
        ));
        match page_group(&path) {
            PageGroup::Open => open = open.route(&path, render),
            PageGroup::Admin => admin_pages = admin_pages.route(&path, render),
            PageGroup::Viewing if is_widget(&path) => widget = widget.route(&path, render),
            PageGroup::Viewing => viewing = viewing.route(&path, render),
        }
    }
    for (path, method) in leptos::server_fn::axum::server_fn_paths() {
        let context = context.clone();
        let handler = move |request: Request<Body>| async move {
            handle_server_fns_with_context(context, request).await
        };
        let route: MethodRouter<AppState> = match method {
            Method::GET => get(handler),
            Method::PUT => put(handler),
            Method::DELETE => delete(handler),
            Method::PATCH => patch(handler),
            _ => post(handler),
        };
        if OPEN_SERVER_FNS.contains(&path) {
            open = open.route(path, route);
        } else {
            viewing = viewing.route(path, route);
        }
    }

    let viewer_gate = || middleware::from_fn_with_state(state.clone(), gate::require_viewer);
    let viewing = viewing.layer(viewer_gate()).layer(deny_framing());
    let widget = widget
        .layer(viewer_gate())
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            state.portal.widget_csp.clone(),
        ));
    let admin_pages = admin_pages
        .layer(middleware::from_fn_with_state(
            state.portal.clone(),
            gate::require_admin_page,
        ))
        .layer(deny_framing());
    let fallback_context = context.clone();
    Router::new()
        .merge(open.layer(deny_framing()))
        .merge(viewing)
        .merge(widget)
        .merge(admin_pages)
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(fallback_context, shell))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gate::exchange_viewer_link,
        ))
        .layer(hardening_headers())
}

/// No page but the widget may be framed at all (clickjacking).
fn deny_framing() -> tower::layer::util::Stack<
    SetResponseHeaderLayer<HeaderValue>,
    SetResponseHeaderLayer<HeaderValue>,
> {
    tower::layer::util::Stack::new(
        SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ),
        SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ),
    )
}

/// The usual hardening headers of every portal answer.
fn hardening_headers() -> tower::layer::util::Stack<
    SetResponseHeaderLayer<HeaderValue>,
    SetResponseHeaderLayer<HeaderValue>,
> {
    tower::layer::util::Stack::new(
        SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    )
}

/// Middleware: `GET /widget/` → 308 to `/widget` (the query kept). Paths with a trailing
/// slash have no route, and the fallback would render them without the page's contexts.
async fn redirect_trailing_slash(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') && !path.starts_with("/pkg/") {
        // One leading slash only: `//host/` must not become a redirect to another site.
        let trimmed = format!("/{}", path.trim_matches('/'));
        let target = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if target.parse::<Uri>().is_ok() {
            return Redirect::permanent(&target).into_response();
        }
    }
    next.run(request).await
}

/// Serves `router` with the accept loop's settings (re-exported for startup).
pub use serve::{serve, ServeSettings};
