//! The cross-site check on every state-changing browser request to the portal, and
//! `GET /api/v2/session`, which hands a non-browser client its CSRF token.
//!
//! Only the portal's routes carry this layer: webhooks and the bearer-token admin API never
//! read cookies, so there is no session to ride on.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tower_sessions::Session;

use super::{
    signin::{signed_in, SignedIn, SESSION_KEY},
    Portal,
};

/// Middleware: a state-changing request from a browser page on another site is refused with
/// 403 (`Sec-Fetch-Site`, else `Origin`, else the session's CSRF token in `X-CSRF-Token`).
pub async fn refuse_cross_site(
    State(portal): State<Arc<Portal>>,
    request: Request,
    next: Next,
) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if safe {
        return next.run(request).await;
    }
    let allowed = match same_site(request.headers(), portal.public_origin()) {
        Some(same) => same,
        // Neither header: not a current browser. Without a cookie there is no session to
        // ride on; with one, only the session's CSRF token will do.
        None => {
            request.headers().get(header::COOKIE).is_none()
                || match request.extensions().get::<Session>() {
                    Some(session) => csrf_matches(session, request.headers()).await,
                    None => false,
                }
        }
    };
    if allowed {
        next.run(request).await
    } else {
        tracing::warn!(path = %request.uri().path(), "refused a cross-site request");
        (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": "cross_site",
                "detail": "state-changing requests must come from gc-status's own pages",
            })),
        )
            .into_response()
    }
}

/// `Some(true)` for a same-origin request, `Some(false)` for a cross-site one, `None` when
/// the request says nothing about where it comes from.
fn same_site(headers: &HeaderMap, public_origin: Option<&str>) -> Option<bool> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return Some(matches!(site.as_bytes(), b"same-origin" | b"none"));
    }
    let origin = headers
        .get(header::ORIGIN)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    if public_origin == Some(origin.as_str()) {
        return Some(true);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    Some(host.is_some() && origin_host == host.as_deref())
}

async fn csrf_matches(session: &Session, headers: &HeaderMap) -> bool {
    let Some(presented) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match session.get::<SignedIn>(SESSION_KEY).await.ok().flatten() {
        Some(signed) => bool::from(signed.csrf.as_bytes().ct_eq(presented.as_bytes())),
        None => false,
    }
}

/// `GET /api/v2/session`: who the cookie's session is signed in as, and its CSRF token, for a
/// client that sends neither `Origin` nor `Sec-Fetch-Site` (it then needs `X-CSRF-Token`).
pub async fn describe_session(State(portal): State<Arc<Portal>>, session: Session) -> Response {
    match signed_in(&session, &portal).await {
        Some(signed) => Json(json!({ "role": signed.role, "csrf": signed.csrf })).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "not_signed_in", "detail": "sign in at /login" })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        assert_eq!(
            same_site(&headers(&[("sec-fetch-site", "same-origin")]), None),
            Some(true)
        );
        assert_eq!(
            same_site(&headers(&[("sec-fetch-site", "cross-site")]), None),
            Some(false)
        );
        assert_eq!(
            same_site(&headers(&[("sec-fetch-site", "same-site")]), None),
            Some(false)
        );
        let same = headers(&[
            ("origin", "http://127.0.0.1:3000"),
            ("host", "127.0.0.1:3000"),
        ]);
        assert_eq!(same_site(&same, None), Some(true));
        let other = headers(&[("origin", "http://evil.test"), ("host", "127.0.0.1:3000")]);
        assert_eq!(same_site(&other, None), Some(false));
        let null = headers(&[("origin", "null"), ("host", "127.0.0.1:3000")]);
        assert_eq!(same_site(&null, None), Some(false));
        // Behind a proxy that rewrites Host, the configured public origin counts.
        let proxied = headers(&[
            ("origin", "https://status.example.com"),
            ("host", "10.0.0.5:3000"),
        ]);
        assert_eq!(
            same_site(&proxied, Some("https://status.example.com")),
            Some(true)
        );
        assert_eq!(same_site(&headers(&[]), None), None);
    }
}
