//! The live status: pipeline counts and rates plus per-queue statistics, as one snapshot.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    config::Config,
    forward::ForwardMonitor,
    genesys::ConnectorMonitor,
    queues::{percent, QueueSettings, SharedSettings},
    rates::RateMeter,
    store::{Db, StatsWindow},
};
use crate::model::{
    BoardSettings, Limits, PipelineStatus, ServiceLevelTarget, StatusSnapshot, Thresholds,
};
use crate::server::domain::{day_bounds, interval_bounds};

/// Everything needed to compute a [`StatusSnapshot`].
pub struct StatusSource {
    pub db: Db,
    pub timezone: jiff::tz::TimeZone,
    /// Names, targets and thresholds per queue (re-read on SIGHUP).
    pub settings: SharedSettings,
    pub observation_ttl: Duration,
    /// Open conversations older than this no longer count (their end event was lost).
    pub max_waiting: Duration,
    pub ingested: Arc<RateMeter>,
    pub processed: Arc<RateMeter>,
    /// This process's name among the replicas sharing a database (for the shared rates).
    pub replica: String,
    /// How long a snapshot is served to readers before the next one is read.
    pub cache_for: Duration,
    /// The last snapshot and when it was read; the lock also makes concurrent readers wait
    /// for one database read instead of each starting their own.
    pub cache: tokio::sync::Mutex<Option<(std::time::Instant, StatusSnapshot)>>,
    /// Staleness and framing, sent along for the pages (thresholds come from `settings`).
    pub board: BoardSettings,
    /// Forwarding's pause state and delivery rate, when a sink is configured.
    pub forwarding: Option<Arc<ForwardMonitor>>,
    /// The Genesys Cloud connector's state, when one is configured.
    pub genesys: Option<Arc<ConnectorMonitor>>,
}

/// A name for this process among replicas: host, process id and a random part (a restarted
/// replica is a new one; the old name ages out of the rates within a minute).
pub fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{}-{}-{:08x}",
        host.trim(),
        std::process::id(),
        rand::random::<u32>()
    )
}

impl StatusSource {
    /// Reads the time zone by IANA name and the queue settings (defaults from the
    /// environment, per-queue ones from the queues or names file); errors say what to fix.
    pub fn load_settings(config: &Config) -> anyhow::Result<(jiff::tz::TimeZone, SharedSettings)> {
        let timezone = config.worker.timezone.as_str();
        // UTC needs no time-zone database (minimal images may lack /usr/share/zoneinfo).
        let tz = if timezone.eq_ignore_ascii_case("UTC") {
            Ok(jiff::tz::TimeZone::UTC)
        } else {
            jiff::tz::TimeZone::get(timezone)
        }
        .with_context(|| {
            format!("GC_STATUS_TIMEZONE `{timezone}` is not a known IANA time zone (e.g. Europe/Berlin)")
        })?;
        let w = &config.worker;
        anyhow::ensure!(
            w.service_level_secs > 0,
            "GC_STATUS_SERVICE_LEVEL_SECS must be above 0 (Genesys's default is 20)"
        );
        anyhow::ensure!(
            (0.0..=100.0).contains(&w.service_level_percent),
            "GC_STATUS_SERVICE_LEVEL_PERCENT must be between 0 and 100 (Genesys's default is 80)"
        );
        let file = match (&w.queues_file, &w.queue_names_file) {
            (Some(path), _) => Some((path.clone(), "GC_STATUS_QUEUES_FILE")),
            (None, Some(path)) => Some((path.clone(), "GC_STATUS_QUEUE_NAMES_FILE")),
            (None, None) => None,
        };
        let queues = match &file {
            Some((path, setting)) => QueueSettings::read_file(path, setting)?,
            None => Default::default(),
        };
        let settings = QueueSettings {
            target: ServiceLevelTarget {
                seconds: i64::from(w.service_level_secs),
                percent: w.service_level_percent,
            },
            short_abandon_ms: (w.short_abandon_secs > 0)
                .then(|| i64::from(w.short_abandon_secs) * 1000),
            thresholds: Thresholds {
                warning: Limits {
                    waiting: config.alert_waiting,
                    longest_wait_secs: config.alert_longest_wait_secs,
                    service_level: config.alert_service_level.map(percent),
                },
                critical: Limits {
                    waiting: config.critical_waiting,
                    longest_wait_secs: config.critical_longest_wait_secs,
                    service_level: config.critical_service_level.map(percent),
                },
            },
            queues,
            directory: Default::default(),
        };
        Ok((tz, SharedSettings::new(settings, file)))
    }

