//! The sign-in and client of the request a server function runs for.

use std::sync::Arc;

use axum::http::StatusCode;
use leptos::prelude::{expect_context, use_context, ServerFnError};
use tower_sessions::Session;

use super::{
    signin::{signed_in, SignedIn},
    Portal,
};
use crate::{model::Role, server::client::ClientIp};

/// The signed-in admin for a server function, or a 403 with what to do.
pub async fn require_admin() -> Result<SignedIn, ServerFnError> {
    let portal = expect_context::<Arc<Portal>>();
    let session = leptos_axum::extract::<Session>().await.ok();
    let signed = match &session {
        Some(session) => signed_in(session, &portal).await,
        None => None,
    };
    match signed {
        Some(s) if s.role == Role::Admin => Ok(s),
        _ => {
            if let Some(options) = use_context::<leptos_axum::ResponseOptions>() {
                options.set_status(StatusCode::FORBIDDEN);
            }
            Err(ServerFnError::new("sign in as an admin to do this"))
        }
    }
}

/// The visitor's role for a server function (no session: `None`).
pub async fn visitor_role() -> Option<Role> {
    let portal = expect_context::<Arc<Portal>>();
    let session = leptos_axum::extract::<Session>().await.ok()?;
    signed_in(&session, &portal).await.map(|s| s.role)
}

/// The client of the current server-function request, for limits and the audit trail.
pub async fn client_ip() -> Option<ClientIp> {
    leptos_axum::extract::<axum::Extension<ClientIp>>()
        .await
        .ok()
        .map(|axum::Extension(ip)| ip)
}

/// Who the audit trail names for the current server-function request: `what` and the
/// client's address, e.g. "admin session from 10.0.0.7".
pub async fn actor(what: &str) -> String {
    match client_ip().await {
        Some(ip) => format!("{what} from {ip}"),
        None => format!("{what} from an unknown address"),
    }
}
