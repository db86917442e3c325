//! The HTTP edge against hostile and misbehaving clients, over real sockets: connections that
//! send nothing, connection floods, stalled bodies, uploads without credentials, streams that
//! would hold the server, paths with a trailing slash, sign-in floods, sessions that outlive
//! their secret, and the same event raced in twice.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{simple_event, spawn_app_with, spawn_on, ADMIN_TOKEN, SECRET, WEBHOOK_PATH};
use gc_status::server::ingest::auth::sign_hex;
use reqwest::{header, redirect::Policy, StatusCode};
use serde_json::Value;

/// Opens a connection from `from` (a loopback address) and sends `head`.
fn connect_from(from: IpAddr, to: SocketAddr, head: &[u8]) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind the source address");
    socket.connect(&to.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(head).expect("send");
    stream
}

/// Reads until the server closes the connection (or 20 s pass); returns what came and when
/// the connection ended.
fn until_closed(mut stream: TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_only_the_http2_preface_is_closed() {
    let app = spawn_app_with(|c| c.request_read_timeout_secs = 1).await;
    let addr = app.addr;
    let silent =
        tokio::task::spawn_blocking(move || until_closed(connect_from(loopback(1), addr, b"")));
    let preface = tokio::task::spawn_blocking(move || {
        until_closed(connect_from(
            loopback(1),
            addr,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ))
    });
    // An idle keep-alive connection after one answered request is closed too.
    let kept_alive = tokio::task::spawn_blocking(move || {
        until_closed(connect_from(
            loopback(1),
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        ))
    });
    let (_, took) = silent.await.expect("silent");
    assert!(
        took < Duration::from_secs(5),
        "silent connection open for {took:?}"
    );
    let (_, took) = preface.await.expect("preface");
    assert!(
        took < Duration::from_secs(5),
        "HTTP/2 preface open for {took:?}"
    );
    let (answer, took) = kept_alive.await.expect("kept alive");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "idle keep-alive open for {took:?}"
    );
}

/// Opens `n` connections from `from` and has each answered once, so each is known to be
/// admitted and stays open (kept alive) afterwards.
async fn admitted(from: IpAddr, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                let mut stream =
                    connect_from(from, to, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
                let mut seen = Vec::new();
                let mut buf = [0u8; 512];
                while !String::from_utf8_lossy(&seen).contains("\"ok\"") {
                    let read = stream.read(&mut buf).expect("an answer");
                    assert!(read > 0, "closed before answering");
                    seen.extend_from_slice(&buf[..read]);
                }
                stream
            })
            .collect()
    })
    .await
    .expect("connect")
}

