//! Forwarding: every event the statistics accepted is also delivered to a downstream sink
//! (`GC_STATUS_SINK_URL`), as its own step after processing, with its own lease, attempts,
//! backoff and dead letters (`stage = 'sink'`). The statistics never wait for the sink.
//!
//! The forwarder claims due deliveries, sends them concurrently (with an OAuth2 token from
//! the shared [`TokenSource`]) and records the outcomes in one transaction. When the
//! sink keeps failing it pauses for a cool-down instead of spending every event's attempts,
//! then tries one event and resumes when that succeeds: an outage costs no event an attempt,
//! and nothing is dead-lettered just because the sink was down for a while.

pub mod sink;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use self::sink::{Delivery, Sink};
use super::{
    config::{ForwardConfig, WorkerConfig},
    domain::{now_ms, ClaimedEvent, DeliveryOutcome},
    oauth::{TokenSettings, TokenSource},
    rates::RateMeter,
    store::{ClaimRequest, Db},
    worker::{grace_after, new_token, retry::Backoff, WorkerSettings},
};
use crate::model::{ForwardPause, ForwardingStatus};

/// Forwarding settings.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub lease: Duration,
    pub pause_after: u32,
    pub cooldown: Duration,
    /// How often an idle forwarder looks for due deliveries.
    pub poll: Duration,
    /// How long shutdown waits for deliveries in flight before releasing their leases.
    pub grace: Duration,
}

impl ForwardSettings {
    /// Attempts, backoff and lease as the workers have them; the lease also outlasts a
    /// delivery's longest path (a send, a token renewal after a 401, the send again).
    pub fn from_config(forward: &ForwardConfig, worker: &WorkerConfig) -> Self {
        let work = WorkerSettings::from_config(worker);
        ForwardSettings {
            concurrency: forward.sink_concurrency.clamp(1, 1024),
            max_attempts: work.max_attempts,
            backoff: work.backoff,
            lease: work
                .lease
                .max(Duration::from_millis(forward.sink_timeout_ms) * 3),
            pause_after: forward.sink_pause_after.max(1),
            cooldown: Duration::from_secs(forward.sink_cooldown_secs.max(1)),
            poll: Duration::from_millis(100),
            grace: Duration::from_secs(5),
        }
    }
}

/// What the page and `/metrics` show of forwarding; shared with the status source.
#[derive(Debug, Default)]
pub struct ForwardMonitor {
    pub delivered: RateMeter,
    paused: Mutex<Option<ForwardPause>>,
}

impl ForwardMonitor {
    /// Why and until when forwarding is paused, if it is.
    pub fn pause(&self) -> Option<ForwardPause> {
        self.paused.lock().ok().and_then(|p| p.clone())
    }

    fn set_pause(&self, pause: Option<ForwardPause>) {
        metrics::gauge!("gc_status_forward_paused").set(if pause.is_some() { 1.0 } else { 0.0 });
        if let Ok(mut slot) = self.paused.lock() {
            *slot = pause;
        }
    }

    /// The status strip's figures, with the counts read from the database.
    pub async fn status(&self, db: &Db) -> sqlx::Result<ForwardingStatus> {
        let counts = db.delivery_counts().await?;
        Ok(ForwardingStatus {
            delivered_per_second: self.delivered.per_second(),
            waiting: counts.waiting + counts.sending,
            retrying: counts.retrying,
            paused: self.pause(),
        })
    }
}

/// The forwarding step; cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    db: Db,
    sink: Arc<Sink>,
    settings: Arc<ForwardSettings>,
    monitor: Arc<ForwardMonitor>,
}

