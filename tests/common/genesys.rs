//! A fake Genesys Cloud: a real HTTP and websocket server on 127.0.0.1 with the shapes of
//! Genesys's SDK models (paging fields, `calculatedMetricValue`, lowercase media types in
//! observation groups) and its failure modes (401 for expired or revoked tokens, 429 with
//! `Retry-After`, 404 for a conversation analytics has not caught up with), for the
//! connector's tests.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        Path, Query, State,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::broadcast;

pub const CLIENT_ID: &str = "gc-status-test-client";
pub const CLIENT_SECRET: &str = "fake-genesys-client-secret-3f9a";

/// A queue the fake org has.
#[derive(Clone, Debug)]
pub struct FakeQueue {
    pub id: String,
    pub name: String,
    /// Voice's service-level target: (ratio, ms).
    pub target: (f64, i64),
}

/// One media type's live figures of a queue.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub waiting: i64,
    pub interacting: i64,
    /// Epoch ms the longest wait began.
    pub longest_since: Option<i64>,
}

/// One half hour's figures of a queue and media type.
#[derive(Clone, Debug)]
pub struct HalfHour {
    pub start: i64,
    pub offered: i64,
    pub answered: i64,
    pub answer_ms_sum: i64,
    pub abandoned: i64,
}

#[derive(Default)]
pub struct Org {
    pub queues: Vec<FakeQueue>,
    /// Queues per page the fake serves (the connector asks for 100; a small page makes it page).
    pub page_size: usize,
    /// (queue, media) → live figures.
    pub live: BTreeMap<(String, String), Live>,
    /// queue → (idle, interacting) agents on queue.
    pub agents: BTreeMap<String, (i64, i64)>,
    /// (queue, media) → half hours of today.
    pub half_hours: BTreeMap<(String, String), Vec<HalfHour>>,
    /// conversation → (queue, media); with how many 404s come before the answer.
    pub conversations: HashMap<String, (String, String, u32)>,
    /// Lifetime of the tokens issued (seconds).
    pub token_lifetime: u64,
    /// Issued tokens and until when each is accepted.
    pub tokens: HashMap<String, Instant>,
    pub token_requests: u32,
    /// Issued tokens, to check none reaches a log.
    pub issued: Vec<String>,
    /// The next calls to this path prefix answer 429 with `Retry-After` (seconds).
    pub rate_limit: Option<(String, u32, u64)>,
    /// The next calls to this path prefix answer this status (502, 503, 504: a bad gateway).
    pub fail_next: Option<(String, u32, u16)>,
    /// Sockets send nothing, not even heartbeats (a connection dead without a close).
    pub silent_sockets: bool,
    /// Every API call: (when, method + path, status).
    pub calls: Vec<(Instant, String, u16)>,
    /// Bodies of the aggregate queries.
    pub aggregate_queries: Vec<Value>,
    pub channels: u32,
    pub subscriptions: Vec<Vec<String>>,
    pub sockets_opened: u32,
}

impl Org {
    /// An org with `queues` and nothing else yet.
    pub fn with_queues(queues: Vec<FakeQueue>) -> Org {
        Org {
            queues,
            ..Org::default()
        }
    }

    /// `media` of `queue` with `waiting` and `interacting` conversations.
    pub fn live(mut self, queue: &str, media: &str, waiting: i64, interacting: i64) -> Org {
        self.live.insert(
            (queue.into(), media.into()),
            Live {
                waiting,
                interacting,
                longest_since: None,
            },
        );
        self
    }
}

pub struct FakeGenesys {
    pub addr: SocketAddr,
    pub org: Arc<Mutex<Org>>,
    /// Messages for every open socket (a `None` closes them after a `socket_closing`).
    push: broadcast::Sender<Option<String>>,
}

#[derive(Clone)]
struct Fake {
    org: Arc<Mutex<Org>>,
    push: broadcast::Sender<Option<String>>,
    addr: SocketAddr,
}

