//! The connector's loop: read the queues (every 10 minutes), poll their observations (every
//! `GC_STATUS_GENESYS_POLL_SECS`), ask for today's interval figures (at start, every 5
//! minutes and after any gap in the live feed), and keep the notifications websocket. A
//! failing call is retried with backoff and shown on the wallboard; ingest goes on meanwhile.

use std::sync::Arc;

use axum::body::Bytes;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    api::{Api, ApiError},
    directory::{self, KnownQueue},
    feed::{self, Interval, Metric, Results, QUEUES_PER_QUERY},
    memo::PollMemo,
    monitor::ConnectorMonitor,
    notifications::{self, Channels},
    settings::RETRY,
    GenesysSettings,
};
use crate::server::{
    domain::{day_bounds, interval_bounds, local_time, now_ms},
    health::Health,
    ingest::Webhooks,
    queues::{DirectoryEntry, SharedSettings},
    store::{Db, Lead},
};

/// How often a standing-by replica tries to take the connector's lead.
const STANDBY_RETRY: std::time::Duration = std::time::Duration::from_secs(15);

/// The connector, ready to run.
pub struct Connector {
    api: Arc<Api>,
    settings: GenesysSettings,
    intake: Arc<Webhooks>,
    queue_settings: SharedSettings,
    timezone: jiff::tz::TimeZone,
    monitor: Arc<ConnectorMonitor>,
    memo: Arc<PollMemo>,
    db: Db,
}

impl Connector {
    pub fn new(
        db: Db,
        settings: GenesysSettings,
        intake: Arc<Webhooks>,
        queue_settings: SharedSettings,
        timezone: jiff::tz::TimeZone,
        health: Health,
    ) -> anyhow::Result<Self> {
        Ok(Connector {
            api: Arc::new(Api::new(&settings)?),
            monitor: Arc::new(ConnectorMonitor::new(settings.notifications, health)),
            settings,
            intake,
            queue_settings,
            timezone,
            memo: Default::default(),
            db,
        })
    }

    /// The API client (the workers look conversations up with it).
    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    pub fn monitor(&self) -> Arc<ConnectorMonitor> {
        self.monitor.clone()
    }

    /// Runs until `stop` (a supervised task: it never ends before).
    pub async fn run(self, stop: CancellationToken) {
        // Replicas on one PostgreSQL database share one connector: the others stand by.
        let Some(_lead) = self.take_the_lead(&stop).await else {
            return stop.cancelled().await;
        };
        let (queues_tx, queues_rx) = watch::channel(Arc::new(Vec::<String>::new()));
        let gap = Arc::new(tokio::sync::Notify::new());
        let socket_task = self.settings.notifications.then(|| {
            let channels = Arc::new(Channels {
                api: self.api.clone(),
                intake: self.intake.clone(),
                monitor: self.monitor.clone(),
                settings: self.settings.clone(),
                gap: gap.clone(),
                memo: self.memo.clone(),
            });
            // Channels are opened once the queues are known.
            let (rx, stop) = (queues_rx.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rx = rx;
                if rx.wait_for(|q| !q.is_empty()).await.is_ok() {
                    notifications::run(channels, rx, stop).await;
                }
            })
        });

        let mut queues: Vec<String> = Vec::new();
        let now = Instant::now();
        let (mut next_queues, mut next_poll, mut next_today) = (now, now, now);
        let mut failures = 0u32;
        // A poll failed since the last good one: today is asked for again after it.
        let mut gap_open = false;
        loop {
            let now = Instant::now();
            let round = async {
                if now >= next_queues {
                    queues = self.refresh_queues().await?;
                    next_queues = now + self.settings.queues_every;
                    queues_tx.send_if_modified(|current| {
                        let changed = **current != queues;
                        if changed {
                            *current = Arc::new(queues.clone());
                        }
                        changed
                    });
                }
                if now >= next_poll {
                    next_poll = now + self.settings.poll;
                    self.poll(&queues).await?;
                    if gap_open {
                        gap_open = false;
                        next_today = now;
                    }
                }
                if now >= next_today {
                    self.today(&queues).await?;
                    next_today = now + self.settings.aggregates_every;
                }
                Ok::<(), ApiError>(())
            };
            // A call in flight (up to its timeout) does not hold up shutdown.
            let round = tokio::select! {
                round = round => round,
                () = stop.cancelled() => break,
            };
            let wake_at = match round {
                Ok(()) => {
                    failures = 0;
                    self.monitor.succeeded();
                    next_poll.min(next_today).min(next_queues)
                }
                Err(err) => {
                    failures += 1;
                    gap_open = true;
                    let wait = match &err {
                        ApiError::RateLimited(wait) => (*wait).max(RETRY.bound(failures)),
                        _ => RETRY.bound(failures),
                    };
                    tracing::warn!(error = %err, retry_in_secs = wait.as_secs(), "Genesys Cloud connector");
                    self.monitor.failed(&err.to_string(), wait);
                    next_poll = next_poll.max(now + wait);
                    Instant::now() + wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = gap.notified() => {
                    // A socket opened or was lost: what it missed comes from a poll now,
                    // and today is asked for again.
                    if failures == 0 {
                        next_poll = Instant::now();
                        next_today = Instant::now();
                    }
                }
                () = stop.cancelled() => break,
            }
        }
        drop(queues_tx);
        if let Some(task) = socket_task {
            let _ = task.await;
        }
    }

