//! `/login`: admin sign-in with the admin secret, and sign-out.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// A wrong secret costs this long, on top of the per-address lock-out after several.
#[cfg(feature = "ssr")]
const FAILED_SIGN_IN_DELAY: std::time::Duration = std::time::Duration::from_millis(750);

/// Checks the admin secret (constant time) and starts an admin session under a new id, then
/// sends the browser to `next` (a local path only). An empty secret is a wrong one.
#[server(endpoint = "login")]
pub async fn login(secret: String, next: String) -> Result<(), ServerFnError> {
    use crate::{
        model::Role,
        server::{
            admin::{AdminAccess, AdminDenied},
            audit::record as audit,
            portal::{context, signin, Portal},
            store::Db,
        },
    };
    let admin = expect_context::<AdminAccess>();
    let portal = expect_context::<std::sync::Arc<Portal>>();
    let db = expect_context::<Db>();
    let client = context::client_ip().await;
    let actor = context::actor("sign-in").await;
    let session = leptos_axum::extract::<tower_sessions::Session>()
        .await
        .map_err(|_| ServerFnError::new("sessions are unavailable; try again"))?;
    let refuse = |status: axum::http::StatusCode, message: String| {
        if let Some(options) = use_context::<leptos_axum::ResponseOptions>() {
            options.set_status(status);
        }
        Err(ServerFnError::new(message))
    };
    match admin.check_from(client, &secret) {
        Ok(()) => {
            if let Err(err) = signin::sign_in(&session, &portal, Role::Admin).await {
                tracing::error!("cannot start an admin session: {err:#}");
                return Err(ServerFnError::new("cannot start a session; try again"));
            }
            tracing::info!(?client, "admin signed in");
            audit(&db, &actor, "sign_in", None, serde_json::json!({})).await;
            leptos_axum::redirect(&signin::safe_next(&next));
            Ok(())
        }
        Err(AdminDenied::Disabled) => refuse(
            axum::http::StatusCode::FORBIDDEN,
            "Admin sign-in is disabled: set GC_STATUS_ADMIN_TOKEN on the server.".into(),
        ),
        Err(AdminDenied::Throttled { retry_after_secs }) => refuse(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!("Too many wrong secrets from this address; try again in {retry_after_secs} s."),
        ),
        Err(AdminDenied::Wrong { audit: due }) => {
            // Failures are audited once a minute per address, with their count, so a flood
            // cannot fill the audit table.
            if let Some(failures) = due {
                crate::server::audit::failed_secrets(
                    &db,
                    "sign-in",
                    client,
                    "sign_in_failed",
                    failures,
                )
                .await;
            }
            // Slows down guessing; the lock-out in `check_from` stops it.
            tokio::time::sleep(FAILED_SIGN_IN_DELAY).await;
            refuse(
                axum::http::StatusCode::UNAUTHORIZED,
                "That admin secret is not right.".into(),
            )
        }
        Err(AdminDenied::Missing) => refuse(
            axum::http::StatusCode::UNAUTHORIZED,
            "That admin secret is not right.".into(),
        ),
    }
}

/// Ends the session and returns to the wallboard.
#[server(endpoint = "logout")]
pub async fn logout() -> Result<(), ServerFnError> {
    use crate::server::portal::{context, signin, Portal};
    let session = leptos_axum::extract::<tower_sessions::Session>()
        .await
        .map_err(|_| ServerFnError::new("sessions are unavailable; try again"))?;
    if let Some(signed) =
        signin::signed_in(&session, &expect_context::<std::sync::Arc<Portal>>()).await
    {
        if signed.role == crate::model::Role::Admin {
            let actor = context::actor("admin session").await;
            crate::server::audit::record(
                &expect_context::<crate::server::store::Db>(),
                &actor,
                "sign_out",
                None,
                serde_json::json!({}),
            )
            .await;
        }
    }
    signin::sign_out(&session)
        .await
        .map_err(|_| ServerFnError::new("cannot end the session; try again"))?;
    leptos_axum::redirect("/");
    Ok(())
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let login = ServerAction::<Login>::new();
    let query = use_query_map();
    let next = move || query.with(|q| q.get("next").unwrap_or_default());
    let error = move || {
        login.value().get().and_then(|result| match result {
            Err(ServerFnError::ServerError(message)) => Some(message),
            Err(other) => Some(other.to_string()),
            Ok(()) => None,
        })
    };
    let hydrated = super::use_hydrated();
    view! {
        <main class="narrow login" data-hydrated=hydrated>
            <h1>"Admin sign-in"</h1>
            <p class="lead">
                "Sign in with the admin secret (" <code>"GC_STATUS_ADMIN_TOKEN"</code>
                ") to inspect, replay and discard dead letters."
            </p>
            <ActionForm action=login>
                <input type="hidden" name="next" prop:value=next />
                <label for="secret">"Admin secret"</label>
                <input
                    id="secret"
                    name="secret"
                    type="password"
                    required
                    autocomplete="current-password"
                    data-testid="secret"
                />
                <button type="submit" data-testid="sign-in" disabled=move || login.pending().get()>
                    {move || if login.pending().get() { "Signing in…" } else { "Sign in" }}
                </button>
            </ActionForm>
            <p class="error" role="alert" data-testid="sign-in-error">
                {error}
            </p>
            <p>
                <a href="/">"Back to the wallboard"</a>
            </p>
        </main>
    }
}
