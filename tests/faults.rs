//! Faults and hostile clients: supervision, storage faults, slow and malformed requests,
//! long admin operations, guessing admin tokens.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;
use gc_status::server::{config::Config, domain::now_ms, startup::Application};
use serde_json::Value;
use sqlx::Connection as _;

async fn readyz(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let r = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::for_database(database_url(dir));
    config.hmac_secrets = vec![SECRET.into()];
    config.worker.workers = 0;
    config
}

#[tokio::test]
async fn a_background_task_that_stops_makes_the_process_unready_and_exit_with_an_error() {
    let dir = temp_dir();
    let mut app = Application::build(config(dir.path()))
        .await
        .expect("builds");
    let base = format!("http://{}", app.local_addr());
    let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
    app.supervise("example task", async move {
        let _ = crashed.await;
        panic!("lost its connection");
    });
    let running = tokio::spawn(app.run_until_stopped(std::future::pending()));
    let client = reqwest::Client::new();
    assert_eq!(readyz(&client, &base).await.0, 200);

    crash.send(()).expect("the task waits");
    // The process shuts itself down (as on SIGTERM) and reports why.
    let result = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("it stops by itself")
        .expect("no panic escapes");
    let err = result.expect_err("stopping because a task died is an error");
    let message = format!("{err:#}");
    assert!(message.contains("example task"), "{message}");
    assert!(
        message.contains("panicked: lost its connection"),
        "{message}"
    );
}

#[tokio::test]
async fn a_dead_writer_is_reported_and_never_leaves_a_ready_process() {
    let dir = temp_dir();
    let app = Application::build(config(dir.path()))
        .await
        .expect("builds");
    app.crash_writer();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        app.run_until_stopped(std::future::pending()),
    )
    .await
    .expect("it stops by itself");
    let message = format!("{:#}", result.expect_err("an error"));
    assert!(message.contains("writer"), "{message}");
}

#[tokio::test]
async fn a_database_url_of_another_kind_is_refused_with_a_clear_message() {
    let dir = temp_dir();
    let mut config = config(dir.path());
    config.database_url = "mysql://user:secret@db.example:3306/gc".into();
    let err = Application::build(config).await.err().expect("refused");
    let message = format!("{err:#}");
    assert!(message.contains("sqlite://"), "{message}");
    assert!(message.contains("postgres://"), "{message}");
    assert!(
        !message.contains("secret"),
        "the password is not echoed: {message}"
    );
}

#[tokio::test]
async fn an_unreachable_postgresql_server_stops_the_start_saying_where_without_the_password() {
    let dir = temp_dir();
    let cwd_marker = std::path::Path::new("postgres:");
    let existed = cwd_marker.exists();
    let mut config = config(dir.path());
    // Nothing listens on port 9 of this machine.
    config.database_url = "postgres://user:secret@127.0.0.1:9/gc".into();
    config.store_timeout_ms = 1_000;
    let err = Application::build(config).await.err().expect("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("cannot connect to PostgreSQL"),
        "{message}"
    );
    assert!(message.contains("127.0.0.1:9"), "{message}");
    assert!(
        !message.contains("secret"),
        "the password is not echoed: {message}"
    );
    assert_eq!(
        cwd_marker.exists(),
        existed,
        "no local `postgres:` directory"
    );
}

