//! Push without AWS: a notifications channel (`POST /api/v2/notifications/channels`)
//! subscribed to each watched queue's `v2.analytics.queues.{id}.observations`, read over its
//! websocket, every notification stored by the durable writer as a webhook would be.
//!
//! A channel holds at most 1,000 topics, so each 1,000 queues get their own. Heartbeats
//! (`channel.metadata`, every 30 s) are not stored, but a socket silent for the heartbeat
//! timeout is dead. On `v2.system.socket_closing`, on close, on an error and shortly before
//! the channel's 24 h expiry a new channel is opened; after each (re)connect the connector
//! polls at once, since Genesys does not redeliver what a gap missed.

use std::{sync::Arc, time::Duration};

use axum::body::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::watch, task::JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{
    api::{Api, ApiError},
    memo::PollMemo,
    monitor::ConnectorMonitor,
    settings::RETRY,
    GenesysSettings,
};
use crate::server::{domain::now_ms, ingest::Webhooks};

/// Topics per channel: Genesys's limit.
const TOPICS_PER_CHANNEL: usize = 1_000;
/// A socket that ends sooner than this after opening counts as a failure (backoff).
const SHORT_LIVED: Duration = Duration::from_secs(10);
/// How long a closing handshake may take on a socket being given up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    id: String,
    connect_uri: String,
    /// RFC 3339.
    expires: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    topic_name: Option<String>,
}

/// What the channels share.
pub struct Channels {
    pub api: Arc<Api>,
    pub intake: Arc<Webhooks>,
    pub monitor: Arc<ConnectorMonitor>,
    pub settings: GenesysSettings,
    /// Told after each (re)connect and each loss: the connector polls at once.
    pub gap: Arc<tokio::sync::Notify>,
    /// The polls' memory, made void for a queue whose figures a notification pushed.
    pub memo: Arc<PollMemo>,
}

