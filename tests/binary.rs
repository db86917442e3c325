//! The real `gc-status` binary: refusing unsafe configuration, surviving SIGKILL, clean SIGTERM.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use gc_status::server::ingest::auth::sign_hex;
use sqlx::{Connection as _, Row as _};

#[test]
fn refuses_to_start_without_sender_authentication() {
    let dir = temp_dir();
    let output = Command::new(env!("CARGO_BIN_EXE_gc-status"))
        .env_clear()
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("GC_STATUS_DATABASE_URL", database_url(dir.path()))
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GC_STATUS_HMAC_SECRETS"), "{stderr}");
    assert!(stderr.contains("--insecure-accept-unsigned"), "{stderr}");
}

#[test]
fn secrets_do_not_appear_in_help_or_logs() {
    let output = Command::new(env!("CARGO_BIN_EXE_gc-status"))
        .arg("--help")
        .env("GC_STATUS_HMAC_SECRETS", "super-secret-value")
        .env("GC_STATUS_OAUTH_CLIENT_SECRET", "oauth-secret-value")
        .output()
        .expect("run the binary");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("GC_STATUS_HMAC_SECRETS"), "{help}");
    assert!(help.contains("GC_STATUS_OAUTH_CLIENT_SECRET"), "{help}");
    assert!(!help.contains("super-secret-value"), "{help}");
    assert!(!help.contains("oauth-secret-value"), "{help}");
}

/// POSTs a signed `body`; the status, or 0 when the server is gone.
async fn post(client: &reqwest::Client, addr: std::net::SocketAddr, body: String) -> u16 {
    client
        .post(format!("http://{addr}{WEBHOOK_PATH}"))
        .header("content-type", "application/json")
        .header("x-gc-signature", sign_hex(SECRET, body.as_bytes()))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Sends events from `tasks` concurrent senders until the server stops answering; each
/// sender's task yields the ids that were acknowledged with 202.
fn stream_events(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    tasks: usize,
    event: fn(usize, usize) -> (String, String),
) -> tokio::task::JoinSet<Vec<String>> {
    let mut senders = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let client = client.clone();
        senders.spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let (id, body) = event(task, i);
                if post(&client, addr, body).await != 202 {
                    break; // the server is gone
                }
                acknowledged.push(id);
            }
            acknowledged
        });
    }
    senders
}

async fn acknowledged(mut senders: tokio::task::JoinSet<Vec<String>>) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(sent) = senders.join_next().await {
        ids.extend(sent.expect("sender task"));
    }
    ids
}

async fn stored_ids(dir: &std::path::Path) -> Vec<String> {
    statuses(dir).await.into_keys().collect()
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_and_restart() {
    let dir = temp_dir();
    let env = [("GC_STATUS_HMAC_SECRETS", SECRET)];
    let mut server = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();

    // Stream events from several tasks and kill the process in the middle of it.
    let senders = stream_events(&client, server.addr, 8, |task, i| {
        let id = format!("k-{task}-{i}");
        let body = simple_event(&id);
        (id, body)
    });
    // Wait until a good number of events are in, then kill without warning.
    wait_until("500 events are stored", Duration::from_secs(30), || async {
        stored_ids(dir.path()).await.len() >= 500
    })
    .await;
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
    let acknowledged = acknowledged(senders).await;
    assert!(acknowledged.len() >= 500);

    let mut restarted = start_binary(dir.path(), &env).await;
    let stored: std::collections::HashSet<String> =
        stored_ids(dir.path()).await.into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // The restarted server accepts new events.
    assert_eq!(
        post(&client, restarted.addr, simple_event("after-restart")).await,
        202
    );
    restarted.child.kill().expect("stop the server");
    let _ = restarted.child.wait();
}

#[tokio::test]
async fn sigterm_finishes_cleanly_with_exit_code_zero() {
    let dir = temp_dir();
    let env = [("GC_STATUS_HMAC_SECRETS", SECRET)];
    let mut server = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let body = simple_event(&format!("t-{i}"));
        assert_eq!(post(&client, server.addr, body).await, 202);
    }

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = server.child.wait().expect("the server exits");
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert_eq!(stored_ids(dir.path()).await.len(), 20);
}

