//! Processing: the real worker against a real SQLite file — retries, dead letters, replay,
//! leases, statistics, admin API, status API and metrics.

mod common;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};

use common::*;
use gc_status::server::{
    domain::{interpret::Rules, now_ms, ClaimedEvent, Effect, Outcome, ProcessError},
    rates::RateMeter,
    worker::{retry::Backoff, Processor, StatsProcessor, Worker, WorkerSettings},
};
use serde_json::{json, Value};

const BASE_MS: i64 = 1_000;

fn settings(max_attempts: u32) -> WorkerSettings {
    WorkerSettings {
        workers: 0,
        max_attempts,
        backoff: Backoff {
            base: Duration::from_millis(BASE_MS as u64),
            cap: Duration::from_millis(60_000),
        },
        lease: Duration::from_secs(30),
        batch: 100,
        retention: Duration::from_secs(7 * 86_400),
        poll: Duration::from_millis(50),
        grace: Duration::from_secs(1),
        max_waiting: Duration::from_secs(4 * 3600),
    }
}

/// Fails with a transient error the first `failures` times, then interprets normally.
struct FlakyProcessor {
    failures: u32,
    calls: AtomicU32,
}

impl Processor for FlakyProcessor {
    fn process(&self, event: &ClaimedEvent) -> Result<Effect, ProcessError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= self.failures {
            return Err(ProcessError::Transient(format!(
                "downstream timed out (call {call})"
            )));
        }
        StatsProcessor {
            rules: Rules::default(),
        }
        .process(event)
    }
}

