//! Each queue's figures, put together from what the store holds: its conversations (per media
//! type, today and in the current interval), its fresh observations (the figures of now) and
//! Genesys's interval reports (today's totals, interval by interval). Pure, so both backends
//! and the tests share it.
//!
//! The rules, as Genesys defines its figures:
//! - fresh observations win for the live counts (waiting, interacting, agents);
//! - today's totals come from whichever source covers more of the day: the interval reports
//!   from the earliest interval held, the conversations from the first event gc-status
//!   stored (or the start of the day); `today.since` says where they begin;
//! - across media types and intervals counts and sums add and ratios are recomputed from
//!   them (Σ numerators ÷ Σ denominators), never averaged.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::records::StatsWindow;
use crate::model::{Agents, Figures, MediaStatus, QueueStatus};
use crate::server::domain::local_time as local;

/// One queue's and media type's figures derived from its conversations: the live counts,
/// today's counts and (`interval_*`) the current interval's.
#[derive(sqlx::FromRow, Debug, Clone, Default)]
pub(crate) struct ConversationFigures {
    pub queue_id: String,
    /// Empty where the events named none.
    pub media_type: String,
    pub waiting: i64,
    pub interacting: i64,
    pub oldest_waiting: Option<i64>,
    pub offered: i64,
    pub answered: i64,
    pub abandoned: i64,
    pub short_abandons: i64,
    pub flow_outs: i64,
    pub answered_in_target: i64,
    pub answer_ms_sum: Option<i64>,
    pub interval_offered: i64,
    pub interval_answered: i64,
    pub interval_abandoned: i64,
    pub interval_short_abandons: i64,
    pub interval_flow_outs: i64,
    pub interval_answered_in_target: i64,
    pub interval_answer_ms_sum: Option<i64>,
}

/// One period's counts of a [`ConversationFigures`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub offered: i64,
    pub answered: i64,
    pub abandoned: i64,
    pub short_abandons: i64,
    pub flow_outs: i64,
    pub answered_in_target: i64,
    pub answer_ms_sum: Option<i64>,
}

impl ConversationFigures {
    fn today(&self) -> Counts {
        Counts {
            offered: self.offered,
            answered: self.answered,
            abandoned: self.abandoned,
            short_abandons: self.short_abandons,
            flow_outs: self.flow_outs,
            answered_in_target: self.answered_in_target,
            answer_ms_sum: self.answer_ms_sum,
        }
    }

    fn interval(&self) -> Counts {
        Counts {
            offered: self.interval_offered,
            answered: self.interval_answered,
            abandoned: self.interval_abandoned,
            short_abandons: self.interval_short_abandons,
            flow_outs: self.interval_flow_outs,
            answered_in_target: self.interval_answered_in_target,
            answer_ms_sum: self.interval_answer_ms_sum,
        }
    }
}

/// One stored interval report: queue, media type, start, end, figures as JSON text.
pub(crate) type IntervalRow = (String, String, i64, i64, String);

/// Everything one status read takes from the store.
pub(crate) struct Read {
    /// Per queue and media type.
    pub conversations: Vec<ConversationFigures>,
    /// (queue, media type, figures as JSON text) of the fresh observations.
    pub observed: Vec<(String, String, String)>,
    /// Today's interval reports.
    pub intervals: Vec<IntervalRow>,
    /// Stored queue names.
    pub named: Vec<(String, String)>,
    pub first_received_at: Option<i64>,
}

/// What the store holds for one queue, by media type.
#[derive(Default)]
struct Parts {
    day: BTreeMap<String, ConversationFigures>,
    observed: BTreeMap<String, Map<String, Value>>,
    /// Today's interval reports.
    reports: BTreeMap<String, Vec<Report>>,
}

/// One interval report: start, end (epoch ms) and figures.
type Report = (i64, i64, Map<String, Value>);

/// Which source today's totals come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Observations,
    Conversations,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Observations => "observations",
            Source::Conversations => "conversations",
        }
    }
}

fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Every queue's status, busiest first.
pub(crate) fn assemble(read: Read, w: &StatsWindow<'_>) -> Vec<QueueStatus> {
    let mut queues: BTreeMap<String, Parts> = BTreeMap::new();
    for f in read.conversations {
        let parts = queues.entry(f.queue_id.clone()).or_default();
        parts.day.insert(f.media_type.clone(), f);
    }
    for (queue, media, figures) in read.observed {
        let parts = queues.entry(queue).or_default();
        parts.observed.insert(media, object(&figures));
    }
    for (queue, media, start, end, figures) in read.intervals {
        let parts = queues.entry(queue).or_default();
        parts
            .reports
            .entry(media)
            .or_default()
            .push((start, end, object(&figures)));
    }
    let named: HashMap<String, String> = read.named.into_iter().collect();
    // The conversations know the day from the first event stored (or its start).
    let conversations_since = read
        .first_received_at
        .map_or(w.day_start, |first| first.max(w.day_start));
    let mut list: Vec<QueueStatus> = queues
        .into_iter()
        .map(|(queue_id, parts)| {
            let mut status = status_of(&queue_id, &parts, conversations_since, w);
            // Genesys's queue list (the connector's) over the payloads' names over the file.
            status.name = w
                .settings
                .directory_name(&queue_id)
                .or_else(|| named.get(&queue_id).map(String::as_str))
                .or_else(|| w.settings.name(&queue_id))
                .unwrap_or(&queue_id)
                .to_owned();
            status.queue_id = queue_id;
            status
        })
        .collect();
    // Busiest first, so the queues that need attention lead the wallboard.
    list.sort_by(|a, b| {
        b.busyness()
            .cmp(&a.busyness())
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.queue_id.cmp(&b.queue_id))
    });
    list
}

