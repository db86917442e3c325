//! The accept loop: HTTP/1.1 connections with a time limit on every request head, a cap on
//! open connections (in all and per address), and a shutdown that a slow client cannot hold
//! up.
//!
//! `axum::serve` can do neither a header read timeout nor a connection cap yet, and a webhook
//! receiver meets exactly the clients that need them: connections that open and then trickle
//! or idle (slowloris), and floods of connections that would exhaust file descriptors.
//!
//! Only HTTP/1.1 is offered. gc-status serves plain HTTP behind a TLS-terminating proxy or
//! load balancer; its senders (Genesys webhooks, EventBridge API destinations) and the
//! browsers behind that proxy speak HTTP/1.1 to it, and browsers never speak HTTP/2 without
//! TLS. Offering cleartext HTTP/2 would add a second protocol with its own idle and stream
//! limits to get right (a client that sends only the preface), for no client that needs it.
//! A request in HTTP/2 is answered 400 by the HTTP/1 parser and the connection closed.

use std::{future::Future, net::IpAddr, sync::Arc, time::Duration};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tower::ServiceExt as _;

use crate::server::config::Config;
use crate::server::{
    client::TrustedProxies,
    limits::{Counted, PerAddress},
};

/// Largest request head (request line and headers) read from a client.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long shutdown waits for open requests before closing their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the accept loop treats connections.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    /// Every request head (the first one included, and the next on a kept-alive
    /// connection) must arrive within this; otherwise the connection is closed.
    pub head_timeout: Duration,
    pub max_connections: usize,
    pub max_per_address: usize,
    /// Proxies are exempt from the per-address cap: every client behind them shares it.
    pub proxies: Arc<TrustedProxies>,
}

impl ServeSettings {
    pub fn from_config(config: &Config, proxies: Arc<TrustedProxies>) -> Self {
        ServeSettings {
            head_timeout: Duration::from_secs(config.request_read_timeout_secs.max(1)),
            max_connections: config.max_connections.max(1),
            max_per_address: config.max_connections_per_address.max(1),
            proxies,
        }
    }
}

/// Open connections, in all and per peer address.
struct Admission {
    total: Arc<Semaphore>,
    per_address: usize,
    open: PerAddress,
    proxies: Arc<TrustedProxies>,
}

/// One admitted connection; dropping it frees its places.
struct Admitted {
    _total: OwnedSemaphorePermit,
    _peer: Option<Counted>,
}

impl Admission {
    /// A place for a connection from `peer`, or none (counted in
    /// `gc_status_connections_refused_total{reason}`).
    fn admit(&self, peer: IpAddr) -> Option<Admitted> {
        let refused = |reason: &'static str| {
            metrics::counter!("gc_status_connections_refused_total", "reason" => reason)
                .increment(1);
            None
        };
        let Ok(total) = self.total.clone().try_acquire_owned() else {
            return refused("total");
        };
        let peer = if self.proxies.trusts(peer) {
            None
        } else {
            match self.open.take(peer, self.per_address) {
                Some(counted) => Some(counted),
                None => return refused("per_address"),
            }
        };
        Some(Admitted {
            _total: total,
            _peer: peer,
        })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets open
/// requests finish for up to [`SHUTDOWN_GRACE`] and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let admission = Admission {
        total: Arc::new(Semaphore::new(settings.max_connections)),
        per_address: settings.max_per_address,
        open: PerAddress::default(),
        proxies: settings.proxies.clone(),
    };
    let graceful = GracefulShutdown::new();
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
        // At the cap the connection is closed at once: a client can retry, while a backlog
        // of connections nobody reads would only hold descriptors.
        let Some(admitted) = admission.admit(remote.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(remote));
                app.clone().oneshot(request.map(Body::new))
            },
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // Runs from the moment a head is awaited: a connection that sends nothing, or
            // idles between requests, is closed after it too.
            .header_read_timeout(settings.head_timeout)
            // Request heads over this get 431 instead of hyper's ~400 KB default.
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            let _ = connection.await;
            drop(admitted);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    Ok(())
}
