//! Forwarding to a downstream sink with OAuth2 client-credentials tokens: real HTTP servers
//! on 127.0.0.1 play the token endpoint and the sink; the real application forwards to them.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Form, Json, Router,
};
use common::*;
use gc_status::server::{
    config::ForwardConfig, domain::now_ms, forward::token_source, oauth::TokenSource,
    store::DeliveryState,
};
use serde_json::{json, Value};

const CLIENT_ID: &str = "gc-status-forwarder";
const CLIENT_SECRET: &str = "sEcReT-cl1ent-s3cret-value";

/// How the fake sink answers.
#[derive(Clone, Debug)]
enum SinkMode {
    Accept,
    /// Answers with this status (and `Retry-After`, when given) and a body echoing the
    /// request's `Authorization` header, as a careless sink might.
    Fail(u16, Option<u64>),
    /// Takes the request (and keeps it) but answers only after this many milliseconds.
    Slow(u64),
}

/// One request the sink received.
#[derive(Clone, Debug)]
struct Received {
    key: String,
    token: Option<String>,
    at: Instant,
    status: u16,
    body: Value,
}

/// The token endpoint and the sink, with what they saw.
#[derive(Default)]
struct Downstream {
    token_requests: AtomicU64,
    /// Seconds each issued token lives.
    token_lifetime: AtomicU64,
    /// Milliseconds the token endpoint takes to answer.
    token_delay_ms: AtomicU64,
    /// Token endpoint answers 503 while set.
    token_down: Mutex<bool>,
    /// token → when it expires.
    issued: Mutex<HashMap<String, Instant>>,
    /// Tokens the sink refuses from now on (revoked).
    revoked: Mutex<Vec<String>>,
    mode: Mutex<Option<SinkMode>>,
    received: Mutex<Vec<Received>>,
}

impl Downstream {
    fn set_mode(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = Some(mode);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Keys of the requests the sink accepted, with how many times each.
    fn delivered(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.received().into_iter().filter(|r| r.status < 300) {
            *counts.entry(r.key).or_insert(0) += 1;
        }
        counts
    }

    fn count_status(&self, status: u16) -> usize {
        self.received()
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

async fn token_endpoint(
    State(down): State<Arc<Downstream>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let n = down.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let delay = down.token_delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if *down.token_down.lock().unwrap() {
        return (StatusCode::SERVICE_UNAVAILABLE, "token service down").into_response();
    }
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized || form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "bad credentials"})),
        )
            .into_response();
    }
    assert_eq!(
        form.get("audience").map(String::as_str),
        Some("https://sink.test")
    );
    assert_eq!(form.get("scope").map(String::as_str), Some("events:write"));
    let lifetime = down.token_lifetime.load(Ordering::SeqCst).max(1);
    let token = format!("tok-{n}-{}", rand_suffix());
    down.issued.lock().unwrap().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime}))
        .into_response()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms() as u64);
    h.finish()
}

async fn sink_endpoint(
    State(down): State<Arc<Downstream>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mode = down
        .mode
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(SinkMode::Accept);
    let token_ok = match &token {
        // Without OAuth configured, no token is expected.
        None => down.token_requests.load(Ordering::SeqCst) == 0,
        Some(t) => {
            let valid = down
                .issued
                .lock()
                .unwrap()
                .get(t)
                .is_some_and(|expires| Instant::now() < *expires);
            valid && !down.revoked.lock().unwrap().contains(t)
        }
    };
    let (status, response) = if !token_ok {
        (401, StatusCode::UNAUTHORIZED.into_response())
    } else {
        match mode {
            SinkMode::Accept => (202, StatusCode::ACCEPTED.into_response()),
            SinkMode::Slow(ms) => {
                down.received.lock().unwrap().push(Received {
                    key,
                    token,
                    at: Instant::now(),
                    status: 202,
                    body,
                });
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return StatusCode::ACCEPTED.into_response();
            }
            SinkMode::Fail(code, retry_after) => {
                let status = StatusCode::from_u16(code).unwrap();
                let body = format!(
                    "{{\"error\": \"refused\", \"echo\": \"{}\"}}",
                    authorization.clone().unwrap_or_default()
                );
                let mut response = (status, body).into_response();
                if let Some(secs) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", secs.to_string().parse().unwrap());
                }
                (code, response)
            }
        }
    };
    down.received.lock().unwrap().push(Received {
        key,
        token,
        at: Instant::now(),
        status,
        body,
    });
    response
}

