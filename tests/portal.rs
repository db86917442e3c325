//! The portal's rules as the server enforces them, over real HTTP: sign-in sessions and their
//! cookies, the cross-site check, the viewer token, framing and the audit trail. (What the
//! browser shows is covered by the Playwright tests.)

mod common;

use common::{spawn_app, spawn_app_with, ADMIN_TOKEN};
use reqwest::{header, redirect::Policy, StatusCode};
use serde_json::{json, Value};

/// Extra request headers of a test case.
type Headers = Vec<(&'static str, String)>;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// The `name=value` of a response's session cookie, if it sets one.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.contains("gc-status-session="))
        .map(str::to_owned)
}

fn name_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

/// Signs in through the login form as a browser without scripts would.
async fn sign_in(app: &common::TestApp, secret: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(app.url("/api/login"))
        .header(header::ORIGIN, format!("http://{}", app.addr))
        .header(header::ACCEPT, "text/html")
        .form(&[("secret", secret), ("next", "/admin/audit")]);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.expect("sign in")
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_under_a_new_id_and_sign_out_ends_it() {
    let app = spawn_app().await;

    // Without a session, admin pages lead to sign-in and back.
    let page = client()
        .get(app.url("/admin/dead-letters?queue=q1"))
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()[header::LOCATION],
        "/login?next=%2Fadmin%2Fdead-letters%3Fqueue%3Dq1"
    );

    let wrong = sign_in(&app, "not-it", None).await;
    assert!(
        session_cookie(&wrong).is_none(),
        "no session for a wrong secret"
    );

    let ok = sign_in(&app, ADMIN_TOKEN, None).await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    assert_eq!(ok.headers()[header::LOCATION], "/admin/audit");
    let set_cookie = session_cookie(&ok).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            set_cookie.contains(attribute),
            "{attribute} in {set_cookie}"
        );
    }
    assert!(!set_cookie.contains("Secure"), "plain http: no Secure");
    let first = name_value(&set_cookie);

    let audit = client()
        .get(app.url("/admin/audit"))
        .header(header::COOKIE, &first)
        .send()
        .await
        .expect("audit");
    assert_eq!(audit.status(), StatusCode::OK);
    let html = audit.text().await.expect("html");
    assert!(
        html.contains("sign_in"),
        "the sign-in is in the audit trail"
    );
    assert!(html.contains("sign_in_failed"), "so is the failed one");

    // Signing in again (as after a planted session) issues a new id; the old one is void.
    let again = sign_in(&app, ADMIN_TOKEN, Some(&first)).await;
    let second = name_value(&session_cookie(&again).expect("a new cookie"));
    assert_ne!(first, second);
    let old = client()
        .get(app.url("/admin/audit"))
        .header(header::COOKIE, &first)
        .send()
        .await
        .expect("old id");
    assert_eq!(
        old.status(),
        StatusCode::SEE_OTHER,
        "the old session id is void"
    );

    let out = client()
        .post(app.url("/api/logout"))
        .header(header::ORIGIN, format!("http://{}", app.addr))
        .header(header::ACCEPT, "text/html")
        .header(header::COOKIE, &second)
        .send()
        .await
        .expect("sign out");
    assert!(out.status().is_redirection());
    let after = client()
        .get(app.url("/admin/audit"))
        .header(header::COOKIE, &second)
        .send()
        .await
        .expect("after");
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_host_prefixed() {
    let app = spawn_app_with(|c| c.public_url = Some("https://status.example.com".into())).await;
    let ok = client()
        .post(app.url("/api/login"))
        .header(header::ORIGIN, "https://status.example.com")
        .header(header::ACCEPT, "text/html")
        .form(&[("secret", ADMIN_TOKEN), ("next", "/")])
        .send()
        .await
        .expect("sign in");
    let cookie = ok
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-gc-status-session="))
        .expect("a __Host- cookie");
    assert!(cookie.contains("Secure") && cookie.contains("Path=/"));
    assert!(!cookie.contains("Domain"), "__Host- cookies have no Domain");
}