/// Keeps a channel per 1,000 watched queues until `stop`; a new queue list replaces them.
pub async fn run(
    channels: Arc<Channels>,
    mut queues: watch::Receiver<Arc<Vec<String>>>,
    stop: CancellationToken,
) {
    loop {
        let current = queues.borrow_and_update().clone();
        let mut tasks = JoinSet::new();
        let chunks: Vec<Vec<String>> = current
            .chunks(TOPICS_PER_CHANNEL)
            .map(<[String]>::to_vec)
            .collect();
        channels.monitor.sockets_wanted(chunks.len());
        for (n, chunk) in chunks.into_iter().enumerate() {
            tasks.spawn(keep_channel(channels.clone(), n, chunk, stop.clone()));
        }
        tokio::select! {
            changed = queues.changed() => if changed.is_err() { return stop.cancelled().await },
            () = stop.cancelled() => {
                // Each channel closes its socket on `stop`.
                while tasks.join_next().await.is_some() {}
                return;
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

/// One channel for `queues`, opened again whenever it ends, until `stop`.
async fn keep_channel(
    channels: Arc<Channels>,
    slot: usize,
    queues: Vec<String>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let ended = tokio::select! {
            ended = session(&channels, slot, &queues, &stop) => ended,
            () = stop.cancelled() => return,
        };
        if stop.is_cancelled() {
            return;
        }
        let (why, wait) = match ended {
            // A socket that ran a while is reopened at once.
            Ok(why) if started.elapsed() >= SHORT_LIVED => {
                failures = 0;
                (why, Duration::ZERO)
            }
            // One that could not be opened, or closed as soon as it was, backs off: a channel
            // Genesys keeps refusing must not be asked for in a tight loop.
            Ok(why) | Err(why) => {
                failures += 1;
                (why, RETRY.bound(failures))
            }
        };
        metrics::counter!("gc_status_genesys_reconnects_total").increment(1);
        tracing::info!(reason = %why, "Genesys Cloud notifications: opening a new channel");
        channels.monitor.socket_down(slot, &why, wait);
        channels.gap.notify_one();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Opens a channel, subscribes, reads it until it ends: `Ok(why)` after a socket that was
/// up, `Err(why)` when it could not be opened.
async fn session(
    channels: &Channels,
    slot: usize,
    queues: &[String],
    stop: &CancellationToken,
) -> Result<String, String> {
    let api = &channels.api;
    let channel: Channel = api
        .post(
            "notifications/channels",
            "/api/v2/notifications/channels",
            &json!({}),
        )
        .await
        .map_err(|e| describe(&e))?;
    let topics: Vec<_> = queues
        .iter()
        .map(|q| json!({ "id": format!("v2.analytics.queues.{q}.observations") }))
        .collect();
    let path = format!(
        "/api/v2/notifications/channels/{}/subscriptions",
        percent_encoding::utf8_percent_encode(&channel.id, percent_encoding::NON_ALPHANUMERIC)
    );
    api.put("notifications/subscriptions", &path, &topics)
        .await
        .map_err(|e| describe(&e))?;
    let (mut socket, _) = tokio_tungstenite::connect_async(channel.connect_uri.as_str())
        .await
        .map_err(|e| format!("the notifications websocket could not be opened: {e}"))?;
    channels.monitor.socket_up(slot);
    // Poll at once: whatever changed while no socket was open is not redelivered.
    channels.gap.notify_one();
    let renew_in = channel
        .expires
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|at| {
            let left = at.as_millisecond() - now_ms();
            Duration::from_millis(u64::try_from(left).unwrap_or(0))
                .saturating_sub(channels.settings.renew_channel_before)
        })
        .unwrap_or(Duration::from_secs(23 * 3600));
    let renew_at = tokio::time::Instant::now() + renew_in;
    let heartbeat = channels.settings.heartbeat_timeout;
    let why = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(heartbeat, socket.next()) => next,
            () = tokio::time::sleep_until(renew_at) => break "the channel is about to expire".to_owned(),
            () = stop.cancelled() => break "shutting down".to_owned(),
        };
        match next {
            Err(_) => break format!("no heartbeat for {} s", heartbeat.as_secs()),
            Ok(None) => break "the websocket closed".to_owned(),
            Ok(Some(Err(e))) => break format!("the websocket failed: {e}"),
            Ok(Some(Ok(Message::Close(_)))) => {
                break "Genesys Cloud closed the websocket".to_owned()
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Some(why) = take(channels, Bytes::copy_from_slice(text.as_bytes())).await {
                    break why;
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.close(None)).await;
    Ok(why)
}

/// Stores one notification; `Some(why)` when it says the socket is about to close.
async fn take(channels: &Channels, body: Bytes) -> Option<String> {
    let topic = serde_json::from_slice::<Incoming>(&body)
        .ok()
        .and_then(|i| i.topic_name)
        .unwrap_or_default();
    match topic.as_str() {
        "channel.metadata" => None,
        "v2.system.socket_closing" => Some("Genesys Cloud is closing the websocket".to_owned()),
        _ => {
            let started = std::time::Instant::now();
            let stored = channels.intake.store(body, now_ms()).await;
            metrics::histogram!("gc_status_genesys_notification_store_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Some(queue) = topic
                .strip_prefix("v2.analytics.queues.")
                .and_then(|rest| rest.strip_suffix(".observations"))
            {
                channels.memo.forget(queue);
            }
            match stored {
                Ok(_) => {
                    metrics::counter!("gc_status_genesys_notifications_total").increment(1);
                    channels.monitor.notified();
                }
                // Not redelivered: the next poll brings the figures back.
                Err(err) => {
                    tracing::warn!(error = %err, topic, "a Genesys Cloud notification could not be stored");
                    channels.gap.notify_one();
                }
            }
            None
        }
    }
}

fn describe(err: &ApiError) -> String {
    format!("the notifications channel could not be opened: {err}")
}