/// Starts the token endpoint (`/token`) and the sink (`/sink`) on a random port.
async fn downstream(token_lifetime_secs: u64) -> (Arc<Downstream>, SocketAddr) {
    downstream_on("127.0.0.1:0", token_lifetime_secs).await
}

/// [`downstream`] on a given address.
async fn downstream_on(addr: &str, token_lifetime_secs: u64) -> (Arc<Downstream>, SocketAddr) {
    let down = Arc::new(Downstream::default());
    down.token_lifetime
        .store(token_lifetime_secs, Ordering::SeqCst);
    let app = Router::new()
        .route("/token", post(token_endpoint))
        .route("/sink", post(sink_endpoint))
        .with_state(down.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the downstream");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (down, addr)
}

fn forward_config(addr: SocketAddr) -> impl FnOnce(&mut gc_status::server::config::Config) {
    move |config| {
        config.worker.workers = 2;
        config.worker.retry_base_ms = 20;
        config.worker.retry_cap_ms = 200;
        config.worker.max_attempts = 3;
        let f = &mut config.forward;
        f.sink_url = Some(format!("http://{addr}/sink"));
        f.sink_timeout_ms = 2000;
        f.oauth_token_url = Some(format!("http://{addr}/token"));
        f.oauth_client_id = Some(CLIENT_ID.into());
        f.oauth_client_secret = Some(CLIENT_SECRET.into());
        f.oauth_scope = Some("events:write".into());
        f.oauth_audience = Some("https://sink.test".into());
        f.sink_pause_after = 3;
        f.sink_cooldown_secs = 1;
    }
}

async fn send_events(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let event = conversation_event(&id, "q-f", &id, "queued", now_ms());
        assert_eq!(app.post_signed(&event).await.status(), 202);
        ids.push(id);
    }
    ids
}

async fn wait_delivered(down: &Downstream, ids: &[String], timeout: Duration) {
    wait_until("every event is delivered", timeout, || async {
        let delivered = down.delivered();
        ids.iter().all(|id| delivered.contains_key(id))
    })
    .await;
}

/// Waits until gc-status has recorded the delivery of `id` (the sink sees the request before
/// gc-status commits its answer).
async fn wait_recorded(app: &TestApp, id: &str) {
    wait_until(
        "the delivery is recorded",
        Duration::from_secs(10),
        || async {
            app.db
                .delivery_state(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.state == "done")
        },
    )
    .await;
}

