//! The figures a supervisor compares with Genesys Cloud's own views, from real payload shapes:
//! detail events per media type (`VOICE`, `MESSAGE`) read with Genesys's definitions, and
//! observation intervals summed into an honest "today" that survives a restart.

mod common;

use common::*;
use gc_status::server::{
    domain::{interpret::Rules, now_ms},
    worker,
};
use serde_json::Value;

const HALF_HOUR: i64 = 30 * 60_000;

/// A zone (not UTC) in which `now` is at least 70 minutes after midnight and 10 before the
/// next, so this test's "today" holds the previous interval and nothing crosses a day.
fn zone_away_from_midnight(now: i64) -> &'static str {
    let ts = jiff::Timestamp::from_millisecond(now).expect("now");
    for zone in ["Asia/Kolkata", "America/New_York", "Europe/Berlin"] {
        let tz = jiff::tz::TimeZone::get(zone).expect("tzdata");
        let local = ts.to_zoned(tz);
        let minutes = i64::from(local.hour()) * 60 + i64::from(local.minute());
        if (70..24 * 60 - 10).contains(&minutes) {
            return zone;
        }
    }
    unreachable!("three zones hours apart cannot all be near midnight")
}

/// A detail event of `media` (as Genesys writes it: `VOICE`, `MESSAGE`).
fn detail(
    phase: &str,
    queue: &str,
    conversation: &str,
    media: &str,
    at: i64,
    outcome: &str,
) -> String {
    let outcome = if outcome.is_empty() {
        String::new()
    } else {
        format!(r#","acdOutcome":"{outcome}""#)
    };
    format!(
        r#"{{"topicName":"v2.detail.events.conversation.{conversation}.acd.{phase}","version":"2","eventBody":{{"eventTime":{at},"conversationId":"{conversation}","participantId":"p-{conversation}","sessionId":"s-{conversation}","mediaType":"{media}","provider":"Edge","direction":"INBOUND","queueId":"{queue}","divisionId":"d-1"{outcome}}}}}"#
    )
}

async fn post_all(app: &TestApp, bodies: &[String]) {
    for body in bodies {
        let response = app.post_signed(body).await;
        assert_eq!(response.status(), 202, "{body}");
    }
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number, not {v}"))
}

#[tokio::test]
async fn detail_events_per_media_type_give_genesys_definitions_with_per_queue_targets() {
    let now = now_ms();
    let dir = temp_dir();
    let queues = dir.path().join("queues.json");
    std::fs::write(
        &queues,
        r#"{"q-fig": {"name": "Sales", "service_level": {"seconds": 90}}}"#,
    )
    .expect("write");
    let zone = zone_away_from_midnight(now);
    let app = spawn_app_with(|c| {
        c.worker.queues_file = Some(queues.clone());
        c.worker.short_abandon_secs = 15;
        c.worker.timezone = zone.into();
    })
    .await;
    let q = "q-fig";
    let s = 1000;
    post_all(
        &app,
        &[
            // Answered after 10 s and after 60 s (both within this queue's 90 s target).
            detail("start", q, "c1", "VOICE", now - 120 * s, ""),
            detail("end", q, "c1", "VOICE", now - 110 * s, "ANSWERED"),
            detail("start", q, "c2", "VOICE", now - 100 * s, ""),
            detail("end", q, "c2", "VOICE", now - 40 * s, "ANSWERED"),
            // Abandoned after 30 s; a short abandon after 5 s; a flow-out; one still waiting.
            detail("start", q, "c3", "VOICE", now - 90 * s, ""),
            detail("end", q, "c3", "VOICE", now - 60 * s, "ABANDON"),
            detail("start", q, "c6", "VOICE", now - 20 * s, ""),
            detail("end", q, "c6", "VOICE", now - 15 * s, "ABANDON"),
            detail("start", q, "c4", "VOICE", now - 60 * s, ""),
            detail("end", q, "c4", "VOICE", now - 30 * s, "FLOW_OUT"),
            detail("start", q, "c5", "VOICE", now - 10 * s, ""),
            // A message answered after 5 s.
            detail("start", q, "m1", "MESSAGE", now - 50 * s, ""),
            detail("end", q, "m1", "MESSAGE", now - 45 * s, "ANSWERED"),
        ],
    )
    .await;
    let status = app.queue(q).await;
    assert_eq!(status["name"], "Sales", "{status}");
    assert_eq!(status["waiting"], 1, "{status}");
    let voice = &status["media"]["voice"]["today"];
    assert_eq!(voice["source"], "conversations", "{status}");
    assert_eq!(
        (&voice["offered"], &voice["answered"], &voice["abandoned"]),
        (&Value::from(6), &Value::from(2), &Value::from(2)),
        "{voice}"
    );
    assert_eq!(
        (&voice["short_abandons"], &voice["flow_outs"]),
        (&Value::from(1), &Value::from(1))
    );
    // Abandoned ÷ offered, the short abandon left out of both: 1 of 5.
    assert!((f(&voice["abandon_rate"]) - 0.2).abs() < 1e-9, "{voice}");
    // Answered within 90 s ÷ (answered + abandoned − short abandons): 2 of 3.
    assert!(
        (f(&voice["service_level"]) - 2.0 / 3.0).abs() < 1e-9,
        "{voice}"
    );
    assert_eq!(voice["service_level_target"]["seconds"], 90);
    assert_eq!(voice["average_answer_ms"], 35_000.0);
    let message = &status["media"]["message"]["today"];
    assert_eq!(message["service_level"], 1.0, "{message}");
    // The queue: weighted over both media types.
    let today = &status["today"];
    assert_eq!(today["offered"], 7, "{today}");
    assert!(
        (f(&today["service_level"]) - 3.0 / 4.0).abs() < 1e-9,
        "{today}"
    );
    assert!(
        (f(&today["abandon_rate"]) - 1.0 / 6.0).abs() < 1e-9,
        "{today}"
    );
    assert_eq!(today["average_answer_ms"], 25_000.0);
    assert_eq!(status["answered"], 3);
    assert!((f(&status["service_level"]) - 0.75).abs() < 1e-9);
    // A day gc-status joined a minute ago says so: today begins at its first event.
    let since: jiff::Timestamp = today["since"]
        .as_str()
        .expect("since")
        .parse()
        .expect("RFC 3339");
    assert!((since.as_millisecond() - now).abs() < 60_000, "{today}");
    let tz = jiff::tz::TimeZone::get(zone).expect("tzdata");
    let offset = tz.to_offset(since).to_string();
    assert!(
        today["since"].as_str().expect("since").ends_with(&offset),
        "{today} in {zone}"
    );

    // A rebuild from the stored events gives the same figures; redeliveries count once.
    post_all(
        &app,
        &[detail("end", q, "c2", "VOICE", now - 40 * s, "ANSWERED")],
    )
    .await;
    worker::rebuild_stats(&app.db, &Rules::default())
        .await
        .expect("rebuild");
    let rebuilt = app.queue(q).await;
    assert_eq!(rebuilt["today"]["offered"], 7);
    assert_eq!(
        rebuilt["today"]["service_level"],
        status["today"]["service_level"]
    );
}

/// A queue observation of one interval, as Genesys sends it (cumulative within the interval).
fn interval_report(
    queue: &str,
    media: &str,
    start: i64,
    offered: i64,
    answered: i64,
    within: i64,
) -> String {
    let interval = format!("{}/{}", rfc3339(start), rfc3339(start + HALF_HOUR));
    format!(
        concat!(
            r#"{{"topicName":"v2.analytics.queues.{queue}.observations","eventBody":{{"group":{{"queueId":"{queue}","mediaType":"{media}"}},"data":[{{"interval":"{interval}","metrics":["#,
            r#"{{"metric":"oWaiting","stats":{{"count":1}}}},"#,
            r#"{{"metric":"nOffered","stats":{{"count":{offered}}}}},"#,
            r#"{{"metric":"tAnswered","stats":{{"count":{answered},"sum":{sum},"max":9000}}}},"#,
            r#"{{"metric":"tAbandon","stats":{{"count":{abandoned},"sum":4000}}}},"#,
            r#"{{"metric":"oServiceLevel","stats":{{"ratio":0.5,"numerator":{within},"denominator":{offered},"target":0.8}}}}"#,
            r#"]}}]}}}}"#
        ),
        queue = queue,
        media = media,
        interval = interval,
        offered = offered,
        answered = answered,
        abandoned = offered - answered,
        sum = answered * 6000,
        within = within,
    )
}

#[tokio::test]
async fn today_is_the_sum_of_todays_intervals_and_stays_honest_across_a_restart() {
    let now = now_ms();
    let zone = zone_away_from_midnight(now);
    let tz = jiff::tz::TimeZone::get(zone).expect("tzdata");
    let day_start = jiff::Timestamp::from_millisecond(now)
        .expect("now")
        .to_zoned(tz.clone())
        .start_of_day()
        .expect("day")
        .timestamp()
        .as_millisecond();
    let current = now - now.rem_euclid(HALF_HOUR);
    let previous = current - HALF_HOUR;
    let dir = temp_dir();
    let url = fresh_database_url(dir.path()).await;
    let configure = |c: &mut gc_status::server::config::Config| c.worker.timezone = zone.into();
    let app = spawn_on(&url, configure).await;
    let q = "3f1c9a52-7d0e-4f6b-9a55-0c8b1e2f3a4d";
    post_all(
        &app,
        &[
            // Yesterday's last interval (in the zone): not today.
            interval_report(q, "voice", day_start - HALF_HOUR, 50, 50, 50),
            interval_report(q, "voice", previous, 10, 9, 8),
            interval_report(q, "voice", current, 2, 1, 1),
            interval_report(q, "message", current, 4, 4, 4),
        ],
    )
    .await;
    // Later in the current interval its cumulative figures grew: they replace, not add.
    post_all(&app, &[interval_report(q, "voice", current, 3, 2, 2)]).await;
    let status = app.queue(q).await;
    let today = &status["today"];
    assert_eq!(today["source"], "observations", "{status}");
    assert_eq!(today["offered"], 10 + 3 + 4, "{today}");
    assert_eq!(today["answered"], 9 + 2 + 4, "{today}");
    assert!(
        (f(&today["service_level"]) - 14.0 / 17.0).abs() < 1e-9,
        "{today}"
    );
    // 15 answers, 6 s each.
    assert_eq!(today["average_answer_ms"], 6000.0);
    let local = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .expect("ms")
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
    // gc-status holds today from the previous interval on, and says so.
    assert_eq!(today["since"], local(previous), "{today}");
    // The current interval is its own (the rollover at :00/:30 left the previous one in today).
    let interval = &status["interval"];
    assert_eq!(interval["start"], local(current), "{interval}");
    assert_eq!(interval["end"], local(current + HALF_HOUR), "{interval}");
    assert_eq!(interval["offered"], 7, "{interval}");
    assert_eq!(
        status["media"]["message"]["interval"]["offered"], 4,
        "{status}"
    );
    assert_eq!(status["media"]["voice"]["today"]["offered"], 13, "{status}");

    // A restart mid-day keeps what was stored: the same today, the same since.
    app.stop().await.expect("stops");
    let app = spawn_on(&url, configure).await;
    let after = app.queue(q).await;
    assert_eq!(after["today"], status["today"], "{after}");
}
