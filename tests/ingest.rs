//! Webhook ingestion through real HTTP against the real app and a real SQLite file.

mod common;

use base64::Engine as _;
use common::*;
use gc_status::server::ingest::auth::sign_hex;
use serde_json::Value;
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn signed_event_is_acknowledged_and_stored_byte_for_byte() {
    let app = spawn_app().await;
    // Odd spacing and an unknown field: both must survive storage untouched.
    let body = r#"{ "event":"conversation:updated", "id":"evt-1","timestamp":"2026-11-29T10:00:00Z","data":{"state":"queued"},  "extra":{"kept":true} }"#;

    let response = app.post_signed(body).await;

    assert_eq!(response.status(), 202);
    let ack = json(response).await;
    assert_eq!(ack["accepted"], true);
    assert_eq!(ack["id"], "evt-1");
    assert_eq!(ack["duplicate"], false);
    let stored = app.db.event_payload("evt-1").await.expect("read");
    assert_eq!(stored.as_deref(), Some(body.as_bytes()));
    let counts = app.db.event_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.total), (1, 1));
}

#[tokio::test]
async fn each_envelope_is_accepted() {
    let app = spawn_app().await;
    let notification = r#"{"topicName":"v2.analytics.queues.q-1.observations","version":"2","eventBody":{"group":{"queueId":"q-1"},"data":[]},"metadata":{"CorrelationId":"c-1"}}"#;
    let eventbridge = r#"{"version":"0","id":"eb-1","detail-type":"v2.detail.events.conversation.{id}.acd.start","source":"aws.partner/genesys.com/cloud/org/gc-status","account":"1","time":"2026-11-29T10:00:00Z","region":"eu-west-1","resources":[],"detail":{"topicName":"v2.detail.events.conversation.c-9.acd.start","version":"2","eventBody":{"queueId":"q-1","conversationId":"c-9","eventTime":1796032800000},"metadata":{"CorrelationId":"x"}}}"#;

    for (body, expected_id) in [
        (simple_event("s-1"), "s-1".to_owned()),
        (
            notification.to_owned(),
            gc_status::server::domain::envelope::body_digest(notification.as_bytes()),
        ),
        (eventbridge.to_owned(), "eb-1".to_owned()),
    ] {
        let response = app.post_signed(&body).await;
        assert_eq!(response.status(), 202, "{body}");
        assert_eq!(json(response).await["id"], expected_id.as_str());
        let stored = app.db.event_payload(&expected_id).await.expect("read");
        assert_eq!(stored.as_deref(), Some(body.as_bytes()));
    }
    assert_eq!(app.stored_count().await, 3);
}

#[tokio::test]
async fn duplicate_delivery_is_stored_once() {
    let app = spawn_app().await;
    let body = simple_event("dup-1");

    let first = json(app.post_signed(&body).await).await;
    let second = app.post_signed(&body).await;

    assert_eq!(first["duplicate"], false);
    assert_eq!(second.status(), 202);
    let second = json(second).await;
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["id"], "dup-1");
    assert_eq!(app.stored_count().await, 1);
}

#[tokio::test]
async fn hmac_failures_are_rejected_and_nothing_is_stored() {
    let app = spawn_app_with(|c| {
        c.hmac_secrets = vec!["new-secret".into(), "old-secret".into()];
    })
    .await;
    let body = simple_event("h-1");
    let other_body = simple_event("h-2");

    let cases = [
        ("missing", vec![]),
        (
            "wrong secret",
            vec![sign_hex("retired-secret", body.as_bytes())],
        ),
        (
            "another body",
            vec![sign_hex("new-secret", other_body.as_bytes())],
        ),
        ("not hex", vec!["zz-not-a-signature".to_owned()]),
    ];
    for (case, signature) in cases {
        let headers: Vec<(&str, &str)> = signature
            .iter()
            .map(|s| ("x-gc-signature", s.as_str()))
            .collect();
        let response = app.post_raw(&body, &headers).await;
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(json(response).await["error"], "unauthorized", "{case}");
    }
    assert_eq!(app.stored_count().await, 0, "nothing stored on 401");

    // During a rotation both the current and the previous secret are accepted.
    for (i, secret) in ["new-secret", "old-secret"].into_iter().enumerate() {
        let body = simple_event(&format!("rot-{i}"));
        let signature = format!("sha256={}", sign_hex(secret, body.as_bytes()));
        let response = app.post_raw(&body, &[("x-gc-signature", &signature)]).await;
        assert_eq!(response.status(), 202, "{secret}");
    }
    assert_eq!(app.stored_count().await, 2);
}