#[tokio::test]
async fn a_full_database_answers_503_loses_nothing_and_recovers_by_itself() {
    let dir = temp_dir();
    let url = database_url(dir.path());
    // Create the schema, then fill most of a 2 MiB budget with a table an operator can drop.
    spawn_on(&url, |_| {}).await.stop().await.expect("stops");
    {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(&mut conn)
            .await
            .expect("create");
        sqlx::query("INSERT INTO filler SELECT zeroblob(4000) FROM json_each(json_array(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20)) a, json_each(json_array(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20)) b, json_each(json_array(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20)) c LIMIT 420")
            .execute(&mut conn)
            .await
            .expect("fill");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .expect("checkpoint");
    }
    let app = spawn_on(&url, |c| c.max_database_mb = Some(2)).await;
    let base = app.url("");
    let mut acknowledged = Vec::new();
    let mut refused = None;
    let padding = "x".repeat(2_000);
    for i in 0..2_000 {
        let id = format!("full-{i}");
        let body = format!(
            r#"{{"event":"conversation:updated","id":"{id}","timestamp":"2026-11-29T10:00:00Z","data":{{"state":"queued","queueId":"q","pad":"{padding}"}}}}"#
        );
        let response = app.post_signed(&body).await;
        match response.status().as_u16() {
            202 => acknowledged.push(id),
            503 => {
                assert!(response.headers().contains_key("retry-after"));
                refused = Some(body);
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let refused = refused.expect("the database filled up");
    assert!(!acknowledged.is_empty());
    let (status, body) = readyz(&app.client, &base).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["unhealthy"]["storage"]
            .as_str()
            .is_some_and(|s| s.contains("full")),
        "{body}"
    );
    let stored = app.db.event_ids().await.expect("ids");
    assert!(
        acknowledged.iter().all(|id| stored.contains(id)),
        "nothing acknowledged is lost"
    );

    // Space returns: the same delivery now succeeds and readiness follows by itself.
    {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::query("DROP TABLE filler")
            .execute(&mut conn)
            .await
            .expect("free space");
    }
    assert_eq!(app.post_signed(&refused).await.status(), 202);
    assert_eq!(readyz(&app.client, &base).await.0, 200);
}

#[tokio::test]
async fn the_wal_shrinks_back_after_a_burst_and_a_quiet_moment() {
    let app = spawn_sqlite_app_with(|_| {}).await;
    let file = app.database_url.trim_start_matches("sqlite://").to_owned();
    let wal = format!("{file}-wal");
    {
        // A burst of 200,000 events (written directly: the WAL does not care who wrote them).
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("open");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO events (id, event_type, payload, received_at, next_attempt_at, status)
             SELECT 'burst-' || i, 'e', printf('{\"n\":%d,\"pad\":\"%.200c\"}', i, 'x'), 0, 0, 'done' FROM n",
        )
        .execute(&mut conn)
        .await
        .expect("burst");
    }
    let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let burst_size = size();
    wait_until(
        "the WAL is back under 4 MB",
        Duration::from_secs(30),
        || async { size() < 4 * 1024 * 1024 },
    )
    .await;
    assert!(
        burst_size > 16 * 1024 * 1024 || size() < burst_size,
        "{burst_size}"
    );
}

/// Opens a raw connection and sends `head` (and nothing more yet).
fn raw(addr: std::net::SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("send");
    stream
}

fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn slow_heads_and_bodies_are_cut_off_while_normal_webhooks_go_through() {
    let app = spawn_app_with(|c| c.request_read_timeout_secs = 1).await;
    let addr = app.addr;
    // A body that trickles: headers (with a signature, so the body is needed), then half the
    // declared body, then nothing.
    let trickler = tokio::task::spawn_blocking(move || {
        let mut s = raw(
            addr,
            "POST /api/v2/webhooks/gc-status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-gc-signature: 00\r\ncontent-length: 100\r\n\r\n{\"event\":",
        );
        let started = Instant::now();
        let answer = read_all(&mut s);
        (answer, started.elapsed())
    });
    // A head that never ends.
    let idler = tokio::task::spawn_blocking(move || {
        let mut s = raw(
            addr,
            "POST /api/v2/webhooks/gc-status HTTP/1.1\r\nhost: x\r\n",
        );
        let started = Instant::now();
        let answer = read_all(&mut s);
        (answer, started.elapsed())
    });
    // Meanwhile a normal sender is served at once.
    let started = Instant::now();
    assert_eq!(
        app.post_signed(&simple_event("normal-1")).await.status(),
        202
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    let (answer, took) = trickler.await.expect("trickler");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (_, took) = idler.await.expect("idler");
    assert!(
        took < Duration::from_secs(5),
        "the idle head is closed: {took:?}"
    );
    assert_eq!(app.stored_count().await, 1);
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_client_that_never_finishes() {
    let app = spawn_app_with(|c| c.request_read_timeout_secs = 3600).await;
    let mut held = raw(
        app.addr,
        "POST /api/v2/webhooks/gc-status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-gc-signature: 00\r\ncontent-length: 100\r\n\r\n{",
    );
    let _held = tokio::task::spawn_blocking(move || read_all(&mut held));
    // Connections are accepted in order: once a later one is answered, the held one is in.
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(health.status(), 200);
    let started = Instant::now();
    app.stop().await.expect("stops cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// POSTs raw `body` bytes signed with [`SECRET`] (which need not be UTF-8).
async fn post_signed_bytes(app: &common::TestApp, body: &[u8]) -> reqwest::Response {
    app.client
        .post(app.url(WEBHOOK_PATH))
        .header("content-type", "application/json")
        .header(
            "x-gc-signature",
            gc_status::server::ingest::auth::sign_hex(SECRET, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("answered")
}

#[tokio::test]
async fn bad_input_gets_a_4xx_or_a_dead_letter_and_the_server_keeps_answering() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        r#"{{"event":"e","timestamp":"2026-11-29T10:00:00Z","data":{}1{}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let huge_number = format!(
        r#"{{"event":"e","timestamp":"2026-11-29T10:00:00Z","data":{{}},"id":{}}}"#,
        "9".repeat(5_000)
    );
    let long_id = format!(
        r#"{{"event":"e","id":"{}","timestamp":"2026-11-29T10:00:00Z","data":{{}}}}"#,
        "x".repeat(100_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", Vec::new()),
        ("malformed JSON", b"{\"event\":".to_vec()),
        (
            "truncated",
            br#"{"event":"e","timestamp":"2026-11-29T10:00:00Z","data":{"#.to_vec(),
        ),
        ("deep array", deep.into_bytes()),
        ("deep object", deep_object.into_bytes()),
        (
            "invalid UTF-8",
            b"{\"event\":\"\xff\xfe\",\"timestamp\":\"2026-11-29T10:00:00Z\",\"data\":{}}".to_vec(),
        ),
        (
            "NUL bytes",
            b"{\"event\":\"e\0\",\"timestamp\"\0:\"x\",\"data\":{}}".to_vec(),
        ),
    ];
    // JSON, but in no shape gc-status reads: kept and dead-lettered at once with the reason
    // (EventBridge never redelivers a 4xx, so a 400 would lose them for good).
    let unrecognised: Vec<(&str, Vec<u8>)> = vec![
        ("not an object", b"[1,2,3]".to_vec()),
        ("a string", b"\"hello\"".to_vec()),
        ("null", b"null".to_vec()),
        (
            "wrong types",
            br#"{"event":1,"timestamp":true,"data":"x"}"#.to_vec(),
        ),
        ("enormous number id", huge_number.into_bytes()),
        ("enormous string id", long_id.into_bytes()),
        (
            "duplicate keys, last invalid",
            br#"{"event":"e","timestamp":"2026-11-29T10:00:00Z","data":{},"data":5}"#.to_vec(),
        ),
        (
            "bad timestamp",
            br#"{"event":"e","timestamp":"2026-13-45T99:00:00Z","data":{}}"#.to_vec(),
        ),
    ];
    for (name, body) in &unrecognised {
        let response = post_signed_bytes(&app, body).await;
        assert_eq!(response.status(), 202, "{name}");
        let answer: Value = response.json().await.expect("JSON");
        assert!(answer["dead_lettered"].is_string(), "{name}: {answer}");
    }
    for (name, body) in &cases {
        let response = post_signed_bytes(&app, body).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{name}: {status}");
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            answer["error"].is_string(),
            "{name}: a JSON error, got {answer}"
        );
    }
    // Signature edge cases on a valid body.
    let body = simple_event("sig-1");
    let other = gc_status::server::ingest::auth::sign_hex(SECRET, b"another body");
    let good = gc_status::server::ingest::auth::sign_hex(SECRET, body.as_bytes());
    for signature in [
        "",
        "00",
        "zz-not-hex",
        &good[..good.len() - 1],
        &other,
        &format!("sha256={other}"),
    ] {
        let status = app
            .post_raw(&body, &[("x-gc-signature", signature)])
            .await
            .status();
        assert_eq!(status, 401, "signature {signature:?}");
    }
    // Content types: parameters are fine, other types are not.
    let status = app
        .post_raw(
            &body,
            &[
                ("x-gc-signature", &good),
                ("content-type", "application/json; charset=utf-8"),
            ],
        )
        .await
        .status();
    assert_eq!(status, 202);
    let response = app
        .client
        .post(app.url(WEBHOOK_PATH))
        .header("content-type", "text/plain")
        .header("x-gc-signature", &good)
        .body(body.clone())
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 415);
    // An oversized header and a chunked body over the limit.
    let response = app
        .client
        .post(app.url(WEBHOOK_PATH))
        .header("content-type", "application/json")
        .header("x-gc-signature", &good)
        .header("x-padding", "p".repeat(200_000))
        .body(body.clone())
        .send()
        .await;
    assert!(response.map_or(true, |r| r.status().is_client_error()));
    let ids = app.db.event_ids().await.expect("ids");
    assert_eq!(
        ids.len(),
        1 + unrecognised.len(),
        "the valid one and the dead-lettered ones: {ids:?}"
    );
    assert!(ids.iter().any(|id| id == "sig-1"));
    assert_eq!(
        app.db.event_counts().await.expect("counts").dead as usize,
        unrecognised.len(),
        "each unrecognised body is a dead letter"
    );
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("alive");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn replaying_100000_dead_letters_does_not_hold_up_webhooks() {
    let app = spawn_sqlite_app_with(|_| {}).await;
    {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("open");
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
             INSERT INTO events (id, event_type, payload, received_at, next_attempt_at, status, attempts)
             SELECT 'dl-' || i, 'x:unknown', '{}', 0, 0, 'dead', 1 FROM n",
        )
        .execute(&mut *tx)
        .await
        .expect("events");
        sqlx::query(
            "INSERT INTO dead_letters (id, event_type, payload, attempts, errors, last_error, received_at, dead_at)
             SELECT id, event_type, payload, 1, '[]', 'no interpretation', 0, 0 FROM events WHERE status = 'dead'",
        )
        .execute(&mut *tx)
        .await
        .expect("letters");
        tx.commit().await.expect("commit");
    }
    app.db.recount_totals().await.expect("recount");
    let replay = {
        let client = app.client.clone();
        let url = app.url("/api/v2/admin/dead-letters/replay");
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({ "filter": {} }))
                .send()
                .await
                .expect("answered")
        })
    };
    let mut latencies = Vec::new();
    let mut i = 0;
    while !replay.is_finished() || i < 50 {
        let started = Instant::now();
        assert_eq!(
            app.post_signed(&simple_event(&format!("live-{i}")))
                .await
                .status(),
            202
        );
        latencies.push(started.elapsed());
        i += 1;
    }
    let response = replay.await.expect("replay task");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["replayed"], 100_000, "{answer}");
    latencies.sort();
    let worst = *latencies.last().expect("some");
    assert!(
        worst < Duration::from_millis(500),
        "a webhook waited {worst:?} behind the replay"
    );
    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!(
        (counts.dead, counts.pending as usize),
        (0, 100_000 + latencies.len())
    );
}