    /// The zone times are shown in, now.
    pub fn zone(&self) -> crate::model::Zone {
        let now = jiff::Timestamp::now();
        crate::model::Zone {
            label: self.timezone.to_offset_info(now).abbreviation().to_string(),
            utc_offset_secs: i64::from(self.timezone.to_offset(now).seconds()),
        }
    }

    /// The current status: the cached snapshot while it is younger than `cache_for`, so
    /// the page, the queues API, `/metrics` and every stream share one database read per
    /// interval however many readers there are.
    pub async fn snapshot(&self) -> anyhow::Result<StatusSnapshot> {
        let mut cache = self.cache.lock().await;
        if let Some((read_at, snapshot)) = &*cache {
            if read_at.elapsed() < self.cache_for {
                return Ok(snapshot.clone());
            }
        }
        let fresh = self.read().await?;
        *cache = Some((std::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// Reads a new snapshot from the database.
    async fn read(&self) -> anyhow::Result<StatusSnapshot> {
        let now = jiff::Timestamp::now();
        let (day_start, day_end) = day_bounds(now, &self.timezone)?;
        let (interval_start, interval_end) = interval_bounds(now.as_millisecond());
        let settings = self.settings.get();
        let window = StatsWindow {
            now: now.as_millisecond(),
            day_start,
            day_end,
            interval_start,
            interval_end,
            timezone: &self.timezone,
            fresh_after: now.as_millisecond() - self.observation_ttl.as_millis() as i64,
            open_since: now
                .as_millisecond()
                .saturating_sub(i64::try_from(self.max_waiting.as_millis()).unwrap_or(i64::MAX)),
            settings: &settings,
        };
        let counts = self.db.event_counts().await?;
        let forwarding = match &self.forwarding {
            Some(monitor) => Some(monitor.status(&self.db).await?),
            None => None,
        };
        let last = self.db.last_received_at().await?;
        let mut queues = self.db.queue_statuses(&window).await?;
        let mut history = self.db.samples(now.as_millisecond() / 60_000).await?;
        let (in_per_second, out_per_second) = self
            .db
            .shared_rates(
                &self.replica,
                self.ingested.per_second(),
                self.processed.per_second(),
                now.as_millisecond(),
            )
            .await?;
        for queue in &mut queues {
            queue.history = history.remove(&queue.queue_id).unwrap_or_default();
        }
        Ok(StatusSnapshot {
            pipeline: PipelineStatus {
                counts,
                in_per_second,
                out_per_second,
                last_event_at: last
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                    .map(|t| t.to_string()),
                forwarding,
                genesys: self.genesys.as_ref().map(|g| g.status()),
            },
            queues,
            as_of: now.to_string(),
            board: BoardSettings {
                thresholds: settings.thresholds,
                queue_thresholds: settings.queue_thresholds(),
                timezone: self.timezone.iana_name().unwrap_or("UTC").to_owned(),
                zone: self.timezone.to_offset_info(now).abbreviation().to_string(),
                utc_offset_secs: i64::from(self.timezone.to_offset(now).seconds()),
                ..self.board.clone()
            },
        })
    }

    /// Records each queue's waiting count for the sparklines, every few seconds (the table
    /// keeps each minute's peak), until `stop`.
    pub async fn sample_periodically(self: Arc<Self>, stop: CancellationToken) {
        const EVERY: Duration = Duration::from_secs(10);
        self.clone().sample().await;
        super::periodic::every(EVERY, stop, || self.clone().sample()).await
    }

    /// Records each queue's waiting count now, for this minute.
    async fn sample(self: Arc<Self>) {
        match self.snapshot().await {
            Ok(snapshot) => {
                let waiting: Vec<(String, i64)> = snapshot
                    .queues
                    .iter()
                    .map(|q| (q.queue_id.clone(), q.waiting))
                    .collect();
                let minute = jiff::Timestamp::now().as_millisecond() / 60_000;
                if !waiting.is_empty() {
                    if let Err(err) = self.db.record_samples(minute, &waiting).await {
                        tracing::warn!(error = %err, "cannot record queue samples");
                    }
                }
            }
            Err(err) => tracing::warn!("cannot sample the queues: {err:#}"),
        }
    }
}

/// How often the feed looks for changes; unchanged snapshots are not sent.
pub const FEED_INTERVAL: Duration = Duration::from_millis(500);

/// The live status for every open stream: one task computes the snapshot (as JSON), and only
/// while someone is listening, however many pages are open.
#[derive(Clone, Debug)]
pub struct StatusFeed {
    tx: Arc<watch::Sender<Option<Arc<str>>>>,
}

impl Default for StatusFeed {
    fn default() -> Self {
        StatusFeed {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl StatusFeed {
    /// A receiver that sees each changed snapshot (coalesced: a slow reader gets the newest).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.tx.subscribe()
    }

    /// Publishes changed snapshots until `stop` is cancelled.
    pub async fn run(self, source: Arc<StatusSource>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(FEED_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last: Option<StatusSnapshot> = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => return,
            }
            if self.tx.receiver_count() == 0 {
                continue;
            }
            let snapshot = match source.snapshot().await {
                Ok(snapshot) => snapshot,
                Err(err) => {
                    tracing::warn!("status snapshot failed: {err:#}");
                    continue;
                }
            };
            // Only a change in the figures is news; the read time alone is not (the stream's
            // heartbeats carry it).
            let figures = StatusSnapshot {
                as_of: String::new(),
                ..snapshot.clone()
            };
            if last.as_ref() == Some(&figures) {
                continue;
            }
            match serde_json::to_string(&snapshot) {
                Ok(json) => {
                    self.tx.send_replace(Some(json.into()));
                    last = Some(figures);
                }
                Err(err) => tracing::warn!(error = %err, "cannot encode the status"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        use clap::Parser as _;
        let mut args = vec!["gc-status".to_owned()];
        for (k, v) in vars {
            args.push(format!("--{k}={v}"));
        }
        Config::try_parse_from(args).expect("config")
    }

    #[test]
    fn unknown_zones_and_bad_names_files_are_reported() {
        let err = StatusSource::load_settings(&config(&[("timezone", "Mars/Olympus")]))
            .expect_err("unknown zone");
        assert!(err.to_string().contains("GC_STATUS_TIMEZONE"));
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("names.json");
        std::fs::write(&file, "[1,2]").expect("write");
        let path = file.display().to_string();
        let err = StatusSource::load_settings(&config(&[("queue-names-file", &path)]))
            .expect_err("not an object");
        assert!(format!("{err:#}").contains("GC_STATUS_QUEUE_NAMES_FILE"));
        std::fs::write(&file, r#"{"q-1": "Sales"}"#).expect("write");
        let (_, settings) =
            StatusSource::load_settings(&config(&[("queue-names-file", &path)])).expect("names");
        assert_eq!(settings.get().name("q-1"), Some("Sales"));
        // A file changed and read again (as on SIGHUP); a broken one leaves the last good one.
        std::fs::write(&file, r#"{"q-1": {"name": "Sales EMEA"}}"#).expect("write");
        assert_eq!(settings.reload().expect("reload"), 1);
        assert_eq!(settings.get().name("q-1"), Some("Sales EMEA"));
        std::fs::write(&file, "{").expect("write");
        assert!(settings.reload().is_err());
        assert_eq!(settings.get().name("q-1"), Some("Sales EMEA"));
    }
}
