//! The benchmark users feel: the real release binary over loopback TCP, driven by Debian's
//! `wrk` (a separate process) with pre-signed requests, as a new user would measure it.
//!
//! ```text
//! cargo bench --features ssr --bench http -- [--scenario NAME]... [--duration SECS] [--rounds N] [--minutes N]
//! ```
//!
//! Scenarios (all by default), each on a fresh database, wrk with 2 threads and 64 connections:
//! - `real-shipped`, `real-workers-off`, `real-close`, `real-postgres-1`, `real-hmac-only` (not
//!   in the default set): what senders really send, the workload a user should expect. Random
//!   UUID ids, EventBridge-wrapped Genesys detail events of 700–900 bytes (3 of 8 an
//!   `acd.start` of a new conversation in one of 20 queues, 3 the `acd.end` of an earlier one,
//!   2 a topic gc-status does not interpret: dead letters), HMAC-signed, each sent once (wrk
//!   stops, and the run fails, if they run out). As shipped; ingestion alone; as shipped with
//!   `Connection: close` on every request (how Amazon EventBridge API destinations send: a
//!   TCP connection per request); as shipped on PostgreSQL with one replica; and the ceiling,
//!   axum doing only the HMAC check and the JSON parse, storing nothing, in the same run
//!   (`real-hmac-only-close`: the same with a connection per request, the ceiling of
//!   `real-close`);
//! - `workers-off`: ingestion alone (`GC_STATUS_WORKERS=0`), every event new: the baseline;
//! - `shipped-mixed`: as shipped, 75% `conversation:updated` for new conversations in 20
//!   queues and 25% unknown types that end as dead letters; reports the backlog at the end
//!   and how long it takes to drain;
//! - `stored-1m`: workers off, 1,000,000 events already stored, first alone;
//! - `stored-1m-readers`: the same while 200 clients poll `GET /api/v2/queues` every 100 ms and
//!   200 status streams stay open (readers must not slow ingestion);
//! - `slow-clients`: as shipped while 1,000 connections open and then trickle a body or a
//!   head;
//! - `idle-connections`: as shipped while 1,000 connections open and send nothing at all;
//! - `stalled-bodies`: as shipped while 500 clients `POST /api/login` declaring a body that
//!   never comes;
//! - `shipped-forwarding` (not in the default set): `shipped-mixed` with every processed
//!   event forwarded to a local sink that answers 202, with an OAuth2 token; reports the
//!   deliveries, how long forwarding takes to catch up, and checks each was delivered once;
//! - `drain-1m`: processing alone: a stored backlog of 1,000,000 mixed events, workers on;
//! - `snapshot-5m` (not in the default set): the latency of one uncached status snapshot
//!   with 5,000,000 events stored;
//! - `postgres-1`, `postgres-2` (not in the default set): `shipped-mixed` on PostgreSQL with
//!   one replica, and with two replicas on the same database (wrk's 64 connections split over
//!   both, two wrk processes; the p99 is the worse of the two). The database is the server
//!   `GC_STATUS_BENCH_POSTGRES` names, or else a local cluster started for the run from
//!   Debian's package (`scripts/pg-cluster.sh`, fsync on, `synchronous_commit=on`): a commit
//!   is as durable as in production;
//! - `soak` (not in the default set): as shipped for `--minutes` (10) at 16 connections, with
//!   what senders really send: random-UUID ids and real-size EventBridge bodies made by wrk's
//!   Lua as it goes (static-token authentication, so nothing needs pre-signing): `acd.start`
//!   and `acd.end` of conversations in 20 queues (a steady few hundred waiting), and 25% topics
//!   that end as dead letters. One wrk run a minute; the WAL file,
//!   the database file and the server's RSS sampled every 5 s. Reports, per minute,
//!   acknowledged/s, p99, the largest WAL and the RSS, and checks the WAL stayed under its bound,
//!   RSS stayed flat, and the last minute kept the first one's throughput and p99;
//! - `soak-postgres` (not in the default set): `soak` on PostgreSQL, sampling the `events`
//!   table's size and dead rows (autovacuum must keep up) instead of the WAL;
//! - `wallboard-50` (not in the default set): the server time of `GET /` with 50 active
//!   queues, against `GET /healthz` in the same run as the baseline, and the gzipped size of
//!   the page's assets (wasm + JS + CSS as built by `cargo leptos build --release --split`: what the wallboard downloads).
//!
//! `GC_STATUS_BENCH_PERF=file` records a `perf` profile of the server while wrk runs (the
//! scenarios on one SQLite server). `GC_STATUS_BENCH_BINARY=path` runs another build of
//! gc-status instead (a before/after comparison on the same machine). Every scenario checks
//! that each acknowledged event is in the database. Figures are medians over the rounds; `wrk`
//! and the server share the machine's cores, as they would for a user.

use std::{
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use gc_status::server::ingest::auth::sign_hex;
use sqlx::{Connection as _, PgConnection, SqliteConnection};

const SECRET: &str = "bench-secret";
/// Events not yet done or dead.
const OPEN_EVENTS: &str = "SELECT COUNT(*) FROM events WHERE status IN ('pending', 'processing')";
const CONNECTIONS: usize = 64;
const QUEUES: usize = 20;

/// What both wrk scripts begin with: each thread gets its number (`tid`), and `done` can
/// reach every thread's counters.
const WRK_THREADS: &str = r#"
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
"#;

/// The wrk script: each thread loads its own file of pre-signed requests (`<path>.<tid>`),
/// waits until every thread has loaded its own (the next thread loads while the first already
/// runs), sends each request once and counts 202s.
const WRK_SCRIPT: &str = r#"
function init(args)
  local path, nthreads, close = args[1], tonumber(args[2]), args[3] == "close"
  requests, n, calls, accepted, other, ran_out, ready = {}, 0, 0, 0, 0, 0, false
  marker = path .. ".loaded"
  for line in io.lines(path .. "." .. tid) do
    local sig, body = line:match("^(%S+)\t(.*)$")
    local headers = { ["Content-Type"] = "application/json", ["X-GC-Signature"] = sig }
    if close then headers["Connection"] = "close" end
    requests[#requests + 1] = wrk.format("POST", "/api/v2/webhooks/gc-status", headers, body)
  end
  if tid == nthreads - 1 then io.open(marker, "w"):close() end
end
-- Each request is sent once: out of requests, the thread stops and the run is reported as
-- spoilt (the rest of it would be duplicates, far cheaper than new events).
-- wrk calls request() once on its main thread to check the script, before the other threads
-- have loaded: that call must not wait for them.
function request()
  calls = calls + 1
  while calls > 1 and not ready do
    local loaded = io.open(marker)
    if loaded then loaded:close() ready = true end
  end
  n = n + 1
  if n > #requests then
    ran_out = 1
    wrk.thread:stop()
    n = #requests
  end
  return requests[n]
end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local acc, oth, out = 0, 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    oth = oth + t:get("other")
    out = out + t:get("ran_out")
  end
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", acc, oth,
    latency:percentile(50), latency:percentile(99), latency.max, summary.duration, out))
end
"#;

