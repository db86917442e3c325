//! How figures and times read on the pages. Pure functions, the same on the server and in the
//! browser, so the hydrated page shows exactly what the server rendered.

/// A duration as a wallboard reads it: `42 s`, `3:07`, `1:02:09`; `–` when unknown.
pub fn wait(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "–".to_owned();
    };
    let secs = ms.max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else if m > 0 {
        format!("{m}:{s:02}")
    } else {
        format!("{s} s")
    }
}

/// A ratio 0..1 as a whole percentage; `–` when unknown.
pub fn percent(ratio: Option<f64>) -> String {
    match ratio {
        // Integer formatting: float formatting would add its tables to the browser's wasm.
        Some(r) if r.is_finite() => format!("{} %", (r * 100.0).round() as i64),
        _ => "–".to_owned(),
    }
}

/// A media type as a supervisor reads it: `voice` → `Voice`.
pub fn media(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        // ASCII only: Unicode case tables would add to the browser's wasm.
        Some(first) => std::iter::once(first.to_ascii_uppercase())
            .chain(chars)
            .collect(),
        None => "Other".to_owned(),
    }
}

/// A count that may be unknown.
pub fn count(n: Option<i64>) -> String {
    n.map_or_else(|| "–".to_owned(), |n| n.to_string())
}

/// A rate per second shown per minute, rounded.
pub fn per_minute(per_second: f64) -> String {
    if per_second.is_finite() {
        ((per_second * 60.0).max(0.0).round() as i64).to_string()
    } else {
        "–".to_owned()
    }
}

/// Epoch milliseconds as `2026-11-29 14:03:07 UTC`. Times are shown in UTC everywhere: the
/// server cannot know the browser's zone, and the hydrated page must match what it rendered.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Epoch milliseconds as `2026-11-29 15:03:07 CET` in `zone` (UTC when it has no label).
pub fn in_zone(ms: i64, zone: &crate::model::Zone) -> String {
    if zone.label.is_empty() {
        return utc(ms);
    }
    let local = utc(ms.saturating_add(zone.utc_offset_secs.saturating_mul(1000)));
    format!("{} {}", local.trim_end_matches(" UTC"), zone.label)
}

/// Epoch milliseconds as the time of day in a zone `offset_secs` from UTC: `14:03:07`.
pub fn local_time(ms: i64, offset_secs: i64) -> String {
    utc_time(ms.saturating_add(offset_secs.saturating_mul(1000)))
}

/// Epoch milliseconds as `14:03` in a zone `offset_secs` from UTC.
pub fn local_minute(ms: i64, offset_secs: i64) -> String {
    let rem = ms
        .saturating_add(offset_secs.saturating_mul(1000))
        .div_euclid(1000)
        .rem_euclid(86_400);
    format!("{:02}:{:02}", rem / 3600, rem / 60 % 60)
}

/// Only the time of day of [`utc`].
pub fn utc_time(ms: i64) -> String {
    let rem = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Milliseconds of an RFC 3339 UTC time as the server writes them (`2026-11-29T14:03:07.123Z`
/// or with an offset of `+00:00`); `None` for anything else.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (date.next()??, date.next()??, date.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    let millis = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (the inverse of `civil_from_days`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) + millis)
}

/// Percent-encodes everything but unreserved characters (for query strings).
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Which step of a dead letter failed, in words.
pub fn stage(stage: &str) -> &'static str {
    match stage {
        "sink" => "Forwarding to the sink",
        _ => "Processing the payload",
    }
}

/// Event ids may be 64-character digests: the start is enough in a table (the whole id is
/// in the tooltip and the detail).
pub fn short_id(id: &str) -> String {
    match id.char_indices().nth(20) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}

/// "1 dead letter", "3 dead letters".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_like_a_clock() {
        assert_eq!(wait(None), "–");
        assert_eq!(wait(Some(42_900)), "42 s");
        assert_eq!(wait(Some(187_000)), "3:07");
        assert_eq!(wait(Some(3_729_000)), "1:02:09");
        assert_eq!(wait(Some(-5)), "0 s");
    }

    #[test]
    fn times_round_trip_through_utc_text() {
        // 2026-11-29T10:00:00Z, as in the admin API tests.
        assert_eq!(utc(1_795_946_400_000), "2026-11-29 10:00:00 UTC");
        assert_eq!(parse_utc("2026-11-29T10:00:00Z"), Some(1_795_946_400_000));
        assert_eq!(
            parse_utc("2026-11-29T10:00:00.25Z"),
            Some(1_795_946_400_250)
        );
        assert_eq!(
            parse_utc("2024-02-29T23:59:59+00:00").map(utc).as_deref(),
            Some("2024-02-29 23:59:59 UTC")
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn figures_have_a_placeholder_when_unknown() {
        assert_eq!(percent(Some(0.256)), "26 %");
        assert_eq!(percent(Some(f64::NAN)), "–");
        assert_eq!(count(None), "–");
        assert_eq!(per_minute(2.5), "150");
        assert_eq!(plural(1, "letter", "letters"), "1 letter");
        assert_eq!(encode_component("a b/c"), "a%20b%2Fc");
    }
}
