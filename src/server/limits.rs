//! What one kind of traffic may take of the server: requests in flight per kind, status
//! streams per client, and how long a body and a whole request may take.
//!
//! Each limit answers at once when it is reached (503 with `Retry-After`, 408, 413): webhook
//! senders retry, and waiting in a queue would only turn overload into timeouts.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    error_handling::HandleErrorLayer,
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    BoxError, Json,
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{
    layer::util::{Identity, Stack},
    limit::GlobalConcurrencyLimitLayer,
    load_shed::LoadShedLayer,
    ServiceBuilder,
};

use super::client::ClientIp;
use super::config::Config;

/// Largest body a portal page, server function or admin API request may send (filters, ids,
/// a sign-in form): far above what the pages send, far below what would cost memory.
pub const MAX_PORTAL_BODY_BYTES: usize = 256 * 1024;

/// The time and size limits and the in-flight budgets, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    webhooks: Arc<Semaphore>,
    reads: Arc<Semaphore>,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// How long a whole request may take (not the status stream).
    pub request_timeout: Duration,
    pub streams: StreamSlots,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        Limits {
            webhooks: Arc::new(Semaphore::new(config.max_webhooks_in_flight.max(1))),
            reads: Arc::new(Semaphore::new(config.max_reads_in_flight.max(1))),
            body_timeout: Duration::from_secs(config.request_read_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
            streams: StreamSlots {
                per_client: config.max_streams_per_address.max(1),
                lifetime: Duration::from_secs(config.stream_max_secs.max(1)),
                session_check: Duration::from_secs(config.stream_session_check_secs.max(1)),
                open: PerAddress::default(),
            },
        }
    }

    /// Layer: webhooks in flight at most `GC_STATUS_MAX_WEBHOOKS_IN_FLIGHT`.
    pub fn webhooks_in_flight(&self) -> InFlightLayer {
        in_flight(self.webhooks.clone())
    }

    /// Layer: page, API and admin requests in flight at most `GC_STATUS_MAX_READS_IN_FLIGHT`
    /// (streams take from the same budget, for their whole life: [`StreamSlots::admit`]).
    pub fn reads_in_flight(&self) -> InFlightLayer {
        in_flight(self.reads.clone())
    }

    /// A read slot for a status stream to hold while it is open.
    pub fn read_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.reads.clone().try_acquire_owned().ok()
    }
}

/// tower's load shedding over a shared concurrency limit: a request finding the limit
/// reached is answered [`overloaded`] instead of waiting.
pub type InFlightLayer = ServiceBuilder<
    Stack<
        GlobalConcurrencyLimitLayer,
        Stack<LoadShedLayer, Stack<HandleErrorLayer<OverloadedFn, ()>, Identity>>,
    >,
>;
type OverloadedFn = fn(BoxError) -> std::future::Ready<Response>;

fn in_flight(limit: Arc<Semaphore>) -> InFlightLayer {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded as OverloadedFn))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(limit))
}

/// 503 with `Retry-After: 1`, counted in `gc_status_requests_shed_total`.
fn overloaded(_: BoxError) -> std::future::Ready<Response> {
    std::future::ready(overloaded_response())
}

pub fn overloaded_response() -> Response {
    metrics::counter!("gc_status_requests_shed_total").increment(1);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(json!({
            "error": "overloaded",
            "detail": "too many requests of this kind in flight; retry shortly",
        })),
    )
        .into_response()
}

/// Middleware for routes whose bodies are small (pages' forms, server functions, the admin
/// API): the body is read whole within the read timeout and [`MAX_PORTAL_BODY_BYTES`] before
/// the handler runs, so a client that declares a body and never sends it holds its slot for
/// the read timeout, not forever. 408 (counted in `gc_status_request_bodies_cut_total`) or 413.
pub async fn read_body_in_time(
    State(limits): State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let reading = Limited::new(body, MAX_PORTAL_BODY_BYTES).collect();
    let body = match tokio::time::timeout(limits.body_timeout, reading).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than the limit of {MAX_PORTAL_BODY_BYTES} bytes"),
            )
        }
        Ok(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the request body could not be read".into(),
            )
        }
        Err(_) => {
            body_cut();
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body arrived too slowly; send it at once".into(),
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// Counts a body cut off for arriving too slowly.
pub fn body_cut() {
    metrics::counter!("gc_status_request_bodies_cut_total").increment(1);
}

fn error(status: StatusCode, code: &'static str, detail: String) -> Response {
    (status, Json(json!({ "error": code, "detail": detail }))).into_response()
}

/// Status streams open per client, each capped in number and in lifetime.
#[derive(Clone, Debug)]
pub struct StreamSlots {
    per_client: usize,
    /// A stream ends after this long; the page reconnects (and is checked again).
    pub lifetime: Duration,
    /// How often a stream checks that the session it was opened with still exists.
    pub session_check: Duration,
    open: PerAddress,
}

/// One open stream: while it lives, it holds a read slot and counts against its client.
#[derive(Debug)]
pub struct StreamPermit {
    _read: OwnedSemaphorePermit,
    _client: Option<Counted>,
}

impl StreamSlots {
    /// Admits a stream for `client` holding `read`, unless the client has its fill open.
    pub fn admit(
        &self,
        client: Option<ClientIp>,
        read: OwnedSemaphorePermit,
    ) -> Result<StreamPermit, TooManyStreams> {
        let counted = match client {
            Some(client) => match self.open.take(client.bucket(), self.per_client) {
                Some(counted) => Some(counted),
                None => {
                    metrics::counter!("gc_status_streams_refused_total").increment(1);
                    return Err(TooManyStreams);
                }
            },
            None => None,
        };
        Ok(StreamPermit {
            _read: read,
            _client: counted,
        })
    }
}

/// The client already has its fill of streams open: 429.
#[derive(Debug)]
pub struct TooManyStreams;

impl IntoResponse for TooManyStreams {
    fn into_response(self) -> Response {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "30")],
            Json(json!({
                "error": "too_many_streams",
                "detail": "this address has the most status streams open it may; close a page first",
            })),
        )
            .into_response()
    }
}

/// Things open per address (connections, streams), for caps that count them.
#[derive(Clone, Debug, Default)]
pub struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted thing; dropping it frees its place.
#[derive(Debug)]
pub struct Counted {
    address: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// A place for one more from `address`, unless it already has `cap` open.
    pub fn take(&self, address: IpAddr, cap: usize) -> Option<Counted> {
        let mut counts = lock(&self.0);
        let count = counts.entry(address).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Counted {
            address,
            counts: self.0.clone(),
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave a count half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