impl FakeGenesys {
    pub async fn start(org: Org) -> FakeGenesys {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Genesys");
        let addr = listener.local_addr().expect("address");
        let org = Arc::new(Mutex::new(Org {
            page_size: if org.page_size == 0 {
                100
            } else {
                org.page_size
            },
            token_lifetime: if org.token_lifetime == 0 {
                86_400
            } else {
                org.token_lifetime
            },
            ..org
        }));
        let (push, _) = broadcast::channel(64);
        let fake = Fake {
            org: org.clone(),
            push: push.clone(),
            addr,
        };
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v2/routing/queues", get(queues))
            .route(
                "/api/v2/analytics/queues/observations/query",
                post(observations),
            )
            .route(
                "/api/v2/analytics/conversations/aggregates/query",
                post(aggregates),
            )
            .route("/api/v2/analytics/conversations/{id}/details", get(details))
            .route("/api/v2/notifications/channels", post(channel))
            .route(
                "/api/v2/notifications/channels/{id}/subscriptions",
                put(subscribe),
            )
            .route("/ws/{id}", get(socket))
            .with_state(fake);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGenesys { addr, org, push }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn org(&self) -> std::sync::MutexGuard<'_, Org> {
        self.org.lock().expect("the fake's state")
    }

    /// Sends `message` to every open notifications socket.
    pub fn push(&self, message: Value) {
        let _ = self.push.send(Some(message.to_string()));
    }

    /// `v2.system.socket_closing`, then the server closes every socket.
    pub fn close_sockets(&self) {
        let _ = self.push.send(Some(
            json!({"topicName": "v2.system.socket_closing", "eventBody": {"message": "Socket closing"}})
                .to_string(),
        ));
        let _ = self.push.send(None);
    }

    /// How many calls reached `path_prefix` (method and path, e.g. `POST /api/v2/analytics`).
    pub fn calls_to(&self, prefix: &str) -> usize {
        self.org()
            .calls
            .iter()
            .filter(|(_, p, _)| p.starts_with(prefix))
            .count()
    }
}

/// `Some(answer)` for a call without a valid token (or rate-limited); records the call.
fn authorise(fake: &Fake, headers: &HeaderMap, call: String) -> Option<Response> {
    let mut org = fake.org.lock().expect("state");
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let valid = org
        .tokens
        .get(&token)
        .is_some_and(|until| Instant::now() < *until);
    if !valid {
        org.calls.push((Instant::now(), call, 401));
        return Some((
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Authentication failed", "code": "authentication.required", "status": 401})),
        )
            .into_response());
    }
    if let Some((prefix, left, secs)) = org.rate_limit.clone() {
        if call.contains(&prefix) && left > 0 {
            org.rate_limit = (left > 1).then(|| (prefix, left - 1, secs));
            org.calls.push((Instant::now(), call, 429));
            return Some((
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                Json(json!({"message": "Rate limit exceeded the maximum. Retry the request in [2] seconds", "code": "too.many.requests.retry.after", "status": 429})),
            )
                .into_response());
        }
    }
    if let Some((prefix, left, status)) = org.fail_next.clone() {
        if call.contains(&prefix) && left > 0 {
            org.fail_next = (left > 1).then(|| (prefix, left - 1, status));
            org.calls.push((Instant::now(), call, status));
            let status = StatusCode::from_u16(status).expect("a status");
            return Some(
                (status, "<html><body>upstream unavailable</body></html>").into_response(),
            );
        }
    }
    org.calls.push((Instant::now(), call, 200));
    None
}