/// Every row of the statistics tables, in a stable order, as text.
async fn statistics(dir: &std::path::Path) -> Vec<String> {
    let mut conn = sqlx::SqliteConnection::connect(&database_url(dir))
        .await
        .expect("open the database");
    let mut rows: Vec<String> = sqlx::query(
        "SELECT queue_id || '|' || conversation_id || '|' || coalesce(queued_at, '') || '|' ||
                coalesce(answered_at, '') || '|' || coalesce(ended_at, '') || '|' ||
                coalesce(outcome, '') AS line
           FROM conversations ORDER BY queue_id, conversation_id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("read conversations")
    .iter()
    .map(|row| row.get::<String, _>("line"))
    .collect();
    let names: Vec<String> =
        sqlx::query("SELECT queue_id || '=' || name AS line FROM queue_names ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .expect("read names")
            .iter()
            .map(|row| row.get::<String, _>("line"))
            .collect();
    rows.extend(names);
    rows
}

async fn statuses(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    let mut conn = sqlx::SqliteConnection::connect(&database_url(dir))
        .await
        .expect("open the database");
    sqlx::query("SELECT id, status FROM events")
        .fetch_all(&mut conn)
        .await
        .expect("read statuses")
        .iter()
        .map(|row| (row.get::<String, _>("id"), row.get::<String, _>("status")))
        .collect()
}

fn run_cli(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gc-status"))
        .env_clear()
        .env("GC_STATUS_DATABASE_URL", database_url(dir))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the CLI");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("CLI finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn sigkill_during_processing_loses_nothing_and_statistics_equal_a_rebuild() {
    let dir = temp_dir();
    let env = [
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_WORKERS", "2"),
        ("GC_STATUS_WORKER_BATCH", "50"),
        ("GC_STATUS_LEASE_SECS", "1"),
    ];
    let mut server = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let senders = stream_events(&client, server.addr, 6, |task, i| {
        let id = format!("w-{task}-{i}");
        // Every fifth event is of a kind that ends in the dead letters.
        let body = if i % 5 == 4 {
            format!(
                r#"{{"event":"agent:unknown","id":"{id}","timestamp":"2026-11-29T10:00:00Z","data":{{}}}}"#
            )
        } else {
            let state = ["queued", "connected", "disconnected"][i % 3];
            let at = gc_status::server::domain::now_ms() - 60_000;
            conversation_event(
                &id,
                &format!("q{}", i % 4),
                &format!("c-{task}-{}", i / 3),
                state,
                at,
            )
        };
        (id, body)
    });
    // Kill once events are both arriving and being processed.
    wait_until(
        "events are arriving and being processed",
        Duration::from_secs(30),
        || async {
            let s = statuses(dir.path()).await;
            s.len() >= 1500 && s.values().filter(|v| *v == "done").count() >= 300
        },
    )
    .await;
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
    let acknowledged = acknowledged(senders).await;

    let mut restarted = start_binary(dir.path(), &env).await;
    wait_until(
        "every event is done or dead",
        Duration::from_secs(60),
        || async {
            statuses(dir.path())
                .await
                .values()
                .all(|v| v == "done" || v == "dead")
        },
    )
    .await;
    let settled = statuses(dir.path()).await;
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !settled.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost",
        missing.len()
    );
    let dead = settled.values().filter(|v| *v == "dead").count();
    assert!(dead > 0 && dead < settled.len());

    Command::new("kill")
        .args(["-TERM", &restarted.child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(restarted.child.wait().expect("exits").success());

    let live = statistics(dir.path()).await;
    assert!(!live.is_empty());
    let (ok, output) = run_cli(dir.path(), &["rebuild-stats"], "");
    assert!(ok, "{output}");
    assert!(output.contains("rebuilt queue statistics"), "{output}");
    assert_eq!(
        statistics(dir.path()).await,
        live,
        "statistics differ from a rebuild"
    );
}

#[tokio::test]
async fn dlq_cli_lists_replays_and_discards_with_confirmation() {
    let dir = temp_dir();
    let env = [
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_WORKERS", "1"),
    ];
    let mut server = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let body =
            format!(r#"{{"topicName":"v2.cli.topic{i}","eventBody":{{"queueId":"cli-q"}}}}"#);
        assert_eq!(post(&client, server.addr, body).await, 202);
    }
    wait_until(
        "three events are dead-lettered",
        Duration::from_secs(20),
        || async {
            statuses(dir.path())
                .await
                .values()
                .filter(|v| *v == "dead")
                .count()
                >= 3
        },
    )
    .await;
    server.child.kill().expect("stop the server");
    server.child.wait().expect("reap");

    let (ok, list) = run_cli(dir.path(), &["dlq", "list", "--queue", "cli-q"], "");
    assert!(ok, "{list}");
    assert!(list.starts_with("3 dead letter(s) match"), "{list}");
    assert!(list.contains("v2.cli.topic1"), "{list}");

    let (ok, replay) = run_cli(
        dir.path(),
        &["dlq", "replay", "--all", "--type", "v2.cli.topic0"],
        "",
    );
    assert!(ok, "{replay}");
    assert!(replay.contains("replayed 1"), "{replay}");

    let (ok, declined) = run_cli(dir.path(), &["dlq", "discard", "--all"], "n\n");
    assert!(ok, "{declined}");
    assert!(declined.contains("nothing discarded"), "{declined}");
    let (ok, accepted) = run_cli(dir.path(), &["dlq", "discard", "--all"], "y\n");
    assert!(ok, "{accepted}");
    assert!(accepted.contains("discarded 2"), "{accepted}");
    let (ok, empty) = run_cli(dir.path(), &["dlq", "list"], "");
    assert!(ok && empty.starts_with("0 dead letter(s)"), "{empty}");
    let (ok, usage) = run_cli(dir.path(), &["dlq", "replay"], "");
    assert!(!ok && usage.contains("--all"), "{usage}");
}

async fn event_row(dir: &std::path::Path, id: &str) -> Option<(String, i64, String)> {
    let mut conn = sqlx::SqliteConnection::connect(&database_url(dir))
        .await
        .expect("open the database");
    sqlx::query("SELECT status, attempts, coalesce(last_error, '') AS e FROM events WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut conn)
        .await
        .expect("read the event")
        .map(|row| (row.get("status"), row.get("attempts"), row.get("e")))
}

#[tokio::test]
async fn an_event_that_kills_the_process_every_time_ends_in_the_dead_letters() {
    let dir = temp_dir();
    let env = [
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_LEASE_SECS", "1"),
        ("GC_STATUS_MAX_ATTEMPTS", "3"),
        ("GC_STATUS_FAULT_HANG_ON_TYPE", "test.poison"),
    ];
    let mut server = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let now = gc_status::server::domain::now_ms();
    let poison =
        r#"{"event":"test.poison","id":"poison","timestamp":"2026-11-29T10:00:00Z","data":{}}"#;
    assert_eq!(post(&client, server.addr, poison.to_owned()).await, 202);
    for i in 0..20 {
        let body = conversation_event(&format!("ok-{i}"), "q-1", &format!("c-{i}"), "queued", now);
        assert_eq!(post(&client, server.addr, body).await, 202);
    }

    // Each run claims the poison event, hangs on it and is killed while holding it.
    for claims in 1..=3 {
        wait_until(
            &format!("the poison event is held for claim {claims}"),
            Duration::from_secs(30),
            || async {
                event_row(dir.path(), "poison")
                    .await
                    .is_some_and(|(status, attempts, _)| {
                        status == "processing" && attempts == claims
                    })
            },
        )
        .await;
        server.child.kill().expect("SIGKILL the server");
        server.child.wait().expect("reap the server");
        server = start_binary(dir.path(), &env).await;
    }

    wait_until(
        "the poison event is dead",
        Duration::from_secs(30),
        || async {
            event_row(dir.path(), "poison")
                .await
                .is_some_and(|(status, _, _)| status == "dead")
        },
    )
    .await;
    let (_, attempts, error) = event_row(dir.path(), "poison").await.expect("row");
    assert_eq!(attempts, 3);
    assert!(error.starts_with("abandoned after 3 claims"), "{error}");
    wait_until(
        "every other event is done",
        Duration::from_secs(30),
        || async {
            let s = statuses(dir.path()).await;
            (0..20).all(|i| s.get(&format!("ok-{i}")).is_some_and(|v| v == "done"))
        },
    )
    .await;
    // Applied once each: 20 distinct conversations waiting, no more, no fewer.
    let queues: serde_json::Value = client
        .get(format!("http://{}/api/v2/queues", server.addr))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    assert_eq!(queues["queues"][0]["waiting"], 20, "{queues}");
    assert_eq!(queues["pipeline"]["dead"], 1, "{queues}");
    server.child.kill().expect("stop the server");
    server.child.wait().expect("reap the server");
}

/// A real-size Amazon EventBridge delivery of a Genesys Cloud detail event with random UUIDs
/// (as senders send them): three in four an `acd.start` of a new conversation in one of eight
/// queues, one in four a topic gc-status does not interpret (it ends in the dead letters).
/// Returns the envelope id (what the event is stored under) and the body.
fn eventbridge_event(i: usize) -> (String, String) {
    fn uuid() -> String {
        let (a, b): (u64, u64) = (rand::random(), rand::random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
    let (id, conversation) = (uuid(), uuid());
    let topic = if i % 4 == 3 {
        "user.start"
    } else {
        "acd.start"
    };
    let now = gc_status::server::domain::now_ms();
    let body = format!(
        r#"{{"version":"0","id":"{id}","detail-type":"v2.detail.events.conversation.{{id}}.{topic}","source":"aws.partner/genesys.com/cloud/3d2b7c1e-5f0a-4c1b-9a57-2f4e1a9c8b10/gc-status","account":"123456789012","time":"{time}","region":"eu-west-1","resources":[],"detail":{{"topicName":"v2.detail.events.conversation.{conversation}.{topic}","version":"2","eventBody":{{"eventTime":{now},"conversationId":"{conversation}","participantId":"{participant}","sessionId":"{session}","mediaType":"VOICE","provider":"Edge","direction":"INBOUND","ani":"tel:+15551234567","dnis":"tel:+15559876543","addressTo":"tel:+15559876543","addressFrom":"tel:+15551234567","queueId":"7a1c2e3f-0b4d-4e5f-8a6b-{queue:012x}","divisionId":"1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6","routingPriority":0,"requestedRoutingTypes":["Standard"]}},"metadata":{{"CorrelationId":"{correlation}"}}}}}}"#,
        time = rfc3339(now),
        participant = uuid(),
        session = uuid(),
        queue = i % 8,
        correlation = uuid(),
    );
    (id, body)
}

/// What [`keep_posting`] saw.
struct SteadyLoad {
    acknowledged: Vec<String>,
    /// Longest time between two acknowledgements (across all senders).
    longest_pause: Duration,
    /// The largest WAL file sampled (once a second).
    largest_wal: u64,
    /// `/readyz` answers other than 200 during the run.
    not_ready: usize,
}

/// Posts [`eventbridge_event`]s from `senders` tasks without a pause for `length`, sampling
/// the WAL file's size and `/readyz` every second.
async fn keep_posting(
    server: &RunningBinary,
    dir: &std::path::Path,
    senders: usize,
    length: Duration,
) -> SteadyLoad {
    let client = reqwest::Client::new();
    let addr = server.addr;
    let until = std::time::Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..senders {
        let client = client.clone();
        tasks.spawn(async move {
            let mut acks = Vec::new();
            let mut i = task;
            while std::time::Instant::now() < until {
                let (id, body) = eventbridge_event(i);
                i += senders;
                match post(&client, addr, body).await {
                    202 => acks.push((std::time::Instant::now(), id)),
                    status => panic!("webhook answered {status}"),
                }
            }
            acks
        });
    }
    let wal = dir.join("gc-status.db-wal");
    let (mut largest_wal, mut not_ready) = (0, 0);
    while std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        match client.get(format!("http://{addr}/readyz")).send().await {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => {
                not_ready += 1;
                eprintln!(
                    "/readyz answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            Err(err) => {
                not_ready += 1;
                eprintln!("/readyz did not answer: {err}");
            }
        }
    }
    let mut acks = Vec::new();
    while let Some(sent) = tasks.join_next().await {
        acks.extend(sent.expect("a sender"));
    }
    acks.sort_by_key(|(at, _)| *at);
    let longest_pause = acks
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    SteadyLoad {
        acknowledged: acks.into_iter().map(|(_, id)| id).collect(),
        longest_pause,
        largest_wal,
        not_ready,
    }
}

/// The WAL bound the steady-traffic tests set (`GC_STATUS_WAL_LIMIT_MB`): small, so that a
/// WAL that kept growing would pass it within seconds.
const WAL_LIMIT_MB: u64 = 16;

/// Asserts what steady traffic must never do: grow the WAL past its bound, pause, lose an
/// acknowledged event, or make the server unready.
async fn assert_bounded(load: &SteadyLoad, dir: &std::path::Path, server: &RunningBinary) {
    let bound = WAL_LIMIT_MB * 1024 * 1024;
    eprintln!(
        "{} acknowledged, longest pause {:?}, largest WAL {} bytes (bound {bound})",
        load.acknowledged.len(),
        load.longest_pause,
        load.largest_wal
    );
    assert!(
        load.acknowledged.len() > 10_000,
        "only {} webhooks in a minute",
        load.acknowledged.len()
    );
    // The senders never pause, and the server never stalls for the quiet second after which
    // the WAL is emptied: what keeps it bounded here is the restarts between commits. (Without
    // them this load grows the WAL by megabytes a second.) The margin is for a suite sharing
    // two cores with this test; the pauses seen alone are a few tens of milliseconds.
    assert!(
        load.longest_pause < Duration::from_millis(500),
        "the server stalled for {:?}",
        load.longest_pause
    );
    assert!(
        load.largest_wal <= bound,
        "the WAL reached {} bytes, over its bound of {bound}",
        load.largest_wal
    );
    assert_eq!(load.not_ready, 0, "/readyz was not ready during the load");
    let stored = stored_ids(dir)
        .await
        .into_iter()
        .collect::<std::collections::HashSet<_>>();
    let lost = load
        .acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .count();
    assert_eq!(lost, 0, "acknowledged events missing");
    // `/metrics` shows the WAL, its bound and the restarts that kept it there.
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .expect("answered")
        .text()
        .await
        .expect("text");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("gc_status_wal_bytes") <= bound as f64);
    assert_eq!(value("gc_status_wal_limit_bytes"), bound as f64);
    assert!(value("gc_status_wal_restarts_total") >= 1.0);
    // The last restart held writes up briefly.
    assert!(value("gc_status_wal_checkpoint_seconds") < 0.1);
}

#[tokio::test]
async fn the_wal_stays_under_its_bound_during_a_minute_of_continuous_webhooks() {
    if on_postgres() {
        return; // the SQLite WAL; the suite's SQLite run covers it
    }
    let dir = temp_dir();
    let limit = WAL_LIMIT_MB.to_string();
    let env = [
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_WAL_LIMIT_MB", limit.as_str()),
    ];
    let mut server = start_binary(dir.path(), &env).await;
    let load = keep_posting(&server, dir.path(), 8, Duration::from_secs(60)).await;
    assert_bounded(&load, dir.path(), &server).await;
    server.child.kill().expect("stop the server");
    let _ = server.child.wait();
}

#[tokio::test]
async fn the_wal_stays_bounded_with_the_status_stream_open_and_forwarding_workers_busy() {
    if on_postgres() {
        return;
    }
    // A downstream that takes every processed event: the forwarding workers claim, deliver
    // and record all the time, beside ingestion and the inline applier.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let sink_url = format!("http://{}/sink", sink.local_addr().expect("address"));
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = delivered.clone();
    let app = axum::Router::new().route(
        "/sink",
        axum::routing::post(move || async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            axum::http::StatusCode::ACCEPTED
        }),
    );
    tokio::spawn(async move { axum::serve(sink, app).await });

    let dir = temp_dir();
    let limit = WAL_LIMIT_MB.to_string();
    let env = [
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_WAL_LIMIT_MB", limit.as_str()),
        ("GC_STATUS_SINK_URL", sink_url.as_str()),
        ("GC_STATUS_STATUS_CACHE_MS", "100"),
    ];
    let mut server = start_binary(dir.path(), &env).await;
    // The live status stream stays open and read throughout.
    let mut stream = reqwest::get(format!("http://{}/api/v2/stream", server.addr))
        .await
        .expect("the stream opens");
    let reader = tokio::spawn(async move {
        let mut updates = 0;
        while let Ok(Some(chunk)) = stream.chunk().await {
            updates += chunk.windows(13).filter(|w| w == b"event: status").count();
        }
        updates
    });
    let load = keep_posting(&server, dir.path(), 8, Duration::from_secs(60)).await;
    assert_bounded(&load, dir.path(), &server).await;
    assert!(
        delivered.load(std::sync::atomic::Ordering::Relaxed) > 1_000,
        "the forwarding workers were not busy"
    );
    server.child.kill().expect("stop the server");
    let _ = server.child.wait();
    let updates = reader.await.expect("the stream reader");
    assert!(updates > 30, "only {updates} status updates on the stream");
}

#[tokio::test]
async fn sighup_reads_the_queues_file_again_and_never_stops_the_process() {
    if on_postgres() {
        return;
    }
    let dir = temp_dir();
    let file = dir.path().join("queues.json");
    std::fs::write(&file, r#"{"q-hup": "Sales"}"#).expect("write");
    let path = file.display().to_string();
    let server = start_binary(
        dir.path(),
        &[
            ("GC_STATUS_HMAC_SECRETS", SECRET),
            ("GC_STATUS_QUEUES_FILE", path.as_str()),
            ("GC_STATUS_STATUS_CACHE_MS", "0"),
        ],
    )
    .await;
    // No name in the payload: the file's name is the one shown.
    let body = conversation_event(
        "e-hup",
        "q-hup",
        "c-hup",
        "queued",
        gc_status::server::domain::now_ms(),
    )
    .replace(r#","queueName":"Queue q-hup""#, "");
    let signature = sign_hex(SECRET, body.as_bytes());
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{}/api/v2/webhooks/gc-status", server.addr))
        .header("content-type", "application/json")
        .header("x-gc-signature", signature)
        .body(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 202);
    let name = || async {
        let snapshot: serde_json::Value = client
            .get(format!("http://{}/api/v2/queues", server.addr))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON");
        snapshot["queues"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["queue_id"] == "q-hup").cloned())
            .map(|q| q["name"].clone())
    };
    wait_until(
        "the queue is named from the file",
        Duration::from_secs(10),
        || async { name().await == Some(serde_json::json!("Sales")) },
    )
    .await;
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .expect("send SIGHUP");
        assert!(status.success());
    };
    // A broken file is not applied: the name stays, and the process runs on.
    std::fs::write(&file, "{").expect("write");
    hup();
    wait_until("the refusal is logged", Duration::from_secs(10), || async {
        std::fs::read_to_string(&server.log).is_ok_and(|log| log.contains("not applied"))
    })
    .await;
    assert_eq!(name().await, Some(serde_json::json!("Sales")));
    // A good one is.
    std::fs::write(
        &file,
        r#"{"q-hup": {"name": "Sales EMEA", "service_level": {"seconds": 30}}}"#,
    )
    .expect("write");
    hup();
    wait_until("the new name is shown", Duration::from_secs(10), || async {
        name().await == Some(serde_json::json!("Sales EMEA"))
    })
    .await;
    let mut server = server;
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "still running"
    );
}
