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
        // UTC needs no time-zone database (minimal images may lack /usr/share/zoneinfo).
        let tz = if timezone.eq_ignore_ascii_case("UTC") {
            Ok(jiff::tz::TimeZone::UTC)
        } else {
            jiff::tz::TimeZone::get(timezone)
        }
        .with_context(|| {
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
        let (day_start, day_end) = day_bounds(now, &self.timezone)?;
        let window = StatsWindow {
            now: now.as_millisecond(),
            day_start,
            day_end,
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

/// Start and end (epoch ms) of the day containing `now` in `tz`: what "today" means for the
/// answered and abandoned counts. Days are not always 24 h long (DST), hence the calendar.
pub fn day_bounds(now: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> anyhow::Result<(i64, i64)> {
    let today = now.to_zoned(tz.clone()).start_of_day()?;
    let tomorrow = today.tomorrow()?.start_of_day()?;
    Ok((
        today.timestamp().as_millisecond(),
        tomorrow.timestamp().as_millisecond(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn today_follows_the_configured_time_zone() {
        let now = ts("2026-11-29T23:30:00Z");
        let (utc_start, utc_end) = day_bounds(now, &jiff::tz::TimeZone::UTC).expect("bounds");
        assert_eq!(utc_start, ts("2026-11-29T00:00:00Z").as_millisecond());
        assert_eq!(utc_end, ts("2026-11-30T00:00:00Z").as_millisecond());
        // 23:30 UTC is already the next day in Berlin (UTC+1 in winter).
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("tzdata");
        let (start, end) = day_bounds(now, &berlin).expect("bounds");
        assert_eq!(start, ts("2026-11-29T23:00:00Z").as_millisecond());
        assert_eq!(end, ts("2026-11-30T23:00:00Z").as_millisecond());
    }

    #[test]
    fn a_daylight_saving_day_is_23_hours_long() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("tzdata");
        let (start, end) = day_bounds(ts("2026-03-29T12:00:00Z"), &berlin).expect("bounds");
        assert_eq!(end - start, 23 * 3600 * 1000);
    }

    #[test]
    fn unknown_zones_and_bad_names_files_are_reported() {
        let err = StatusSource::load_settings("Mars/Olympus", None).expect_err("unknown zone");
        assert!(err.to_string().contains("GC_STATUS_TIMEZONE"));
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("names.json");
        std::fs::write(&file, "[1,2]").expect("write");
        let err = StatusSource::load_settings("UTC", Some(&file)).expect_err("not an object");
        assert!(format!("{err:#}").contains("GC_STATUS_QUEUE_NAMES_FILE"));
    }
}