async fn token(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let basic_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !basic_ok || !body.contains("grant_type=client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_client", "description": "client not found", "error_description": "client not found"})),
        )
            .into_response();
    }
    let mut org = fake.org.lock().expect("state");
    org.token_requests += 1;
    let value = format!("fake-token-{}-{:08x}", org.token_requests, rand_u32());
    let lifetime = org.token_lifetime;
    org.tokens.insert(
        value.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    org.issued.push(value.clone());
    Json(json!({"access_token": value, "token_type": "bearer", "expires_in": lifetime}))
        .into_response()
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

async fn queues(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(denied) = authorise(&fake, &headers, "GET /api/v2/routing/queues".into()) {
        return denied;
    }
    let org = fake.org.lock().expect("state");
    let asked: usize = query
        .get("pageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let size = asked.min(org.page_size).max(1);
    let number: usize = query
        .get("pageNumber")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let total = org.queues.len();
    let page_count = total.div_ceil(size).max(1);
    let entities: Vec<Value> = org
        .queues
        .iter()
        .skip((number - 1) * size)
        .take(size)
        .map(|q| {
            json!({
                "id": q.id, "name": q.name, "division": {"id": "d-1", "name": "Home"},
                "memberCount": 12, "userMemberCount": 12, "joinedMemberCount": 8,
                "mediaSettings": {
                    "call": {"alertingTimeoutSeconds": 8, "serviceLevel": {"percentage": q.target.0, "durationMs": q.target.1}},
                    "chat": {"alertingTimeoutSeconds": 30, "serviceLevel": {"percentage": 0.8, "durationMs": 30000}}
                },
                "selfUri": format!("/api/v2/routing/queues/{}", q.id)
            })
        })
        .collect();
    Json(json!({
        "entities": entities, "pageSize": size, "pageNumber": number, "total": total,
        "pageCount": page_count,
        "firstUri": format!("/api/v2/routing/queues?pageSize={size}&pageNumber=1"),
        "selfUri": format!("/api/v2/routing/queues?pageSize={size}&pageNumber={number}"),
        "lastUri": format!("/api/v2/routing/queues?pageSize={size}&pageNumber={page_count}"),
    }))
    .into_response()
}

/// The queue ids a query's `filter` names.
fn filtered_queues(query: &Value) -> Vec<String> {
    query["filter"]["predicates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["dimension"] == "queueId")
        .filter_map(|p| p["value"].as_str().map(str::to_owned))
        .collect()
}

async fn observations(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(query): Json<Value>,
) -> Response {
    if let Some(denied) = authorise(
        &fake,
        &headers,
        "POST /api/v2/analytics/queues/observations/query".into(),
    ) {
        return denied;
    }
    let org = fake.org.lock().expect("state");
    let wanted = filtered_queues(&query);
    if wanted.is_empty() || wanted.len() > 100 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "filter must name 1 to 100 queues", "code": "bad.request", "status": 400})),
        )
            .into_response();
    }
    let mut results = Vec::new();
    for queue in &wanted {
        for ((q, media), live) in &org.live {
            if q != queue {
                continue;
            }
            let mut data = vec![
                json!({"metric": "oWaiting", "stats": {"count": live.waiting}, "truncated": false}),
                json!({"metric": "oInteracting", "stats": {"count": live.interacting}}),
                json!({"metric": "oAlerting", "stats": {"count": 0}}),
            ];
            if let Some(since) = live.longest_since {
                data.push(json!({"metric": "oLongestWaiting", "stats": {"count": live.waiting, "calculatedMetricValue": since}}));
            }
            results.push(json!({"group": {"queueId": q, "mediaType": media}, "data": data}));
        }
        if let Some((idle, interacting)) = org.agents.get(queue) {
            results.push(json!({"group": {"queueId": queue}, "data": [
                {"metric": "oOnQueueUsers", "qualifier": "IDLE", "stats": {"count": idle}},
                {"metric": "oOnQueueUsers", "qualifier": "INTERACTING", "stats": {"count": interacting}},
                {"metric": "oOffQueueUsers", "stats": {"count": 1}},
            ]}));
        }
    }
    Json(json!({"results": results})).into_response()
}

