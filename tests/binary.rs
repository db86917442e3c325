//! The real `gc-status` binary: refusing unsafe configuration, surviving SIGKILL, clean SIGTERM.

mod common;

use std::process::Command;

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
        .output()
        .expect("run the binary");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("GC_STATUS_HMAC_SECRETS"), "{help}");
    assert!(!help.contains("super-secret-value"), "{help}");
}

async fn post(client: &reqwest::Client, addr: std::net::SocketAddr, id: &str) -> u16 {
    let body = simple_event(id);
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

async fn stored_ids(dir: &std::path::Path) -> Vec<String> {
    let mut conn = sqlx::SqliteConnection::connect(&database_url(dir))
        .await
        .expect("open the database");
    sqlx::query("SELECT id FROM events")
        .fetch_all(&mut conn)
        .await
        .expect("read ids")
        .iter()
        .map(|row| row.get::<String, _>("id"))
        .collect()
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_and_restart() {
    let dir = temp_dir();
    let env = [("GC_STATUS_HMAC_SECRETS", SECRET)];
    let mut server = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();

    // Stream events from several tasks and kill the process in the middle of it.
    let addr = server.addr;
    let mut senders = tokio::task::JoinSet::new();
    for task in 0..8 {
        let client = client.clone();
        senders.spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let id = format!("k-{task}-{i}");
                match post(&client, addr, &id).await {
                    202 => acknowledged.push(id),
                    _ => break, // the server is gone
                }
            }
            acknowledged
        });
    }
    // Wait until a good number of events are in, then kill without warning.
    while stored_ids(dir.path()).await.len() < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.child.kill().expect("SIGKILL the server");
    server.child.wait().expect("reap the server");
    let mut acknowledged = Vec::new();
    while let Some(ids) = senders.join_next().await {
        acknowledged.extend(ids.expect("sender task"));
    }
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
    assert_eq!(post(&client, restarted.addr, "after-restart").await, 202);
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
        assert_eq!(post(&client, server.addr, &format!("t-{i}")).await, 202);
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
