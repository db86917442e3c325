//! Reading the status: `GET /api/v2/queues`, the live `GET /api/v2/stream` and `GET /metrics`.

use std::{convert::Infallible, sync::OnceLock, time::Duration};

use axum::{
    extract::State,
    http::header,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse,
    },
    routing::get,
    Json, Router,
};
use futures_util::stream::{self, Stream, StreamExt as _};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::{error::ApiError, state::AppState};
use crate::model::StatusSnapshot;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/queues", get(list_queues))
        .route("/api/v2/stream", get(stream_status))
        .route("/metrics", get(render_metrics))
}

async fn list_queues(State(state): State<AppState>) -> Result<Json<StatusSnapshot>, ApiError> {
    Ok(Json(state.status.snapshot().await?))
}

/// Server-sent `status` events carrying a [`StatusSnapshot`]: the current one at once, then
/// each change (at most twice a second, from the shared [`StatusFeed`]), and a `heartbeat`
/// every [`HEARTBEAT`].
/// Ends when the server shuts down, so it never holds up a graceful shutdown.
///
/// [`StatusFeed`]: super::status::StatusFeed
async fn stream_status(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe first so no change between the first snapshot and the feed is missed.
    let changes = state.feed.subscribe();
    let first = match state.status.snapshot().await {
        Ok(snapshot) => serde_json::to_string(&snapshot).ok(),
        Err(err) => {
            tracing::warn!("status snapshot failed: {err:#}");
            None
        }
    };
    let first = stream::iter(first.map(|json| Ok(status_event(&json))));
    let shutdown = state.shutdown.clone();
    let later = stream::unfold(changes, move |mut changes| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => changed.ok()?,
                    () = shutdown.cancelled() => return None,
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
    let beats = stream::unfold(state.shutdown.clone(), |shutdown| async move {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            () = shutdown.cancelled() => return None,
        }
        let beat = serde_json::json!({ "as_of": jiff::Timestamp::now().to_string() });
        Some((
            Ok(Event::default().event("heartbeat").data(beat.to_string())),
            shutdown,
        ))
    });
    Sse::new(stream::select(first.chain(later), beats))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
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

async fn render_metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let pipeline = state.status.snapshot().await?.pipeline;
    let counts = pipeline.counts;
    metrics::gauge!("gc_status_events_pending").set((counts.pending + counts.retrying) as f64);
    metrics::gauge!("gc_status_events_dead").set(counts.dead as f64);
    if let Some(forwarding) = &pipeline.forwarding {
        metrics::gauge!("gc_status_forward_waiting").set(forwarding.waiting as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}