#[tokio::test]
async fn state_changing_requests_from_other_sites_are_refused() {
    let app = spawn_app().await;
    let ok = sign_in(&app, ADMIN_TOKEN, None).await;
    let cookie = name_value(&session_cookie(&ok).expect("cookie"));
    let session: Value = client()
        .get(app.url("/api/v2/session"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("json");
    assert_eq!(session["role"], "admin");
    let csrf = session["csrf"].as_str().expect("a CSRF token").to_owned();
    let act = json!({"act": "Replay", "target": {"Ids": ["x"]}});
    let post = |headers: Headers| {
        let mut request = client()
            .post(app.url("/api/dead-letters/act"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(act.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let same_origin = format!("http://{}", app.addr);
    let cases: Vec<(&str, Headers, StatusCode)> = vec![
        (
            "cross-site origin",
            vec![
                ("origin", "http://evil.test".into()),
                ("cookie", cookie.clone()),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "Origin: null",
            vec![("origin", "null".into()), ("cookie", cookie.clone())],
            StatusCode::FORBIDDEN,
        ),
        (
            "Sec-Fetch-Site: same-site",
            vec![
                ("sec-fetch-site", "same-site".into()),
                ("cookie", cookie.clone()),
            ],
            StatusCode::FORBIDDEN,
        ),
        (
            "no headers, no token",
            vec![("cookie", cookie.clone())],
            StatusCode::FORBIDDEN,
        ),
        (
            "wrong CSRF token",
            vec![("cookie", cookie.clone()), ("x-csrf-token", "guess".into())],
            StatusCode::FORBIDDEN,
        ),
        (
            "the session's CSRF token",
            vec![("cookie", cookie.clone()), ("x-csrf-token", csrf.clone())],
            StatusCode::OK,
        ),
        (
            "no session at all",
            vec![("origin", same_origin.clone())],
            StatusCode::FORBIDDEN,
        ),
        (
            "same origin with a session",
            vec![("origin", same_origin.clone()), ("cookie", cookie.clone())],
            StatusCode::OK,
        ),
        (
            "Sec-Fetch-Site: same-origin",
            vec![
                ("sec-fetch-site", "same-origin".into()),
                ("cookie", cookie.clone()),
            ],
            StatusCode::OK,
        ),
    ];
    for (case, headers, expected) in cases {
        let response = post(headers).await.expect("post");
        assert_eq!(response.status(), expected, "{case}");
    }
    // The bearer-token admin API is not a browser's: it keeps working without Origin.
    let api = client()
        .post(app.url("/api/v2/admin/dead-letters/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"ids": ["x"]}))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_viewer_link_becomes_a_session_and_leaves_the_url() {
    let app = spawn_app_with(|c| c.viewer_token = Some("view-me".into())).await;
    for path in ["/", "/widget", "/widget/q1"] {
        let refused = client().get(app.url(path)).send().await.expect("get");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let stream = client()
        .get(app.url("/api/v2/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::UNAUTHORIZED);
    // Operations endpoints and webhooks never need it.
    for path in ["/healthz", "/readyz", "/metrics", "/login"] {
        let open = client().get(app.url(path)).send().await.expect("get");
        assert_eq!(open.status(), StatusCode::OK, "{path}");
    }

    let wrong = client()
        .get(app.url("/widget/q1?token=nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let exchanged = client()
        .get(app.url("/widget/q1?theme=dark&token=view-me"))
        .send()
        .await
        .expect("get");
    assert_eq!(exchanged.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        exchanged.headers()[header::LOCATION],
        "/widget/q1?theme=dark"
    );
    let set_cookie = session_cookie(&exchanged).expect("a viewer session");
    // A wall display keeps its page open for weeks: no 30-minute idle expiry for viewers.
    let max_age: u64 = set_cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next()?.trim().parse().ok())
        .expect("a Max-Age");
    assert!(max_age > 7 * 24 * 3600, "{set_cookie}");
    let cookie = name_value(&set_cookie);
    let page = client()
        .get(app.url("/widget/q1"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(page.status(), StatusCode::OK);
    // A viewer is no admin.
    let admin = client()
        .get(app.url("/admin/dead-letters"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(admin.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn only_the_widget_may_be_framed_and_only_by_the_configured_portal() {
    let app =
        spawn_app_with(|c| c.frame_ancestors = vec!["https://portal.example.com".into()]).await;
    let widget = client()
        .get(app.url("/widget"))
        .send()
        .await
        .expect("widget");
    assert_eq!(
        widget.headers()[header::CONTENT_SECURITY_POLICY],
        "frame-ancestors 'self' https://portal.example.com"
    );
    assert!(widget.headers().get(header::X_FRAME_OPTIONS).is_none());
    for path in ["/", "/login", "/admin/dead-letters"] {
        let page = client().get(app.url(path)).send().await.expect("page");
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
}

#[tokio::test]
async fn admin_api_actions_are_audited_with_counts_and_selection() {
    let app = spawn_app().await;
    let response = client()
        .post(app.url("/api/v2/admin/dead-letters/discard"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"filter": {"type": "v2.nothing"}}))
        .send()
        .await
        .expect("discard");
    assert_eq!(response.status(), StatusCode::OK);
    let entries = app.db.list_audit(None, 10).await.expect("audit");
    let entry = entries.first().expect("one entry");
    assert_eq!(entry.action, "discard");
    assert_eq!(entry.count, Some(0));
    assert!(
        entry.actor.starts_with("admin API from 127.0.0.1"),
        "{}",
        entry.actor
    );
    let detail: Value = serde_json::from_str(&entry.detail).expect("json");
    assert_eq!(detail["filter"]["type"], "v2.nothing");
}

#[tokio::test]
async fn a_bad_frame_ancestor_or_public_url_stops_the_start_with_a_reason() {
    let dir = common::temp_dir();
    let mut config =
        gc_status::server::config::Config::for_database(common::database_url(dir.path()));
    config.insecure_accept_unsigned = true;
    config.frame_ancestors = vec!["https://a.example; script-src *".into()];
    let err = gc_status::server::startup::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("GC_STATUS_FRAME_ANCESTORS"),
        "{err}"
    );

    let mut config =
        gc_status::server::config::Config::for_database(common::database_url(dir.path()));
    config.insecure_accept_unsigned = true;
    config.public_url = Some("status.example.com".into());
    let err = gc_status::server::startup::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("GC_STATUS_PUBLIC_URL"), "{err}");
}