    /// Waits until this replica leads the connector (at once on SQLite); `None` on `stop`.
    async fn take_the_lead(&self, stop: &CancellationToken) -> Option<Lead> {
        loop {
            match self.db.try_lead("genesys connector").await {
                Ok(Some(lead)) => {
                    self.monitor.standing_by(None);
                    return Some(lead);
                }
                Ok(None) => self
                    .monitor
                    .standing_by(Some("another replica runs the connector")),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot take the Genesys Cloud connector's lead");
                    self.monitor
                        .standing_by(Some("the database does not answer"));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(STANDBY_RETRY) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// Reads the queue list, keeps the watched queues' names and targets in the settings,
    /// and returns their ids.
    async fn refresh_queues(&self) -> Result<Vec<String>, ApiError> {
        let all = directory::list_queues(&self.api).await?;
        let total = all.len();
        for pattern in directory::unmatched(&all, &self.settings.watch) {
            tracing::warn!(
                pattern,
                "GC_STATUS_GENESYS_QUEUES: no queue has this id or name"
            );
        }
        let watched: Vec<KnownQueue> = directory::watched(all, &self.settings.watch);
        tracing::info!(
            queues = total,
            watched = watched.len(),
            "read the Genesys Cloud queues"
        );
        self.queue_settings.set_directory(
            watched
                .iter()
                .map(|q| {
                    (
                        q.id.clone(),
                        DirectoryEntry {
                            name: q.name.clone(),
                            target: q.target(),
                        },
                    )
                })
                .collect(),
        );
        self.monitor.watching(watched.len());
        let mut ids: Vec<String> = watched.into_iter().map(|q| q.id).collect();
        ids.sort();
        Ok(ids)
    }

    /// Polls the observations of `queues` and stores each group as a notification, except a
    /// group whose figures are what the last poll stored, less than
    /// [`GenesysSettings::repeat_after`] ago: a quiet queue does not add a row every few
    /// seconds, and its figures still never age past the observation TTL.
    async fn poll(&self, queues: &[String]) -> Result<(), ApiError> {
        let polled_at = now_ms();
        for (n, chunk) in queues.chunks(QUEUES_PER_QUERY).enumerate() {
            let answer: Results<Metric> = self
                .api
                .post(
                    "queues/observations",
                    "/api/v2/analytics/queues/observations/query",
                    &feed::observation_query(chunk),
                )
                .await?;
            let poll = format!("poll-{polled_at}-{n}");
            for group in feed::observation_notifications(answer, &poll) {
                if self.memo.is_repeat(&group, self.settings.repeat_after) {
                    continue;
                }
                self.store(vec![group.body.clone()]).await?;
                self.memo.stored(group);
            }
        }
        self.monitor.polled(polled_at);
        Ok(())
    }

    /// Asks for today's half hours so far and stores them as interval reports.
    async fn today(&self, queues: &[String]) -> Result<(), ApiError> {
        let now = jiff::Timestamp::now();
        let (day_start, _) = day_bounds(now, &self.timezone)
            .map_err(|e| ApiError::Store(format!("cannot place today: {e}")))?;
        let (_, interval_end) = interval_bounds(now.as_millisecond());
        let local = |ms| local_time(ms, &self.timezone).unwrap_or_default();
        let (start, end) = (local(day_start), local(interval_end));
        let zone = self.timezone.iana_name().unwrap_or("UTC");
        for chunk in queues.chunks(QUEUES_PER_QUERY) {
            let answer: Results<Interval> = self
                .api
                .post(
                    "conversations/aggregates",
                    "/api/v2/analytics/conversations/aggregates/query",
                    &feed::aggregate_query(chunk, &start, &end, zone),
                )
                .await?;
            self.store(feed::aggregate_notifications(answer, day_start))
                .await?;
        }
        self.monitor.got_today(now.as_millisecond());
        Ok(())
    }

    async fn store(&self, bodies: Vec<Vec<u8>>) -> Result<(), ApiError> {
        for body in bodies {
            self.intake
                .store(Bytes::from(body), now_ms())
                .await
                .map_err(|e| ApiError::Store(e.to_string()))?;
        }
        Ok(())
    }
}
