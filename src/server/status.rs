//! The live status: pipeline counts and rates plus per-queue statistics, as one snapshot.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;

use super::{
    rates::RateMeter,
    store::{stats::StatsWindow, Db},
};
use crate::model::{PipelineStatus, StatusSnapshot};

/// Everything needed to compute a [`StatusSnapshot`].
pub struct StatusSource {
    pub db: Db,
    pub timezone: jiff::tz::TimeZone,
    pub names: HashMap<String, String>,
    pub observation_ttl: Duration,
    pub ingested: Arc<RateMeter>,
    pub processed: Arc<RateMeter>,
}

impl StatusSource {
    /// Reads the time zone by IANA name and the optional names file; errors say what to fix.
    pub fn load_settings(
        timezone: &str,
        names_file: Option<&Path>,
    ) -> anyhow::Result<(jiff::tz::TimeZone, HashMap<String, String>)> {
        let tz = jiff::tz::TimeZone::get(timezone).with_context(|| {
            format!("GC_STATUS_TIMEZONE `{timezone}` is not a known IANA time zone (e.g. Europe/Berlin)")
        })?;
        let names = match names_file {
            None => HashMap::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read GC_STATUS_QUEUE_NAMES_FILE {}", path.display())
                })?;
                serde_json::from_str(&text).with_context(|| {
                    format!(
                        "GC_STATUS_QUEUE_NAMES_FILE {} must be a JSON object {{\"queue-id\": \"name\"}}",
                        path.display()
                    )
                })?
            }
        };
        Ok((tz, names))
    }

    pub async fn snapshot(&self) -> anyhow::Result<StatusSnapshot> {
        let now = jiff::Timestamp::now();
        let today = now.to_zoned(self.timezone.clone()).start_of_day()?;
        let tomorrow = today.tomorrow()?.start_of_day()?;
        let window = StatsWindow {
            now: now.as_millisecond(),
            day_start: today.timestamp().as_millisecond(),
            day_end: tomorrow.timestamp().as_millisecond(),
            fresh_after: now.as_millisecond() - self.observation_ttl.as_millis() as i64,
            names: &self.names,
        };
        let counts = self.db.event_counts().await?;
        let last = self.db.last_received_at().await?;
        let queues = self.db.queue_statuses(&window).await?;
        Ok(StatusSnapshot {
            pipeline: PipelineStatus {
                counts,
                in_per_second: self.ingested.per_second(),
                out_per_second: self.processed.per_second(),
                last_event_at: last
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                    .map(|t| t.to_string()),
            },
            queues,
        })
    }
}