fn flaky_worker(app: &TestApp, failures: u32, max_attempts: u32) -> Worker {
    Worker::new(
        app.db.clone(),
        Arc::new(FlakyProcessor {
            failures,
            calls: AtomicU32::new(0),
        }),
        settings(max_attempts),
        Arc::new(RateMeter::default()),
    )
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn transient_failures_back_off_then_dead_letter_with_every_error() {
    let app = spawn_app().await;
    let worker = flaky_worker(&app, u32::MAX, 3);
    app.post_signed(&conversation_event("f-1", "q1", "c1", "queued", now_ms()))
        .await;
    // Work times are taken after the post: an event is due from its receive time on.
    let t0 = now_ms();

    let mut now = t0;
    for attempt in 1..=2u32 {
        assert_eq!(worker.run_batch(7, now).await.expect("batch"), 1);
        let state = app.db.event_state("f-1").await.expect("read").expect("row");
        assert_eq!(state.status, "pending", "attempt {attempt}");
        assert_eq!(state.attempts, i64::from(attempt));
        assert_eq!(state.errors.len(), attempt as usize);
        // Full jitter: somewhere in [0, base * 2^(attempt-1)].
        let bound = BASE_MS << (attempt - 1);
        let delay = state.next_attempt_at - now;
        assert!(
            (0..=bound).contains(&delay),
            "attempt {attempt}: delay {delay} not in 0..={bound}"
        );
        if delay > 0 {
            assert_eq!(
                worker.run_batch(7, now).await.expect("batch"),
                0,
                "not due before its time"
            );
        }
        now = state.next_attempt_at;
    }
    assert_eq!(worker.run_batch(7, now).await.expect("batch"), 1);

    let state = app.db.event_state("f-1").await.expect("read").expect("row");
    assert_eq!(state.status, "dead");
    let (status, letter) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters/f-1",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(letter["attempts"], 3);
    let errors = letter["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3);
    assert!(errors[0]["error"]
        .as_str()
        .expect("text")
        .contains("call 1"));
    assert!(letter["last_error"]
        .as_str()
        .expect("text")
        .contains("gave up after 3 attempts"));
    assert_eq!(letter["queue_id"], "q1");
    let payload = letter["payload"].as_str().expect("payload");
    assert_eq!(
        app.db.event_payload("f-1").await.expect("read").as_deref(),
        Some(payload.as_bytes())
    );
}

#[tokio::test]
async fn replayed_dead_letter_is_processed_once() {
    let app = spawn_app().await;
    app.post_signed(&conversation_event("r-1", "q1", "c1", "queued", now_ms()))
        .await;
    // Work times are taken after the post: an event is due from its receive time on.
    let t = now_ms();
    // Permanent failure first: a processor that always fails, with one attempt allowed.
    let failing = flaky_worker(&app, u32::MAX, 1);
    assert_eq!(failing.run_batch(1, t).await.expect("batch"), 1);
    assert_eq!(app.db.event_counts().await.expect("counts").dead, 1);

    for expected in [1, 0] {
        let (status, body) = admin(
            &app,
            reqwest::Method::POST,
            "/api/v2/admin/dead-letters/r-1/replay",
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["replayed"], expected, "replaying twice is harmless");
    }
    let state = app.db.event_state("r-1").await.expect("read").expect("row");
    assert_eq!((state.status.as_str(), state.attempts), ("pending", 0));

    assert_eq!(
        app.worker.run_until_idle_at(now_ms()).await.expect("run"),
        1
    );
    assert_eq!(
        app.worker.run_until_idle_at(now_ms()).await.expect("run"),
        0
    );
    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!((counts.done, counts.dead, counts.pending), (1, 0, 0));
    assert_eq!(app.queue("q1").await["waiting"], 1);
}

#[tokio::test]
async fn a_retry_that_succeeds_applies_statistics_once() {
    let app = spawn_app().await;
    let worker = flaky_worker(&app, 1, 3);
    app.post_signed(&conversation_event("s-1", "q1", "c1", "queued", now_ms()))
        .await;
    // Work times are taken after the post: an event is due from its receive time on.
    let t = now_ms();

    assert_eq!(worker.run_batch(1, t).await.expect("batch"), 1);
    let due = app
        .db
        .event_state("s-1")
        .await
        .expect("read")
        .expect("row")
        .next_attempt_at;
    assert_eq!(worker.run_batch(1, due).await.expect("batch"), 1);
    let state = app.db.event_state("s-1").await.expect("read").expect("row");
    assert_eq!((state.status.as_str(), state.attempts), ("done", 2));
    assert_eq!(app.queue("q1").await["waiting"], 1);
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_applied_once() {
    let app = spawn_app().await;
    app.post_signed(&conversation_event("l-1", "q1", "c1", "queued", now_ms()))
        .await;
    // Work times are taken after the post: an event is due from its receive time on.
    let t = now_ms();

    // Worker A claims with a short lease, then stalls.
    let claimed = app
        .db
        .claim_due(t, lease(111), 3)
        .await
        .expect("claim")
        .events;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        app.db
            .claim_due(t + 500, lease(222), 3)
            .await
            .expect("claim")
            .events
            .len(),
        0,
        "leased"
    );

    // The lease expires: worker B takes it and finishes.
    assert_eq!(
        app.worker.run_until_idle_at(t + 2_000).await.expect("run"),
        1
    );
    // A wakes up and completes: its lease is gone, so nothing is applied twice.
    let effect = StatsProcessor {
        rules: Rules::default(),
    }
    .process(&claimed[0])
    .expect("interpretable");
    let mut outcomes = vec![(claimed[0].clone(), Outcome::Done(effect))];
    let late = app
        .db
        .complete(111, t + 3_000, &mut outcomes, |_, error| Outcome::Dead {
            error,
        })
        .await
        .expect("complete");
    assert_eq!((late.done, late.lost_lease), (0, 1));

    let state = app.db.event_state("l-1").await.expect("read").expect("row");
    assert_eq!((state.status.as_str(), state.attempts), ("done", 2));
    assert_eq!(app.queue("q1").await["waiting"], 1);
}

#[tokio::test]
async fn out_of_order_and_duplicate_events_count_correctly() {
    let app = spawn_app().await;
    let t = now_ms() - 60_000;
    // acd.end (answered) arrives before its acd.start.
    app.post_signed(&acd_event("end", "qa", "c1", t + 20_000, Some("ANSWERED")))
        .await;
    app.post_signed(&acd_event("start", "qa", "c1", t, None))
        .await;
    // A simple conversation: disconnected arrives before queued; never connected → abandoned.
    app.post_signed(&conversation_event(
        "e2",
        "qa",
        "c2",
        "disconnected",
        t + 30_000,
    ))
    .await;
    app.post_signed(&conversation_event("e1", "qa", "c2", "queued", t + 10_000))
        .await;
    // c3 still waits; its queued event is delivered twice (stored once).
    let waiting = conversation_event("e3", "qa", "c3", "queued", t + 40_000);
    app.post_signed(&waiting).await;
    assert_eq!(app.post_signed(&waiting).await.status(), 202);
    // c4 is talking to an agent.
    app.post_signed(&conversation_event("e4", "qa", "c4", "queued", t))
        .await;
    app.post_signed(&conversation_event(
        "e5",
        "qa",
        "c4",
        "connected",
        t + 5_000,
    ))
    .await;
    // A stale "queued" for c4 (older than its state) changes nothing.
    app.post_signed(&conversation_event("e6", "qa", "c4", "queued", t - 5_000))
        .await;

    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let q = app.queue("qa").await;
    assert_eq!(q["name"], "Queue qa");
    assert_eq!(q["source"], "conversations");
    assert_eq!(q["waiting"], 1, "{q}");
    assert_eq!(q["interacting"], 1, "{q}");
    assert_eq!(q["answered"], 2, "{q}");
    assert_eq!(q["abandoned"], 1, "{q}");
    assert!(
        q["longest_waiting_ms"].as_i64().expect("ms") >= 20_000,
        "{q}"
    );

    // Replaying an already-applied event (by putting it back) does not double count.
    let before = q;
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    assert_eq!(app.queue("qa").await["answered"], before["answered"]);
}

#[tokio::test]
async fn fresh_observations_are_authoritative() {
    let app = spawn_app().await;
    let now = now_ms();
    let observation = json!({
        "topicName": "v2.analytics.queues.qo.observations",
        "version": "2",
        "eventBody": {
            "group": {"queueId": "qo", "mediaType": "voice"},
            "data": [{
                "interval": format!("{}/{}", rfc3339(now), rfc3339(now + 1000)),
                "metrics": [
                    {"metric": "oWaiting", "stats": {"count": 7}},
                    {"metric": "oInteracting", "stats": {"count": 3}},
                    {"metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": {"count": 2}},
                    {"metric": "oServiceLevel", "stats": {"ratio": 0.9, "numerator": 9, "denominator": 10, "target": 0.8}}
                ]
            }]
        }
    });
    app.post_signed(&observation.to_string()).await;
    app.post_signed(&conversation_event("o1", "qo", "c1", "queued", now))
        .await;
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let q = app.queue("qo").await;
    assert_eq!(q["source"], "observations");
    assert_eq!(q["waiting"], 7);
    assert_eq!(q["interacting"], 3);
    assert_eq!(q["on_queue_users"]["IDLE"], 2);
    assert_eq!(q["service_level"], 0.9);
}

#[tokio::test]
async fn permanent_errors_go_to_the_dead_letters_at_once_and_ignored_topics_do_not() {
    let app = spawn_app_with(|c| c.worker.ignore_topics = vec!["v2.users.*".into()]).await;
    let unknown = r#"{"topicName":"v2.routing.queues.q1.members","eventBody":{"x":1}}"#;
    let ignored = r#"{"topicName":"v2.users.u1.presence","eventBody":{"presence":"AVAILABLE"}}"#;
    app.post_signed(unknown).await;
    app.post_signed(ignored).await;
    app.worker.run_until_idle_at(now_ms()).await.expect("run");

    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!((counts.done, counts.dead), (1, 1));
    let (_, page) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters",
        None,
    )
    .await;
    assert_eq!(page["total"], 1);
    let letter = &page["items"][0];
    assert_eq!(letter["attempts"], 1);
    assert!(letter["last_error"]
        .as_str()
        .expect("text")
        .contains("v2.routing.queues.q1.members"));
}

#[tokio::test]
async fn prune_removes_old_done_events_but_keeps_dead_letters() {
    let app = spawn_app().await;
    app.post_signed(&conversation_event("p1", "q", "c1", "queued", now_ms()))
        .await;
    app.post_signed(r#"{"topicName":"v2.nothing.known","eventBody":{}}"#)
        .await;
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let pruned = app.db.prune(now_ms() + 1, 100).await.expect("prune");
    assert_eq!(pruned, 1);
    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!((counts.done, counts.dead), (0, 1));
}

#[tokio::test]
async fn rebuilt_statistics_equal_the_live_ones() {
    let app = spawn_app().await;
    let t = now_ms() - 100_000;
    for i in 0..40 {
        let (q, c) = (format!("q{}", i % 3), format!("c{}", i % 13));
        let state = ["queued", "connected", "disconnected", "alerting"][i % 4];
        app.post_signed(&conversation_event(
            &format!("rb{i}"),
            &q,
            &c,
            state,
            t + i as i64 * 997,
        ))
        .await;
        app.post_signed(&acd_event(
            "start",
            &q,
            &format!("d{i}"),
            t + i as i64,
            None,
        ))
        .await;
        if i % 2 == 0 {
            app.post_signed(&acd_event(
                "end",
                &q,
                &format!("d{i}"),
                t + 5_000 + i as i64,
                Some(["ANSWERED", "ABANDON"][i % 4 / 2]),
            ))
            .await;
        }
    }
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let live = app.snapshot().await;

    let applied = gc_status::server::worker::rebuild_stats(&app.db, &Rules::default())
        .await
        .expect("rebuild");
    assert_eq!(applied, 100);
    let rebuilt = app.snapshot().await;
    // longest_waiting_ms moves with the clock; everything else must match exactly.
    let strip = |v: &Value| {
        let mut queues = v["queues"].clone();
        for q in queues.as_array_mut().expect("queues") {
            q.as_object_mut()
                .expect("object")
                .remove("longest_waiting_ms");
            for media in q["media"].as_object_mut().expect("media").values_mut() {
                media
                    .as_object_mut()
                    .expect("object")
                    .remove("longest_waiting_ms");
            }
        }
        queues
    };
    assert_eq!(strip(&live), strip(&rebuilt));
    assert_eq!(live["queues"].as_array().expect("queues").len(), 3);
}

#[tokio::test]
async fn admin_api_rejects_missing_and_wrong_tokens() {
    let app = spawn_app().await;
    let url = app.url("/api/v2/admin/dead-letters");
    let missing = app.client.get(&url).send().await.expect("answered");
    assert_eq!(missing.status(), 401);
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("answered");
    assert_eq!(wrong.status(), 403);
    let replay = app
        .client
        .post(app.url("/api/v2/admin/dead-letters/replay"))
        .json(&json!({"ids": ["x"]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(replay.status(), 401);
    let (ok, _) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters",
        None,
    )
    .await;
    assert_eq!(ok, 200);

    let disabled = spawn_app_with(|c| c.admin_token = None).await;
    let response = disabled
        .client
        .get(disabled.url("/api/v2/admin/dead-letters"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn bulk_replay_and_discard_follow_filters() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.post_signed(&format!(
            r#"{{"topicName":"v2.alpha.{i}","eventBody":{{"queueId":"qa"}}}}"#
        ))
        .await;
        app.post_signed(&format!(
            r#"{{"topicName":"v2.beta.{i}","eventBody":{{"queueId":"qb"}}}}"#
        ))
        .await;
    }
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let (_, page) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters?queue=qa&limit=2",
        None,
    )
    .await;
    assert_eq!(
        (
            page["total"].as_i64(),
            page["items"].as_array().map(Vec::len)
        ),
        (Some(3), Some(2))
    );
    let (_, page) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters?error=v2.beta.1",
        None,
    )
    .await;
    assert_eq!(page["total"], 1);
    let (status, _) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters?since=yesterday",
        None,
    )
    .await;
    assert_eq!(status, 400);

    let (_, replayed) = admin(
        &app,
        reqwest::Method::POST,
        "/api/v2/admin/dead-letters/replay",
        Some(json!({"filter": {"queue": "qa"}})),
    )
    .await;
    assert_eq!(replayed["replayed"], 3);
    let (status, _) = admin(
        &app,
        reqwest::Method::POST,
        "/api/v2/admin/dead-letters/discard",
        Some(json!({"ids": ["a"], "filter": {}})),
    )
    .await;
    assert_eq!(status, 400);
    let (_, page) = admin(
        &app,
        reqwest::Method::GET,
        "/api/v2/admin/dead-letters?queue=qb",
        None,
    )
    .await;
    let first = page["items"][0]["id"].as_str().expect("id").to_owned();
    let (status, discarded) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/v2/admin/dead-letters/{first}"),
        None,
    )
    .await;
    assert_eq!((status, discarded["discarded"].as_i64()), (200, Some(1)));
    let (_, discarded) = admin(
        &app,
        reqwest::Method::POST,
        "/api/v2/admin/dead-letters/discard",
        Some(json!({"filter": {}})),
    )
    .await;
    assert_eq!(discarded["discarded"], 2);
    let (status, _) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/api/v2/admin/dead-letters/{first}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (3, 0));
}