async fn aggregates(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(query): Json<Value>,
) -> Response {
    if let Some(denied) = authorise(
        &fake,
        &headers,
        "POST /api/v2/analytics/conversations/aggregates/query".into(),
    ) {
        return denied;
    }
    let mut org = fake.org.lock().expect("state");
    org.aggregate_queries.push(query.clone());
    let wanted = filtered_queues(&query);
    let iso = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .expect("time")
            .strftime("%Y-%m-%dT%H:%M:%S.000Z")
            .to_string()
    };
    let results: Vec<Value> = org
        .half_hours
        .iter()
        .filter(|((q, _), _)| wanted.contains(q))
        .map(|((q, media), halves)| {
            let data: Vec<Value> = halves
                .iter()
                .map(|h| {
                    json!({
                        "interval": format!("{}/{}", iso(h.start), iso(h.start + 1_800_000)),
                        "metrics": [
                            {"metric": "nOffered", "stats": {"count": h.offered}},
                            {"metric": "tAnswered", "stats": {"max": 40000, "min": 1000, "count": h.answered, "sum": h.answer_ms_sum}},
                            {"metric": "tAbandon", "stats": {"max": 60000, "min": 2000, "count": h.abandoned, "sum": h.abandoned * 30000}},
                            {"metric": "tWait", "stats": {"count": h.offered, "sum": h.answer_ms_sum}},
                            {"metric": "oServiceLevel", "stats": {"ratio": 1.0, "numerator": h.answered, "denominator": h.answered + h.abandoned, "target": 0.8}}
                        ]
                    })
                })
                .collect();
            json!({"group": {"queueId": q, "mediaType": media}, "data": data})
        })
        .collect();
    Json(json!({"results": results})).into_response()
}

async fn details(State(fake): State<Fake>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(denied) = authorise(
        &fake,
        &headers,
        format!("GET /api/v2/analytics/conversations/{id}/details"),
    ) {
        return denied;
    }
    let mut org = fake.org.lock().expect("state");
    let Some((queue, media, not_yet)) = org.conversations.get_mut(&id) else {
        return not_found();
    };
    if *not_yet > 0 {
        *not_yet -= 1;
        return not_found();
    }
    let (queue, media) = (queue.clone(), media.clone());
    Json(json!({
        "conversationId": id,
        "conversationStart": "2026-12-01T09:00:00.000Z",
        "originatingDirection": "inbound",
        "participants": [
            {"participantId": "p-1", "purpose": "customer", "sessions": [{"mediaType": media, "direction": "inbound",
              "segments": [{"segmentStart": "2026-12-01T09:00:00.000Z", "segmentType": "interact"}]}]},
            {"participantId": "p-2", "purpose": "acd", "participantName": "Queue", "sessions": [{"mediaType": media,
              "segments": [{"segmentStart": "2026-12-01T09:00:01.000Z", "segmentType": "interact", "queueId": queue}]}]}
        ]
    }))
    .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "Conversation not found", "code": "not.found", "status": 404})),
    )
        .into_response()
}

async fn channel(State(fake): State<Fake>, headers: HeaderMap) -> Response {
    if let Some(denied) = authorise(
        &fake,
        &headers,
        "POST /api/v2/notifications/channels".into(),
    ) {
        return denied;
    }
    let mut org = fake.org.lock().expect("state");
    org.channels += 1;
    let id = format!("streaming-{}", org.channels);
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    Json(json!({
        "connectUri": format!("ws://{}/ws/{id}", fake.addr),
        "id": id,
        "expires": expires.to_string(),
    }))
    .into_response()
}

async fn subscribe(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(topics): Json<Value>,
) -> Response {
    if let Some(denied) = authorise(
        &fake,
        &headers,
        format!("PUT /api/v2/notifications/channels/{id}/subscriptions"),
    ) {
        return denied;
    }
    let ids: Vec<String> = topics
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    fake.org
        .lock()
        .expect("state")
        .subscriptions
        .push(ids.clone());
    let entities: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    Json(json!({"entities": entities})).into_response()
}

async fn socket(State(fake): State<Fake>, upgrade: WebSocketUpgrade) -> Response {
    let silent = {
        let mut org = fake.org.lock().expect("state");
        org.sockets_opened += 1;
        org.silent_sockets
    };
    let rx = fake.push.subscribe();
    upgrade.on_upgrade(move |ws| async move {
        if silent {
            // Open, and never a word: only the heartbeat timeout notices.
            let _keep = ws;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        } else {
            serve_socket(ws, rx).await
        }
    })
}

async fn serve_socket(mut ws: WebSocket, mut rx: broadcast::Receiver<Option<String>>) {
    let heartbeat =
        json!({"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}})
            .to_string();
    if ws
        .send(Message::Text(heartbeat.clone().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        match rx.recv().await {
            Ok(Some(text)) => {
                if ws.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => {
                let _ = ws.send(Message::Close(None)).await;
                return;
            }
        }
    }
}
