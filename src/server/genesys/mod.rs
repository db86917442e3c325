//! The Genesys Cloud connector: gc-status asks Genesys's Platform API itself, with an OAuth
//! client (client credentials), instead of waiting for an EventBridge rule or an Architect
//! flow to push to it.
//!
//! It is one more sender into the durable pipeline: every answer it turns into events (live
//! observations, today's interval figures, notifications from the websocket) is stored by the
//! same writer as a webhook, deduplicated, kept in the event log, replayable and rebuildable,
//! and read by the same interpreter. What it learns about queues (names, service-level
//! targets) goes into the queue settings, over the settings file.
//!
//! - [`api`]: the HTTP calls, with one token for all of them, 401/429/5xx handled once;
//! - [`directory`]: which queues there are and which are watched;
//! - [`feed`]: API answers as the notifications gc-status already interprets (pure);
//! - [`notifications`]: the channel and its websocket;
//! - [`connector`]: the loop that polls, asks for today and keeps the websocket;
//! - [`monitor`]: what the wallboard and `/readyz` show of it.

pub mod api;
mod connector;
pub mod directory;
pub mod feed;
pub mod lookup;
mod memo;
mod monitor;
mod notifications;
mod settings;

pub use self::{connector::Connector, monitor::ConnectorMonitor, settings::GenesysSettings};
