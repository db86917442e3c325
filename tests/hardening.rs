//! What real senders and faults do: reused ids, queue-less state changes, poison events,
//! panics, crash loops.

mod common;

use std::{
    sync::{atomic::AtomicU32, Arc},
    time::Duration,
};

use common::*;
use gc_status::server::{
    domain::{interpret::Rules, now_ms, ClaimedEvent, Effect, ProcessError},
    rates::RateMeter,
    worker::{retry::Backoff, Processor, StatsProcessor, Worker, WorkerSettings},
};
use serde_json::Value;

fn settings(workers: usize) -> WorkerSettings {
    WorkerSettings {
        workers,
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(1_000),
            cap: Duration::from_millis(60_000),
        },
        lease: Duration::from_secs(30),
        batch: 100,
        retention: Duration::from_secs(7 * 86_400),
        poll: Duration::from_millis(20),
        grace: Duration::from_secs(1),
        max_waiting: Duration::from_secs(4 * 3600),
    }
}

async fn json(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 202, "accepted");
    response.json().await.expect("a JSON answer")
}

fn simple(id: &str, at_ms: i64, data: &str) -> String {
    format!(
        r#"{{"event":"conversation:updated","id":"{id}","timestamp":"{}","data":{data}}}"#,
        rfc3339(at_ms)
    )
}