#[tokio::test]
async fn token_header_is_checked_with_rotation() {
    let app = spawn_app_with(|c| {
        c.hmac_secrets.clear();
        c.token_header = "X-Api-Key".into();
        c.tokens = vec!["token-new".into(), "token-old".into()];
    })
    .await;
    let body = simple_event("t-1");

    assert_eq!(app.post_raw(&body, &[]).await.status(), 401);
    let wrong = app.post_raw(&body, &[("x-api-key", "token-retired")]).await;
    assert_eq!(wrong.status(), 401);
    // The right token in the wrong header does not count.
    let misplaced = app.post_raw(&body, &[("x-gc-token", "token-new")]).await;
    assert_eq!(misplaced.status(), 401);
    assert_eq!(app.stored_count().await, 0);

    for (i, token) in ["token-new", "token-old"].into_iter().enumerate() {
        let body = simple_event(&format!("tok-{i}"));
        let response = app.post_raw(&body, &[("x-api-key", token)]).await;
        assert_eq!(response.status(), 202, "{token}");
    }
    assert_eq!(app.stored_count().await, 2);
}

#[tokio::test]
async fn basic_credentials_are_checked_with_rotation() {
    let app = spawn_app_with(|c| {
        c.hmac_secrets.clear();
        c.basic_users = vec!["genesys:pass-new".into(), "genesys:pass-old".into()];
    })
    .await;
    let body = simple_event("b-1");
    let basic = |pair: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };

    let missing = app.post_raw(&body, &[]).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        r#"Basic realm="gc-status""#
    );
    for pair in ["genesys:wrong", "other:pass-new", "genesys:pass-retired"] {
        let response = app
            .post_raw(&body, &[("authorization", &basic(pair))])
            .await;
        assert_eq!(response.status(), 401, "{pair}");
    }
    assert_eq!(app.stored_count().await, 0);

    for (i, pair) in ["genesys:pass-new", "genesys:pass-old"]
        .into_iter()
        .enumerate()
    {
        let body = simple_event(&format!("basic-{i}"));
        let response = app
            .post_raw(&body, &[("authorization", &basic(pair))])
            .await;
        assert_eq!(response.status(), 202, "{pair}");
    }
    assert_eq!(app.stored_count().await, 2);
}

#[tokio::test]
async fn bodies_that_are_not_json_get_400_and_json_of_another_shape_is_dead_lettered_naming_the_problem(
) {
    let app = spawn_app().await;
    let response = app.post_signed(r#"{"event": "x", "#).await;
    assert_eq!(response.status(), 400);
    let error = json(response).await;
    assert_eq!(error["error"], "invalid_payload");
    assert!(error["detail"]
        .as_str()
        .expect("detail")
        .contains("malformed JSON"));
    assert_eq!(app.stored_count().await, 0);

    let cases = [
        (r#"[{"event":"x"}]"#, "must be a JSON object"),
        (
            r#"{"event":"conversation:updated","timestamp":"2026-11-29T10:00:00Z"}"#,
            "`data`",
        ),
        (
            r#"{"topicName":"v2.x","eventBody":[]}"#,
            "`eventBody` must be a JSON object",
        ),
        (
            r#"{"hello":"world"}"#,
            "unrecognised payload: no known envelope",
        ),
    ];
    for (body, expected) in cases {
        let response = app.post_signed(body).await;
        assert_eq!(response.status(), 202, "{body}");
        let answer = json(response).await;
        let reason = answer["dead_lettered"].as_str().expect("a reason");
        assert!(
            reason.contains(expected),
            "{reason:?} should mention {expected:?}"
        );
        let letter = app
            .admin_get(&format!(
                "/api/v2/admin/dead-letters/{}",
                answer["id"].as_str().expect("id")
            ))
            .await;
        assert!(
            letter["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(expected)),
            "{letter}"
        );
    }
    assert_eq!(app.stored_count().await, cases.len());
}

#[tokio::test]
async fn oversize_body_gets_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let padding = "x".repeat(2000);
    let body = format!(
        r#"{{"event":"e","timestamp":"2026-11-29T10:00:00Z","data":{{"pad":"{padding}"}}}}"#
    );

    let response = app.post_signed(&body).await;
    assert_eq!(response.status(), 413);
    assert_eq!(json(response).await["error"], "payload_too_large");

    // Without Content-Length (chunked), the limit is enforced while reading.
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!(
        "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-GC-Signature: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        sign_hex(SECRET, body.as_bytes()),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(app.stored_count().await, 0);
}

#[tokio::test]
async fn wrong_or_missing_content_type_gets_415() {
    let app = spawn_app().await;
    let body = simple_event("ct-1");
    let signature = sign_hex(SECRET, body.as_bytes());
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .client
            .post(app.url(WEBHOOK_PATH))
            .header("x-gc-signature", &signature)
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), 415, "{content_type:?}");
    }
    let with_charset = app
        .client
        .post(app.url(WEBHOOK_PATH))
        .header("x-gc-signature", &signature)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .expect("answered");
    assert_eq!(with_charset.status(), 202);
    assert_eq!(app.stored_count().await, 1);
}

