//! The Genesys Cloud connector against a fake Genesys Cloud (a real HTTP and websocket server
//! on 127.0.0.1 with the SDK models' shapes): from a client id and secret to named queues with
//! live figures, tokens renewed once, 429s waited out, today whole after a restart, the
//! websocket replaced with its gap filled, conversations placed through their details.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    genesys::{FakeGenesys, FakeQueue, HalfHour, Live, Org, CLIENT_ID, CLIENT_SECRET},
    spawn_app_with, spawn_on, temp_dir, wait_until,
};
use gc_status::server::{
    config::Config,
    genesys::{api::Api, GenesysSettings},
};
use serde_json::{json, Value};

const ZONE: &str = "Europe/Berlin";
const HALF_HOUR: i64 = 1_800_000;

fn queue(id: &str, name: &str) -> FakeQueue {
    FakeQueue {
        id: id.into(),
        name: name.into(),
        target: (0.9, 30_000),
    }
}

/// Settings that point the connector at `fake`, with workers on (inline processing).
fn connect_to(fake: &FakeGenesys, poll_secs: u64, notifications: bool) -> impl FnOnce(&mut Config) {
    let url = fake.url();
    move |config: &mut Config| {
        config.genesys.genesys_api_url = Some(url.clone());
        config.genesys.genesys_login_url = Some(url);
        config.genesys.genesys_client_id = Some(CLIENT_ID.into());
        config.genesys.genesys_client_secret = Some(CLIENT_SECRET.into());
        config.genesys.genesys_poll_secs = poll_secs;
        config.genesys.genesys_notifications = notifications;
        config.worker.workers = 1;
        config.worker.timezone = ZONE.into();
    }
}

fn settings_for(fake: &FakeGenesys) -> GenesysSettings {
    let mut config = Config::for_database("sqlite::memory:");
    connect_to(fake, 10, false)(&mut config);
    GenesysSettings::from_config(&config.genesys, Duration::from_secs(300))
        .expect("valid settings")
        .expect("a connector")
}

/// The start of today in [`ZONE`] and the current half hour's start (epoch ms).
fn today() -> (i64, i64) {
    let tz = jiff::tz::TimeZone::get(ZONE).expect("zone");
    let now = jiff::Timestamp::now();
    let start = now
        .to_zoned(tz)
        .start_of_day()
        .expect("a day")
        .timestamp()
        .as_millisecond();
    let current = now.as_millisecond() / HALF_HOUR * HALF_HOUR;
    (start, current)
}

