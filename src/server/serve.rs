//! The HTTP server loop: hyper connections with a time limit on reading a request's head, a
//! per-kind limit on requests in flight, and a shutdown that a slow client cannot hold up.
//!
//! `axum::serve` offers neither a header read timeout nor a bound on graceful shutdown, and a
//! webhook receiver meets exactly the clients that need them: connections that open and then
//! trickle or idle (slowloris), and senders that keep a body open forever.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    Json, Router,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tower::ServiceExt as _;

use super::{config::Config, ingest::WEBHOOK_PATH, state::AppState};

/// Largest request head (request line and headers) read from a client.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long shutdown waits for open requests before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Requests in flight, bounded per kind so one kind of traffic cannot starve the other.
#[derive(Clone, Debug)]
pub struct Limits {
    webhooks: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits {
            webhooks: Arc::new(Semaphore::new(config.max_webhooks_in_flight.max(1))),
            reads: Arc::new(Semaphore::new(config.max_reads_in_flight.max(1))),
            body_timeout: Duration::from_secs(config.request_read_timeout_secs.max(1)),
        }
    }
}

/// Middleware: admits a request if its kind has room, else answers 503 at once. Webhook
/// senders retry; waiting in a queue would only turn overload into timeouts. Health checks
/// and metrics are never refused, so overload stays visible.
pub async fn limit_in_flight(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let limit = if path == WEBHOOK_PATH {
        &state.limits.webhooks
    } else if matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    } else {
        &state.limits.reads
    };
    let Ok(_permit) = limit.clone().try_acquire_owned() else {
        metrics::counter!("gc_status_requests_shed_total").increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "1")],
            Json(json!({
                "error": "overloaded",
                "detail": "too many requests of this kind in flight; retry shortly",
            })),
        )
            .into_response();
    };
    next.run(request).await
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets open
/// requests finish for up to [`SHUTDOWN_GRACE`] and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (closing, closing_rx) = tokio::sync::watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                app.clone().oneshot(request.map(Body::new))
            },
        );
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // Request heads over this get 431 instead of hyper's ~400 KB default.
                .max_buf_size(MAX_HEAD_BYTES);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closing.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// The client's address, where the server loop recorded it (not in router unit tests).
pub fn client_addr(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}