/// The soak's wrk script: each request a new event made on the spot (random UUIDs, a real-size
/// EventBridge envelope of a Genesys detail event), sent with a static token; counts 202s and
/// duplicates (a UUID drawn twice would be one). Of every 8 requests, 3 are an `acd.start` of a
/// new conversation, 3 the `acd.end` (answered or abandoned) of the oldest still waiting once
/// 40 are (so queues hold a steady few hundred conversations, as a contact centre does, and
/// do not grow for ever), and 2 a topic gc-status does not interpret (dead letters).
const SOAK_SCRIPT: &str = r#"
function init(args)
  math.randomseed(tonumber(args[1]) * 7919 + tid * 104729)
  token, n, accepted, duplicate, other = args[2], 0, 0, 0, 0
  waiting, first, last = {}, 1, 0
end
local function hex(digits)
  return string.format("%0" .. digits .. "x", math.random(0, 16 ^ digits - 1))
end
local function uuid()
  return hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-" ..
    string.format("%x", math.random(8, 11)) .. hex(3) .. "-" .. hex(12)
end
TEMPLATE
function request()
  n = n + 1
  local kind = n % 8
  local topic, conversation, queue, outcome = "acd.start", uuid(), n % 20, ""
  if kind == 0 or kind == 4 then
    topic = "user.start"
  elseif (kind == 2 or kind == 5 or kind == 7) and last - first >= 40 then
    topic, conversation, queue = "acd.end", waiting[first][1], waiting[first][2]
    waiting[first] = nil
    first = first + 1
    outcome = (n % 5 == 0) and ',"acdOutcome":"ABANDON","disconnectType":"peer"'
      or ',"acdOutcome":"ANSWERED","disconnectType":"client"'
  else
    last = last + 1
    waiting[last] = { conversation, queue }
  end
  local now = os.time()
  local body = string.format(template, uuid(), topic, os.date("!%Y-%m-%dT%H:%M:%SZ", now),
    conversation, topic, now * 1000, conversation, uuid(), uuid(), queue, outcome, uuid())
  return wrk.format("POST", "/api/v2/webhooks/gc-status",
    { ["Content-Type"] = "application/json; charset=utf-8", ["X-GC-Token"] = token,
      ["User-Agent"] = "Amazon/EventBridge/ApiDestinations" }, body)
end
function response(status, headers, body)
  if status ~= 202 then other = other + 1
  elseif body:find('"duplicate":true', 1, true) then duplicate = duplicate + 1
  else accepted = accepted + 1 end
end
function done(summary, latency, requests)
  local acc, dup, oth = 0, 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    dup = dup + t:get("duplicate")
    oth = oth + t:get("other")
  end
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", acc, oth,
    latency:percentile(50), latency:percentile(99), latency.max, summary.duration, dup))
end
"#;

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// Every event a `conversation:updated` for a new conversation (short ids in order).
    Updates,
    /// 75% updates, 25% unknown types (dead letters); short ids in order.
    Mixed,
    /// What senders really send: EventBridge-wrapped Genesys detail events with random UUID
    /// ids, 700–900 bytes each, in the soak's mix (3 of 8 an `acd.start`, 3 the `acd.end` of
    /// an earlier one, 2 a topic gc-status does not interpret).
    Genesys,
}

/// The fields of an EventBridge API destination's body for a Genesys detail event (the SDK's
/// `AcdStartEvent`/`AcdEndEvent` inside EventBridge's envelope), as text.
struct DetailEvent<'a> {
    id: &'a str,
    topic: &'a str,
    time: &'a str,
    conversation: &'a str,
    event_time: &'a str,
    participant: &'a str,
    session: &'a str,
    /// The last 12 digits of the queue's id.
    queue: &'a str,
    /// `,"acdOutcome":…,"disconnectType":…` for an `acd.end`, else empty.
    outcome: &'a str,
    correlation: &'a str,
}

impl DetailEvent<'_> {
    /// The body. The soak's wrk script gets the same text with Lua's `%s`/`%d` in every field
    /// (each field appears in the order `string.format` takes them).
    fn body(&self) -> String {
        let DetailEvent {
            id,
            topic,
            time,
            conversation,
            event_time,
            participant,
            session,
            queue,
            outcome,
            correlation,
        } = self;
        format!(
            r#"{{"version":"0","id":"{id}","detail-type":"v2.detail.events.conversation.{{id}}.{topic}","source":"aws.partner/genesys.com/cloud/3d2b7c1e-5f0a-4c1b-9a57-2f4e1a9c8b10/gc-status","account":"123456789012","time":"{time}","region":"eu-west-1","resources":[],"detail":{{"topicName":"v2.detail.events.conversation.{conversation}.{topic}","version":"2","eventBody":{{"eventTime":{event_time},"conversationId":"{conversation}","participantId":"{participant}","sessionId":"{session}","mediaType":"VOICE","provider":"Edge","direction":"INBOUND","ani":"tel:+15551234567","dnis":"tel:+15559876543","addressTo":"tel:+15559876543","addressFrom":"tel:+15551234567","queueId":"7a1c2e3f-0b4d-4e5f-8a6b-{queue}","divisionId":"1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6","routingPriority":0,"requestedRoutingTypes":["Standard"]{outcome}}},"metadata":{{"CorrelationId":"{correlation}"}}}}}}"#
        )
    }
}

/// The soak's wrk script, its body template filled in from [`DetailEvent::body`].
fn soak_script() -> String {
    let template = DetailEvent {
        id: "%s",
        topic: "%s",
        time: "%s",
        conversation: "%s",
        event_time: "%d",
        participant: "%s",
        session: "%s",
        queue: "%012d",
        outcome: "%s",
        correlation: "%s",
    }
    .body();
    // The topic and conversation each appear twice: once per `%s` the script passes them.
    assert_eq!(
        template.matches("%s").count(),
        10,
        "the Lua call passes ten strings"
    );
    [
        WRK_THREADS,
        &SOAK_SCRIPT.replace(
            "TEMPLATE\n",
            &format!("local template = [==[{template}]==]\n"),
        ),
    ]
    .concat()
}

