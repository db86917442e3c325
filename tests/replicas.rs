//! Several replicas of the real binary on one PostgreSQL database: one shared queue, each
//! webhook stored once whichever replica took it, a killed replica's work finished by the other.
//!
//! Needs a PostgreSQL server (`GC_STATUS_TEST_POSTGRES`; `scripts/test.sh` starts one).

mod common;

use std::{collections::HashSet, process::Command, time::Duration};

use common::*;
use gc_status::server::{ingest::auth::sign_hex, store};

/// POSTs a signed `body` to a replica; the status, or 0 when it is gone.
async fn post(client: &reqwest::Client, addr: std::net::SocketAddr, body: &str) -> u16 {
    client
        .post(format!("http://{addr}{WEBHOOK_PATH}"))
        .header("content-type", "application/json")
        .header("x-gc-signature", sign_hex(SECRET, body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn get_json(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
) -> serde_json::Value {
    client
        .get(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON")
}

/// An event's processing status in the shared database, if it is stored.
async fn status_of(db: &store::Db, id: &str) -> Option<String> {
    db.event_state(id)
        .await
        .ok()
        .flatten()
        .map(|s| s.status.to_string())
}

/// The queues part of a replica's status snapshot (rates and clocks left out).
async fn queues(client: &reqwest::Client, addr: std::net::SocketAddr) -> serde_json::Value {
    let mut snapshot = get_json(client, addr, "/api/v2/queues").await;
    let mut queues = snapshot["queues"].take();
    for q in queues.as_array_mut().into_iter().flatten() {
        // How long the oldest caller has waited grows with the clock between two reads.
        if let Some(q) = q.as_object_mut() {
            q.remove("longest_waiting_ms");
        }
    }
    queues
}

#[tokio::test]
async fn two_replicas_share_one_queue_and_finish_a_killed_ones_work() {
    let database = new_postgres_database().await;
    let dir = temp_dir();
    let common_env = [
        ("GC_STATUS_DATABASE_URL", database.as_str()),
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_ADMIN_TOKEN", ADMIN_TOKEN),
        ("GC_STATUS_LEASE_SECS", "2"),
        ("GC_STATUS_RETRY_BASE_MS", "50"),
        ("GC_STATUS_RETRY_CAP_MS", "200"),
        ("GC_STATUS_STATUS_CACHE_MS", "0"),
        ("GC_STATUS_DATABASE_POOL", "8"),
    ];
    // Replica A hangs on `x:poison` (as a worker stuck on a bad event would) and is killed
    // there; replica B processes everything normally.
    let mut env_a = common_env.to_vec();
    env_a.push(("GC_STATUS_FAULT_HANG_ON_TYPE", "x:poison"));
    env_a.push(("GC_STATUS_WORKERS", "1"));
    let dir_a = dir.path().join("a");
    let dir_b = dir.path().join("b");
    std::fs::create_dir_all(&dir_a).expect("dir");
    std::fs::create_dir_all(&dir_b).expect("dir");
    let mut a = start_binary(&dir_a, &env_a).await;
    let client = reqwest::Client::new();
    let (db, _writer) = store::open(&database, Duration::from_secs(5))
        .await
        .expect("open the shared database");
    let now = gc_status::server::domain::now_ms();

    // Events for A's workers (B is not running yet): a poison one among ordinary ones, claimed
    // by A's workers; A hangs on the poison event, holding the lease of its batch-mates too.
    // Sent at once, so they are committed (and claimed) together.
    let poison = r#"{"event":"x:poison","id":"poison-1","timestamp":"2026-11-30T10:00:00Z","data":{"queueId":"q-late"}}"#;
    let mut bodies = vec![poison.to_owned()];
    let posted: Vec<String> = (0..20).map(|i| format!("late-{i}")).collect();
    for (i, id) in posted.iter().enumerate() {
        bodies.push(conversation_event(
            id,
            "q-late",
            &format!("cl-{i}"),
            "queued",
            now - 10_000,
        ));
    }
    let statuses =
        futures_util::future::join_all(bodies.iter().map(|b| post(&client, a.addr, b))).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    wait_until(
        "replica A holds the poison event",
        Duration::from_secs(20),
        || async { status_of(&db, "poison-1").await.as_deref() == Some("processing") },
    )
    .await;

    let mut b = start_binary(&dir_b, &common_env).await;

    // Webhooks spread over both replicas, concurrently.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..300 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        let client = client.clone();
        let state = ["queued", "connected", "disconnected"][i % 3];
        let body = conversation_event(
            &format!("e-{i}"),
            &format!("q-{}", i % 5),
            &format!("c-{}", i / 3),
            state,
            now - 60_000 + i as i64,
        );
        sends.spawn(async move { (format!("e-{i}"), post(&client, addr, &body).await) });
    }
    // The same delivery to both replicas at the same moment: stored once.
    for i in 0..40 {
        let body = conversation_event(
            &format!("both-{i}"),
            "q-both",
            &format!("cb-{i}"),
            "queued",
            now - 30_000,
        );
        for addr in [a.addr, b.addr] {
            let (client, body) = (client.clone(), body.clone());
            sends.spawn(async move { (format!("both-{i}"), post(&client, addr, &body).await) });
        }
    }
    let mut acknowledged = HashSet::new();
    while let Some(sent) = sends.join_next().await {
        let (id, status) = sent.expect("sender");
        assert_eq!(status, 202, "{id} acknowledged");
        acknowledged.insert(id);
    }
    let stored: HashSet<String> = db.event_ids().await.expect("ids").into_iter().collect();
    assert_eq!(stored.len(), 361, "each event stored once");
    assert!(
        acknowledged.is_subset(&stored),
        "every acknowledged event is stored under its own id"
    );
    // Both wallboards show the same rates: the sums of what each replica took in.
    let in_rate = |snapshot: &serde_json::Value| snapshot["pipeline"]["in_per_second"].as_f64();
    get_json(&client, a.addr, "/api/v2/queues").await; // A publishes its own first
    let on_b = in_rate(&get_json(&client, b.addr, "/api/v2/queues").await);
    let on_a = in_rate(&get_json(&client, a.addr, "/api/v2/queues").await);
    let all = 361.0 / 60.0;
    for (replica, rate) in [("A", on_a), ("B", on_b)] {
        assert!(
            rate.is_some_and(|r| (r - all).abs() < 1e-6),
            "replica {replica} shows {rate:?} events/s, not {all}"
        );
    }

    a.child.kill().expect("SIGKILL replica A");
    a.child.wait().expect("reap replica A");

    // B takes over once the leases expire: every acknowledged event ends done or dead.
    wait_until(
        "replica B finished replica A's work",
        Duration::from_secs(30),
        || async {
            let counts = db.event_counts().await.expect("counts");
            counts.pending + counts.retrying + counts.processing == 0
        },
    )
    .await;
    let counts = db.event_counts().await.expect("counts");
    assert_eq!(counts.total, 361);
    assert_eq!(counts.done, 360, "{counts:?}");
    assert_eq!(
        counts.dead, 1,
        "the poison event is a dead letter: {counts:?}"
    );
    for id in &posted {
        let state = db.event_state(id).await.expect("state").expect("stored");
        assert_eq!(state.status, "done", "{id}");
    }

    // The statistics B shows equal a rebuild from the stored events.
    let live = queues(&client, b.addr).await;
    assert!(
        live.as_array().is_some_and(|q| q.len() == 7),
        "queues q-0..q-4, q-both, q-late: {live}"
    );
    let rebuilt =
        common::run_cli(&["rebuild-stats"], &[("GC_STATUS_DATABASE_URL", &database)]).await;
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert_eq!(
        queues(&client, b.addr).await,
        live,
        "statistics equal a rebuild"
    );

    // A replay from one replica (a second one running beside it) is processed once.
    let mut a2 = start_binary(&dir_a, &common_env).await;
    let letters = get_json(&client, a2.addr, "/api/v2/admin/dead-letters").await;
    assert_eq!(letters["total"], 1, "{letters}");
    let replay = client
        .post(format!(
            "http://{}/api/v2/admin/dead-letters/poison-1/replay",
            a2.addr
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("replay");
    assert!(replay.status().is_success(), "{}", replay.status());
    wait_until(
        "the replayed event is dead again",
        Duration::from_secs(20),
        || async { status_of(&db, "poison-1").await.as_deref() == Some("dead") },
    )
    .await;
    let state = db
        .event_state("poison-1")
        .await
        .expect("state")
        .expect("stored");
    assert_eq!(
        state.attempts, 1,
        "processed once after the replay: {state:?}"
    );
    let counts = db.event_counts().await.expect("counts");
    assert_eq!((counts.done, counts.dead), (360, 1), "{counts:?}");

    for replica in [&mut a2, &mut b] {
        replica.child.kill().expect("stop");
        let _ = replica.child.wait();
    }
}

#[tokio::test]
async fn replicas_starting_together_apply_the_migrations_once() {
    let database = new_postgres_database().await;
    let dir = temp_dir();
    let env = [
        ("GC_STATUS_DATABASE_URL", database.as_str()),
        ("GC_STATUS_HMAC_SECRETS", SECRET),
    ];
    let dirs: Vec<_> = (0..3).map(|i| dir.path().join(format!("r{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).expect("dir");
    }
    let mut replicas =
        futures_util::future::join_all(dirs.iter().map(|d| start_binary(d, &env))).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("connect");
    let (applied, versions): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(&mut conn)
    .await
    .expect("migrations");
    assert_eq!(applied, versions, "each migration recorded once");
    assert!(applied >= 1);
    for replica in &mut replicas {
        replica.child.kill().expect("stop");
        let _ = replica.child.wait();
    }
}

#[tokio::test]
async fn a_sqlite_database_copied_into_postgresql_carries_on_there() {
    use gc_status::server::domain::now_ms;
    // The file outlives the app: the copy reads it after the app stopped.
    let dir = temp_dir();
    let sqlite = spawn_on(&database_url(dir.path()), |_| {}).await;
    let now = now_ms();
    for i in 0..30 {
        let state = ["queued", "connected", "disconnected"][i % 3];
        let body = conversation_event(
            &format!("s-{i}"),
            &format!("q-{}", i % 3),
            &format!("c-{}", i / 3),
            state,
            now - 60_000 + i as i64,
        );
        assert_eq!(sqlite.post_signed(&body).await.status(), 202);
    }
    let unknown = r#"{"event":"v2.users.u1.presence","id":"presence-1","timestamp":"2026-11-30T10:00:00Z","data":{}}"#;
    assert_eq!(sqlite.post_signed(unknown).await.status(), 202);
    sqlite
        .worker
        .run_until_idle_at(now_ms())
        .await
        .expect("process");
    let before = (
        sqlite.snapshot().await["queues"].clone(),
        sqlite.db.event_counts().await.expect("counts"),
        sqlite.db.event_ids().await.expect("ids"),
    );
    assert_eq!(before.1.dead, 1);
    let sqlite_url = sqlite.database_url.clone();
    sqlite.stop().await.expect("stops");

    let postgres_url = new_postgres_database().await;
    let copy = |to: &str| {
        Command::new(env!("CARGO_BIN_EXE_gc-status"))
            .args(["copy-to-postgres", "--to", to])
            .env_clear()
            .env("GC_STATUS_DATABASE_URL", &sqlite_url)
            .output()
            .expect("run copy-to-postgres")
    };
    let output = copy(&postgres_url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("copied 31 events, 1 dead letters"),
        "{stdout}"
    );

    // A second copy into the same database changes nothing and says why.
    let again = copy(&postgres_url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let pg = spawn_on(&postgres_url, |_| {}).await;
    let mut queues = pg.snapshot().await["queues"].clone();
    let mut expected = before.0.clone();
    for list in [&mut queues, &mut expected] {
        for q in list.as_array_mut().into_iter().flatten() {
            if let Some(q) = q.as_object_mut() {
                // The clock moved, and the sampler has taken a sample since.
                q.remove("longest_waiting_ms");
                q.remove("history");
            }
        }
    }
    assert_eq!(queues, expected, "the same statistics");
    assert_eq!(pg.db.event_counts().await.expect("counts"), before.1);
    assert_eq!(
        pg.db.event_ids().await.expect("ids"),
        before.2,
        "same events, same order"
    );
    // A redelivery of a copied event is still a duplicate; a new event comes after them all.
    let redelivery = conversation_event("s-0", "q-0", "c-0", "queued", now - 60_000);
    let ack: serde_json::Value = pg
        .post_signed(&redelivery)
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(ack["duplicate"], true, "{ack}");
    assert_eq!(pg.post_signed(&simple_event("new-1")).await.status(), 202);
    let ids = pg.db.event_ids().await.expect("ids");
    assert_eq!(ids.len(), 32);
    assert_eq!(ids.last().map(String::as_str), Some("new-1"));
    // The dead letter came along, payload and all, and can be replayed.
    let letter = pg
        .db
        .get_dead_letter("presence-1")
        .await
        .expect("read")
        .expect("copied");
    assert_eq!(letter.payload.as_deref(), Some(unknown));
    pg.stop().await.expect("stops");
}

/// A PostgreSQL cluster of the test's own (`scripts/pg-cluster.sh`), for faults that must not
/// touch the shared one; removed when dropped.
struct OwnCluster {
    dir: std::path::PathBuf,
    /// Listen on 127.0.0.1 at this port, TLS only.
    tls_port: Option<u16>,
}

impl OwnCluster {
    fn script(&self, command: &str) -> String {
        let mut script = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/pg-cluster.sh"
        ));
        if let Some(port) = self.tls_port {
            script.env("TLS_PORT", port.to_string());
        }
        let output = script
            .arg(command)
            .arg(&self.dir)
            .output()
            .expect("run scripts/pg-cluster.sh");
        assert!(
            output.status.success(),
            "pg-cluster.sh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.script("stop");
    }
}

#[tokio::test]
async fn a_database_server_restart_answers_503_meanwhile_and_loses_nothing() {
    // Under /tmp: the server runs as `postgres`, which must reach the directory.
    let dir = tempfile::Builder::new()
        .prefix("gc-status-pg-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let cluster = OwnCluster {
        dir: dir.path().to_owned(),
        tls_port: None,
    };
    let server = cluster.script("start");
    let database = gc_status::server::store::create_test_database(&server)
        .await
        .expect("create a database");
    let app = spawn_on(&database, |c| c.store_timeout_ms = 1_000).await;
    assert_eq!(app.post_signed(&simple_event("before")).await.status(), 202);

    cluster.script("halt");
    let during = app.post_signed(&simple_event("during")).await;
    assert_eq!(
        during.status(),
        503,
        "not acknowledged while the server is down"
    );
    assert!(during.headers().contains_key("retry-after"));
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(ready.status(), 503);

    cluster.script("start");
    // The sender's retry is acknowledged once the server is back; nothing acknowledged is lost.
    wait_until(
        "the retry is acknowledged",
        Duration::from_secs(20),
        || async { app.post_signed(&simple_event("during")).await.status() == 202 },
    )
    .await;
    let ids = app.db.event_ids().await.expect("ids");
    assert_eq!(ids, ["before", "during"]);
    wait_until("ready again", Duration::from_secs(10), || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn postgresql_over_tls_is_used_as_the_url_says() {
    // A server that accepts TCP connections with TLS only, its certificate from a private CA.
    let dir = tempfile::Builder::new()
        .prefix("gc-status-pg-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cluster = OwnCluster {
        dir: dir.path().to_owned(),
        tls_port: Some(port),
    };
    let server = cluster.script("start");
    let database =
        gc_status::server::store::create_test_database(&format!("{server}?sslmode=require"))
            .await
            .expect("create a database over TLS");
    let name = database
        .split('/')
        .nth(3)
        .and_then(|rest| rest.split('?').next())
        .expect("the database name")
        .to_owned();
    let base = format!("postgres://gc_status@localhost:{port}/{name}");
    let root = dir.path().join("ca.crt");

    // Verified against that CA: webhooks are stored as usual.
    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", root.display());
    let app = spawn_on(&verified, |_| {}).await;
    assert_eq!(
        app.post_signed(&simple_event("over-tls")).await.status(),
        202
    );
    assert_eq!(app.db.event_ids().await.expect("ids"), ["over-tls"]);
    app.stop().await.expect("stops");

    // Without TLS the server refuses; verified against the system's roots (not that CA),
    // gc-status refuses the server. Either way the start stops with where it could not connect.
    for url in [
        format!("{base}?sslmode=disable"),
        format!("{base}?sslmode=verify-full"),
    ] {
        let mut config = gc_status::server::config::Config::for_database(url.as_str());
        config.hmac_secrets = vec![SECRET.into()];
        config.store_timeout_ms = 2_000;
        let err = gc_status::server::startup::Application::build(config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} is refused"));
        let message = format!("{err:#}");
        assert!(
            message.contains("cannot connect to PostgreSQL"),
            "{url}: {message}"
        );
    }
}
