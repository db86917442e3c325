//! What every handler and server function can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;

use super::{
    ingest::auth::SenderAuth,
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
}