#[tokio::test]
async fn past_the_connection_caps_new_connections_are_refused_at_once_and_counted() {
    let app = spawn_app_with(|c| {
        c.max_connections = 6;
        c.max_connections_per_address = 2;
    })
    .await;
    let addr = app.addr;
    // Two idle connections from one address fill its share...
    let held = admitted(loopback(2), addr, 2).await;
    // ...so a third from it is closed at once, while another address is served.
    let third = tokio::task::spawn_blocking(move || {
        until_closed(connect_from(
            loopback(2),
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        ))
    });
    let (answer, took) = third.await.expect("third");
    assert!(answer.is_empty(), "refused without an answer: {answer}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("another address is served")
            .status(),
        200
    );
    // Fill the total cap from other addresses: the next connection is refused too.
    // (Open so far: the two held ones and the client's kept-alive one: three more fill six.)
    let mut more = Vec::new();
    for i in 3..6 {
        more.extend(admitted(loopback(i), addr, 1).await);
    }
    let over = tokio::task::spawn_blocking(move || {
        until_closed(connect_from(
            loopback(9),
            addr,
            b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        ))
    });
    let (answer, _) = over.await.expect("over the cap");
    assert!(answer.is_empty(), "{answer}");
    drop(held);
    drop(more);
    // Once they are gone there is room again, and the refusals are in the metrics.
    common::wait_until("connections are freed", Duration::from_secs(5), || async {
        app.client.get(app.url("/healthz")).send().await.is_ok()
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("gc_status_connections_refused_total{reason=\"per_address\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gc_status_connections_refused_total{reason=\"total\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_sign_in_whose_body_never_comes_is_cut_off_and_pages_stay_up() {
    let app = spawn_app_with(|c| {
        c.request_read_timeout_secs = 1;
        c.max_reads_in_flight = 4;
    })
    .await;
    let addr = app.addr;
    let head = format!(
        "POST /api/login HTTP/1.1\r\nhost: {addr}\r\norigin: http://{addr}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\nsecret="
    );
    let stalled: Vec<_> = (0..4)
        .map(|i| {
            let head = head.clone();
            tokio::task::spawn_blocking(move || {
                until_closed(connect_from(loopback(10 + i), addr, head.as_bytes()))
            })
        })
        .collect();
    for stalled in stalled {
        let (answer, took) = stalled.await.expect("stalled");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
    // Every read slot is free again.
    let page = app.client.get(app.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(app
        .metrics()
        .await
        .contains("gc_status_request_bodies_cut_total"));
}

#[tokio::test]
async fn an_upload_without_credentials_is_refused_before_its_body_is_read() {
    let app = spawn_app_with(|c| c.request_read_timeout_secs = 30).await;
    let addr = app.addr;
    for credentials in ["", "x-gc-token: wrong\r\n"] {
        let head = format!(
            "POST {WEBHOOK_PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             {credentials}content-length: 100000\r\nconnection: close\r\n\r\n"
        );
        let started = Instant::now();
        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = connect_from(loopback(20), addr, head.as_bytes());
            let mut answer = [0u8; 12];
            stream.read_exact(&mut answer).map(|()| answer)
        })
        .await
        .expect("reader")
        .expect("an answer before any of the body is sent");
        assert_eq!(&answer, b"HTTP/1.1 401", "{credentials:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(app.stored_count().await, 0);
}

#[tokio::test]
async fn an_upload_with_a_static_token_needs_no_signature() {
    let app = spawn_app_with(|c| {
        c.hmac_secrets = Vec::new();
        c.tokens = vec!["sender-token".into()];
    })
    .await;
    let body = simple_event("token-1");
    let ok = app.post_raw(&body, &[("x-gc-token", "sender-token")]).await;
    assert_eq!(ok.status(), 202);
    let wrong = app.post_raw(&body, &[("x-gc-token", "guess")]).await;
    assert_eq!(wrong.status(), 401);
    let none = app.post_raw(&body, &[]).await;
    assert_eq!(none.status(), 401);
    assert_eq!(app.stored_count().await, 1);
}

/// Opens a status stream (its answer's head; the body keeps streaming).
async fn open_stream(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client.get(url).send().await.expect("stream")
}

#[tokio::test]
async fn a_stream_holds_its_read_slot_for_its_whole_life_and_ends_after_its_lifetime() {
    let app = spawn_app_with(|c| {
        c.max_reads_in_flight = 2;
        c.max_streams_per_address = 8;
        c.stream_max_secs = 2;
    })
    .await;
    let url = app.url("/api/v2/stream");
    let first = open_stream(&app.client, &url).await;
    let second = open_stream(&app.client, &url).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    // Both read slots are held by the open streams.
    let queues = app
        .client
        .get(app.url("/api/v2/queues"))
        .send()
        .await
        .expect("queues");
    assert_eq!(queues.status(), StatusCode::SERVICE_UNAVAILABLE);
    // After their lifetime the streams end by themselves (the page reconnects)...
    let started = Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), first.text())
        .await
        .expect("the stream ends")
        .expect("text");
    assert!(body.contains("retry: 1000"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(second);
    // ...and give their slots back.
    common::wait_until("the slots are free", Duration::from_secs(10), || async {
        app.client
            .get(app.url("/api/v2/queues"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test]
async fn one_address_may_open_only_so_many_streams() {
    let app = spawn_app_with(|c| c.max_streams_per_address = 2).await;
    let url = app.url("/api/v2/stream");
    let open: Vec<_> = vec![
        open_stream(&app.client, &url).await,
        open_stream(&app.client, &url).await,
    ];
    assert!(open.iter().all(|r| r.status() == 200));
    let third = open_stream(&app.client, &url).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = reqwest::Client::builder()
        .local_address(loopback(30))
        .build()
        .expect("client");
    assert_eq!(open_stream(&other, &url).await.status(), 200);
}

#[tokio::test]
async fn paths_with_a_trailing_slash_redirect_to_their_page_without_a_panic() {
    let app = spawn_app_with(|_| {}).await;
    let client = no_redirects();
    for (path, target) in [
        ("/widget/", "/widget"),
        ("/admin/dead-letters/", "/admin/dead-letters"),
        ("/login/?next=%2Fadmin", "/login?next=%2Fadmin"),
        ("//evil.test/", "/evil.test"),
    ] {
        let response = client.get(app.url(path)).send().await.expect("answered");
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT, "{path}");
        assert_eq!(
            response.headers()[header::LOCATION].to_str().expect("text"),
            target,
            "{path}"
        );
    }
    // Followed, each lands on its page with its policies (the widget stays frameable).
    let widget = app
        .client
        .get(app.url("/widget/"))
        .send()
        .await
        .expect("widget");
    assert_eq!(widget.status(), 200);
    assert!(widget.headers().get(header::X_FRAME_OPTIONS).is_none());
    let missing = app
        .client
        .get(app.url("/no-such-page"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
}

/// Posts the sign-in form with `secret` from `client`.
async fn sign_in(
    client: &reqwest::Client,
    app: &common::TestApp,
    secret: &str,
) -> reqwest::Response {
    client
        .post(app.url("/api/login"))
        .header(header::ORIGIN, format!("http://{}", app.addr))
        .header(header::ACCEPT, "text/html")
        .form(&[("secret", secret), ("next", "/admin/dead-letters")])
        .send()
        .await
        .expect("sign in")
}

async fn audit_rows(app: &common::TestApp, action: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    for entry in app.db.list_audit(None, 1000).await.expect("audit") {
        let entry = serde_json::to_value(entry).expect("json");
        if entry["action"] == action {
            rows.push(entry);
        }
    }
    rows
}

#[tokio::test]
async fn empty_secrets_are_throttled_and_audited_once_a_minute_with_a_count() {
    let app = spawn_app_with(|_| {}).await;
    let guesser = reqwest::Client::builder()
        .local_address(loopback(40))
        .redirect(Policy::none())
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..60 {
        statuses.push(sign_in(&guesser, &app, "").await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 8,
        "{statuses:?}"
    );
    // Throttled answers do not wait: the flood is over in a few seconds.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let rows = audit_rows(&app, "sign_in_failed").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    // The real admin elsewhere still signs in.
    let admin = sign_in(&no_redirects(), &app, ADMIN_TOKEN).await;
    assert!(admin.status().is_redirection(), "{}", admin.status());
    assert!(app
        .metrics()
        .await
        .contains("gc_status_sign_ins_throttled_total"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_lock_out() {
    let app = spawn_app_with(|c| c.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let url = app.url("/api/v2/admin/dead-letters");
    let from = |client: &'static str, token: &'static str| {
        app.client
            .get(&url)
            .bearer_auth(token)
            .header("x-forwarded-for", client)
            .send()
    };
    for _ in 0..8 {
        let _ = from("198.51.100.7", "guess").await.expect("answered");
    }
    assert_eq!(
        from("198.51.100.7", ADMIN_TOKEN)
            .await
            .expect("answered")
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The admin behind the same proxy is not locked out by the guesser.
    assert_eq!(
        from("203.0.113.20", ADMIN_TOKEN)
            .await
            .expect("answered")
            .status(),
        200
    );
    // A header from an untrusted peer is ignored: its address is its own.
    let stranger = reqwest::Client::builder()
        .local_address(loopback(50))
        .build()
        .expect("client");
    let answer = stranger
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
}

/// The session cookie's `name=value` from a sign-in answer.
fn cookie_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("gc-status-session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

async fn console_status(app: &common::TestApp, cookie: &str) -> StatusCode {
    no_redirects()
        .get(app.url("/admin/dead-letters"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("console")
        .status()
}

#[tokio::test]
async fn an_admin_session_ends_when_the_admin_token_is_rotated_or_removed() {
    let dir = common::temp_dir();
    let url = common::fresh_database_url(dir.path()).await;
    let app = spawn_on(&url, |_| {}).await;
    let cookie = cookie_of(&sign_in(&no_redirects(), &app, ADMIN_TOKEN).await);
    assert_eq!(console_status(&app, &cookie).await, 200);
    app.stop().await.expect("stops");

    // Same token after a restart: the session still works.
    let app = spawn_on(&url, |_| {}).await;
    assert_eq!(console_status(&app, &cookie).await, 200);
    app.stop().await.expect("stops");

    // Rotated: the session granted by the old token is over.
    let app = spawn_on(&url, |c| c.admin_token = Some("a-new-admin-token".into())).await;
    assert_eq!(console_status(&app, &cookie).await, StatusCode::SEE_OTHER);
    let cookie = cookie_of(&sign_in(&no_redirects(), &app, "a-new-admin-token").await);
    assert_eq!(console_status(&app, &cookie).await, 200);
    app.stop().await.expect("stops");

    // Admin sign-in disabled: no console, and no console action.
    let app = spawn_on(&url, |c| c.admin_token = None).await;
    assert_eq!(console_status(&app, &cookie).await, StatusCode::SEE_OTHER);
    let act = no_redirects()
        .post(app.url("/api/dead-letters/act"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, format!("http://{}", app.addr))
        .json(&serde_json::json!({ "act": "Replay", "target": { "Ids": ["x"] } }))
        .send()
        .await
        .expect("answered");
    assert_eq!(act.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn revoking_sessions_from_the_cli_ends_them_and_is_audited() {
    let app = spawn_app_with(|_| {}).await;
    let cookie = cookie_of(&sign_in(&no_redirects(), &app, ADMIN_TOKEN).await);
    assert_eq!(console_status(&app, &cookie).await, 200);
    let config = gc_status::server::config::Config::for_database(app.database_url.clone());
    let revoke = gc_status::server::config::Command::Sessions {
        action: gc_status::server::config::SessionsAction::Revoke {
            all: true,
            role: None,
        },
    };
    gc_status::server::cli::run(&config, &revoke)
        .await
        .expect("revoked");
    assert_eq!(console_status(&app, &cookie).await, StatusCode::SEE_OTHER);
    let rows = audit_rows(&app, "sessions_revoked").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["count"], 1);
}

#[tokio::test]
async fn a_reused_id_raced_with_the_redelivery_of_the_stored_body_stores_each_body_once() {
    let app = spawn_app_with(|_| {}).await;
    let body = |round: usize, state: &str| {
        format!(
            r#"{{"event":"conversation:updated","id":"race-{round}","timestamp":"2026-11-29T10:00:00Z","data":{{"state":"{state}","queueId":"q-1","conversationId":"race-{round}"}}}}"#
        )
    };
    for round in 0..40 {
        let stored = body(round, "queued");
        assert_eq!(app.post_signed(&stored).await.status(), 202);
        let new = body(round, "connected");
        let (a, b, c) = tokio::join!(
            app.post_signed(&new),
            app.post_signed(&stored),
            app.post_signed(&new)
        );
        let answers: Vec<Value> = vec![
            a.json().await.expect("json"),
            b.json().await.expect("json"),
            c.json().await.expect("json"),
        ];
        assert_eq!(answers[1]["duplicate"], true, "round {round}: {answers:?}");
        assert_eq!(answers[1]["id"], format!("race-{round}"), "round {round}");
        assert_eq!(answers[0]["id"], answers[2]["id"], "round {round}");
    }
    // Each round stored exactly two bodies: the first and the new one.
    assert_eq!(app.stored_count().await, 80);
}

#[tokio::test]
async fn json_of_an_unknown_shape_is_kept_and_dead_lettered_and_non_json_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    // EventBridge never redelivers a 4xx: a body gc-status cannot read yet is kept.
    let unknown = r#"{"kind":"a future Genesys event","payload":{"x":1}}"#;
    let answer = app.post_signed(unknown).await;
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.expect("json");
    let reason = answer["dead_lettered"].as_str().expect("a reason");
    assert!(reason.contains("unrecognised payload"), "{reason}");
    let id = answer["id"].as_str().expect("id").to_owned();
    let letter = app
        .admin_get(&format!("/api/v2/admin/dead-letters/{id}"))
        .await;
    assert_eq!(letter["type"], "gc-status.unrecognised", "{letter}");
    // Redelivered, it is the same event.
    let again: Value = app.post_signed(unknown).await.json().await.expect("json");
    assert_eq!(
        (again["id"].as_str(), again["duplicate"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    // Not JSON at all: refused, nothing stored.
    let signature = sign_hex(SECRET, b"{\"event\":");
    let refused = app
        .post_raw("{\"event\":", &[("x-gc-signature", &signature)])
        .await;
    assert_eq!(refused.status(), 400);
    assert_eq!(app.stored_count().await, 1);
}

#[tokio::test]
async fn guessing_the_viewer_token_is_throttled_and_audited_like_the_admin_token() {
    let app = spawn_app_with(|c| c.viewer_token = Some("the-viewer-token".into())).await;
    let guesser = reqwest::Client::builder()
        .local_address(loopback(60))
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let answer = guesser
            .get(app.url(&format!("/api/v2/stream?token=guess-{i}")))
            .send()
            .await
            .expect("answered");
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(statuses[7], 429, "{statuses:?}");
    let rows = audit_rows(&app, "viewer_token_failed").await;
    assert_eq!(rows.len(), 1, "one row a minute per client: {rows:?}");
    // The right token from elsewhere still works.
    let viewer = app
        .client
        .get(app.url("/api/v2/queues"))
        .bearer_auth("the-viewer-token")
        .send()
        .await
        .expect("answered");
    assert_eq!(viewer.status(), 200);
}

#[tokio::test]
async fn a_viewers_open_stream_ends_soon_after_its_session_is_revoked() {
    let app = spawn_app_with(|c| {
        c.viewer_token = Some("the-viewer-token".into());
        c.stream_session_check_secs = 1;
    })
    .await;
    let link = no_redirects()
        .get(app.url("/?token=the-viewer-token"))
        .send()
        .await
        .expect("viewer link");
    assert!(link.status().is_redirection(), "{}", link.status());
    let cookie = cookie_of(&link);
    let stream = app
        .client
        .get(app.url("/api/v2/stream"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let config = gc_status::server::config::Config::for_database(app.database_url.clone());
    let revoke = gc_status::server::config::Command::Sessions {
        action: gc_status::server::config::SessionsAction::Revoke {
            all: false,
            role: Some("viewer".into()),
        },
    };
    gc_status::server::cli::run(&config, &revoke)
        .await
        .expect("revoked");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), stream.text())
        .await
        .expect("the stream ends")
        .expect("text");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Its reconnection is refused: the session is gone.
    let again = app
        .client
        .get(app.url("/api/v2/stream"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}
