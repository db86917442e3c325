//! The webhook route: read with a limit, authenticate, validate, store, acknowledge.

pub mod auth;
mod receive;

pub use receive::{receive_webhook, Accepted, Webhooks, WEBHOOK_PATH};