#[tokio::test]
async fn a_conversation_id_reused_for_each_state_change_keeps_every_event() {
    let app = spawn_app().await;
    let t = now_ms() - 60_000;
    let bodies: Vec<String> = ["queued", "connected", "disconnected"]
        .iter()
        .zip(0..)
        .map(|(state, i)| {
            simple(
                "conv-123",
                t + i * 1_000,
                &format!(r#"{{"state":"{state}","queueId":"q-1"}}"#),
            )
        })
        .collect();
    let mut ids = Vec::new();
    for body in &bodies {
        let answer = json(app.post_signed(body).await).await;
        assert_eq!(answer["duplicate"], false, "{body} is a new event");
        ids.push(answer["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids[0], "conv-123");
    assert!(
        ids[1] != ids[2] && ids[1].starts_with("conv-123~"),
        "{ids:?}"
    );
    // True redeliveries of each are still stored once, and answered with the same id.
    for (body, id) in bodies.iter().zip(&ids) {
        let answer = json(app.post_signed(body).await).await;
        assert_eq!(answer["duplicate"], true);
        assert_eq!(answer["id"], id.as_str());
    }
    assert_eq!(app.stored_count().await, 3);

    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let q = app.queue("q-1").await;
    assert_eq!(
        (q["waiting"].as_i64(), q["interacting"].as_i64()),
        (Some(0), Some(0)),
        "{q}"
    );
    assert_eq!(q["answered"], 1, "{q}");

    let metrics = app.metrics().await;
    let reused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gc_status_event_id_reused_total "))
        .expect("the id reuse counter is exported")
        .trim()
        .parse()
        .expect("a number");
    assert!(reused >= 2.0, "{reused}");
}

#[tokio::test]
async fn the_readme_quick_start_event_shows_a_waiting_conversation() {
    let readme = include_str!("../README.md");
    let body = readme
        .lines()
        .find_map(|l| l.strip_prefix("body='")?.strip_suffix('\''))
        .expect("README has the quick-start body");
    // What the shell makes of `'$now'` in the README.
    let body = body.replace("'$now'", &rfc3339(now_ms() / 1000 * 1000));
    let app = spawn_app().await;
    let answer = json(app.post_signed(&body).await).await;
    assert_eq!(answer["duplicate"], false);
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let status = app.snapshot().await;
    assert_eq!(status["pipeline"]["dead"], 0, "{status}");
    assert_eq!(status["pipeline"]["done"], 1, "{status}");
    let q = app.queue("q-1").await;
    assert_eq!(q["waiting"], 1, "{q}");
}

#[tokio::test]
async fn a_state_change_without_a_queue_applies_where_the_conversation_is_known() {
    let app = spawn_app().await;
    let t = now_ms() - 60_000;
    // In one batch: the queued event names the queue, the connected one does not.
    app.post_signed(&simple(
        "e1",
        t,
        r#"{"state":"queued","queueId":"q-a","conversationId":"c-1"}"#,
    ))
    .await;
    app.post_signed(&simple(
        "e2",
        t + 1_000,
        r#"{"state":"connected","conversationId":"c-1"}"#,
    ))
    .await;
    // Across batches, with the conversation in `data.id`.
    app.post_signed(&simple(
        "e3",
        t,
        r#"{"state":"queued","queueId":"q-b","id":"c-2"}"#,
    ))
    .await;
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    app.post_signed(&simple(
        "e4",
        t + 2_000,
        r#"{"state":"disconnected","id":"c-2"}"#,
    ))
    .await;
    // Known nowhere: retried (its queued event may be late), then a dead letter saying why.
    app.post_signed(&simple(
        "e5",
        t,
        r#"{"state":"connected","conversationId":"c-404"}"#,
    ))
    .await;
    let mut at = now_ms();
    for _ in 0..4 {
        app.worker.run_until_idle_at(at).await.expect("run");
        at += 3_600_000;
    }

    let a = app.queue("q-a").await;
    assert_eq!(
        (a["waiting"].as_i64(), a["interacting"].as_i64()),
        (Some(0), Some(1)),
        "{a}"
    );
    let b = app.queue("q-b").await;
    assert_eq!(
        (b["waiting"].as_i64(), b["abandoned"].as_i64()),
        (Some(0), Some(1)),
        "{b}"
    );
    let lost = app.db.event_state("e5").await.expect("read").expect("row");
    assert_eq!((lost.status.as_str(), lost.attempts), ("dead", 3));
    assert!(
        lost.errors[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("`c-404` is not known in any queue")),
        "{:?}",
        lost.errors
    );
}

/// Panics on the event with the given id; interprets every other event.
struct PanicsOn(&'static str, AtomicU32);

impl Processor for PanicsOn {
    fn process(&self, event: &ClaimedEvent) -> Result<Effect, ProcessError> {
        if event.id == self.0 {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("cannot handle {}", event.id);
        }
        StatsProcessor {
            rules: Rules::default(),
        }
        .process(event)
    }
}

#[tokio::test]
async fn a_panic_dead_letters_its_event_and_the_batch_and_worker_carry_on() {
    let app = spawn_app().await;
    let processor = Arc::new(PanicsOn("p-2", AtomicU32::new(0)));
    let worker = Worker::new(
        app.db.clone(),
        processor.clone(),
        settings(1),
        Arc::new(RateMeter::default()),
    );
    let t = now_ms() - 1_000;
    for i in 1..=5 {
        app.post_signed(&conversation_event(
            &format!("p-{i}"),
            "q",
            &format!("c{i}"),
            "queued",
            t,
        ))
        .await;
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut tasks = worker.spawn(wake.clone(), shutdown.clone());
    let settled = || async {
        let mut all = true;
        for i in 1..=6 {
            let state = app.db.event_state(&format!("p-{i}")).await.expect("read");
            all &= state.is_none_or(|s| s.status == "done" || s.status == "dead");
        }
        all
    };
    wait_until("the batch is settled", Duration::from_secs(10), settled).await;
    for i in [1, 3, 4, 5] {
        let state = app
            .db
            .event_state(&format!("p-{i}"))
            .await
            .expect("read")
            .expect("row");
        assert_eq!(state.status, "done", "p-{i}");
    }
    let poison = app.db.event_state("p-2").await.expect("read").expect("row");
    assert_eq!(poison.status, "dead");
    assert!(
        poison.errors[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("processing panicked: cannot handle p-2")),
        "{:?}",
        poison.errors
    );
    assert_eq!(
        processor.1.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not retried"
    );

    // The worker task survived: it still processes what comes next.
    assert!(tasks.try_join_next().is_none(), "no worker task ended");
    app.post_signed(&conversation_event("p-6", "q", "c6", "queued", t))
        .await;
    wake.notify_one();
    wait_until("p-6 is done", Duration::from_secs(10), || async {
        app.db
            .event_state("p-6")
            .await
            .expect("read")
            .is_some_and(|s| s.status == "done")
    })
    .await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    assert_eq!(app.queue("q").await["waiting"], 5);
}

#[tokio::test]
async fn an_event_whose_claims_never_finish_is_dead_lettered_at_the_limit() {
    let app = spawn_app().await;
    app.post_signed(&conversation_event("a-1", "q", "c1", "queued", now_ms()))
        .await;
    let t = now_ms();
    // Three claims whose leases (1 s) expire without completion: the process died each time.
    for claim in 1..=3 {
        let claimed = app
            .db
            .claim_due(t + claim * 2_000, lease(claim), 3)
            .await
            .expect("claim");
        assert_eq!(
            (claimed.events.len(), claimed.abandoned),
            (1, 0),
            "claim {claim}"
        );
    }
    let next = app
        .db
        .claim_due(t + 10_000, lease(99), 3)
        .await
        .expect("claim");
    assert_eq!((next.events.len(), next.abandoned), (0, 1));
    let state = app.db.event_state("a-1").await.expect("read").expect("row");
    assert_eq!(state.status, "dead");
    let page = app
        .db
        .list_dead_letters(&Default::default(), 10, 0)
        .await
        .expect("list");
    assert_eq!(page.total, 1);
    assert!(
        page.items[0]
            .last_error
            .starts_with("abandoned after 3 claims: processing never finished"),
        "{}",
        page.items[0].last_error
    );
}

#[tokio::test]
async fn batch_mates_of_an_unfinished_claim_are_retried_one_at_a_time() {
    let app = spawn_app().await;
    for i in 1..=3 {
        app.post_signed(&conversation_event(
            &format!("b-{i}"),
            "q",
            &format!("c{i}"),
            "queued",
            now_ms(),
        ))
        .await;
    }
    let t = now_ms();
    let first = app.db.claim_due(t, lease(1), 3).await.expect("claim");
    assert_eq!(first.events.len(), 3, "one batch");
    // The claim never finishes; once its lease expires, each suspect is claimed alone.
    for token in 2..=4 {
        let again = app
            .db
            .claim_due(t + 2_000, lease(token), 3)
            .await
            .expect("claim");
        assert_eq!(again.events.len(), 1, "a suspect is claimed alone");
    }
    // The normal worker finishes them once those leases expire too.
    assert_eq!(
        app.worker.run_until_idle_at(t + 4_000).await.expect("run"),
        3
    );
    assert_eq!(app.queue("q").await["waiting"], 3);
}

#[tokio::test]
async fn events_are_processed_as_they_arrive_and_the_workers_only_get_what_is_left() {
    let app = spawn_app_with(|c| c.worker.workers = 1).await;
    let t = now_ms() - 1_000;
    app.post_signed(&simple(
        "in-1",
        t,
        r#"{"state":"queued","queueId":"q-in","conversationId":"c-1"}"#,
    ))
    .await;
    app.post_signed(&simple(
        "in-2",
        t + 500,
        r#"{"state":"connected","conversationId":"c-1"}"#,
    ))
    .await;
    let unknown = r#"{"event":"agent:status","id":"in-3","timestamp":"2026-11-29T10:00:00Z","data":{"agentId":"a"}}"#;
    app.post_signed(unknown).await;
    wait_until(
        "the inline results are applied",
        Duration::from_secs(10),
        || async {
            let counts = app.db.event_counts().await.expect("counts");
            counts.done == 2 && counts.dead == 1
        },
    )
    .await;
    for id in ["in-1", "in-2"] {
        let state = app.db.event_state(id).await.expect("read").expect("row");
        assert_eq!((state.status.as_str(), state.attempts), ("done", 1), "{id}");
    }
    let q = app.queue("q-in").await;
    assert_eq!(
        (q["waiting"].as_i64(), q["interacting"].as_i64()),
        (Some(0), Some(1)),
        "{q}"
    );
    // The dead letter has its error and the payload byte for byte (kept on the event row).
    let letter = app.admin_get("/api/v2/admin/dead-letters/in-3").await;
    assert_eq!(letter["payload"], unknown, "{letter}");
    assert!(
        letter["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("agent:status")),
        "{letter}"
    );

    // Applying the same verdicts again changes nothing: each event is applied once.
    let again = app
        .db
        .complete_inline(
            &[("in-1".to_owned(), Ok(Effect::Ignored))],
            now_ms(),
            now_ms(),
        )
        .await
        .expect("apply");
    assert_eq!((again.done, again.dead), (0, 0));
    app.stop().await.expect("stops");
}

#[tokio::test]
async fn events_the_inline_applier_never_finished_are_taken_over_by_the_workers() {
    use gc_status::server::{
        rates::RateMeter as Meter,
        store::writer::{IngestWriter, NewEvent, WriterSettings, INLINE_GRACE_MS},
    };
    let app = spawn_app().await;
    let (_db, conn) = gc_status::server::store::open(&app.database_url, Duration::from_secs(5))
        .await
        .expect("connect");
    // A writer whose applier is gone (as after a crash between commit and apply).
    let (writer, _task) = IngestWriter::spawn(
        conn,
        WriterSettings {
            queue_capacity: 16,
            queue_bytes: 1 << 20,
            max_batch: 16,
            timeout: Duration::from_secs(5),
            gate: app.db.write_gate(),
            committed: Arc::new(tokio::sync::Notify::new()),
            ingested: Arc::new(Meter::default()),
            inline: None,
            health: Default::default(),
            file: None,
        },
    );
    let body = conversation_event("orphan-1", "q-o", "c-o", "queued", now_ms());
    let received_at = now_ms();
    let effect = StatsProcessor {
        rules: Rules::default(),
    }
    .process(&ClaimedEvent {
        seq: 0,
        id: "orphan-1".into(),
        event_type: "conversation:updated".into(),
        payload: body.clone().into_bytes().into(),
        attempts: 1,
        received_at,
    });
    writer
        .store(NewEvent {
            id: "orphan-1".into(),
            event_type: "conversation:updated".into(),
            payload: body.into(),
            received_at,
            processed: Some(effect),
        })
        .await
        .expect("stored");
    // Within the grace period the workers leave it to the applier...
    assert_eq!(
        app.worker
            .run_until_idle_at(received_at + 1_000)
            .await
            .expect("run"),
        0
    );
    // ...after it, they take it over.
    assert_eq!(
        app.worker
            .run_until_idle_at(received_at + INLINE_GRACE_MS + 1)
            .await
            .expect("run"),
        1
    );
    assert_eq!(app.queue("q-o").await["waiting"], 1);
}

#[tokio::test]
async fn nul_escapes_in_ids_and_queues_are_stored_and_spoil_nothing_around_them() {
    // JSON may carry `\u0000` in any string; PostgreSQL's text cannot hold NUL. The event is
    // kept (with U+FFFD there), and the events committed in the same batch are unharmed.
    let app = spawn_app().await;
    let now = gc_status::server::domain::now_ms();
    let odd = format!(
        r#"{{"event":"conversation:updated","id":"nul\u0000id","timestamp":"{}","data":{{"state":"queued","queueId":"q\u0000x","conversationId":"c\u0000y","queueName":"Odd\u0000name"}}}}"#,
        rfc3339(now)
    );
    let mut bodies = vec![odd.clone()];
    bodies.extend((0..20).map(|i| simple_event(&format!("beside-{i}"))));
    let answers = futures_util::future::join_all(bodies.iter().map(|b| app.post_signed(b))).await;
    assert!(
        answers.iter().all(|r| r.status() == 202),
        "{:?}",
        answers.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    let again: serde_json::Value = app.post_signed(&odd).await.json().await.expect("JSON");
    assert_eq!(
        again["duplicate"], true,
        "its redelivery is recognised: {again}"
    );
    assert_eq!(app.stored_count().await, 21);
    app.worker
        .run_until_idle_at(now_ms())
        .await
        .expect("process");
    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!((counts.done, counts.dead), (21, 0), "{counts:?}");
    let queues = app.snapshot().await["queues"].clone();
    assert_eq!(queues.as_array().map(Vec::len), Some(2), "{queues}");
}

/// A claim of up to 10 events for 1 s under `token`.
fn lease(token: i64) -> gc_status::server::store::ClaimRequest {
    gc_status::server::store::ClaimRequest {
        token,
        lease_ms: 1_000,
        limit: 10,
    }
}

/// A queue observation as Genesys sends it through EventBridge: for queue `queue`, sent at
/// `sent_ms`, inside the 30-minute interval that began at `interval_ms`, with voice and message
/// figures and the longest wait as the epoch time it began.
fn eventbridge_observation(
    queue: &str,
    sent_ms: i64,
    interval_ms: i64,
    waiting_since: i64,
) -> String {
    let interval = format!(
        "{}/{}",
        rfc3339(interval_ms),
        rfc3339(interval_ms + 30 * 60_000)
    );
    let media = |media: &str, waiting: i64, num: i64, den: i64| {
        format!(
            concat!(
                r#"{{"group":{{"queueId":"{queue}","mediaType":"{media}"}},"data":[{{"interval":"{interval}","metrics":["#,
                r#"{{"metric":"oWaiting","stats":{{"count":{waiting}}}}},"#,
                r#"{{"metric":"oLongestWaiting","stats":{{"count":{waiting},"calculatedMetricValue":{waiting_since}}}}},"#,
                r#"{{"metric":"oServiceLevel","stats":{{"ratio":{ratio},"numerator":{num},"denominator":{den},"target":0.8}}}}"#,
                r#"]}}]}}"#
            ),
            queue = queue,
            media = media,
            interval = interval,
            waiting = waiting,
            waiting_since = waiting_since,
            num = num,
            den = den,
            ratio = num as f64 / den as f64
        )
    };
    let bridge = |body: String| {
        format!(
            r#"{{"version":"0","id":"{}","detail-type":"v2.analytics.queues.{{id}}.observations","source":"aws.partner/genesys.com/cloud/org/events","account":"123456789012","time":"{}","region":"eu-west-1","resources":[],"detail":{{"topicName":"v2.analytics.queues.{queue}.observations","version":"2","eventBody":{body}}}}}"#,
            uuid(),
            rfc3339(sent_ms / 1000 * 1000)
        )
    };
    [
        bridge(media("voice", 3, 9, 10)),
        bridge(media("message", 1, 1, 2)),
    ]
    .join("\n")
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed) ^ (now_ms() as u64);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        n as u32,
        (n >> 32) as u16,
        n & 0xfff,
        (n >> 12) & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

#[tokio::test]
async fn a_queue_observation_sent_late_in_its_interval_shows_weighted_figures_and_a_true_longest_wait(
) {
    let app = spawn_app().await;
    let now = now_ms();
    // 17 minutes into the interval: older than the 5-minute freshness if its interval start
    // were its time, as it was.
    let interval_start = now - 17 * 60_000;
    let waiting_since = now - 95_000;
    let bodies = eventbridge_observation(
        "3f1c9a52-7d0e-4f6b-9a55-0c8b1e2f3a4d",
        now,
        interval_start,
        waiting_since,
    );
    for body in bodies.lines() {
        let answer = json(app.post_signed(body).await).await;
        assert_eq!(answer["duplicate"], false, "{answer}");
    }
    app.worker.run_until_idle_at(now_ms()).await.expect("run");
    let q = app.queue("3f1c9a52-7d0e-4f6b-9a55-0c8b1e2f3a4d").await;
    assert_eq!(q["waiting"], 4, "{q}");
    // Voice 9 of 10 and message 1 of 2 within target: 10 of 12, weighted.
    let level = q["service_level"].as_f64().expect("a service level");
    assert!((level - 10.0 / 12.0).abs() < 1e-6, "{q}");
    // The longest wait is now − its start (about 95 s), not a count read as milliseconds.
    let longest = q["longest_waiting_ms"].as_i64().expect("a longest wait");
    assert!((95_000..120_000).contains(&longest), "{q}");
}