fn local(ms: i64) -> String {
    let tz = jiff::tz::TimeZone::get(ZONE).expect("zone");
    jiff::Timestamp::from_millisecond(ms)
        .expect("time")
        .to_zoned(tz)
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

async fn queue_of(app: &common::TestApp, id: &str) -> Value {
    app.queue(id).await
}

#[tokio::test]
async fn a_first_start_with_only_a_client_id_and_secret_shows_named_queues_with_live_figures() {
    let (day_start, current) = today();
    let waiting_since = jiff::Timestamp::now().as_millisecond() - 95_000;
    // Three queues over two pages (the fake serves two per page); one not watched.
    let mut org = Org {
        queues: vec![
            queue("q-sales", "Sales EMEA"),
            queue("q-support", "Support"),
            queue("q-hr", "HR internal"),
        ],
        page_size: 2,
        ..Org::default()
    };
    org.live.insert(
        ("q-sales".into(), "voice".into()),
        Live {
            waiting: 3,
            interacting: 2,
            longest_since: Some(waiting_since),
        },
    );
    org.live.insert(
        ("q-sales".into(), "message".into()),
        Live {
            waiting: 1,
            interacting: 0,
            longest_since: None,
        },
    );
    org.agents.insert("q-sales".into(), (4, 2));
    org.half_hours.insert(
        ("q-sales".into(), "voice".into()),
        vec![HalfHour {
            start: current,
            offered: 10,
            answered: 8,
            answer_ms_sum: 80_000,
            abandoned: 2,
        }],
    );
    let fake = FakeGenesys::start(org).await;
    let app = spawn_app_with(|config| {
        connect_to(&fake, 1, false)(config);
        config.genesys.genesys_queues = vec!["Sales*".into(), "q-support".into()];
    })
    .await;

    wait_until(
        "the queues show with live figures",
        Duration::from_secs(20),
        || async { queue_of(&app, "q-sales").await["waiting"] == 4 },
    )
    .await;
    let sales = queue_of(&app, "q-sales").await;
    // Genesys's name, not the id; its voice target (90 % in 30 s).
    assert_eq!(sales["name"], "Sales EMEA");
    assert_eq!(sales["source"], "observations");
    assert_eq!(sales["interacting"], 2);
    assert_eq!(sales["media"]["voice"]["waiting"], 3);
    assert_eq!(sales["media"]["message"]["waiting"], 1);
    assert_eq!(sales["agents"]["idle"], 4);
    assert_eq!(sales["agents"]["interacting"], 2);
    assert_eq!(sales["agents"]["off_queue"], 1);
    let longest = sales["longest_waiting_ms"]
        .as_i64()
        .expect("a longest wait");
    assert!((95_000..120_000).contains(&longest), "{longest}");
    // Today is Genesys's own, from the start of the day.
    let today = &sales["today"];
    assert_eq!(today["offered"], 10);
    assert_eq!(today["answered"], 8);
    assert_eq!(today["abandoned"], 2);
    assert_eq!(today["average_answer_ms"], 10_000.0);
    assert_eq!(today["since"], local(day_start), "{today}");
    assert_eq!(today["service_level_target"]["seconds"], 30);
    assert_eq!(today["service_level_target"]["percent"], 90.0);
    // Only the watched queues: the unwatched one is never polled.
    let polled = fake.org().calls.len();
    assert!(polled > 0);
    let snapshot = app.snapshot().await;
    let ids: Vec<&str> = snapshot["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|q| q["queue_id"].as_str())
        .collect();
    assert!(!ids.contains(&"q-hr"), "{ids:?}");
    assert_eq!(snapshot["pipeline"]["genesys"]["state"], "polling");
    assert_eq!(snapshot["pipeline"]["genesys"]["queues"], 2);
    // The aggregate query asked for today in the zone, by half hour, queue and media type.
    let query = fake.org().aggregate_queries[0].clone();
    let interval = query["interval"].as_str().expect("an interval").to_owned();
    assert!(interval.starts_with(&local(day_start)), "{interval}");
    assert_eq!(query["timeZone"], ZONE);
    assert_eq!(query["granularity"], "PT30M");
    assert_eq!(query["groupBy"], json!(["queueId", "mediaType"]));
    // What the connector fetched is in the event log like any webhook.
    assert!(app.stored_count().await >= 3);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "gc_status_genesys_api_calls_total{endpoint=\"queues/observations\",status=\"200\"}"
        ),
        "{metrics}"
    );
    // Only one token for all of it.
    assert_eq!(fake.org().token_requests, 1);

    // Polls that find the same figures add no rows (they are stored again once a minute
    // old, well within the observation TTL); changed figures are stored at once.
    let stored = app.stored_count().await;
    let polls = fake.calls_to("POST /api/v2/analytics/queues/observations");
    wait_until("two more polls", Duration::from_secs(10), || async {
        fake.calls_to("POST /api/v2/analytics/queues/observations") >= polls + 2
    })
    .await;
    assert_eq!(
        app.stored_count().await,
        stored,
        "unchanged polls are not stored"
    );
    fake.org().live.insert(
        ("q-sales".into(), "voice".into()),
        Live {
            waiting: 6,
            interacting: 2,
            longest_since: Some(waiting_since),
        },
    );
    wait_until("the change shows", Duration::from_secs(10), || async {
        queue_of(&app, "q-sales").await["waiting"] == 7
    })
    .await;
    assert_eq!(app.stored_count().await, stored + 1, "one group changed");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn replicas_on_one_database_run_one_connector_and_a_standby_takes_over() {
    let org = Org::with_queues(vec![queue("q-1", "Sales")]).live("q-1", "voice", 2, 0);
    let fake = FakeGenesys::start(org).await;
    let database = common::new_postgres_database().await;
    let state = |app: &common::TestApp| {
        let app_url = app.url("/api/v2/queues");
        let client = app.client.clone();
        async move {
            let snapshot: Value = client
                .get(app_url)
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("JSON");
            snapshot["pipeline"]["genesys"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let first = spawn_on(&database, connect_to(&fake, 1, false)).await;
    wait_until(
        "the first replica polls",
        Duration::from_secs(20),
        || async { state(&first).await == "polling" },
    )
    .await;
    let second = spawn_on(&database, connect_to(&fake, 1, false)).await;
    wait_until("the second stands by", Duration::from_secs(20), || async {
        state(&second).await == "standby"
    })
    .await;
    // Both show the figures: they share the database.
    assert_eq!(queue_of(&second, "q-1").await["waiting"], 2);
    first.stop().await.expect("clean stop");
    wait_until(
        "the standby takes over",
        Duration::from_secs(40),
        || async { state(&second).await == "polling" },
    )
    .await;
    second.stop().await.expect("clean stop");
}

#[tokio::test]
async fn tokens_are_renewed_once_when_they_expire_or_are_revoked_however_many_callers() {
    let fake = FakeGenesys::start(Org {
        queues: vec![queue("q-1", "One")],
        // Renewed half-way through its life (the margin is longer than the lifetime).
        token_lifetime: 2,
        ..Org::default()
    })
    .await;
    let api = Arc::new(Api::new(&settings_for(&fake)).expect("a client"));
    let list = |api: Arc<Api>| async move {
        api.get::<Value>(
            "routing/queues",
            "/api/v2/routing/queues?pageSize=100&pageNumber=1",
        )
        .await
        .expect("the queue list")
    };
    let all = |api: &Arc<Api>| {
        futures_util::future::join_all((0..20).map(|_| tokio::spawn(list(api.clone()))))
    };
    for answer in all(&api).await {
        assert_eq!(answer.expect("joined")["total"], 1);
    }
    assert_eq!(fake.org().token_requests, 1, "twenty callers, one token");

    // Past half its lifetime: renewed before it expires, once.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    all(&api).await;
    assert_eq!(fake.org().token_requests, 2);
    assert!(
        fake.org().calls.iter().all(|(_, _, status)| *status == 200),
        "no call was sent with an expired token"
    );

    // Revoked: every caller sees a 401, one renewal serves them all.
    fake.org().tokens.clear();
    for answer in all(&api).await {
        assert_eq!(answer.expect("joined")["total"], 1);
    }
    assert_eq!(fake.org().token_requests, 3);
}

#[tokio::test]
async fn a_429_with_retry_after_holds_every_call_until_it_has_passed() {
    let fake = FakeGenesys::start(Org {
        queues: vec![queue("q-1", "One")],
        ..Org::default()
    })
    .await;
    let api = Arc::new(Api::new(&settings_for(&fake)).expect("a client"));
    // A first call for the token, then the limit.
    let _: Value = api
        .get(
            "routing/queues",
            "/api/v2/routing/queues?pageSize=100&pageNumber=1",
        )
        .await
        .expect("the queue list");
    fake.org().rate_limit = Some(("observations".into(), 1, 2));
    let started = Instant::now();
    let first = {
        let api = api.clone();
        tokio::spawn(async move {
            api.post::<Value>(
                "queues/observations",
                "/api/v2/analytics/queues/observations/query",
                &json!({"filter": {"type": "or", "predicates": [{"dimension": "queueId", "value": "q-1"}]}, "metrics": ["oWaiting"]}),
            )
            .await
        })
    };
    wait_until("the 429 is answered", Duration::from_secs(5), || async {
        fake.org().calls.iter().any(|(_, _, status)| *status == 429)
    })
    .await;
    // Another caller, on another endpoint, during the hold.
    let second: Value = api
        .get(
            "routing/queues",
            "/api/v2/routing/queues?pageSize=100&pageNumber=1",
        )
        .await
        .expect("the queue list after the hold");
    assert_eq!(second["total"], 1);
    first
        .await
        .expect("joined")
        .expect("answered after the hold");
    let calls = fake.org().calls.clone();
    let limited_at = calls
        .iter()
        .find(|(_, _, status)| *status == 429)
        .map(|(at, ..)| *at)
        .expect("a 429");
    for (at, call, status) in &calls {
        if *at > limited_at {
            assert!(
                at.duration_since(limited_at) >= Duration::from_millis(1_990),
                "{call} ({status}) came {:?} after the 429",
                at.duration_since(limited_at)
            );
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(calls.iter().filter(|(_, _, s)| *s == 429).count(), 1);

    // A bad gateway is tried again, as Genesys's SDKs do; the caller sees only the answer.
    fake.org().fail_next = Some(("routing/queues".into(), 2, 503));
    let after: Value = api
        .get(
            "routing/queues",
            "/api/v2/routing/queues?pageSize=100&pageNumber=1",
        )
        .await
        .expect("answered after two 503s");
    assert_eq!(after["total"], 1);
    // A client error is not.
    fake.org().fail_next = Some(("routing/queues".into(), 1, 400));
    let refused = api
        .get::<Value>(
            "routing/queues",
            "/api/v2/routing/queues?pageSize=100&pageNumber=1",
        )
        .await
        .expect_err("a 400 is an answer");
    assert!(refused.to_string().contains("400"), "{refused}");
}

#[tokio::test]
async fn a_restart_at_noon_gets_today_back_whole_from_the_aggregates_query() {
    let (day_start, current) = today();
    // The day so far: its first half hour, one in the middle, the current one.
    let mut halves = vec![HalfHour {
        start: day_start,
        offered: 4,
        answered: 4,
        answer_ms_sum: 20_000,
        abandoned: 0,
    }];
    let middle = (day_start + current) / 2 / HALF_HOUR * HALF_HOUR;
    if middle > day_start && middle < current {
        halves.push(HalfHour {
            start: middle,
            offered: 6,
            answered: 5,
            answer_ms_sum: 40_000,
            abandoned: 1,
        });
    }
    if current > day_start {
        halves.push(HalfHour {
            start: current,
            offered: 2,
            answered: 1,
            answer_ms_sum: 15_000,
            abandoned: 0,
        });
    }
    let offered: i64 = halves.iter().map(|h| h.offered).sum();
    let answered: i64 = halves.iter().map(|h| h.answered).sum();
    let mut org = Org {
        queues: vec![queue("q-1", "Sales")],
        ..Org::default()
    };
    org.half_hours
        .insert(("q-1".into(), "voice".into()), halves.clone());
    let fake = FakeGenesys::start(org).await;
    let dir = temp_dir();
    let database = common::fresh_database_url(dir.path()).await;

    // gc-status was down all morning: it starts now, on an empty database.
    let app = spawn_on(&database, connect_to(&fake, 3600, false)).await;
    wait_until(
        "today's figures arrive",
        Duration::from_secs(20),
        || async { queue_of(&app, "q-1").await["today"]["offered"] == offered },
    )
    .await;
    let q = queue_of(&app, "q-1").await;
    assert_eq!(q["today"]["answered"], answered);
    assert_eq!(q["today"]["since"], local(day_start));
    assert_eq!(q["today"]["source"], "observations");
    assert_eq!(
        q["interval"]["offered"],
        halves.last().map(|h| h.offered).unwrap_or(0)
    );
    app.stop().await.expect("clean stop");

    // Restarted with Genesys unreachable: today stays whole from what was stored.
    let gone = format!("http://127.0.0.1:{}", common::free_port());
    let app = spawn_on(&database, |config| {
        connect_to(&fake, 3600, false)(config);
        config.genesys.genesys_api_url = Some(gone.clone());
        config.genesys.genesys_login_url = Some(gone);
    })
    .await;
    let q = queue_of(&app, "q-1").await;
    assert_eq!(q["today"]["offered"], offered);
    assert_eq!(q["today"]["since"], local(day_start));
    // Ready (webhooks are taken) but it says Genesys is out of reach.
    wait_until(
        "readiness names Genesys",
        Duration::from_secs(10),
        || async {
            let ready: Value = app
                .client
                .get(app.url("/readyz"))
                .send()
                .await
                .expect("answered")
                .json()
                .await
                .expect("JSON");
            ready["status"] == "ready" && ready["degraded"]["genesys"].is_string()
        },
    )
    .await;
    let strip = &app.snapshot().await["pipeline"]["genesys"];
    assert_eq!(strip["state"], "failing", "{strip}");
    // The wallboard says so, with the reason.
    let page = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .expect("the wallboard")
        .text()
        .await
        .expect("HTML");
    assert!(
        page.contains(r#"data-testid="genesys""#),
        "the strip has the connector"
    );
    assert!(page.contains(r#"data-state="failing""#));
    assert!(page.contains("could not be reached"));
    assert!(
        strip["reason"]
            .as_str()
            .is_some_and(|r| r.contains("could not be reached")),
        "{strip}"
    );
    assert!(strip["next_try_at"].is_string());
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_websocket_is_replaced_when_genesys_closes_it_and_the_gap_is_filled() {
    let org = Org::with_queues(vec![queue("q-1", "Sales"), queue("q-2", "Support")])
        .live("q-1", "voice", 0, 0);
    let fake = FakeGenesys::start(org).await;
    // Polls far apart: only the notifications and the polls after a reconnect bring news.
    let app = spawn_app_with(connect_to(&fake, 3600, true)).await;
    wait_until("the websocket is live", Duration::from_secs(20), || async {
        app.snapshot().await["pipeline"]["genesys"]["state"] == "websocket"
    })
    .await;
    let subscribed = fake.org().subscriptions[0].clone();
    assert_eq!(
        subscribed,
        [
            "v2.analytics.queues.q-1.observations",
            "v2.analytics.queues.q-2.observations"
        ]
    );

    // A notification as Genesys pushes it.
    fake.push(json!({
        "topicName": "v2.analytics.queues.q-1.observations",
        "version": "2",
        "eventBody": {"group": {"queueId": "q-1", "mediaType": "voice"}, "data": [
            {"interval": "2026-12-01T09:00:00.000Z/2026-12-01T09:30:00.000Z", "metrics": [
                {"metric": "oWaiting", "stats": {"count": 5}},
                {"metric": "oInteracting", "stats": {"count": 1}}]}]},
        "metadata": {"CorrelationId": "8f1b1a35-5b4e-4f8e-9b25-0d8b6d0d2c11"}
    }));
    wait_until(
        "the pushed figures show",
        Duration::from_secs(10),
        || async { queue_of(&app, "q-1").await["waiting"] == 5 },
    )
    .await;

    // What changes while the socket is being replaced is never pushed: the poll after the
    // reconnect brings it.
    fake.org().live.insert(
        ("q-1".into(), "voice".into()),
        Live {
            waiting: 7,
            interacting: 2,
            longest_since: None,
        },
    );
    fake.close_sockets();
    wait_until(
        "the gap is filled after the reconnect",
        Duration::from_secs(15),
        || async { queue_of(&app, "q-1").await["waiting"] == 7 },
    )
    .await;
    wait_until(
        "a new channel and socket",
        Duration::from_secs(15),
        || async {
            let org = fake.org();
            org.channels >= 2 && org.sockets_opened >= 2
        },
    )
    .await;
    wait_until("live again", Duration::from_secs(10), || async {
        app.snapshot().await["pipeline"]["genesys"]["state"] == "websocket"
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("gc_status_genesys_reconnects_total"),
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_websocket_without_heartbeats_is_taken_for_dead_and_replaced() {
    let fake = FakeGenesys::start(Org {
        queues: vec![queue("q-1", "Sales")],
        silent_sockets: true,
        ..Org::default()
    })
    .await;
    let app = spawn_app_with(|config| {
        connect_to(&fake, 3600, true)(config);
        config.genesys.genesys_heartbeat_timeout_secs = 1;
    })
    .await;
    wait_until(
        "a silent socket is replaced",
        Duration::from_secs(15),
        || async { fake.org().sockets_opened >= 2 },
    )
    .await;
    assert!(fake.org().channels >= 2, "each on a new channel");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_state_change_without_a_queue_is_placed_through_the_conversation_details() {
    let mut org = Org::with_queues(vec![queue("q-1", "Sales")]);
    // Analytics has not caught up for the first two asks.
    org.conversations
        .insert("c-lost".into(), ("q-1".into(), "voice".into(), 2));
    let fake = FakeGenesys::start(org).await;
    let app = spawn_app_with(|config| {
        connect_to(&fake, 3600, false)(config);
        config.worker.retry_base_ms = 100;
        config.worker.retry_cap_ms = 300;
    })
    .await;
    let now = jiff::Timestamp::now().as_millisecond();
    // A data action that sends only the conversation and its state.
    let body = json!({"event": "conversation:updated", "id": "evt-1", "timestamp": common::rfc3339(now - 5_000),
                      "data": {"conversationId": "c-lost", "state": "queued"}})
    .to_string();
    assert_eq!(app.post_signed(&body).await.status(), 202);
    wait_until(
        "the conversation waits in its queue",
        Duration::from_secs(20),
        || async { queue_of(&app, "q-1").await["media"]["voice"]["waiting"] == 1 },
    )
    .await;
    assert_eq!(
        fake.calls_to("GET /api/v2/analytics/conversations/c-lost/details"),
        3
    );
    let dead: Value = app.admin_get("/api/v2/admin/dead-letters").await;
    assert_eq!(dead["total"], 0, "{dead}");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_client_secret_and_every_token_stay_out_of_the_logs() {
    let org = Org {
        token_lifetime: 2,
        ..Org::with_queues(vec![queue("q-1", "Sales")])
    }
    .live("q-1", "voice", 2, 0);
    let fake = FakeGenesys::start(org).await;
    let dir = temp_dir();
    let url = fake.url();
    let server = common::start_binary(
        dir.path(),
        &[
            ("RUST_LOG", "debug"),
            ("GC_STATUS_HMAC_SECRETS", common::SECRET),
            ("GC_STATUS_GENESYS_API_URL", &url),
            ("GC_STATUS_GENESYS_LOGIN_URL", &url),
            ("GC_STATUS_GENESYS_CLIENT_ID", CLIENT_ID),
            ("GC_STATUS_GENESYS_CLIENT_SECRET", CLIENT_SECRET),
            ("GC_STATUS_GENESYS_POLL_SECS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    // Several renewals (two-second tokens) and a revocation while it runs.
    wait_until(
        "three tokens were issued",
        Duration::from_secs(20),
        || async { fake.org().token_requests >= 3 },
    )
    .await;
    fake.org().tokens.clear();
    wait_until(
        "a token after the revocation",
        Duration::from_secs(20),
        || async { fake.org().token_requests >= 4 },
    )
    .await;
    let queues: Value = client
        .get(format!("http://{}/api/v2/queues", server.addr))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(queues["queues"][0]["name"], "Sales");
    let mut server = server;
    server.child.kill().expect("stop the server");
    let _ = server.child.wait();
    let log = std::fs::read_to_string(&server.log).expect("the log");
    assert!(log.contains("DEBUG"), "the log is at debug level");
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client secret is in the log"
    );
    for token in fake.org().issued.clone() {
        assert!(!log.contains(&token), "token {token} is in the log");
    }
}
