//! Test harness: the real application on a random port with a fresh database: a SQLite file,
//! or, with `GC_STATUS_TEST_BACKEND=postgres`, a new database on the PostgreSQL server
//! `GC_STATUS_TEST_POSTGRES` names (the same suite then runs against that backend;
//! `scripts/test.sh` runs it both ways).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod genesys;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use gc_status::server::{
    config::Config, ingest::auth::sign_hex, startup::Application, store::Db, worker::Worker,
};
use tokio::{sync::oneshot, task::JoinHandle};

pub const SECRET: &str = "test-secret-current";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const WEBHOOK_PATH: &str = "/api/v2/webhooks/gc-status";

/// A fresh directory under the target dir, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gc-status-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a temp dir under the target dir")
}

pub fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("gc-status.db").display())
}

/// The PostgreSQL server for tests (`GC_STATUS_TEST_POSTGRES`), if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("GC_STATUS_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Whether the suite runs against PostgreSQL (`GC_STATUS_TEST_BACKEND=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("GC_STATUS_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A new, empty PostgreSQL database for a test that needs one whatever the backend under
/// test (several replicas, the copy from SQLite).
pub async fn new_postgres_database() -> String {
    let server = postgres_server().expect(
        "GC_STATUS_TEST_POSTGRES must name a PostgreSQL server for this test: \
         scripts/test.sh starts a throwaway one (scripts/pg-cluster.sh start DIR prints its URL)",
    );
    gc_status::server::store::create_test_database(&server)
        .await
        .expect("create a PostgreSQL test database")
}

/// A URL for a new, empty database on the backend under test (a file in `dir` for SQLite).
pub async fn fresh_database_url(dir: &Path) -> String {
    if on_postgres() {
        new_postgres_database().await
    } else {
        database_url(dir)
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: Db,
    pub worker: Worker,
    pub client: reqwest::Client,
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// Starts the app with HMAC authentication (secret [`SECRET`]) on a new database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app on a new database (of the backend under test) after `configure` adjusts
/// the defaults.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = temp_dir();
    let mut app = spawn_on(&fresh_database_url(dir.path()).await, configure).await;
    app._dir = Some(dir);
    app
}

/// Starts the app on a new SQLite file whatever the backend under test: for what only SQLite
/// has (its file, its locks, its size limit).
pub async fn spawn_sqlite_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = temp_dir();
    let mut app = spawn_on(&database_url(dir.path()), configure).await;
    app._dir = Some(dir);
    app
}

/// Starts the app on an existing database URL.
pub async fn spawn_on(database_url: &str, configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config::for_database(database_url);
    config.hmac_secrets = vec![SECRET.into()];
    config.admin_token = Some(ADMIN_TOKEN.into());
    // Tests drive processing by hand (`worker().run_batch`) unless they ask for workers.
    config.worker.workers = 0;
    // Tests read the status right after changing it; the cache has a test of its own.
    config.status_cache_ms = 0;
    configure(&mut config);
    let app = Application::build(config)
        .await
        .expect("the application starts");
    let addr = app.local_addr();
    let db = app.db();
    let worker = app.worker();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        db,
        worker,
        client: reqwest::Client::new(),
        database_url: database_url.to_owned(),
        stop: Some(stop),
        server: Some(server),
        _dir: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs `body` to the webhook route as JSON with the given extra headers.
    pub async fn post_raw(&self, body: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(WEBHOOK_PATH))
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the request is answered")
    }

    /// POSTs `body` signed with [`SECRET`].
    pub async fn post_signed(&self, body: &str) -> reqwest::Response {
        let signature = sign_hex(SECRET, body.as_bytes());
        self.post_raw(body, &[("x-gc-signature", &signature)]).await
    }

    /// The status snapshot from `GET /api/v2/queues`.
    pub async fn snapshot(&self) -> serde_json::Value {
        self.client
            .get(self.url("/api/v2/queues"))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("answered")
            .text()
            .await
            .expect("text")
    }

    /// An admin API `GET` with the admin token, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON")
    }

    /// One queue's statistics from the snapshot (`null` when the queue is unknown).
    pub async fn queue(&self, queue_id: &str) -> serde_json::Value {
        self.snapshot().await["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .find(|q| q["queue_id"] == queue_id)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    pub async fn stored_count(&self) -> usize {
        self.db.event_ids().await.expect("read ids").len()
    }

    /// Graceful shutdown, as on SIGTERM; returns the server's result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("the server task does not panic"),
            None => Ok(()),
        }
    }
}

/// A simple event with the given id.
pub fn simple_event(id: &str) -> String {
    format!(
        r#"{{"event":"conversation:updated","id":"{id}","timestamp":"2026-11-29T10:00:00Z","data":{{"state":"queued","queueId":"q-1","conversationId":"{id}"}}}}"#
    )
}

/// The release binary built for these tests, started with only the given environment.
pub struct RunningBinary {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Drop for RunningBinary {
    /// A test that fails before stopping its server does not leave the process running: it is
    /// killed and reaped here (a server the test already stopped is left alone).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the real `gc-status` binary on a free port and waits until `/readyz` answers.
pub async fn start_binary(dir: &Path, env: &[(&str, &str)]) -> RunningBinary {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let log = dir.join(format!("server-{port}.log"));
    let out = std::fs::File::create(&log).expect("create the log file");
    let child = Command::new(env!("CARGO_BIN_EXE_gc-status"))
        .env_clear()
        .env("LEPTOS_SITE_ADDR", addr.to_string())
        .env("GC_STATUS_DATABASE_URL", database_url(dir))
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(out.try_clone().expect("share the log file"))
        .stderr(out)
        .spawn()
        .expect("start the gc-status binary");
    let client = reqwest::Client::new();
    wait_until("the binary is ready", Duration::from_secs(30), || async {
        client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    RunningBinary { child, addr, log }
}

/// Runs the `gc-status` CLI with only `env` and waits for it off the test's runtime thread:
/// blocking that thread would freeze the in-process app mid-transaction, holding the very
/// locks the command waits for.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gc-status"));
    command.args(args).env_clear().envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the CLI's thread")
        .expect("run the CLI")
}

/// Polls `condition` until it holds; fails the test after `timeout`. For conditions another
/// process brings about, where there is nothing to await.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// RFC 3339 text for epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .expect("a valid time")
        .to_string()
}

/// A `conversation:updated` event moving `conversation` in `queue` to `state` at `at_ms`.
pub fn conversation_event(
    id: &str,
    queue: &str,
    conversation: &str,
    state: &str,
    at_ms: i64,
) -> String {
    format!(
        r#"{{"event":"conversation:updated","id":"{id}","timestamp":"{}","data":{{"state":"{state}","queueId":"{queue}","conversationId":"{conversation}","queueName":"Queue {queue}"}}}}"#,
        rfc3339(at_ms)
    )
}

/// A Genesys detail event (`acd.start` / `acd.end`) in the notification envelope.
pub fn acd_event(
    phase: &str,
    queue: &str,
    conversation: &str,
    at_ms: i64,
    outcome: Option<&str>,
) -> String {
    let outcome = outcome
        .map(|o| format!(r#","acdOutcome":"{o}""#))
        .unwrap_or_default();
    format!(
        r#"{{"topicName":"v2.detail.events.conversation.{conversation}.acd.{phase}","version":"2","eventBody":{{"eventTime":{at_ms},"conversationId":"{conversation}","queueId":"{queue}","mediaType":"VOICE"{outcome}}}}}"#
    )
}
