//! Server-side gc-status: configuration, HTTP routes, sender authentication and storage.

pub mod access;
pub mod admin;
pub mod api;
pub mod audit;
pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod domain;
pub mod error;
pub mod forward;
pub mod health;
pub mod http;
pub mod ingest;
pub mod periodic;
pub mod rates;
pub mod serve;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod worker;