/// The forwarder the configuration asks for: `None` without a sink URL; an error that says
/// what to fix when the settings are wrong.
pub fn from_config(
    db: &Db,
    config: &crate::server::config::Config,
    monitor: Arc<ForwardMonitor>,
) -> anyhow::Result<Option<Forwarder>> {
    let forward = &config.forward;
    let Some(url) = forward.sink() else {
        if forward.oauth_token_url.is_some() {
            tracing::warn!(
                "GC_STATUS_OAUTH_TOKEN_URL is set but GC_STATUS_SINK_URL is not: nothing is forwarded"
            );
        }
        return Ok(None);
    };
    let url: reqwest::Url = url
        .parse()
        .with_context(|| format!("GC_STATUS_SINK_URL `{url}` is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("GC_STATUS_SINK_URL must be an http(s) URL");
    }
    let timeout = Duration::from_millis(forward.sink_timeout_ms.max(1));
    // Redirects are not followed: a POST redirected would arrive as a GET, and the token
    // endpoint must answer itself.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("gc-status/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot set up the HTTP client for the sink")?;
    let tokens = token_source(forward, http.clone())?.map(Arc::new);
    if url.scheme() == "http" && tokens.is_some() && !is_loopback(&url) {
        tracing::warn!(
            "GC_STATUS_SINK_URL is plain http: the sink's bearer token crosses the network unencrypted"
        );
    }
    let settings = ForwardSettings::from_config(forward, &config.worker);
    tracing::info!(
        sink = %url.host_str().unwrap_or_default(),
        oauth = tokens.is_some(),
        concurrency = settings.concurrency,
        "forwarding processed events to the sink"
    );
    let sink = Sink::new(http, url, timeout, tokens, config.worker.rules());
    Ok(Some(Forwarder {
        db: db.clone(),
        sink: Arc::new(sink),
        settings: Arc::new(settings),
        monitor,
    }))
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The forwarder's own view of the sink: consecutive transient failures and whether the
/// next claim is the probe after a pause.
#[derive(Debug, Default)]
struct Breaker {
    consecutive: u32,
    probing: bool,
}

impl Forwarder {
    /// Delivers until `shutdown`: claims, sends, records; pauses when the sink keeps failing.
    pub async fn run(self, shutdown: CancellationToken) {
        let token = new_token();
        let mut breaker = Breaker::default();
        while !shutdown.is_cancelled() {
            if let Some(pause) = self.monitor.pause() {
                let wait = (pause.until_ms - now_ms()).max(0) as u64;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    () = shutdown.cancelled() => break,
                }
                breaker.probing = true;
            }
            let round = self.round(token, &mut breaker);
            let result = tokio::select! {
                result = round => result,
                () = grace_after(&shutdown, self.settings.grace) => break,
            };
            let idle = match result {
                Ok(claimed) => claimed == 0,
                Err(err) => {
                    tracing::warn!(error = %err, "forwarding round failed; retrying shortly");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => {}
                    }
                    false
                }
            };
            if idle {
                tokio::select! {
                    () = tokio::time::sleep(self.settings.poll) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
        match self.db.release_deliveries(token, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "released unfinished deliveries"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot release deliveries; their leases expire")
            }
        }
    }

    /// One round: claim (one event when probing after a pause), send, record. Returns how
    /// many deliveries were claimed.
    async fn round(&self, token: i64, breaker: &mut Breaker) -> sqlx::Result<usize> {
        let limit = if breaker.probing {
            1
        } else {
            self.settings.concurrency
        };
        let request = ClaimRequest {
            token,
            lease_ms: i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX),
            limit: limit as i64,
        };
        let claimed = self.db.claim_deliveries(now_ms(), request).await?;
        if claimed.is_empty() {
            if breaker.probing && self.monitor.pause().is_some() {
                // Nothing left to probe with: the pause has nothing to hold back. The next
                // event is still tried alone, and pauses forwarding again if it fails.
                self.monitor.set_pause(None);
            }
            return Ok(0);
        }
        let deliveries =
            futures_util::future::join_all(claimed.iter().map(|e| self.sink.deliver(e))).await;
        let now = now_ms();
        let outcomes = self.judge(&claimed, deliveries, now, breaker);
        let completed = self.db.complete_deliveries(token, now, &outcomes).await?;
        metrics::counter!("gc_status_forward_delivered_total").increment(completed.delivered);
        metrics::counter!("gc_status_forward_dead_lettered_total").increment(completed.dead);
        self.monitor.delivered.record(completed.delivered);
        if completed.lost_lease > 0 {
            tracing::warn!(
                deliveries = completed.lost_lease,
                "a delivery lease expired before its answer was recorded; it is sent again \
                 (same Idempotency-Key)"
            );
        }
        Ok(claimed.len())
    }

    /// Outcomes for a round's answers, and the breaker's move: pause after `pause_after`
    /// consecutive transient failures (or a failed probe, or an outage reaching an event's
    /// last attempt), resume after a probe that got an answer from the sink.
    fn judge(
        &self,
        claimed: &[ClaimedEvent],
        deliveries: Vec<Delivery>,
        now: i64,
        breaker: &mut Breaker,
    ) -> Vec<(i64, DeliveryOutcome)> {
        let mut last_transient = None;
        // A transient failure of an event's last attempt, right after another failed
        // delivery, is the sink's outage rather than the event's fault: forwarding pauses
        // instead of dead-lettering it. (A lone event would otherwise run out of attempts
        // before `pause_after` failures ever add up.)
        let mut outage_at_last_attempt = false;
        for (event, delivery) in claimed.iter().zip(&deliveries) {
            let class = match delivery {
                Delivery::Delivered => None,
                Delivery::Transient { .. } => Some("transient"),
                Delivery::Permanent { .. } => Some("permanent"),
            };
            if let Some(class) = class {
                metrics::counter!("gc_status_forward_failures_total", "class" => class)
                    .increment(1);
            }
            match delivery {
                Delivery::Transient { error, .. } => {
                    breaker.consecutive += 1;
                    last_transient = Some(error.clone());
                    outage_at_last_attempt |= breaker.consecutive >= 2
                        && event.attempts >= i64::from(self.settings.max_attempts);
                }
                _ => breaker.consecutive = 0,
            }
        }
        let probe_failed = breaker.probing && last_transient.is_some();
        let trips = probe_failed
            || outage_at_last_attempt
            || breaker.consecutive >= self.settings.pause_after;
        let pause_until = now
            .saturating_add(i64::try_from(self.settings.cooldown.as_millis()).unwrap_or(i64::MAX));
        let outcomes = claimed
            .iter()
            .zip(deliveries)
            .map(|(event, delivery)| {
                let outcome = match delivery {
                    Delivery::Delivered => DeliveryOutcome::Delivered,
                    Delivery::Permanent { error } => {
                        tracing::warn!(event_id = %event.id, %error, "the sink refused an event; dead-lettered");
                        DeliveryOutcome::Dead { error }
                    }
                    // The sink as a whole is down: this attempt does not count.
                    Delivery::Transient { error, retry_after } if trips => DeliveryOutcome::Retry {
                        at: self.retry_at(event, now, retry_after).max(pause_until),
                        error,
                        refund: true,
                    },
                    Delivery::Transient { error, .. }
                        if event.attempts >= i64::from(self.settings.max_attempts) =>
                    {
                        DeliveryOutcome::Dead {
                            error: format!("gave up after {} attempts: {error}", event.attempts),
                        }
                    }
                    Delivery::Transient { error, retry_after } => DeliveryOutcome::Retry {
                        at: self.retry_at(event, now, retry_after),
                        error,
                        refund: false,
                    },
                };
                (event.seq, outcome)
            })
            .collect();
        if trips {
            let reason = last_transient.unwrap_or_default();
            tracing::warn!(
                cooldown_secs = self.settings.cooldown.as_secs(),
                %reason,
                "forwarding paused: the sink keeps failing; one event is tried after the cool-down"
            );
            metrics::counter!("gc_status_forward_pauses_total").increment(1);
            let since_ms = match self.monitor.pause() {
                Some(pause) => pause.since_ms,
                None => now,
            };
            self.monitor.set_pause(Some(ForwardPause {
                since_ms,
                until_ms: pause_until,
                reason,
            }));
            breaker.consecutive = 0;
        } else if breaker.probing || self.monitor.pause().is_some() {
            tracing::info!("forwarding resumed: the sink answers again");
            self.monitor.set_pause(None);
        }
        breaker.probing = false;
        outcomes
    }

    /// When a failed delivery is tried again: the backoff, but never before the sink's own
    /// `Retry-After`.
    fn retry_at(&self, event: &ClaimedEvent, now: i64, retry_after: Option<Duration>) -> i64 {
        let attempt = u32::try_from(event.attempts).unwrap_or(u32::MAX);
        let backoff = self.settings.backoff.retry_at(now, attempt);
        let asked = retry_after
            .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
            .unwrap_or(now);
        backoff.max(asked)
    }

    pub fn monitor(&self) -> Arc<ForwardMonitor> {
        self.monitor.clone()
    }
}

/// The sink's token source the settings ask for: `None` without a token URL; an error that
/// says what to fix when the settings are incomplete.
pub fn token_source(
    config: &ForwardConfig,
    http: reqwest::Client,
) -> anyhow::Result<Option<TokenSource>> {
    let Some(url) = config.oauth_token_url.as_deref().filter(|u| !u.is_empty()) else {
        if config.oauth_client_id.is_some() || config.oauth_client_secret.is_some() {
            anyhow::bail!(
                "GC_STATUS_OAUTH_CLIENT_ID/_SECRET are set but GC_STATUS_OAUTH_TOKEN_URL is \
                 not: set the token endpoint too, or unset them to call the sink without a token"
            );
        }
        return Ok(None);
    };
    let (Some(id), Some(secret)) = (&config.oauth_client_id, &config.oauth_client_secret) else {
        anyhow::bail!(
            "GC_STATUS_OAUTH_TOKEN_URL is set: GC_STATUS_OAUTH_CLIENT_ID and \
             GC_STATUS_OAUTH_CLIENT_SECRET are needed too"
        );
    };
    let settings = TokenSettings {
        token_url: url.to_owned(),
        client_id: id.clone(),
        client_secret: secret.clone(),
        client_auth: config.oauth_client_auth,
        scopes: config
            .oauth_scope
            .as_deref()
            .unwrap_or_default()
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        audience: config.oauth_audience.clone(),
        margin: Duration::from_secs(config.oauth_refresh_margin_secs),
        purpose: "the sink",
        label: "sink",
    };
    TokenSource::new(settings, "GC_STATUS_OAUTH_TOKEN_URL", http).map(Some)
}