/// Another connection holding the lock the writer needs, as another process or an admin's
/// long transaction would: SQLite's write lock, or PostgreSQL's lock on `events`.
enum Blocker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Blocker {
    async fn take(database_url: &str) -> Blocker {
        if database_url.starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(database_url)
                .await
                .expect("open a second connection");
            sqlx::query("BEGIN")
                .execute(&mut conn)
                .await
                .expect("begin");
            sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("lock events against writes");
            Blocker::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(database_url)
                .await
                .expect("open a second connection");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("take the write lock");
            Blocker::Sqlite(conn)
        }
    }

    async fn release(self) {
        let released = match self {
            Blocker::Sqlite(mut conn) => sqlx::query("ROLLBACK").execute(&mut conn).await.map(drop),
            Blocker::Postgres(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.map(drop)
            }
        };
        released.expect("release the lock");
    }
}

#[tokio::test]
async fn locked_database_gets_503_with_retry_after_and_recovers() {
    let app = spawn_app_with(|c| c.store_timeout_ms = 300).await;

    // Another connection holding the lock: the writer cannot commit in time.
    let blocker = Blocker::take(&app.database_url).await;
    let response = app.post_signed(&simple_event("locked-1")).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(json(response).await["error"], "storage_unavailable");

    blocker.release().await;
    // The sender's retry succeeds once the database is writable again (on PostgreSQL the
    // first attempt may have committed meanwhile: the retry is then its duplicate).
    let retry = app.post_signed(&simple_event("locked-1")).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(app.stored_count().await, 1);
}

#[tokio::test]
async fn concurrent_deliveries_are_all_stored() {
    let app = spawn_app().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let client = app.client.clone();
        let url = app.url(WEBHOOK_PATH);
        tasks.spawn(async move {
            let body = simple_event(&format!("c-{i}"));
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-gc-signature", sign_hex(SECRET, body.as_bytes()))
                .body(body)
                .send()
                .await
                .expect("answered");
            response.status().as_u16()
        });
    }
    let mut accepted = 0;
    while let Some(status) = tasks.join_next().await {
        if status.expect("task") == 202 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 2000);
    assert_eq!(app.stored_count().await, 2000);
}

#[tokio::test]
async fn graceful_shutdown_keeps_everything_acknowledged() {
    let dir = temp_dir();
    let url = fresh_database_url(dir.path()).await;
    let app = spawn_on(&url, |_| {}).await;
    for i in 0..50 {
        let response = app.post_signed(&simple_event(&format!("g-{i}"))).await;
        assert_eq!(response.status(), 202);
    }
    app.stop().await.expect("clean shutdown");

    let restarted = spawn_on(&url, |_| {}).await;
    assert_eq!(restarted.stored_count().await, 50);
    restarted.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(ready.status(), 200);
    assert_eq!(json(ready).await["status"], "ready");
}

#[tokio::test]
async fn status_page_renders_the_stored_counts() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.post_signed(&simple_event(&format!("p-{i}"))).await;
    }
    let page = app.client.get(app.url("/")).send().await.expect("answered");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("<title>gc-status</title>"), "{html}");
    let pending = html
        .split(r#"data-testid="count-pending""#)
        .nth(1)
        .expect("a pending count");
    assert!(
        pending.starts_with(">3<"),
        "pending count: {}",
        &pending[..20]
    );
    assert!(html.contains("/pkg/gc-status.wasm") || html.contains("/pkg/gc-status"));
}

#[tokio::test]
async fn webhook_get_is_not_allowed() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url(WEBHOOK_PATH))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 405);
}