/// One queue's status from its parts.
fn status_of(
    queue: &str,
    parts: &Parts,
    conversations_since: i64,
    w: &StatsWindow<'_>,
) -> QueueStatus {
    let exclude_short = w.settings.short_abandon_ms.is_some();
    let observed = !parts.observed.is_empty();
    let mut status = QueueStatus {
        source: if observed {
            Source::Observations
        } else {
            Source::Conversations
        }
        .as_str()
        .into(),
        ..QueueStatus::default()
    };

    // The live counts: fresh observations win over the conversations, for the whole queue.
    let mut longest_since: Option<i64> = None;
    let mut media: BTreeMap<String, MediaStatus> = BTreeMap::new();
    if observed {
        for (name, f) in &parts.observed {
            let m = live_from_observation(f, w.now);
            // Saturating: a sender's absurd count must not overflow the sum.
            status.waiting = status.waiting.saturating_add(m.waiting.unwrap_or(0));
            status.interacting = status
                .interacting
                .saturating_add(m.interacting.unwrap_or(0));
            if let Some(alerting) = f.get("alerting").and_then(Value::as_i64) {
                let sum = status.alerting.unwrap_or(0).saturating_add(alerting);
                status.alerting = Some(sum);
            }
            if let Some(since) = m.longest_waiting_ms.map(|ms| w.now - ms) {
                longest_since = Some(longest_since.map_or(since, |s| s.min(since)));
            }
            media.insert(name.clone(), m);
        }
        status.agents = agents(parts.observed.values());
        if let Some(users) = parts
            .observed
            .values()
            .find_map(|f| f.get("on_queue_users"))
        {
            status.on_queue_users = users
                .as_object()
                .map(|users| {
                    users
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
        }
    } else {
        for (name, f) in &parts.day {
            status.waiting += f.waiting;
            status.interacting += f.interacting;
            if let Some(since) = f.oldest_waiting {
                longest_since = Some(longest_since.map_or(since, |s| s.min(since)));
            }
            media.insert(
                name.clone(),
                MediaStatus {
                    waiting: Some(f.waiting),
                    interacting: Some(f.interacting),
                    longest_waiting_ms: f.oldest_waiting.map(|t| (w.now - t).max(0)),
                    ..MediaStatus::default()
                },
            );
        }
    }
    status.longest_waiting_ms = longest_since.map(|since| (w.now - since).max(0));
    status.longest_waiting_since = longest_since.and_then(utc);

    // Today: from the source that covers more of the day.
    let reports_since = parts
        .reports
        .values()
        .flatten()
        .map(|(start, ..)| *start)
        .min();
    let source = match (reports_since, parts.day.is_empty()) {
        (Some(reports), false) if reports > conversations_since => Some(Source::Conversations),
        (Some(_), _) => Some(Source::Observations),
        (None, false) => Some(Source::Conversations),
        (None, true) => None,
    };
    let target = w.settings.target(queue);
    let since = match source {
        Some(Source::Observations) => reports_since,
        Some(Source::Conversations) => Some(conversations_since),
        None => None,
    };
    let today_of = |figures: Figures| -> Option<Figures> {
        Some(Figures {
            since: Some(local(since?, w.timezone)?),
            source: Some(source?.as_str().into()),
            service_level_target: Some(target),
            ..figures
        })
    };
    let mut today = Figures::default();
    let mut interval = Figures::default();
    let mut interval_bounds = None;
    match source {
        Some(Source::Observations) => {
            for (name, reports) in &parts.reports {
                let mut media_today = Figures::default();
                let mut media_interval = None;
                for (start, end, f) in reports {
                    let figures = report_figures(f, exclude_short);
                    media_today.add(&figures);
                    if *start <= w.now && w.now < *end {
                        interval_bounds = Some((*start, *end));
                        media_interval = Some(figures);
                    }
                }
                today.add(&media_today);
                if let Some(f) = &media_interval {
                    interval.add(f);
                }
                if !name.is_empty() {
                    let m = media.entry(name.clone()).or_default();
                    m.today = today_of(media_today);
                    m.interval = media_interval.and_then(|f| {
                        let (start, end) = interval_bounds?;
                        interval_of(start, end, f, w)
                    });
                }
            }
        }
        Some(Source::Conversations) => {
            interval_bounds = Some((w.interval_start, w.interval_end));
            for (name, f) in &parts.day {
                let figures = conversation_figures(&f.today(), exclude_short);
                today.add(&figures);
                if !name.is_empty() {
                    media.entry(name.clone()).or_default().today = today_of(figures);
                }
            }
            for (name, f) in &parts.day {
                let figures = conversation_figures(&f.interval(), exclude_short);
                interval.add(&figures);
                if !name.is_empty() {
                    media.entry(name.clone()).or_default().interval =
                        interval_of(w.interval_start, w.interval_end, figures, w);
                }
            }
        }
        None => {}
    }
    if source.is_some() {
        status.answered = today.answered.unwrap_or(0);
        status.abandoned = today.abandoned.unwrap_or(0);
        status.offered = today.offered;
        status.average_wait_ms = today.average_answer_ms;
        status.service_level = today.service_level;
        status.today = today_of(today);
        status.interval =
            interval_bounds.and_then(|(start, end)| interval_of(start, end, interval, w));
    }
    media.remove("");
    status.media = media;
    status
}

/// The live figures of one media type's observation.
fn live_from_observation(f: &Map<String, Value>, now: i64) -> MediaStatus {
    let int = |key: &str| f.get(key).and_then(Value::as_i64);
    // Rows stored before the start of the longest wait was kept carry a duration.
    let longest = int("longest_waiting_since")
        .map(|since| (now - since).max(0))
        .or_else(|| int("longest_waiting_ms"));
    MediaStatus {
        waiting: int("waiting"),
        interacting: int("interacting"),
        longest_waiting_ms: longest,
        ..MediaStatus::default()
    }
}

/// The agents by state: each count the largest any media group reports (Genesys reports
/// user metrics once per queue, in the group without a media type; never added twice).
fn agents<'a>(observed: impl Iterator<Item = &'a Map<String, Value>>) -> Option<Agents> {
    let mut agents = Agents::default();
    let mut any = false;
    let max = |slot: &mut Option<i64>, v: Option<i64>| {
        if let Some(v) = v {
            *slot = Some(slot.map_or(v, |s| s.max(v)));
        }
    };
    for f in observed {
        let by_status = |key: &str| f.get(key).and_then(Value::as_object);
        let total =
            |key: &str| by_status(key).map(|m| m.values().filter_map(Value::as_i64).sum::<i64>());
        if let Some(on) = by_status("on_queue_users") {
            any = true;
            let status = |name: &str| Some(on.get(name).and_then(Value::as_i64).unwrap_or(0));
            max(&mut agents.idle, status("IDLE"));
            max(&mut agents.interacting, status("INTERACTING"));
            max(&mut agents.communicating, status("COMMUNICATING"));
            max(&mut agents.not_responding, status("NOT_RESPONDING"));
            max(&mut agents.on_queue, total("on_queue_users"));
        }
        for (key, slot) in [
            ("off_queue_users", &mut agents.off_queue),
            ("active_users", &mut agents.active),
            ("member_users", &mut agents.members),
        ] {
            if let Some(n) = total(key) {
                any = true;
                max(slot, Some(n));
            }
        }
    }
    any.then_some(agents)
}

/// An interval report's figures. Short abandons count only when they are excluded.
fn report_figures(f: &Map<String, Value>, exclude_short: bool) -> Figures {
    let int = |key: &str| f.get(key).and_then(Value::as_i64);
    let float = |key: &str| f.get(key).and_then(Value::as_f64);
    let mut figures = Figures {
        offered: int("offered"),
        answered: int("answered"),
        abandoned: int("abandoned"),
        short_abandons: if exclude_short {
            int("short_abandons")
        } else {
            None
        },
        flow_outs: int("flow_outs"),
        service_level_numerator: float("service_level_numerator"),
        service_level_denominator: float("service_level_denominator"),
        answer_ms_sum: float("answer_ms_sum"),
        ..Figures::default()
    };
    figures.finish();
    figures
}

/// The figures derived from one media type's conversations: Genesys's service level is
/// answered within the target ÷ (answered + abandoned), flow-outs and short abandons left out.
fn conversation_figures(f: &Counts, exclude_short: bool) -> Figures {
    let short = if exclude_short {
        Some(f.short_abandons)
    } else {
        None
    };
    let mut figures = Figures {
        offered: Some(f.offered),
        answered: Some(f.answered),
        abandoned: Some(f.abandoned),
        short_abandons: short,
        flow_outs: Some(f.flow_outs),
        service_level_numerator: Some(f.answered_in_target as f64),
        service_level_denominator: Some(
            (f.answered + f.abandoned - short.unwrap_or(0)).max(0) as f64
        ),
        answer_ms_sum: Some(f.answer_ms_sum.unwrap_or(0) as f64),
        ..Figures::default()
    };
    figures.finish();
    figures
}

fn interval_of(start: i64, end: i64, figures: Figures, w: &StatsWindow<'_>) -> Option<Figures> {
    Some(Figures {
        start: Some(local(start, w.timezone)?),
        end: Some(local(end, w.timezone)?),
        ..figures
    })
}

/// Epoch ms as RFC 3339 in UTC.
fn utc(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::server::queues::QueueSettings;

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>()
            .expect("a time")
            .as_millisecond()
    }

    fn window<'a>(
        now: &str,
        tz: &'a jiff::tz::TimeZone,
        settings: &'a QueueSettings,
    ) -> StatsWindow<'a> {
        let now = at(now);
        let midnight = jiff::Timestamp::from_millisecond(now)
            .expect("ts")
            .to_zoned(tz.clone())
            .start_of_day()
            .expect("day");
        let day_start = midnight.timestamp().as_millisecond();
        let day_end = day_start + 24 * 3600 * 1000;
        let interval_start = now - now.rem_euclid(1_800_000);
        let interval_end = interval_start + 1_800_000;
        StatsWindow {
            now,
            day_start,
            day_end,
            interval_start,
            interval_end,
            timezone: tz,
            fresh_after: now - 300_000,
            open_since: 0,
            settings,
        }
    }

    fn empty_read() -> Read {
        Read {
            conversations: Vec::new(),
            observed: Vec::new(),
            intervals: Vec::new(),
            named: Vec::new(),
            first_received_at: None,
        }
    }

    fn report(
        media: &str,
        start: &str,
        end: &str,
        figures: Value,
    ) -> (String, String, i64, i64, String) {
        (
            "q".into(),
            media.into(),
            at(start),
            at(end),
            figures.to_string(),
        )
    }

    #[test]
    fn today_adds_the_intervals_held_and_says_from_when_and_the_current_interval_is_its_own() {
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").expect("tzdata");
        let settings = QueueSettings::default();
        // 11:10 in Berlin; gc-status joined the day at 11:00 (10:00 UTC).
        let w = window("2026-12-01T10:10:00Z", &tz, &settings);
        let mut read = empty_read();
        read.intervals = vec![
            report(
                "voice",
                "2026-12-01T09:30:00Z",
                "2026-12-01T10:00:00Z",
                json!({
                "offered": 10, "answered": 9, "abandoned": 1, "answer_ms_sum": 90000.0,
                "service_level_numerator": 9.0, "service_level_denominator": 10.0 }),
            ),
            report(
                "voice",
                "2026-12-01T10:00:00Z",
                "2026-12-01T10:30:00Z",
                json!({
                "offered": 2, "answered": 1, "abandoned": 1, "answer_ms_sum": 30000.0,
                "service_level_numerator": 0.0, "service_level_denominator": 2.0 }),
            ),
            report(
                "message",
                "2026-12-01T10:00:00Z",
                "2026-12-01T10:30:00Z",
                json!({
                "offered": 4, "answered": 4, "abandoned": 0,
                "service_level_numerator": 4.0, "service_level_denominator": 4.0 }),
            ),
        ];
        let list = assemble(read, &w);
        let q = &list[0];
        let today = q.today.as_ref().expect("today");
        assert_eq!(today.source.as_deref(), Some("observations"));
        assert_eq!(today.since.as_deref(), Some("2026-12-01T10:30:00+01:00"));
        assert_eq!(today.offered, Some(16));
        assert_eq!(today.answered, Some(14));
        // Weighted: 13 of 16 within the target.
        assert_eq!(today.service_level, Some(13.0 / 16.0));
        assert_eq!(today.abandon_rate, Some(2.0 / 16.0));
        assert_eq!(today.service_level_target.map(|t| t.seconds), Some(20));
        let interval = q.interval.as_ref().expect("interval");
        assert_eq!(interval.start.as_deref(), Some("2026-12-01T11:00:00+01:00"));
        assert_eq!(interval.end.as_deref(), Some("2026-12-01T11:30:00+01:00"));
        assert_eq!(interval.offered, Some(6));
        assert_eq!(
            q.media["voice"].today.as_ref().map(|t| t.offered),
            Some(Some(12))
        );
        assert_eq!(
            q.media["message"]
                .interval
                .as_ref()
                .map(|i| i.service_level),
            Some(Some(1.0))
        );
        // The flat fields are today's.
        assert_eq!((q.answered, q.abandoned, q.offered), (14, 2, Some(16)));
    }

    #[test]
    fn conversations_cover_the_day_from_the_first_event_and_follow_genesys_definitions() {
        let tz = jiff::tz::TimeZone::UTC;
        let settings = QueueSettings {
            short_abandon_ms: Some(5_000),
            ..QueueSettings::default()
        };
        let w = window("2026-12-01T10:10:00Z", &tz, &settings);
        let mut read = empty_read();
        read.first_received_at = Some(at("2026-12-01T08:15:00Z"));
        read.conversations = vec![ConversationFigures {
            queue_id: "q".into(),
            media_type: "voice".into(),
            waiting: 2,
            oldest_waiting: Some(w.now - 95_000),
            offered: 40,
            answered: 35,
            abandoned: 3,
            short_abandons: 1,
            flow_outs: 2,
            answered_in_target: 30,
            answer_ms_sum: Some(35 * 39_000),
            ..ConversationFigures::default()
        }];
        let list = assemble(read, &w);
        let q = &list[0];
        let today = q.today.as_ref().expect("today");
        assert_eq!(today.source.as_deref(), Some("conversations"));
        assert_eq!(today.since.as_deref(), Some("2026-12-01T08:15:00+00:00"));
        // Short abandons leave offered and abandoned alike: 2 of 39.
        assert_eq!(today.abandon_rate, Some(2.0 / 39.0));
        // 30 within the target of 35 answered + 2 (long) abandoned; flow-outs left out.
        assert_eq!(today.service_level, Some(30.0 / 37.0));
        assert_eq!(today.average_answer_ms, Some(39_000.0));
        assert_eq!(q.longest_waiting_ms, Some(95_000));
        assert_eq!(
            q.longest_waiting_since.as_deref(),
            Some("2026-12-01T10:08:25Z")
        );
    }

    #[test]
    fn fresh_observations_win_the_live_counts_and_agents_are_by_state() {
        let tz = jiff::tz::TimeZone::UTC;
        let settings = QueueSettings::default();
        let w = window("2026-12-01T10:10:00Z", &tz, &settings);
        let mut read = empty_read();
        read.conversations = vec![ConversationFigures {
            queue_id: "q".into(),
            media_type: "voice".into(),
            waiting: 7,
            ..ConversationFigures::default()
        }];
        read.observed = vec![
            (
                "q".into(),
                "".into(),
                json!({
                "on_queue_users": {"IDLE": 2, "INTERACTING": 3, "NOT_RESPONDING": 1},
                "off_queue_users": {"TOTAL": 4} })
                .to_string(),
            ),
            (
                "q".into(),
                "voice".into(),
                json!({
                "waiting": 3, "interacting": 4, "longest_waiting_since": w.now - 95_000 })
                .to_string(),
            ),
            (
                "q".into(),
                "message".into(),
                json!({ "waiting": 1, "interacting": 1 }).to_string(),
            ),
        ];
        let list = assemble(read, &w);
        let q = &list[0];
        assert_eq!(q.source, "observations");
        assert_eq!((q.waiting, q.interacting), (4, 5));
        assert_eq!(q.longest_waiting_ms, Some(95_000));
        let agents = q.agents.as_ref().expect("agents");
        assert_eq!(
            (
                agents.idle,
                agents.interacting,
                agents.communicating,
                agents.not_responding
            ),
            (Some(2), Some(3), Some(0), Some(1))
        );
        assert_eq!((agents.on_queue, agents.off_queue), (Some(6), Some(4)));
        assert_eq!(q.media["voice"].waiting, Some(3));
        assert!(!q.media.contains_key(""));
        // Today from the conversations (no interval reports), since the day began.
        assert_eq!(
            q.today.as_ref().and_then(|t| t.source.as_deref()),
            Some("conversations")
        );
    }
}
