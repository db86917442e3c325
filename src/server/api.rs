//! Reading the status: `GET /api/v2/queues`, the live `GET /api/v2/stream` and `GET /metrics`.

use std::{convert::Infallible, sync::Arc, sync::OnceLock, time::Duration};

use axum::{
    extract::{Request, State},
    http::header,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures_util::stream::{self, StreamExt as _};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use super::{
    client,
    error::ApiError,
    limits::{self, Limits},
    status::{StatusFeed, StatusSource},
    store::Db,
};
use crate::model::StatusSnapshot;

pub async fn list_queues(
    State(status): State<Arc<StatusSource>>,
) -> Result<Json<StatusSnapshot>, ApiError> {
    Ok(Json(status.snapshot().await?))
}

/// Server-sent `status` events carrying a [`StatusSnapshot`]: the current one at once, then
/// each change (at most twice a second, from the shared [`StatusFeed`]), and a `heartbeat`
/// every [`HEARTBEAT`].
///
/// A stream holds one read slot for its whole life and counts against its client's stream
/// cap. It ends on shutdown (so it never holds up a graceful shutdown), after the stream
/// lifetime, and when the session it was opened with ends; the page then reconnects by
/// itself, and is checked again like any request.
pub async fn stream_status(
    State(status): State<Arc<StatusSource>>,
    State(feed): State<StatusFeed>,
    State(shutdown): State<CancellationToken>,
    State(limits): State<Limits>,
    State(db): State<Db>,
    request: Request,
) -> Response {
    let Some(read) = limits.read_slot() else {
        return limits::overloaded_response();
    };
    let permit = match limits.streams.admit(client::of(request.extensions()), read) {
        Ok(permit) => permit,
        Err(refused) => return refused.into_response(),
    };
    let session_id = request
        .extensions()
        .get::<tower_sessions::Session>()
        .and_then(tower_sessions::Session::id);
    // Subscribe first so no change between the first snapshot and the feed is missed.
    let changes = feed.subscribe();
    let first = match status.snapshot().await {
        Ok(snapshot) => serde_json::to_string(&snapshot).ok(),
        Err(err) => {
            tracing::warn!("status snapshot failed: {err:#}");
            None
        }
    };
    let first = stream::iter(first.map(|json| Ok::<_, Infallible>(status_event(&json))));
    // Ends the stream: shutdown, the lifetime, or its session gone.
    let ended = CancellationToken::new();
    let ending = ended.clone();
    let (lifetime, session_check) = (limits.streams.lifetime, limits.streams.session_check);
    tokio::spawn(async move {
        let mut recheck = tokio::time::interval(session_check);
        recheck.tick().await;
        let deadline = tokio::time::sleep(lifetime);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = &mut deadline => break,
                () = ending.cancelled() => return,
                _ = recheck.tick() => {
                    let Some(id) = session_id else { continue };
                    if let Ok(None) = db.load_session(&id.to_string(), crate::server::domain::now_ms()).await {
                        break;
                    }
                }
            }
        }
        ending.cancel();
    });
    let until_changes = ended.clone();
    let later = stream::unfold(changes, move |mut changes| {
        let ended = until_changes.clone();
        async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    () = ended.cancelled() => return None,
                }
                let json = changes.borrow_and_update().clone();
                if let Some(json) = json {
                    return Some((Ok(status_event(&json)), changes));
                }
            }
        }
    });
    // Heartbeats carry the time the unchanged figures are current as of, and let the page
    // tell a live stream from a silently broken one.
    let beats = stream::unfold(ended.clone(), |ended| async move {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            () = ended.cancelled() => return None,
        }
        let beat = serde_json::json!({ "as_of": jiff::Timestamp::now().to_string() });
        Some((
            Ok(Event::default().event("heartbeat").data(beat.to_string())),
            ended,
        ))
    });
    // Reconnect within a second of the end; the permit goes when the body is dropped (the
    // stream ended or the client left), and the watcher task with it.
    let hello = stream::once(async { Ok(Event::default().retry(Duration::from_secs(1))) });
    let guard = DropGuard(ended);
    let events = hello
        .chain(stream::select(first.chain(later), beats))
        .map(move |event| {
            let _held = (&permit, &guard);
            event
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Cancels its token when dropped: the stream's watcher stops with the stream.
struct DropGuard(CancellationToken);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// How often the stream sends a `heartbeat` event.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

fn status_event(json: &str) -> Event {
    Event::default().event("status").data(json)
}

/// The process-wide Prometheus recorder (installed once, shared by every app in a process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ];
            // Histograms of counts (`*_events`: events per commit) get buckets of their own.
            let sizes = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".into()), &sizes))
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

pub async fn render_metrics(
    State(status): State<Arc<StatusSource>>,
    State(handle): State<PrometheusHandle>,
) -> Result<impl IntoResponse, ApiError> {
    let pipeline = status.snapshot().await?.pipeline;
    let counts = pipeline.counts;
    metrics::gauge!("gc_status_events_pending").set((counts.pending + counts.retrying) as f64);
    metrics::gauge!("gc_status_events_dead").set(counts.dead as f64);
    if let Some(forwarding) = &pipeline.forwarding {
        metrics::gauge!("gc_status_forward_waiting").set(forwarding.waiting as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}
