//! What every handler and server function can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::{
    access::Portal,
    admin::AdminAccess,
    health::Health,
    ingest::auth::SenderAuth,
    serve::Limits,
    status::{StatusFeed, StatusSource},
    store::{writer::IngestWriter, Db},
    worker::Processor,
};

/// Shared application state; cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub db: Db,
    pub writer: IngestWriter,
    pub auth: Arc<SenderAuth>,
    pub max_body_bytes: usize,
    /// Admin token check for the admin API and the page's replay buttons.
    pub admin: AdminAccess,
    pub status: Arc<StatusSource>,
    /// Changed status snapshots for `/api/v2/stream`.
    pub feed: StatusFeed,
    pub metrics: PrometheusHandle,
    /// Cancelled on shutdown: ends streams and stops workers.
    pub shutdown: CancellationToken,
    /// What `/readyz` reports besides the database.
    pub health: Health,
    /// Requests in flight per kind, and the body read timeout.
    pub limits: Limits,
    /// The processor that runs on each event as it arrives, when processing is inline.
    pub inline: Option<Arc<dyn Processor>>,
    /// Sign-in, viewing and framing settings of the portal.
    pub portal: Arc<Portal>,
}