#[tokio::test]
async fn guessing_the_admin_token_is_slowed_down_for_that_client_only() {
    let app = spawn_app().await;
    let guesser = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let url = app.url("/api/v2/admin/dead-letters");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = guesser
            .get(&url)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .expect("answered");
        statuses.push(r.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[403; 5], "{statuses:?}");
    assert!(statuses[6..].iter().all(|s| *s == 429), "{statuses:?}");
    // Even the right token waits out the lock-out from the guessing address...
    let r = guesser
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // ...while the admin elsewhere is not slowed down at all.
    let started = Instant::now();
    let r = app
        .client
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    let _ = now_ms();
}

#[tokio::test]
async fn readers_share_one_cached_snapshot_per_interval() {
    let app = spawn_app_with(|c| c.status_cache_ms = 60_000).await;
    let read = || async {
        app.client
            .get(app.url("/api/v2/queues"))
            .send()
            .await
            .expect("answered")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    let before = read().await;
    app.post_signed(&simple_event("cached-1")).await;
    // Within the interval every reader gets the same snapshot, without a database read.
    assert_eq!(read().await, before);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert_eq!(read().await["pipeline"]["total"], 0);
}

#[tokio::test]
async fn a_removed_database_file_is_never_written_into_and_readiness_says_why() {
    let app = spawn_sqlite_app_with(|_| {}).await;
    assert_eq!(app.post_signed(&simple_event("before")).await.status(), 202);
    let file = app.database_url.trim_start_matches("sqlite://").to_owned();
    std::fs::remove_file(&file).expect("remove the database file");
    let response = app.post_signed(&simple_event("after")).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = readyz(&app.client, &app.url("")).await;
    assert_eq!(status, 503);
    assert!(
        body["unhealthy"]["storage"]
            .as_str()
            .is_some_and(|s| s.contains("removed")),
        "{body}"
    );
}