#[tokio::test]
async fn background_workers_process_events_and_metrics_and_stream_report_it() {
    let app = spawn_app_with(|c| c.worker.workers = 2).await;
    let mut stream = app
        .client
        .get(app.url("/api/v2/stream"))
        .send()
        .await
        .expect("stream opens");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    for i in 0..20 {
        app.post_signed(&conversation_event(
            &format!("bg{i}"),
            "qs",
            &format!("c{i}"),
            "queued",
            now_ms(),
        ))
        .await;
    }
    // Wait (bounded) until the stream reports all twenty waiting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the stream reports the processed events within 10 s")
            .expect("stream chunk")
            .expect("stream still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains(r#""waiting":20"#) {
            break;
        }
    }
    assert!(seen.contains("event: status"));

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("gc_status_events_received_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gc_status_events_processed_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gc_status_ingest_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("gc_status_events_pending"), "{metrics}");
    // An open stream must not hold up a graceful shutdown: it ends when the server stops.
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown finishes with a stream open")
        .expect("clean shutdown with workers running");
    let rest = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await;
    assert!(
        matches!(rest, Ok(Ok(None)) | Ok(Err(_))),
        "the stream ends on shutdown"
    );
}

#[tokio::test]
async fn queue_names_come_from_payloads_then_the_names_file_then_the_id() {
    let dir = temp_dir();
    let names = dir.path().join("queue-names.json");
    std::fs::write(
        &names,
        r#"{"q-file": "Support (from file)", "q-both": "Ignored"}"#,
    )
    .expect("write the names file");
    let app = spawn_app_with(|c| c.worker.queue_names_file = Some(names.clone())).await;
    let t = now_ms();
    app.post_signed(&acd_event("start", "q-file", "c1", t, None))
        .await;
    app.post_signed(&acd_event("start", "q-none", "c2", t, None))
        .await;
    app.post_signed(&conversation_event("n1", "q-both", "c3", "queued", t))
        .await;
    app.worker.run_until_idle_at(now_ms()).await.expect("run");

    assert_eq!(app.queue("q-file").await["name"], "Support (from file)");
    assert_eq!(app.queue("q-none").await["name"], "q-none");
    assert_eq!(app.queue("q-both").await["name"], "Queue q-both");
}

#[tokio::test]
async fn a_replayed_letter_that_fails_again_keeps_its_earlier_attempts() {
    let app = spawn_app().await;
    let body = json!({"topicName": "v2.nobody.knows", "eventBody": {"queueId": "q1"}}).to_string();
    let id = app
        .post_signed(&body)
        .await
        .json::<Value>()
        .await
        .expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Both ways a first attempt is made: the lease-free path for never-tried events, then
    // (after a replay resets the attempts) the same path again.
    for round in 1..=3 {
        assert_eq!(
            app.worker.run_until_idle_at(now_ms()).await.expect("run"),
            1
        );
        let letter = app
            .db
            .get_dead_letter(&id)
            .await
            .expect("read")
            .expect("dead");
        let errors = letter.errors.as_array().expect("errors").len();
        assert_eq!(errors, round, "every attempt so far is kept");
        let (status, _) = admin(
            &app,
            reqwest::Method::POST,
            &format!("/api/v2/admin/dead-letters/{id}/replay"),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
}

/// A claim of up to 10 events for 1 s under `token`.
fn lease(token: i64) -> gc_status::server::store::ClaimRequest {
    gc_status::server::store::ClaimRequest {
        token,
        lease_ms: 1_000,
        limit: 10,
    }
}