/// A random version-4 UUID.
fn uuid(rng: &mut impl rand::Rng) -> String {
    let v: u128 = rng.random();
    let v = (v & !(0xf000 << 64) | (0x4000 << 64)) & !(0xc << 60) | (0x8 << 60);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `count` bodies in the soak's mix of Genesys detail events, in send order.
fn genesys_bodies(count: usize, seed: u64) -> impl Iterator<Item = String> {
    use rand::SeedableRng as _;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut waiting = std::collections::VecDeque::new();
    let now = jiff::Timestamp::now();
    let (time, event_time) = (
        now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        now.as_millisecond().to_string(),
    );
    (1..=count).map(move |n| {
        let (topic, conversation, queue, outcome) = match n % 8 {
            0 | 4 => ("user.start", uuid(&mut rng), n % QUEUES, ""),
            2 | 5 | 7 if waiting.len() >= 40 => {
                let (conversation, queue) = waiting.pop_front().expect("40 waiting");
                let outcome = if n % 5 == 0 {
                    r#","acdOutcome":"ABANDON","disconnectType":"peer""#
                } else {
                    r#","acdOutcome":"ANSWERED","disconnectType":"client""#
                };
                ("acd.end", conversation, queue, outcome)
            }
            _ => {
                let conversation = uuid(&mut rng);
                waiting.push_back((conversation.clone(), n % QUEUES));
                ("acd.start", conversation, n % QUEUES, "")
            }
        };
        DetailEvent {
            id: &uuid(&mut rng),
            topic,
            time: &time,
            conversation: &conversation,
            event_time: &event_time,
            participant: &uuid(&mut rng),
            session: &uuid(&mut rng),
            queue: &format!("{queue:012}"),
            outcome,
            correlation: &uuid(&mut rng),
        }
        .body()
    })
}

/// wrk's threads: each sends the requests of its own file.
const WRK_THREAD_COUNT: usize = 2;

/// Pre-signed requests, one per line (`<hex signature>\t<body>`), dealt in turn to one file
/// per wrk thread: `<path>.0`, `<path>.1`.
struct RequestFiles(Vec<std::io::BufWriter<std::fs::File>>);

impl RequestFiles {
    fn create(path: &Path) -> Self {
        RequestFiles(
            (0..WRK_THREAD_COUNT)
                .map(|t| {
                    let file = std::fs::File::create(format!("{}.{t}", path.display()))
                        .expect("create a requests file");
                    std::io::BufWriter::new(file)
                })
                .collect(),
        )
    }

    fn write(&mut self, i: usize, body: &str) {
        let out = &mut self.0[i % WRK_THREAD_COUNT];
        writeln!(out, "{}\t{body}", sign_hex(SECRET, body.as_bytes())).expect("write");
    }

    fn finish(self) {
        for mut out in self.0 {
            out.flush().expect("flush");
        }
    }
}

/// Writes `count` requests of `workload` for wrk (see [`RequestFiles`]).
fn write_requests(path: &Path, count: usize, workload: Workload, tag: &str) {
    let mut out = RequestFiles::create(path);
    if workload == Workload::Genesys {
        // Each file its own ids: replicas' files must not share any.
        let seed = tag
            .bytes()
            .fold(0x9e37_79b9_u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        for (i, body) in genesys_bodies(count, seed).enumerate() {
            out.write(i, &body);
        }
        out.finish();
        return;
    }
    let now = jiff::Timestamp::now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..count {
        // xorshift: reproducible queue choice without a dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let body = if workload == Workload::Mixed && i % 4 == 3 {
            format!(
                r#"{{"event":"agent:status","id":"{tag}-{i}","timestamp":"{now}","data":{{"agentId":"a-{}"}}}}"#,
                seed % 500
            )
        } else {
            format!(
                r#"{{"event":"conversation:updated","id":"{tag}-{i}","timestamp":"{now}","data":{{"state":"queued","queueId":"queue-{}","conversationId":"conv-{tag}-{i}","mediaType":"voice"}}}}"#,
                seed % QUEUES as u64
            )
        };
        out.write(i, &body);
    }
    out.finish();
}

struct Server {
    child: Child,
    addr: String,
    db_url: String,
}

impl Server {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let db_url = env
            .iter()
            .find(|(k, _)| *k == "GC_STATUS_DATABASE_URL")
            .map_or_else(
                || format!("sqlite://{}", dir.join("gc-status.db").display()),
                |(_, v)| (*v).to_owned(),
            );
        // Another build of gc-status (say, the last release) to compare against in one run.
        let binary = std::env::var_os("GC_STATUS_BENCH_BINARY").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_gc-status")),
            PathBuf::from,
        );
        let child = Command::new(binary)
            .env_clear()
            .env("LEPTOS_SITE_ADDR", &addr)
            .env("GC_STATUS_DATABASE_URL", &db_url)
            .env("GC_STATUS_HMAC_SECRETS", SECRET)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(
                std::env::var_os("GC_STATUS_BENCH_SERVER_LOG").map_or_else(Stdio::null, |p| {
                    Stdio::from(std::fs::File::create(p).expect("log file"))
                }),
            )
            .spawn()
            .expect("start gc-status");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
                let _ =
                    s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                let mut line = String::new();
                let _ = std::io::BufReader::new(s).read_line(&mut line);
                line.contains(" 200 ")
            });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "gc-status did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            addr,
            db_url,
        }
    }

    /// Peak resident memory so far (MiB).
    fn peak_rss_mib(&self) -> f64 {
        memory_mib(self.child.id(), "VmHWM:")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `perf record` on the server while wrk runs, when `GC_STATUS_BENCH_PERF=<file>` asks for it
/// (Debian's `linux-perf`; `perf report -i <file> --sort comm,sym` then shows where each
/// thread's time went: the SQLite statements run on `sqlx-sqlite-wor…` threads).
struct Profiler(Child);

impl Profiler {
    fn attach(server: &Server) -> Option<Profiler> {
        let out = std::env::var_os("GC_STATUS_BENCH_PERF")?;
        let child = Command::new("perf")
            .args([
                "record",
                "-F",
                "1999",
                "-p",
                &server.child.id().to_string(),
                "-o",
            ])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run perf (apt-get install linux-perf)");
        Some(Profiler(child))
    }

    fn finish(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    accepted: u64,
    other: u64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Parses the `RESULT` line the wrk scripts print: the load, and any further numbers.
fn wrk_result(output: &std::process::Output) -> (Load, Vec<f64>) {
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "wrk printed no result:\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let n: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("a number"))
        .collect();
    let load = Load {
        accepted: n[0] as u64,
        other: n[1] as u64,
        per_second: n[0] / (n[5] / 1e6),
        p50_ms: n[2] / 1000.0,
        p99_ms: n[3] / 1000.0,
        max_ms: n[4] / 1000.0,
    };
    (load, n[6..].to_vec())
}

/// How wrk's connections behave.
#[derive(Clone, Copy, PartialEq)]
enum Connections {
    KeepAlive,
    /// `Connection: close` on every request, as Amazon EventBridge API destinations send: a
    /// new TCP connection per request.
    Close,
}

fn run_wrk(addr: &str, requests: &Path, duration: Duration, dir: &Path, how: Connections) -> Load {
    wrk_with(addr, requests, duration, dir, CONNECTIONS, how)
}

/// Sends each request of `requests` at most once, over `connections`; panics if they ran out
/// before `duration` ended (the rest of the run would not have been measured).
fn wrk_with(
    addr: &str,
    requests: &Path,
    duration: Duration,
    dir: &Path,
    connections: usize,
    how: Connections,
) -> Load {
    let script = dir.join("signed.lua");
    std::fs::write(&script, [WRK_THREADS, WRK_SCRIPT].concat()).expect("write the wrk script");
    let output = Command::new("wrk")
        .args([
            &format!("-t{WRK_THREAD_COUNT}"),
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs()),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .arg("--")
        .arg(requests)
        .arg(WRK_THREAD_COUNT.to_string())
        .arg(if how == Connections::Close {
            "close"
        } else {
            "keep-alive"
        })
        .output()
        .expect("run wrk (apt-get install wrk)");
    let (load, ran_out) = wrk_result(&output);
    assert_eq!(
        ran_out.first().copied(),
        Some(0.0),
        "wrk ran out of requests before {duration:?}: write more of them"
    );
    load
}

async fn count(db_url: &str, sql: &'static str) -> i64 {
    if db_url.starts_with("postgres") {
        let mut conn = PgConnection::connect(db_url).await.expect("open");
        return sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count");
    }
    let mut conn = SqliteConnection::connect(db_url).await.expect("open");
    sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

/// A PostgreSQL server for the `postgres-*` scenarios: `GC_STATUS_BENCH_POSTGRES`, or a local
/// cluster started now (fsync on) and stopped when this is dropped.
struct PostgresServer {
    url: String,
    cluster: Option<PathBuf>,
}

impl PostgresServer {
    fn start() -> PostgresServer {
        if let Ok(url) = std::env::var("GC_STATUS_BENCH_POSTGRES") {
            return PostgresServer { url, cluster: None };
        }
        // Under /tmp: the server runs as `postgres`, which must reach the directory.
        let dir = PathBuf::from(format!("/tmp/gc-status-pg-bench-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster.sh");
        let output = Command::new(&script)
            .arg("start")
            .arg(&dir)
            .env("FSYNC", "on")
            .output()
            .expect("run scripts/pg-cluster.sh");
        assert!(
            output.status.success(),
            "cannot start PostgreSQL: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PostgresServer {
            url: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            cluster: Some(dir),
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.cluster {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster.sh");
            let _ = Command::new(script).arg("stop").arg(dir).status();
        }
    }
}

/// `shipped-mixed` on PostgreSQL with `replicas` replicas sharing one new database.
/// The events a workload sent that are in the database (a preloaded event's id starts `pre-`).
fn stored_sql(workload: Workload) -> &'static str {
    match workload {
        Workload::Genesys => "SELECT COUNT(*) FROM events WHERE id NOT LIKE 'pre-%'",
        Workload::Updates | Workload::Mixed => "SELECT COUNT(*) FROM events WHERE id LIKE 'b-%'",
    }
}

async fn on_postgres(
    dir: &Path,
    duration: Duration,
    replicas: usize,
    workload: Workload,
) -> Outcome {
    let postgres = PostgresServer::start();
    let database = gc_status::server::store::create_test_database(&postgres.url)
        .await
        .expect("create the bench database");
    let needed = (duration.as_secs() as usize + 2) * 40_000;
    let env = [("GC_STATUS_DATABASE_URL", database.as_str())];
    let mut servers = Vec::new();
    let mut files = Vec::new();
    for r in 0..replicas {
        let replica_dir = dir.join(format!("replica-{r}"));
        std::fs::create_dir_all(&replica_dir).expect("dir");
        let requests = replica_dir.join("requests.tsv");
        // Every replica's events are distinct: `b-<replica>x-<n>`.
        write_requests(&requests, needed / replicas, workload, &format!("b-{r}x"));
        servers.push(Server::start(&replica_dir, &env));
        files.push((replica_dir, requests));
    }
    let connections = CONNECTIONS / replicas;
    let loads: Vec<Load> = std::thread::scope(|scope| {
        let runs: Vec<_> = servers
            .iter()
            .zip(&files)
            .map(|(server, (replica_dir, requests))| {
                scope.spawn(move || {
                    wrk_with(
                        &server.addr,
                        requests,
                        duration,
                        replica_dir,
                        connections,
                        Connections::KeepAlive,
                    )
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("wrk")).collect()
    });
    let load = Load {
        accepted: loads.iter().map(|l| l.accepted).sum(),
        other: loads.iter().map(|l| l.other).sum(),
        per_second: loads.iter().map(|l| l.per_second).sum(),
        p50_ms: loads.iter().map(|l| l.p50_ms).fold(0.0, f64::max),
        p99_ms: loads.iter().map(|l| l.p99_ms).fold(0.0, f64::max),
        max_ms: loads.iter().map(|l| l.max_ms).fold(0.0, f64::max),
    };
    let backlog = count(&database, OPEN_EVENTS).await;
    let started = Instant::now();
    while count(&database, OPEN_EVENTS).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the backlog does not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = started.elapsed();
    let stored = count(&database, stored_sql(workload)).await;
    assert!(
        stored as u64 >= load.accepted,
        "{} acknowledged but {stored} stored",
        load.accepted
    );
    let note = format!(
        "{replicas} replica(s); backlog {backlog} drained in {:.1} s; {stored} stored ≥ {} acknowledged; peak RSS {:.0} MiB",
        drained.as_secs_f64(),
        load.accepted,
        servers.iter().map(Server::peak_rss_mib).fold(0.0, f64::max)
    );
    for server in servers {
        server.stop();
    }
    Outcome { load, note }
}

/// Fills a fresh database with `n` stored events (`status`), as if received earlier.
async fn preload(dir: &Path, n: usize, status: &str) {
    // Create the schema with the real binary, then add rows directly: much faster than HTTP.
    let server = Server::start(dir, &[("GC_STATUS_WORKERS", "0")]);
    let db_url = server.db_url.clone();
    server.stop();
    let mut conn = SqliteConnection::connect(&db_url).await.expect("open");
    let now = jiff::Timestamp::now();
    let now_ms = now.as_millisecond();
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO events (id, event_type, payload, received_at, next_attempt_at, status, processed_at)
         SELECT 'pre-' || i,
                CASE WHEN i % 4 = 3 THEN 'agent:status' ELSE 'conversation:updated' END,
                CASE WHEN i % 4 = 3
                  THEN printf('{{\"event\":\"agent:status\",\"id\":\"pre-%d\",\"timestamp\":\"{now}\",\"data\":{{\"agentId\":\"a-%d\"}}}}', i, i % 500)
                  ELSE printf('{{\"event\":\"conversation:updated\",\"id\":\"pre-%d\",\"timestamp\":\"{now}\",\"data\":{{\"state\":\"queued\",\"queueId\":\"queue-%d\",\"conversationId\":\"conv-pre-%d\"}}}}', i, i % {QUEUES}, i)
                END,
                {now_ms}, {now_ms}, '{status}', CASE WHEN '{status}' = 'done' THEN {now_ms} END
           FROM n"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("preload");
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
        .expect("checkpoint");
}

/// Polls `GET /api/v2/queues` from `pollers` clients every 100 ms and keeps `streams` status
/// streams open until `stop`; returns the number of successful polls.
fn start_readers(
    addr: &str,
    pollers: usize,
    streams: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let addr = addr.to_owned();
    on_own_thread(move || async move {
        let polls = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..pollers {
            let (addr, stop, polls) = (addr.clone(), stop.clone(), polls.clone());
            tasks.spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = client
                        .get(format!("http://{addr}/api/v2/queues"))
                        .send()
                        .await
                    {
                        if r.bytes().await.is_ok() {
                            polls.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        for _ in 0..streams {
            let (addr, stop) = (addr.clone(), stop.clone());
            tasks.spawn(async move {
                let client = reqwest::Client::new();
                if let Ok(mut r) = client
                    .get(format!("http://{addr}/api/v2/stream"))
                    .send()
                    .await
                {
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(200), r.chunk()).await {
                            Ok(Ok(Some(_))) | Err(_) => {}
                            _ => break,
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        polls.load(Ordering::Relaxed)
    })
}

/// A scenario's workload, server environment, preloaded events, whether readers run, and
/// which slow clients (and how many) run beside wrk.
type ScenarioSetup = (
    Workload,
    Vec<(&'static str, &'static str)>,
    usize,
    bool,
    Option<(Slow, usize)>,
);

/// How the slow clients of a scenario misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slow {
    /// Half send a signed webhook's head and trickle its body a byte a second, half trickle
    /// a head that never ends.
    Trickle,
    /// Connect and send nothing at all.
    Idle,
    /// `POST /api/login` declaring a 1,000-byte body that never comes.
    StalledSignIn,
}

/// Opens `n` connections that misbehave as `kind` says, each reconnecting when the server
/// cuts it off, until `stop`. They come from 127.0.0.2–127.0.0.5, as a few misbehaving hosts
/// would (each under the per-address cap), while wrk sends from 127.0.0.1.
fn start_slow_clients(
    addr: &str,
    n: usize,
    kind: Slow,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    on_own_thread(move || async move {
        use tokio::io::AsyncWriteExt as _;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let stop = stop.clone();
            let from = std::net::SocketAddr::from(([127, 0, 0, 2 + (i % 4) as u8], 0));
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let connected = async {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind(from)?;
                        socket.connect(addr).await
                    };
                    let Ok(mut s) = connected.await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let head = match (kind, i % 2) {
                        (Slow::Trickle, 0) => "POST /api/v2/webhooks/gc-status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-gc-signature: 00\r\ncontent-length: 100000\r\n\r\n{",
                        (Slow::Trickle, _) => "POST /api/v2/webhooks/gc-status HTTP/1.1\r\nhost: x\r\n",
                        (Slow::Idle, _) => "",
                        (Slow::StalledSignIn, _) => "POST /api/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\nsecret=",
                    };
                    if s.write_all(head.as_bytes()).await.is_err() {
                        continue;
                    }
                    let mut answer = [0u8; 256];
                    while !stop.load(Ordering::Relaxed) {
                        let trickle: &[u8] = match (kind, i % 2) {
                            (Slow::Trickle, 0) => b" ",
                            (Slow::Trickle, _) => b"x-idle: 1\r\n",
                            _ => b"",
                        };
                        // Wait a second, or until the server answers or closes.
                        let read = tokio::time::timeout(
                            Duration::from_secs(1),
                            tokio::io::AsyncReadExt::read(&mut s, &mut answer),
                        )
                        .await;
                        if read.is_ok() {
                            break;
                        }
                        if !trickle.is_empty() && s.write_all(trickle).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// Runs the future `task` makes on a thread of its own with its own runtime, so the load
/// it generates (readers, slow clients, the sink) is not scheduled with the benchmark's.
fn on_own_thread<T, F>(task: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(task())
    })
}

struct Outcome {
    load: Load,
    note: String,
}

/// A downstream for the forwarding scenario: `/token` issues hour-long tokens, `/sink`
/// answers 202 and counts.
struct Sink {
    addr: std::net::SocketAddr,
    delivered: Arc<AtomicU64>,
    token_requests: Arc<AtomicU64>,
}

fn start_sink() -> Sink {
    use axum::{routing::post, Router};
    let delivered = Arc::new(AtomicU64::new(0));
    let token_requests = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    let (d, t) = (delivered.clone(), token_requests.clone());
    let app = Router::new()
        .route(
            "/token",
            post(move || async move {
                t.fetch_add(1, Ordering::Relaxed);
                axum::Json(serde_json::json!({
                    "access_token": "bench-token", "token_type": "Bearer", "expires_in": 3600
                }))
            }),
        )
        .route(
            "/sink",
            post(move || async move {
                d.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::ACCEPTED
            }),
        );
    on_own_thread(move || async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let _ = axum::serve(listener, app).await;
    });
    Sink {
        addr,
        delivered,
        token_requests,
    }
}

async fn scenario(name: &str, duration: Duration, minutes: u64) -> Outcome {
    let dir = tempfile::Builder::new()
        .prefix("gc-status-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let requests = dir.path().join("requests.tsv");
    // Enough distinct events that none is sent twice at 40,000/s.
    let needed = (duration.as_secs() as usize + 2) * 40_000;
    let (workload, env, preloaded, readers, slow): ScenarioSetup = match name {
        "workers-off" | "real-workers-off" => (
            if name == "workers-off" {
                Workload::Updates
            } else {
                Workload::Genesys
            },
            vec![("GC_STATUS_WORKERS", "0")],
            0,
            false,
            None,
        ),
        "shipped-mixed" | "shipped-forwarding" => (Workload::Mixed, vec![], 0, false, None),
        "real-shipped" | "real-close" => (Workload::Genesys, vec![], 0, false, None),
        "real-hmac-only" => return hmac_only(dir.path(), duration, Connections::KeepAlive).await,
        "real-hmac-only-close" => return hmac_only(dir.path(), duration, Connections::Close).await,
        "real-postgres-1" => return on_postgres(dir.path(), duration, 1, Workload::Genesys).await,
        "stored-1m" => (
            Workload::Updates,
            vec![("GC_STATUS_WORKERS", "0")],
            1_000_000,
            false,
            None,
        ),
        "stored-1m-readers" => (
            Workload::Updates,
            vec![("GC_STATUS_WORKERS", "0")],
            1_000_000,
            true,
            None,
        ),
        "slow-clients" => (
            Workload::Mixed,
            vec![("GC_STATUS_REQUEST_READ_TIMEOUT_SECS", "10")],
            0,
            false,
            Some((Slow::Trickle, 1_000)),
        ),
        "idle-connections" => (
            Workload::Mixed,
            vec![("GC_STATUS_REQUEST_READ_TIMEOUT_SECS", "10")],
            0,
            false,
            Some((Slow::Idle, 1_000)),
        ),
        "stalled-bodies" => (
            Workload::Mixed,
            vec![("GC_STATUS_REQUEST_READ_TIMEOUT_SECS", "10")],
            0,
            false,
            Some((Slow::StalledSignIn, 500)),
        ),
        "drain-1m" => return drain(dir.path()).await,
        "postgres-1" => return on_postgres(dir.path(), duration, 1, Workload::Mixed).await,
        "postgres-2" => return on_postgres(dir.path(), duration, 2, Workload::Mixed).await,
        "snapshot-5m" => return snapshot_cost(dir.path()).await,
        "wallboard-50" => return wallboard(dir.path()).await,
        "soak" => return soak(dir.path(), minutes, false).await,
        "soak-postgres" => return soak(dir.path(), minutes, true).await,
        other => panic!("unknown scenario {other}"),
    };
    if preloaded > 0 {
        preload(dir.path(), preloaded, "done").await;
    }
    write_requests(&requests, needed, workload, "b");
    // A local sink with a token endpoint, for the forwarding scenario.
    let sink = (name == "shipped-forwarding").then(start_sink);
    let sink_env: Vec<(&str, String)> = match &sink {
        Some(sink) => vec![
            ("GC_STATUS_SINK_URL", format!("http://{}/sink", sink.addr)),
            (
                "GC_STATUS_OAUTH_TOKEN_URL",
                format!("http://{}/token", sink.addr),
            ),
            ("GC_STATUS_OAUTH_CLIENT_ID", "bench".to_owned()),
            ("GC_STATUS_OAUTH_CLIENT_SECRET", "bench-secret".to_owned()),
        ],
        None => Vec::new(),
    };
    let mut env = env;
    env.extend(sink_env.iter().map(|(k, v)| (*k, v.as_str())));
    let server = Server::start(dir.path(), &env);
    let stop = Arc::new(AtomicBool::new(false));
    let reader_thread = readers.then(|| start_readers(&server.addr, 200, 200, stop.clone()));
    let slow_thread = slow.map(|(kind, n)| start_slow_clients(&server.addr, n, kind, stop.clone()));
    if readers || slow.is_some() {
        std::thread::sleep(Duration::from_secs(2));
    }
    let how = if name == "real-close" {
        Connections::Close
    } else {
        Connections::KeepAlive
    };
    let profiler = Profiler::attach(&server);
    let load = run_wrk(&server.addr, &requests, duration, dir.path(), how);
    if let Some(profiler) = profiler {
        profiler.finish();
    }
    let mut note = commit_cycle(&server.addr).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = reader_thread {
        let polls = t.join().expect("readers");
        note += &format!("{polls} polls answered; ");
    }
    if let Some(t) = slow_thread {
        t.join().expect("slow clients");
    }
    let backlog = count(&server.db_url, OPEN_EVENTS).await;
    if let Some(sink) = &sink {
        // Every event the statistics accepted is delivered once; how long the rest takes.
        let started = Instant::now();
        let waiting = "SELECT COUNT(*) FROM events WHERE forward_state IN ('pending', 'sending')";
        while count(&server.db_url, OPEN_EVENTS).await > 0
            || count(&server.db_url, waiting).await > 0
        {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "forwarding does not catch up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let forwarded = count(
            &server.db_url,
            "SELECT COUNT(*) FROM events WHERE forward_state = 'done'",
        )
        .await;
        let delivered = sink.delivered.load(Ordering::Relaxed);
        assert_eq!(
            delivered as i64, forwarded,
            "each forwarded event delivered once"
        );
        note += &format!(
            "{delivered} delivered ({:.0}/s over the run and the {:.1} s to catch up), {} token requests; ",
            delivered as f64 / (duration + started.elapsed()).as_secs_f64(),
            started.elapsed().as_secs_f64(),
            sink.token_requests.load(Ordering::Relaxed)
        );
    }
    if ["shipped-mixed", "real-shipped", "real-close"].contains(&name) {
        let started = Instant::now();
        while count(&server.db_url, OPEN_EVENTS).await > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the backlog does not drain"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        note += &format!(
            "backlog {backlog} drained in {:.1} s; ",
            started.elapsed().as_secs_f64()
        );
    }
    let stored = count(&server.db_url, stored_sql(workload)).await;
    assert!(
        stored as u64 >= load.accepted,
        "{name}: {} acknowledged but {stored} stored",
        load.accepted
    );
    note += &format!(
        "{stored} stored ≥ {} acknowledged; peak RSS {:.0} MiB",
        load.accepted,
        server.peak_rss_mib()
    );
    server.stop();
    Outcome { load, note }
}

/// The ingest writer's cycle over the run, from the server's `/metrics`: events per commit,
/// how long a commit took and how long the writer waited for the write gate before it.
async fn commit_cycle(addr: &str) -> String {
    let Ok(answer) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return String::new();
    };
    let text = answer.text().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mean = |metric: &str| {
        let count = value(&format!("{metric}_count "));
        (count > 0.0).then(|| value(&format!("{metric}_sum ")) / count)
    };
    match (
        mean("gc_status_ingest_batch_events"),
        mean("gc_status_ingest_commit_seconds"),
        mean("gc_status_ingest_gate_wait_seconds"),
    ) {
        (Some(events), Some(commit), Some(wait)) => {
            let applied = match mean("gc_status_inline_apply_seconds") {
                Some(apply) => format!(
                    ", {:.0} rounds of inline verdicts in {:.1} ms",
                    value("gc_status_inline_apply_seconds_count "),
                    apply * 1e3
                ),
                None => String::new(),
            };
            format!(
                "commits of {events:.0} events in {:.1} ms after {:.1} ms at the gate{applied}; ",
                commit * 1e3,
                wait * 1e3
            )
        }
        _ => String::new(),
    }
}

/// The ceiling for any receiver on this machine: axum doing only what none can skip (the
/// HMAC check and the JSON parse), storing nothing, with the same requests and the same wrk
/// in the same run.
async fn hmac_only(dir: &Path, duration: Duration, how: Connections) -> Outcome {
    use axum::{http::HeaderMap, http::StatusCode, routing::post};
    async fn accept(headers: HeaderMap, body: axum::body::Bytes) -> (StatusCode, &'static str) {
        let signed = headers
            .get("x-gc-signature")
            .is_some_and(|sig| sig.as_bytes() == sign_hex(SECRET, &body).as_bytes());
        if !signed {
            return (StatusCode::UNAUTHORIZED, r#"{"error":"bad signature"}"#);
        }
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(_) => (StatusCode::ACCEPTED, r#"{"status":"accepted"}"#),
            Err(_) => (StatusCode::BAD_REQUEST, r#"{"error":"not JSON"}"#),
        }
    }
    let requests = dir.join("requests.tsv");
    write_requests(
        &requests,
        (duration.as_secs() as usize + 2) * 70_000,
        Workload::Genesys,
        "hmac-only",
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("address").to_string();
    listener.set_nonblocking(true).expect("non-blocking");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // Two worker threads, like gc-status's runtime on this machine.
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().route("/api/v2/webhooks/gc-status", post(accept));
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
    });
    let load = run_wrk(&addr, &requests, duration, dir, how);
    let _ = stop.send(());
    server.join().expect("the baseline server");
    Outcome {
        load,
        note: match how {
            Connections::KeepAlive => "HMAC check + JSON parse only, nothing stored",
            Connections::Close => {
                "HMAC check + JSON parse only, nothing stored; a connection per request"
            }
        }
        .to_owned(),
    }
}

/// What one status snapshot costs with 5,000,000 stored events: `GET /api/v2/queues` with the
/// snapshot cache off, so each request reads the database.
async fn snapshot_cost(dir: &Path) -> Outcome {
    const STORED: usize = 5_000_000;
    preload(dir, STORED, "done").await;
    let server = Server::start(
        dir,
        &[
            ("GC_STATUS_STATUS_CACHE_MS", "0"),
            ("GC_STATUS_WORKERS", "0"),
        ],
    );
    let url = format!("http://{}/api/v2/queues", server.addr);
    let (took, body) = time_gets(&reqwest::Client::new(), &url, 200).await;
    assert!(body.contains(&format!("\"done\":{STORED}")), "{body}");
    server.stop();
    Outcome {
        load: latencies(took),
        note: format!("{STORED} events stored; latency of one uncached GET /api/v2/queues"),
    }
}

/// `GET /` with 50 active queues (as shipped: workers on, the 500 ms status cache), timed
/// request by request against `GET /healthz` as the baseline; plus the page's gzipped assets.
async fn wallboard(dir: &Path) -> Outcome {
    const QUEUES: usize = 50;
    const REQUESTS: usize = 1_000;
    let server = Server::start(dir, &[]);
    let client = reqwest::Client::new();
    let now = jiff::Timestamp::now();
    // Per queue: answered and abandoned conversations and some still waiting.
    let mut sent = 0;
    for q in 0..QUEUES {
        for c in 0..12 {
            let states: &[&str] = match c % 4 {
                0 => &["queued"],
                1 => &["queued", "disconnected"],
                _ => &["queued", "connected", "disconnected"],
            };
            for (step, state) in states.iter().enumerate() {
                let at = now - jiff::SignedDuration::from_secs(600 - 60 * step as i64);
                let body = serde_json::json!({
                    "event": "conversation:updated",
                    "id": format!("w-{q}-{c}-{step}"),
                    "timestamp": at.to_string(),
                    "data": {"state": state, "queueId": format!("queue-{q:02}"),
                             "queueName": format!("Queue {q:02}"), "conversationId": format!("conv-{q}-{c}")},
                })
                .to_string();
                let answer = client
                    .post(format!("http://{}/api/v2/webhooks/gc-status", server.addr))
                    .header("content-type", "application/json")
                    .header("x-gc-signature", sign_hex(SECRET, body.as_bytes()))
                    .body(body)
                    .send()
                    .await
                    .expect("posted");
                assert_eq!(answer.status(), 202);
                sent += 1;
            }
        }
    }
    while count(&server.db_url, OPEN_EVENTS).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = |path: &str| format!("http://{}{path}", server.addr);
    let (baseline, _) = time_gets(&client, &url("/healthz"), REQUESTS).await;
    let (page, html) = time_gets(&client, &url("/"), REQUESTS).await;
    let rows = html.matches("<tr data-queue=").count();
    assert_eq!(rows, QUEUES, "every queue is on the page");
    let base50 = median(baseline);
    let load = latencies(page);
    let p50 = load.p50_ms;
    let assets = asset_sizes(&server.addr).await;
    server.stop();
    Outcome {
        load,
        note: format!(
            "{QUEUES} queues from {sent} events; GET / p50 {p50:.2} ms vs GET /healthz p50 \
             {base50:.2} ms (×{:.1}); {assets}",
            p50 / base50
        ),
    }
}

/// What the wallboard downloads besides its HTML (`target/site/pkg`: the main wasm, its JS,
/// the split-chunk loader and the CSS): gzipped at level 9, and as the server sends it to a
/// browser that accepts brotli.
async fn asset_sizes(addr: &str) -> String {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/site/pkg");
    let Ok(dir) = std::fs::read_dir(&pkg) else {
        return "assets not built (run `cargo leptos build --release --split`)".into();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            matches!(
                n.as_str(),
                "gc-status.wasm" | "gc-status.js" | "gc-status.css"
            ) || (n.starts_with("__wasm_split") && n.ends_with(".js"))
        })
        .collect();
    names.sort();
    let client = reqwest::Client::new();
    let (mut gzipped, mut served) = (0, 0);
    for name in &names {
        let Ok(output) = Command::new("gzip").arg("-9c").arg(pkg.join(name)).output() else {
            return "gzip not found: asset sizes not measured".into();
        };
        gzipped += output.stdout.len();
        let body = client
            .get(format!("http://{addr}/pkg/{name}"))
            .header("accept-encoding", "br")
            .send()
            .await
            .expect("asset served")
            .bytes()
            .await
            .expect("asset body");
        served += body.len();
    }
    format!(
        "assets ({}): {:.1} KB gzipped (-9), {:.1} KB as served (brotli)",
        names.join(" + "),
        gzipped as f64 / 1024.0,
        served as f64 / 1024.0
    )
}

/// The token the soak's requests carry (`GC_STATUS_TOKENS`).
const SOAK_TOKEN: &str = "bench-soak-token";

/// What the soak's sampler reads every 5 s.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    /// Seconds since the load began.
    at: f64,
    /// The server's resident memory (MiB).
    rss_mib: f64,
    /// SQLite: the WAL file (bytes). PostgreSQL: the `events` table with its indexes and TOAST.
    wal_or_table: u64,
    /// SQLite: the database file (bytes). PostgreSQL: the table's dead rows.
    file_or_dead: u64,
}

/// A memory figure of process `pid` (MiB): `field` is a line of `/proc/PID/status`, such as
/// `VmRSS:` (resident now) or `VmHWM:` (peak).
fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Ten minutes (`minutes`) of what senders really send, at 16 connections, one wrk run a minute;
/// on PostgreSQL when `postgres`.
async fn soak(dir: &Path, minutes: u64, postgres: bool) -> Outcome {
    const SOAK_CONNECTIONS: usize = 16;
    const WAL_BOUND: u64 = 64 * 1024 * 1024; // the default GC_STATUS_WAL_LIMIT_MB
    let pg = postgres.then(PostgresServer::start);
    let database = match &pg {
        Some(pg) => Some(
            gc_status::server::store::create_test_database(&pg.url)
                .await
                .expect("create the bench database"),
        ),
        None => None,
    };
    let mut env = vec![("GC_STATUS_TOKENS", SOAK_TOKEN)];
    if let Some(url) = &database {
        env.push(("GC_STATUS_DATABASE_URL", url.as_str()));
    }
    let server = Server::start(dir, &env);
    let script = dir.join("soak.lua");
    std::fs::write(&script, soak_script()).expect("write the wrk script");

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (stop, pid) = (stop.clone(), server.child.id());
        let file = dir.join("gc-status.db");
        let wal = dir.join("gc-status.db-wal");
        let database = database.clone();
        on_own_thread(move || async move {
            let mut pg = match &database {
                Some(url) => Some(PgConnection::connect(url).await.expect("open")),
                None => None,
            };
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (wal_or_table, file_or_dead) = match &mut pg {
                    Some(conn) => sqlx::query_as::<_, (i64, i64)>(
                        "SELECT pg_total_relation_size('events'),
                                COALESCE((SELECT n_dead_tup FROM pg_stat_user_tables
                                           WHERE relname = 'events'), 0)",
                    )
                    .fetch_one(conn)
                    .await
                    .map_or((0, 0), |(size, dead)| (size as u64, dead as u64)),
                    None => (
                        std::fs::metadata(&wal).map_or(0, |m| m.len()),
                        std::fs::metadata(&file).map_or(0, |m| m.len()),
                    ),
                };
                samples.push(Sample {
                    at: started.elapsed().as_secs_f64(),
                    rss_mib: memory_mib(pid, "VmRSS:"),
                    wal_or_table,
                    file_or_dead,
                });
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            samples
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let mut minutes_run: Vec<(Load, u64)> = Vec::new();
    for minute in 0..minutes.max(1) {
        let output = Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{SOAK_CONNECTIONS}"),
                "-d60s",
                "--timeout",
                "10s",
                "-s",
            ])
            .arg(&script)
            .arg(format!("http://{}", server.addr))
            .arg("--")
            .arg((seed + minute).to_string())
            .arg(SOAK_TOKEN)
            .output()
            .expect("run wrk (apt-get install wrk)");
        let (load, extra) = wrk_result(&output);
        let duplicates = extra.first().copied().unwrap_or(0.0) as u64;
        minutes_run.push((load, duplicates));
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let db_url = server.db_url.clone();
    let backlog = count(&db_url, OPEN_EVENTS).await;
    let stored = count(&db_url, "SELECT COUNT(*) FROM events").await;

    println!(
        "  {:>6} {:>10} {:>8} {:>8} {:>14} {:>14} {:>9}",
        "minute",
        "acks/s",
        "p99 ms",
        "max ms",
        if postgres {
            "events MiB"
        } else {
            "max WAL MiB"
        },
        if postgres { "dead rows" } else { "db MiB" },
        "RSS MiB"
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut largest = 0;
    let mut rss_per_minute = Vec::new();
    for (m, (load, _)) in minutes_run.iter().enumerate() {
        let window: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= m as f64 * 60.0 && s.at < (m + 1) as f64 * 60.0)
            .collect();
        let top = window.iter().map(|s| s.wal_or_table).max().unwrap_or(0);
        let last = window.last().copied().copied().unwrap_or_default();
        largest = largest.max(top);
        rss_per_minute.push(last.rss_mib);
        println!(
            "  {:>6} {:>10.0} {:>8.2} {:>8.1} {:>14.1} {:>14} {:>9.1}",
            m + 1,
            load.per_second,
            load.p99_ms,
            load.max_ms,
            mib(top),
            if postgres {
                last.file_or_dead.to_string()
            } else {
                format!("{:.1}", mib(last.file_or_dead))
            },
            last.rss_mib
        );
    }
    let accepted: u64 = minutes_run.iter().map(|(l, _)| l.accepted).sum();
    let duplicates: u64 = minutes_run.iter().map(|(_, d)| *d).sum();
    let other: u64 = minutes_run.iter().map(|(l, _)| l.other).sum();
    assert!(
        stored as u64 >= accepted,
        "{accepted} acknowledged but {stored} stored"
    );
    let (first, last) = (
        minutes_run.first().map(|(l, _)| *l).unwrap_or_default(),
        minutes_run.last().map(|(l, _)| *l).unwrap_or_default(),
    );
    // RSS after the first minute: flat means within 20% of its lowest.
    let settled = &rss_per_minute[1.min(rss_per_minute.len() - 1)..];
    let (low, high) = settled
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let wal_note = if postgres {
        format!("events table at most {:.0} MiB", mib(largest))
    } else {
        format!(
            "WAL at most {:.1} MiB (bound {:.0}: {})",
            mib(largest),
            mib(WAL_BOUND),
            verdict(largest <= WAL_BOUND)
        )
    };
    let note = format!(
        "{minutes} min at c={SOAK_CONNECTIONS}; {wal_note}; RSS {low:.0}–{high:.0} MiB after minute 1 ({}); \
         last minute {:.0}/s p99 {:.2} ms vs first {:.0}/s p99 {:.2} ms ({}); \
         {stored} stored ≥ {accepted} acknowledged, {duplicates} duplicate ids, {other} non-202; backlog at the end {backlog}",
        verdict(high <= low * 1.2),
        last.per_second,
        last.p99_ms,
        first.per_second,
        first.p99_ms,
        verdict(last.per_second >= first.per_second * 0.9 && last.p99_ms <= first.p99_ms * 1.1),
    );
    server.stop();
    drop(pg);
    let all = Load {
        accepted,
        other,
        per_second: accepted as f64 / (minutes_run.len() as f64 * 60.0),
        p50_ms: median(minutes_run.iter().map(|(l, _)| l.p50_ms).collect()),
        p99_ms: median(minutes_run.iter().map(|(l, _)| l.p99_ms).collect()),
        max_ms: minutes_run
            .iter()
            .map(|(l, _)| l.max_ms)
            .fold(0.0, f64::max),
    };
    Outcome { load: all, note }
}

/// Processing alone: how fast a stored backlog of 1,000,000 mixed events is worked off.
async fn drain(dir: &Path) -> Outcome {
    const BACKLOG: usize = 1_000_000;
    preload(dir, BACKLOG, "pending").await;
    let started = Instant::now();
    let server = Server::start(dir, &[]);
    loop {
        let open = count(&server.db_url, OPEN_EVENTS).await;
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the backlog does not drain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let note = format!(
        "{BACKLOG} events pending → done/dead in {took:.1} s; peak RSS {:.0} MiB",
        server.peak_rss_mib()
    );
    server.stop();
    Outcome {
        load: Load {
            accepted: BACKLOG as u64,
            per_second: BACKLOG as f64 / took,
            ..Load::default()
        },
        note,
    }
}

/// `n` sequential GETs of `url`: each one's time (ms) and the last body.
async fn time_gets(client: &reqwest::Client, url: &str, n: usize) -> (Vec<f64>, String) {
    let mut took = Vec::with_capacity(n);
    let mut body = String::new();
    for _ in 0..n {
        let started = Instant::now();
        body = client
            .get(url)
            .send()
            .await
            .expect("answered")
            .text()
            .await
            .expect("body");
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    (took, body)
}

/// p50, p99 and max of request times (ms), as a [`Load`] of that many requests.
fn latencies(mut took: Vec<f64>) -> Load {
    took.sort_by(f64::total_cmp);
    Load {
        accepted: took.len() as u64,
        p50_ms: took[took.len() / 2],
        p99_ms: took[took.len() * 99 / 100],
        max_ms: took[took.len() - 1],
        ..Load::default()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut scenarios = Vec::new();
    let mut duration = Duration::from_secs(15);
    let mut rounds = 1;
    let mut minutes = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scenario" => scenarios.push(args.next().expect("a scenario name")),
            "--duration" => {
                duration =
                    Duration::from_secs(args.next().and_then(|v| v.parse().ok()).expect("seconds"))
            }
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("a count"),
            "--minutes" => minutes = args.next().and_then(|v| v.parse().ok()).expect("minutes"),
            _ => {} // cargo bench passes `--bench`
        }
    }
    if scenarios.is_empty() {
        scenarios = [
            "workers-off",
            "shipped-mixed",
            "stored-1m",
            "stored-1m-readers",
            "slow-clients",
            "idle-connections",
            "stalled-bodies",
            "drain-1m",
        ]
        .map(String::from)
        .to_vec();
    }
    let _: PathBuf = PathBuf::new();
    println!(
        "{:<20} {:>12} {:>9} {:>9} {:>9} {:>7}  notes",
        "scenario", "events/s", "p50 ms", "p99 ms", "max ms", "non-202"
    );
    for name in &scenarios {
        let mut outcomes = Vec::new();
        for _ in 0..rounds {
            outcomes.push(scenario(name, duration, minutes).await);
        }
        let load = |f: fn(&Load) -> f64| median(outcomes.iter().map(|o| f(&o.load)).collect());
        println!(
            "{:<20} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>7}  {}",
            name,
            load(|l| l.per_second),
            load(|l| l.p50_ms),
            load(|l| l.p99_ms),
            load(|l| l.max_ms),
            outcomes.iter().map(|o| o.load.other).max().unwrap_or(0),
            outcomes.last().map(|o| o.note.as_str()).unwrap_or_default()
        );
    }
}
