//! What the handlers can reach. Each handler and middleware extracts only the part it reads
//! (`State<Db>`, `State<Arc<Portal>>`, …) through `FromRef`, so the parts never import this
//! module back.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::server::{
    admin::AdminAccess,
    guard::SignInGuard,
    health::Health,
    ingest::Webhooks,
    portal::Portal,
    status::{StatusFeed, StatusSource},
    store::Db,
};
use crate::server::{client::TrustedProxies, limits::Limits};

/// Shared application state; cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub db: Db,
    /// The webhook receiver: sender authentication, body limits, the writer.
    pub webhooks: Arc<Webhooks>,
    /// Admin token check for the admin API and the page's replay buttons.
    pub admin: AdminAccess,
    /// Guessing budget of the admin and viewer tokens.
    pub guard: SignInGuard,
    pub status: Arc<StatusSource>,
    /// Changed status snapshots for `/api/v2/stream`.
    pub feed: StatusFeed,
    pub metrics: PrometheusHandle,
    /// Cancelled on shutdown: ends streams and stops workers.
    pub shutdown: CancellationToken,
    /// What `/readyz` reports besides the database.
    pub health: Health,
    /// Requests in flight per kind, streams per client, and the time limits.
    pub limits: Limits,
    /// Sign-in, viewing and framing settings of the portal.
    pub portal: Arc<Portal>,
    /// Whose `X-Forwarded-For` names the client.
    pub proxies: Arc<TrustedProxies>,
}
