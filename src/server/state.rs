//! What every handler and server function can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    ingest::auth::SenderAuth,
    status::StatusSource,
    store::{writer::IngestWriter, Db},
};

/// Shared application state; cheap to clone.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub db: Db,
    pub writer: IngestWriter,
    pub auth: Arc<SenderAuth>,
    pub max_body_bytes: usize,
    /// SHA-256 of the admin token, when one is configured.
    pub admin_token: Option<Arc<[u8; 32]>>,
    pub status: Arc<StatusSource>,
    pub metrics: PrometheusHandle,
    /// Wakes idle workers (after ingestion or a replay).
    pub wake_workers: Arc<Notify>,
    /// Cancelled on shutdown: ends streams and stops workers.
    pub shutdown: CancellationToken,
}
