//! Ingest load generator: acknowledged webhooks per second and latency, against baselines
//! measured in the same run, then a check that every acknowledged event is in the database.
//!
//! ```text
//! cargo bench --features ssr --bench ingest -- [--events N] [--concurrency C] [--rounds R]
//! ```
//!
//! Each round runs, in turn and on fresh databases:
//! - `parse-only`: an axum route doing gc-status's own authentication and validation and
//!   nothing else (the ceiling: no storage at all);
//! - `commit-per-event`: gc-status with `--max-batch 1` and no workers, one durable transaction
//!   per webhook (what a synchronous handler does);
//! - `ingest-only`: gc-status with group commit and no workers (`GC_STATUS_WORKERS=0`);
//! - `gc-status`: gc-status as shipped: group commit while its workers process every event
//!   into statistics at the same time, on the same 2 cores.
//!
//! Medians over the rounds are reported; client and server share this process and the machine.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, http::HeaderMap, http::StatusCode, routing::post, Router};
use gc_status::server::{
    config::Config,
    domain::envelope,
    ingest::auth::{sign_hex, SenderAuth},
    startup::Application,
};
use hdrhistogram::Histogram;

const SECRET: &str = "bench-secret";
const PATH: &str = "/api/v2/webhooks/gc-status";

struct Options {
    events: usize,
    concurrency: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut opts = Options {
        events: 30_000,
        concurrency: 64,
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = pair[1].parse::<usize>();
        match (pair[0].as_str(), value) {
            ("--events", Ok(v)) => opts.events = v,
            ("--concurrency", Ok(v)) => opts.concurrency = v.max(1),
            ("--rounds", Ok(v)) => opts.rounds = v.max(1),
            _ => {}
        }
    }
    opts
}

/// One pre-signed webhook.
struct Request {
    id: String,
    body: Bytes,
    signature: String,
}

fn presign(round: usize, events: usize) -> Arc<Vec<Request>> {
    Arc::new(
        (0..events)
            .map(|i| {
                let id = format!("bench-{round}-{i}");
                let body = format!(
                    r#"{{"event":"conversation:updated","id":"{id}","timestamp":"2026-11-29T10:00:00Z","data":{{"state":"queued","queueId":"q-{}","conversationId":"{id}","mediaType":"voice"}}}}"#,
                    i % 20
                );
                let signature = sign_hex(SECRET, body.as_bytes());
                Request {
                    id,
                    body: Bytes::from(body),
                    signature,
                }
            })
            .collect(),
    )
}

struct RunResult {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    acknowledged: Vec<String>,
    failed: usize,
}

async fn drive(addr: SocketAddr, requests: Arc<Vec<Request>>, concurrency: usize) -> RunResult {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("http client");
    let url = format!("http://{addr}{PATH}");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next, requests) =
            (client.clone(), url.clone(), next.clone(), requests.clone());
        workers.spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            let mut acknowledged = Vec::new();
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(i) else {
                    break;
                };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-gc-signature", &request.signature)
                    .body(request.body.clone())
                    .send()
                    .await;
                let status = match response {
                    Ok(r) => {
                        let status = r.status();
                        let _ = r.bytes().await;
                        status
                    }
                    Err(_) => StatusCode::BAD_GATEWAY,
                };
                let _ = latencies.record(sent.elapsed().as_micros() as u64);
                if status.is_success() {
                    acknowledged.push(request.id.clone());
                } else {
                    failed += 1;
                }
            }
            (latencies, acknowledged, failed)
        });
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    while let Some(result) = workers.join_next().await {
        let (h, ids, f) = result.expect("load task");
        all.add(h).expect("merge histograms");
        acknowledged.extend(ids);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    RunResult {
        per_second: acknowledged.len() as f64 / elapsed,
        p50_ms: all.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: all.max() as f64 / 1000.0,
        acknowledged,
        failed,
    }
}