#[tokio::test]
async fn many_events_share_one_token_and_arrive_as_normalized_records() {
    let (down, addr) = downstream(3600).await;
    let app = spawn_app_with(forward_config(addr)).await;
    let ids = send_events(&app, "many", 60).await;
    wait_delivered(&down, &ids, Duration::from_secs(20)).await;

    assert_eq!(
        down.token_requests.load(Ordering::SeqCst),
        1,
        "one token for all"
    );
    let received = down.received();
    assert!(received.iter().all(|r| r.status == 202));
    assert_eq!(received.len(), 60, "each event sent once");
    let first = received.iter().find(|r| r.key == "many-0").expect("many-0");
    assert!(first
        .token
        .as_deref()
        .is_some_and(|t| t.starts_with("tok-1-")));
    assert_eq!(first.body["id"], "many-0");
    assert_eq!(first.body["type"], "conversation:updated");
    assert_eq!(first.body["queueId"], "q-f");
    assert_eq!(first.body["conversationId"], "many-0");
    assert_eq!(first.body["state"], "queued");
    assert!(first.body["queuedAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        first.body["payload"]["data"]["queueId"], "q-f",
        "the original payload"
    );
    // Statistics do not depend on forwarding, and each event records that it is forwarded.
    assert_eq!(app.queue("q-f").await["waiting"], 60);
    wait_recorded(&app, "many-7").await;
    let DeliveryState {
        state, attempts, ..
    } = app.db.delivery_state("many-7").await.unwrap().unwrap();
    assert_eq!((state.as_str(), attempts), ("done", 1));
    wait_until(
        "the strip shows nothing waiting",
        Duration::from_secs(5),
        || async { app.snapshot().await["pipeline"]["forwarding"]["waiting"] == 0 },
    )
    .await;
    let snapshot = app.snapshot().await;
    assert!(snapshot["pipeline"]["forwarding"]["delivered_per_second"].as_f64() > Some(0.0));
    assert!(snapshot["pipeline"]["forwarding"]["paused"].is_null());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("gc_status_forward_delivered_total"),
        "{metrics}"
    );
    assert!(metrics.contains("gc_status_oauth_token_refreshes_total"));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_token_is_renewed_before_it_expires() {
    // Two-second tokens with the default one-minute margin: renewed half-way.
    let (down, addr) = downstream(2).await;
    let app = spawn_app_with(forward_config(addr)).await;
    let mut ids = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        ids.extend(send_events(&app, &format!("renew-{}", ids.len()), 1).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_delivered(&down, &ids, Duration::from_secs(20)).await;
    assert_eq!(
        down.count_status(401),
        0,
        "no delivery ever carried an expired token"
    );
    let requests = down.token_requests.load(Ordering::SeqCst);
    assert!(
        (3..=6).contains(&requests),
        "renewed about every second: {requests}"
    );
    app.stop().await.expect("clean stop");
}

fn token_settings(addr: SocketAddr) -> ForwardConfig {
    let mut config = gc_status::server::config::Config::for_database("sqlite::memory:");
    forward_config(addr)(&mut config);
    config.forward
}

#[tokio::test]
async fn fifty_workers_at_expiry_make_one_token_request() {
    let (down, addr) = downstream(3600).await;
    down.token_delay_ms.store(300, Ordering::SeqCst);
    let source = Arc::new(
        token_source(&token_settings(addr), reqwest::Client::new())
            .expect("valid settings")
            .expect("a token source"),
    );
    let ask = |source: Arc<TokenSource>| async move { source.token().await.expect("a token") };
    let tokens: Vec<_> = futures_join((0..50).map(|_| ask(source.clone()))).await;
    assert_eq!(down.token_requests.load(Ordering::SeqCst), 1);
    assert!(tokens.iter().all(|t| t.secret() == tokens[0].secret()));

    // All fifty see it rejected at once: still one renewal.
    let rejected = tokens[0].clone();
    let renewed: Vec<_> = futures_join((0..50).map(|_| {
        let (source, rejected) = (source.clone(), rejected.clone());
        async move { source.renew_rejected(&rejected).await.expect("a token") }
    }))
    .await;
    assert_eq!(down.token_requests.load(Ordering::SeqCst), 2);
    assert!(renewed.iter().all(|t| t.secret() == renewed[0].secret()));
    assert_ne!(renewed[0].secret(), rejected.secret());

    // A failing endpoint: the waiting callers share the failure instead of each asking.
    *down.token_down.lock().unwrap() = true;
    let failures: Vec<_> = futures_join((0..50).map(|_| {
        let (source, rejected) = (source.clone(), renewed[0].clone());
        async move { source.renew_rejected(&rejected).await }
    }))
    .await;
    assert!(failures.iter().all(Result::is_err));
    assert_eq!(down.token_requests.load(Ordering::SeqCst), 3);
    let message = failures[0].as_ref().unwrap_err().to_string();
    assert!(message.contains("token endpoint"), "{message}");
    assert!(!message.contains(CLIENT_SECRET));
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_retries_at_once() {
    let (down, addr) = downstream(3600).await;
    let app = spawn_app_with(forward_config(addr)).await;
    let first = send_events(&app, "before", 1).await;
    wait_delivered(&down, &first, Duration::from_secs(10)).await;
    // The sink revokes the token gc-status holds (a key rotation, say).
    let old = down.received()[0].token.clone().expect("a token");
    down.revoked.lock().unwrap().push(old.clone());

    let ids = send_events(&app, "after", 1).await;
    wait_delivered(&down, &ids, Duration::from_secs(10)).await;
    assert_eq!(down.token_requests.load(Ordering::SeqCst), 2, "one renewal");
    assert_eq!(down.count_status(401), 1, "one refusal");
    wait_recorded(&app, "after-0").await;
    let DeliveryState {
        state,
        attempts,
        errors,
        ..
    } = app.db.delivery_state("after-0").await.unwrap().unwrap();
    assert_eq!(
        (state.as_str(), attempts),
        ("done", 1),
        "retried within the attempt"
    );
    assert!(errors.is_empty());
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (down, addr) = downstream(3600).await;
    down.set_mode(SinkMode::Fail(503, Some(2)));
    let app = spawn_app_with(forward_config(addr)).await;
    let ids = send_events(&app, "later", 1).await;
    wait_until("the first attempt", Duration::from_secs(10), || async {
        down.count_status(503) == 1
    })
    .await;
    down.set_mode(SinkMode::Accept);
    wait_delivered(&down, &ids, Duration::from_secs(10)).await;
    let received = down.received();
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    wait_recorded(&app, "later-0").await;
    let DeliveryState {
        state,
        attempts,
        errors,
        ..
    } = app.db.delivery_state("later-0").await.unwrap().unwrap();
    assert_eq!((state.as_str(), attempts), ("done", 2));
    assert!(errors[0]["error"].as_str().unwrap().contains("503"));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_refused_record_is_dead_lettered_at_once_and_replayed_once_fixed() {
    let (down, addr) = downstream(3600).await;
    down.set_mode(SinkMode::Fail(400, None));
    let app = spawn_app_with(forward_config(addr)).await;
    send_events(&app, "bad", 1).await;
    wait_until("the dead letter", Duration::from_secs(10), || async {
        app.snapshot().await["pipeline"]["dead"] == 1
    })
    .await;
    assert_eq!(down.received().len(), 1, "no retry of a permanent refusal");
    let letter = app.admin_get("/api/v2/admin/dead-letters/bad-0").await;
    assert_eq!(letter["stage"], "sink");
    let error = letter["last_error"].as_str().unwrap();
    assert!(
        error.contains("400 Bad Request") && error.contains("refused"),
        "{error}"
    );
    assert!(
        error.contains("[token]") && !error.contains("tok-"),
        "token blanked: {error}"
    );
    // The statistics took the event all the same.
    assert_eq!(app.queue("q-f").await["waiting"], 1);
    let sink_only = app.admin_get("/api/v2/admin/dead-letters?stage=sink").await;
    assert_eq!(sink_only["total"], 1);

    // The sink is fixed; the letter is replayed and delivered once.
    down.set_mode(SinkMode::Accept);
    let replay = app
        .client
        .post(app.url("/api/v2/admin/dead-letters/bad-0/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    wait_until(
        "the delivery is recorded",
        Duration::from_secs(10),
        || async {
            app.db
                .delivery_state("bad-0")
                .await
                .unwrap()
                .is_some_and(|d| d.state == "done")
        },
    )
    .await;
    assert_eq!(down.delivered()["bad-0"], 1);
    assert_eq!(app.snapshot().await["pipeline"]["dead"], 0);
    assert_eq!(
        app.queue("q-f").await["waiting"],
        1,
        "statistics applied once"
    );
    let DeliveryState { errors, .. } = app.db.delivery_state("bad-0").await.unwrap().unwrap();
    assert_eq!(errors.len(), 1, "the refusal stays on record");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_sink_outage_pauses_forwarding_and_loses_nothing() {
    let (down, addr) = downstream(3600).await;
    down.set_mode(SinkMode::Fail(503, None));
    let app = spawn_app_with(forward_config(addr)).await;
    let ids = send_events(&app, "outage", 40).await;
    wait_until("forwarding pauses", Duration::from_secs(10), || async {
        !app.snapshot().await["pipeline"]["forwarding"]["paused"].is_null()
    })
    .await;
    let paused = app.snapshot().await["pipeline"]["forwarding"].clone();
    assert!(
        paused["paused"]["reason"].as_str().unwrap().contains("503"),
        "{paused}"
    );
    wait_until("every event waits", Duration::from_secs(5), || async {
        app.snapshot().await["pipeline"]["forwarding"]["waiting"] == 40
    })
    .await;
    assert!(app.metrics().await.contains("gc_status_forward_paused 1"));
    // The wallboard says so, with the reason.
    let page = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Forwarding paused"), "{page}");
    assert!(page.contains("503 Service Unavailable"));
    // Down for a while longer: two more cool-downs, each probing one event.
    let at_pause = down.count_status(503);
    wait_until("two probes fail", Duration::from_secs(10), || async {
        down.count_status(503) >= at_pause + 2
    })
    .await;
    let failed_while_down = down.count_status(503);
    assert!(
        failed_while_down < 40,
        "paused instead of trying every event: {failed_while_down} attempts"
    );
    down.set_mode(SinkMode::Accept);
    wait_delivered(&down, &ids, Duration::from_secs(20)).await;
    assert!(
        down.delivered().values().all(|n| *n == 1),
        "each delivered exactly once"
    );
    let snapshot = app.snapshot().await;
    assert_eq!(snapshot["pipeline"]["dead"], 0, "nothing dead-lettered");
    assert!(snapshot["pipeline"]["forwarding"]["paused"].is_null());
    let metrics = app.metrics().await;
    assert!(metrics.contains("gc_status_forward_paused 0"));
    assert!(metrics.contains(r#"gc_status_forward_failures_total{class="transient"}"#));
    assert!(metrics.contains("gc_status_forward_pauses_total"));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn incomplete_oauth_settings_are_refused_with_what_to_set() {
    let dir = temp_dir();
    let mut config = gc_status::server::config::Config::for_database(database_url(dir.path()));
    config.hmac_secrets = vec![SECRET.into()];
    config.forward.sink_url = Some("http://127.0.0.1:9/sink".into());
    config.forward.oauth_token_url = Some("http://127.0.0.1:9/token".into());
    let err = gc_status::server::startup::Application::build(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("GC_STATUS_OAUTH_CLIENT_ID"), "{err}");
}

#[tokio::test]
async fn the_client_secret_and_tokens_never_reach_the_log() {
    let (down, addr) = downstream(3600).await;
    // The token endpoint is down at first, the sink refuses one token and then one record.
    *down.token_down.lock().unwrap() = true;
    let dir = temp_dir();
    let secret_env = [
        ("GC_STATUS_HMAC_SECRETS", SECRET),
        ("GC_STATUS_ADMIN_TOKEN", ADMIN_TOKEN),
        ("GC_STATUS_RETRY_BASE_MS", "50"),
        ("GC_STATUS_RETRY_CAP_MS", "200"),
        ("GC_STATUS_MAX_ATTEMPTS", "50"),
        ("GC_STATUS_SINK_COOLDOWN_SECS", "1"),
        ("GC_STATUS_OAUTH_CLIENT_ID", CLIENT_ID),
        ("GC_STATUS_OAUTH_CLIENT_SECRET", CLIENT_SECRET),
        ("GC_STATUS_OAUTH_SCOPE", "events:write"),
        ("GC_STATUS_OAUTH_AUDIENCE", "https://sink.test"),
        ("RUST_LOG", "debug"),
    ];
    let sink = format!("http://{addr}/sink");
    let token_url = format!("http://{addr}/token");
    let mut env: Vec<(&str, &str)> = secret_env.to_vec();
    env.push(("GC_STATUS_SINK_URL", &sink));
    env.push(("GC_STATUS_OAUTH_TOKEN_URL", &token_url));
    let mut binary = start_binary(dir.path(), &env).await;
    let client = reqwest::Client::new();
    let post = |id: &str| {
        let body = conversation_event(id, "q-s", id, "queued", now_ms());
        let signature = gc_status::server::ingest::auth::sign_hex(SECRET, body.as_bytes());
        client
            .post(format!("http://{}{WEBHOOK_PATH}", binary.addr))
            .header("content-type", "application/json")
            .header("x-gc-signature", signature)
            .body(body)
            .send()
    };
    assert_eq!(post("log-1").await.unwrap().status(), 202);
    wait_until(
        "a token request failed",
        Duration::from_secs(10),
        || async { down.token_requests.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    *down.token_down.lock().unwrap() = false;
    wait_delivered(&down, &["log-1".to_owned()], Duration::from_secs(20)).await;
    let token = down.received().last().unwrap().token.clone().unwrap();
    down.revoked.lock().unwrap().push(token.clone());
    down.set_mode(SinkMode::Fail(422, None));
    assert_eq!(post("log-2").await.unwrap().status(), 202);
    wait_until(
        "the refusal is a dead letter",
        Duration::from_secs(10),
        || async {
            client
                .get(format!(
                    "http://{}/api/v2/admin/dead-letters/log-2",
                    binary.addr
                ))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    assert_eq!(down.count_status(422), 1);
    let _ = binary.child.kill();
    let _ = binary.child.wait();
    let log = std::fs::read_to_string(&binary.log).expect("the log");
    assert!(
        log.contains("forwarding"),
        "the log has forwarding lines: {log}"
    );
    assert!(log.contains("token"), "{log}");
    assert!(
        !log.contains(CLIENT_SECRET),
        "the client secret leaked into the log"
    );
    for issued in down.issued.lock().unwrap().keys() {
        assert!(
            !log.contains(issued.as_str()),
            "a token leaked into the log"
        );
    }
}

#[tokio::test]
async fn a_sink_that_does_not_answer_in_time_gets_the_record_again_under_the_same_key() {
    let (down, addr) = downstream(3600).await;
    down.set_mode(SinkMode::Slow(3000));
    let app = spawn_app_with(|config| {
        forward_config(addr)(config);
        config.forward.sink_timeout_ms = 300;
    })
    .await;
    send_events(&app, "slow", 1).await;
    wait_until("the first attempt", Duration::from_secs(10), || async {
        !down.received().is_empty()
    })
    .await;
    down.set_mode(SinkMode::Accept);
    wait_until("delivered", Duration::from_secs(10), || async {
        app.db
            .delivery_state("slow-0")
            .await
            .unwrap()
            .is_some_and(|d| d.state == "done")
    })
    .await;
    let DeliveryState {
        attempts, errors, ..
    } = app.db.delivery_state("slow-0").await.unwrap().unwrap();
    assert_eq!(attempts, 2);
    let error = errors[0]["error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{error}");
    let keys: Vec<String> = down.received().into_iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        ["slow-0", "slow-0"],
        "resent with the same Idempotency-Key"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_sink_that_refuses_connections_pauses_forwarding_until_it_listens() {
    // A port nobody listens on yet: connections are refused, as during a deploy of the sink.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let app = spawn_app_with(|config| {
        forward_config(addr)(config);
        // No OAuth: the sink is called without a token.
        config.forward.oauth_token_url = None;
        config.forward.oauth_client_id = None;
        config.forward.oauth_client_secret = None;
    })
    .await;
    let ids = send_events(&app, "refused", 5).await;
    wait_until("forwarding pauses", Duration::from_secs(10), || async {
        !app.snapshot().await["pipeline"]["forwarding"]["paused"].is_null()
    })
    .await;
    let reason = app.snapshot().await["pipeline"]["forwarding"]["paused"]["reason"].clone();
    assert!(
        reason.as_str().unwrap().contains("cannot connect"),
        "{reason}"
    );
    let (down, _) = downstream_on(&addr.to_string(), 3600).await;
    wait_delivered(&down, &ids, Duration::from_secs(15)).await;
    assert!(down.delivered().values().all(|n| *n == 1));
    assert!(
        down.received().iter().all(|r| r.token.is_none()),
        "no token without OAuth"
    );
    assert_eq!(app.snapshot().await["pipeline"]["dead"], 0);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn events_processed_before_the_sink_was_configured_are_forwarded_on_request() {
    let dir = temp_dir();
    let url = fresh_database_url(dir.path()).await;
    // First without a sink: processed, not queued for forwarding.
    let app = spawn_on(&url, |_| {}).await;
    let early = send_events(&app, "early", 3).await;
    app.worker
        .run_until_idle_at(now_ms())
        .await
        .expect("processed");
    assert!(app.db.delivery_state("early-0").await.unwrap().is_none());
    app.stop().await.expect("clean stop");

    let (down, addr) = downstream(3600).await;
    let app = spawn_on(&url, forward_config(addr)).await;
    let late = send_events(&app, "late", 1).await;
    wait_delivered(&down, &late, Duration::from_secs(10)).await;
    assert!(
        !down.delivered().contains_key("early-0"),
        "not forwarded unasked"
    );

    // The operator asks for the last day.
    let since = rfc3339(now_ms() - 86_400_000);
    let output = common::run_cli(
        &["forward", "--since", &since],
        &[("GC_STATUS_DATABASE_URL", &url)],
    )
    .await;
    let text = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}{errors}");
    assert!(text.contains("queued 3 processed events"), "{text}");
    wait_delivered(&down, &early, Duration::from_secs(10)).await;
    assert!(down.delivered().values().all(|n| *n == 1), "each once");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_lone_event_outlives_an_outage_longer_than_its_attempts() {
    // Three attempts, but ten failures before a pause: a lone event must not run out of
    // attempts while the sink is down.
    let (down, addr) = downstream(3600).await;
    down.set_mode(SinkMode::Fail(503, None));
    let app = spawn_app_with(|config| {
        forward_config(addr)(config);
        config.forward.sink_pause_after = 10;
    })
    .await;
    let ids = send_events(&app, "lone", 1).await;
    wait_until("forwarding pauses", Duration::from_secs(10), || async {
        !app.snapshot().await["pipeline"]["forwarding"]["paused"].is_null()
    })
    .await;
    // Attempts, then a cool-down or more with their probes.
    wait_until(
        "attempts and probes went on",
        Duration::from_secs(10),
        || async { down.count_status(503) >= 4 },
    )
    .await;
    assert_eq!(
        app.snapshot().await["pipeline"]["dead"],
        0,
        "not dead-lettered"
    );
    down.set_mode(SinkMode::Accept);
    wait_delivered(&down, &ids, Duration::from_secs(10)).await;
    assert_eq!(app.snapshot().await["pipeline"]["dead"], 0);
    wait_recorded(&app, "lone-0").await;
    let DeliveryState {
        state, attempts, ..
    } = app.db.delivery_state("lone-0").await.unwrap().unwrap();
    assert_eq!(state, "done");
    assert!(
        attempts <= 3,
        "the outage used no attempt beyond the allowed: {attempts}"
    );
    app.stop().await.expect("clean stop");
}
