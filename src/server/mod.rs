//! Server-side gc-status: configuration, HTTP routes, sender authentication and storage.

pub mod config;
pub mod error;
pub mod http;
pub mod ingest;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
