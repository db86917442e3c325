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
            let at = gc_status::server::worker::now_ms() - 60_000;
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
    let now = gc_status::server::worker::now_ms();
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