/// The ceiling: gc-status's authentication and validation, no storage.
async fn start_parse_only() -> SocketAddr {
    let mut config = Config::for_database("sqlite::memory:");
    config.hmac_secrets = vec![SECRET.into()];
    let auth = Arc::new(SenderAuth::from_config(&config).expect("auth"));
    let router = Router::new().route(
        PATH,
        post(move |headers: HeaderMap, body: Bytes| {
            let auth = auth.clone();
            async move {
                if auth.verify(&headers, &body).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                match envelope::parse(&body) {
                    Ok(_) => StatusCode::ACCEPTED,
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Peak resident memory of this process (client included) while `running` is set.
fn sample_rss(running: Arc<AtomicBool>, peak_kib: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        while running.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
                if let Some(kib) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak_kib.fetch_max(kib, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let opts = options();
    let tmp = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp");
    std::fs::create_dir_all(&tmp).expect("create target/tmp");
    println!(
        "gc-status ingest benchmark: {} events x {} rounds, concurrency {}, synchronous=FULL",
        opts.events, opts.rounds, opts.concurrency
    );

    let names = ["parse-only", "commit-per-event", "ingest-only", "gc-status"];
    let mut results: Vec<Vec<RunResult>> = names.iter().map(|_| Vec::new()).collect();
    let mut lost_total = 0;
    let peak_kib = Arc::new(AtomicU64::new(0));
    let parse_only = start_parse_only().await;

    for round in 0..opts.rounds {
        for (k, name) in names.iter().enumerate() {
            let requests = presign(round * names.len() + k, opts.events);
            if *name == "parse-only" {
                results[k].push(drive(parse_only, requests, opts.concurrency).await);
                continue;
            }
            let dir = tempfile::tempdir_in(&tmp).expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let mut config = Config::for_database(url);
            config.hmac_secrets = vec![SECRET.into()];
            if *name == "commit-per-event" {
                config.max_batch = 1;
            }
            if *name != "gc-status" {
                config.worker.workers = 0;
            }
            let app = Application::build(config).await.expect("start gc-status");
            let (addr, db) = (app.local_addr(), app.db());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(app.run_until_stopped(async {
                let _ = stopped.await;
            }));

            let running = Arc::new(AtomicBool::new(true));
            if *name == "gc-status" {
                sample_rss(running.clone(), peak_kib.clone());
            }
            let result = drive(addr, requests, opts.concurrency).await;
            running.store(false, Ordering::Relaxed);

            let stored: HashSet<String> = db
                .event_ids()
                .await
                .expect("read ids")
                .into_iter()
                .collect();
            let lost = result
                .acknowledged
                .iter()
                .filter(|id| !stored.contains(*id))
                .count();
            lost_total += lost;
            println!(
                "  round {} {:<17} {:>9.0} acks/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  failed {}  lost {}",
                round + 1,
                name,
                result.per_second,
                result.p50_ms,
                result.p99_ms,
                result.max_ms,
                result.failed,
                lost
            );
            results[k].push(result);
            let _ = stop.send(());
            server.await.expect("server task").expect("clean shutdown");
        }
    }

    println!("\nmedians over {} rounds:", opts.rounds);
    println!(
        "  {:<17} {:>10} {:>9} {:>9} {:>9} {:>12}",
        "server", "acks/s", "p50 ms", "p99 ms", "max ms", "vs gc-status"
    );
    let ours = median(results[3].iter().map(|r| r.per_second).collect());
    for (k, name) in names.iter().enumerate() {
        let rate = median(results[k].iter().map(|r| r.per_second).collect());
        println!(
            "  {:<17} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>11.2}x",
            name,
            rate,
            median(results[k].iter().map(|r| r.p50_ms).collect()),
            median(results[k].iter().map(|r| r.p99_ms).collect()),
            median(results[k].iter().map(|r| r.max_ms).collect()),
            rate / ours,
        );
    }
    println!(
        "\ngc-status vs commit-per-event: {:.1}x; peak RSS of this process (client included) during gc-status runs: {:.1} MiB",
        ours / median(results[1].iter().map(|r| r.per_second).collect()),
        peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    );
    println!("acknowledged but not stored: {lost_total}");
    if lost_total > 0 {
        std::process::exit(1);
    }
}
