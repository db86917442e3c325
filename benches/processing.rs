//! Processing throughput: events/s from pending to done (statistics included), against a
//! baseline measured in the same run, and memory while a backlog drains.
//!
//! ```text
//! cargo bench --features ssr --bench processing -- [--events N] [--rounds R] [--workers W]
//! ```
//!
//! Each round loads N pending events (conversation events over 50 queues) into a fresh
//! database, then lets the background workers drain it:
//! - `claim-and-mark`: a processor that ignores every event — claims, leases and done marks
//!   only (the floor cost of the work queue);
//! - `gc-status`: the shipped processor, interpreting each payload and updating statistics.
//!
//! Medians over the rounds are reported, with this process's resident memory during the drain.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::body::Bytes;
use gc_status::server::{
    config::Config,
    domain::{interpret::Rules, now_ms, ClaimedEvent, Effect, ProcessError},
    rates::RateMeter,
    store::{
        self,
        writer::{IngestWriter, NewEvent, WriterSettings},
    },
    worker::{Processor, StatsProcessor, Worker, WorkerSettings},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

struct IgnoreAll;

impl Processor for IgnoreAll {
    fn process(&self, _: &ClaimedEvent) -> Result<Effect, ProcessError> {
        Ok(Effect::Ignored)
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Loads `events` pending events through the group-commit writer (as ingestion stores them).
async fn load(url: &str, events: usize) -> store::Db {
    let (db, conn) = store::open(url, Duration::from_secs(5))
        .await
        .expect("open");
    let (writer, task) = IngestWriter::spawn(
        conn,
        WriterSettings {
            queue_capacity: 8192,
            queue_bytes: 256 << 20,
            max_batch: 4096,
            timeout: Duration::from_secs(30),
            gate: db.write_gate(),
            committed: Arc::new(Notify::new()),
            ingested: Arc::new(RateMeter::default()),
            inline: None,
            health: Default::default(),
            file: None,
        },
    );
    let base = now_ms() - 3_600_000;
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..events {
        let state = ["queued", "connected", "disconnected"][i % 3];
        let id = format!("p-{i}");
        let body = format!(
            r#"{{"event":"conversation:updated","id":"{id}","timestamp":"{}","data":{{"state":"{state}","queueId":"q-{}","conversationId":"c-{}","mediaType":"voice"}}}}"#,
            jiff::Timestamp::from_millisecond(base + i as i64).expect("time"),
            i % 50,
            i / 3
        );
        let writer = writer.clone();
        pending.spawn(async move {
            writer
                .store(NewEvent {
                    id,
                    event_type: "conversation:updated".into(),
                    payload: Bytes::from(body),
                    received_at: base,
                    processed: None,
                })
                .await
                .expect("stored")
        });
        if pending.len() >= 4096 {
            while pending.try_join_next().is_some() {}
            if let Some(r) = pending.join_next().await {
                r.expect("task");
            }
        }
    }
    while pending.join_next().await.is_some() {}
    drop(writer);
    task.await.expect("writer");
    db
}

struct Drain {
    per_second: f64,
    rss_start_mib: f64,
    rss_peak_mib: f64,
    rss_end_mib: f64,
}

async fn drain(
    db: store::Db,
    processor: Arc<dyn Processor>,
    workers: usize,
    events: usize,
) -> Drain {
    let mut config = Config::for_database("sqlite::memory:");
    config.worker.workers = workers;
    let settings = WorkerSettings::from_config(&config.worker);
    let worker = Worker::new(
        db.clone(),
        processor,
        settings,
        Arc::new(RateMeter::default()),
    );
    let shutdown = CancellationToken::new();
    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(0));
    {
        let (running, peak) = (running.clone(), peak.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }
    let rss_start = rss_kib();
    let started = Instant::now();
    let mut tasks = worker.spawn(Arc::new(Notify::new()), shutdown.clone());
    while db.next_due_at().await.expect("query").is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    running.store(false, Ordering::Relaxed);
    let counts = db.event_counts().await.expect("counts");
    assert_eq!(counts.done as usize, events, "every event done");
    Drain {
        per_second: events as f64 / elapsed,
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        rss_end_mib: rss_kib() as f64 / 1024.0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let events = arg("--events", 100_000);
    let rounds = arg("--rounds", 3).max(1);
    let workers = arg("--workers", 2).max(1);
    let tmp = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    std::fs::create_dir_all(&tmp).expect("target/tmp");
    println!(
        "gc-status processing benchmark: {events} events x {rounds} rounds, {workers} workers"
    );

    let names = ["claim-and-mark", "gc-status"];
    let mut results: Vec<Vec<Drain>> = vec![Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (k, name) in names.iter().enumerate() {
            let dir = tempfile::tempdir_in(&tmp).expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let db = load(&url, events).await;
            let processor: Arc<dyn Processor> = if k == 0 {
                Arc::new(IgnoreAll)
            } else {
                Arc::new(StatsProcessor {
                    rules: Rules::default(),
                })
            };
            let d = drain(db.clone(), processor, workers, events).await;
            println!(
                "  round {round} {name:<15} {:>9.0} events/s  RSS start {:.0} MiB, peak {:.0} MiB, end {:.0} MiB",
                d.per_second, d.rss_start_mib, d.rss_peak_mib, d.rss_end_mib
            );
            if k == 1 {
                let queues = db
                    .queue_statuses(&gc_status::server::store::StatsWindow {
                        now: now_ms(),
                        day_start: 0,
                        day_end: i64::MAX,
                        interval_start: 0,
                        interval_end: i64::MAX,
                        timezone: &jiff::tz::TimeZone::UTC,
                        fresh_after: i64::MAX,
                        open_since: 0,
                        settings: &Default::default(),
                    })
                    .await
                    .expect("statistics");
                assert_eq!(queues.len(), 50, "statistics for every queue");
            }
            db.close().await;
            results[k].push(d);
        }
    }
    println!("\nmedians over {rounds} rounds:");
    let ours = median(results[1].iter().map(|d| d.per_second).collect());
    for (k, name) in names.iter().enumerate() {
        let rate = median(results[k].iter().map(|d| d.per_second).collect());
        println!(
            "  {name:<15} {rate:>9.0} events/s  {:.2}x of gc-status  peak RSS {:.0} MiB",
            rate / ours,
            median(results[k].iter().map(|d| d.rss_peak_mib).collect())
        );
    }
}
