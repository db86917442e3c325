//! Which dead letters an admin means: the one filter every surface (the admin API's query and
//! body, the console's form, the CLI's flags) parses the same way.

use serde::{Deserialize, Deserializer};

use super::Stage;

/// Which dead letters an operation applies to. Empty means all.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Exact event type / topic.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Queue id named in the payload.
    pub queue: Option<String>,
    /// Text contained in any attempt's error (case-insensitive).
    pub error: Option<String>,
    /// Dead-lettered at or after (epoch ms).
    pub since: Option<i64>,
    /// Dead-lettered before (epoch ms).
    pub until: Option<i64>,
    /// Which step failed.
    pub stage: Option<Stage>,
}

/// A filter as typed: every field text, blank meaning "any". Times are RFC 3339
/// (`2026-11-29T10:00:00Z`), epoch milliseconds, or a `datetime-local` value
/// (`2026-11-29T10:00`, read as UTC like every time on the pages); a JSON body may give epoch
/// milliseconds as a number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterText {
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub queue: Option<String>,
    pub error: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub since: Option<String>,
    #[serde(default, deserialize_with = "text_or_number")]
    pub until: Option<String>,
    /// `payload` or `sink`.
    pub stage: Option<String>,
}

/// Why a filter cannot be used, saying what would be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

impl FilterText {
    /// The filter this text means.
    pub fn parse(self) -> Result<DeadLetterFilter, FilterError> {
        let text = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let time = |field: &str, value: Option<String>| text(value).map(|v| parse_time(field, &v));
        let stage = text(self.stage).map(|stage| {
            stage.parse::<Stage>().map_err(|_| {
                FilterError(format!(
                    "`stage` must be `payload` (processing failed) or `sink` (forwarding \
                     failed), not `{stage}`"
                ))
            })
        });
        Ok(DeadLetterFilter {
            event_type: text(self.event_type),
            queue: text(self.queue),
            error: text(self.error),
            since: time("since", self.since).transpose()?,
            until: time("until", self.until).transpose()?,
            stage: stage.transpose()?,
        })
    }
}

/// An RFC 3339 time, epoch milliseconds, or a `datetime-local` value read as UTC.
pub fn parse_time(field: &str, value: &str) -> Result<i64, FilterError> {
    let value = value.trim();
    if let Ok(at) = value.parse::<jiff::Timestamp>() {
        return Ok(at.as_millisecond());
    }
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(local) = value.parse::<jiff::civil::DateTime>() {
        if let Ok(at) = local.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(at.timestamp().as_millisecond());
        }
    }
    Err(FilterError(format!(
        "`{field}` must be an RFC 3339 time such as 2026-11-29T10:00:00Z, or epoch milliseconds"
    )))
}

/// A JSON string or integer, as text.
fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Number(i64),
    }
    Ok(Option::<TextOrNumber>::deserialize(d)?.map(|v| match v {
        TextOrNumber::Text(text) => text,
        TextOrNumber::Number(n) => n.to_string(),
    }))
}

/// Dead letters chosen by id or by filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<String>),
    Filter(DeadLetterFilter),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_epoch_ms_or_a_local_form_value_read_as_utc() {
        let at = 1_764_410_400_000; // 2025-11-29T10:00:00Z
        for text in [
            "2025-11-29T10:00:00Z",
            "2025-11-29T11:00:00+01:00",
            "1764410400000",
        ] {
            assert_eq!(parse_time("since", text), Ok(at), "{text}");
        }
        assert_eq!(parse_time("since", "2025-11-29T10:00"), Ok(at));
        let err = parse_time("until", "yesterday").unwrap_err().to_string();
        assert!(err.starts_with("`until` must be an RFC 3339 time"), "{err}");
    }

    #[test]
    fn blank_fields_mean_any_and_the_stage_is_checked() {
        let filter = FilterText {
            queue: Some("  ".into()),
            error: Some(" timeout ".into()),
            stage: Some("sink".into()),
            ..FilterText::default()
        }
        .parse()
        .expect("a filter");
        assert_eq!(filter.queue, None);
        assert_eq!(filter.error.as_deref(), Some("timeout"));
        assert_eq!(filter.stage, Some(Stage::Sink));
        let bad = FilterText {
            stage: Some("disk".into()),
            ..FilterText::default()
        };
        assert!(bad.parse().unwrap_err().to_string().contains("`payload`"));
    }

    #[test]
    fn a_json_body_may_give_times_as_numbers_and_names_no_unknown_field() {
        let text: FilterText =
            serde_json::from_str(r#"{"since": 5, "until": "6"}"#).expect("parse");
        assert_eq!(
            text.parse().map(|f| (f.since, f.until)),
            Ok((Some(5), Some(6)))
        );
        assert!(serde_json::from_str::<FilterText>(r#"{"queu": "q"}"#).is_err());
    }
}
