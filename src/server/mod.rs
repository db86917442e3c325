//! Server-side gc-status: configuration, HTTP routes, sender authentication and storage.

pub mod admin;
pub mod api;
pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod dead_letters;
pub mod domain;
pub mod error;
pub mod forward;
pub mod guard;
pub mod health;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod periodic;
pub mod portal;
pub mod queues;
pub mod rates;
pub mod startup;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod worker;
