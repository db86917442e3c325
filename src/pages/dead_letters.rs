//! The dead letters on the status page: what failed and why, with replay for admins.

use leptos::prelude::*;

use crate::model::DeadLetterSummary;

/// How many of the newest dead letters the page lists.
#[cfg(feature = "ssr")]
const SHOWN: i64 = 20;

/// The newest dead letters.
#[server]
pub async fn get_dead_letters() -> Result<Vec<DeadLetterSummary>, ServerFnError> {
    use crate::server::store::{work::DeadLetterFilter, Db};
    let db = expect_context::<Db>();
    let page = db
        .list_dead_letters(&DeadLetterFilter::default(), SHOWN, 0)
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "cannot list dead letters");
            ServerFnError::new("the database is unavailable")
        })?;
    Ok(page
        .items
        .into_iter()
        .map(|d| DeadLetterSummary {
            id: d.id,
            event_type: d.event_type,
            queue_id: d.queue_id,
            attempts: d.attempts,
            last_error: d.last_error,
            dead_at: jiff::Timestamp::from_millisecond(d.dead_at)
                .map(|t| t.to_string())
                .unwrap_or_default(),
        })
        .collect())
}

/// Puts one dead letter back to be processed; needs the admin token.
#[server]
pub async fn replay_dead_letter(id: String, admin_token: String) -> Result<u64, ServerFnError> {
    use crate::server::{admin::AdminAccess, store::work::Selection, store::Db, worker::now_ms};
    let access = expect_context::<AdminAccess>();
    let client = leptos_axum::extract::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .await
        .ok()
        .map(|axum::extract::ConnectInfo(addr)| addr.ip());
    access
        .check_from(client, &admin_token)
        .map_err(|err| ServerFnError::new(err.to_string()))?;
    let replayed = expect_context::<Db>()
        .replay_dead_letters(&Selection::Ids(vec![id]), now_ms())
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "replay from the page failed");
            ServerFnError::new("the database is unavailable; try again")
        })?;
    access.replayed(replayed);
    Ok(replayed)
}

/// The dead-letter table; it reloads whenever `refresh` changes and after each replay.
#[component]
pub fn DeadLetters(refresh: Memo<(i64, u64)>) -> impl IntoView {
    let replay = ServerAction::<ReplayDeadLetter>::new();
    let letters = Resource::new(
        move || (refresh.get(), replay.version().get()),
        |_| get_dead_letters(),
    );
    let token = RwSignal::new(String::new());
    let message = move || {
        replay.value().get().map(|result| match result {
            Ok(n) => format!("Replayed {n} dead letter(s)."),
            Err(err) => format!("Replay failed: {}", server_message(&err)),
        })
    };

    view! {
        <section class="dead-letters">
            <h2>"Dead letters"</h2>
            <label class="admin-token">
                "Admin token "
                <input
                    type="password"
                    data-testid="admin-token"
                    autocomplete="off"
                    placeholder="needed to replay"
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev))
                />
            </label>
            <p class="replay-result" role="status" data-testid="replay-result">{message}</p>
            <Transition fallback=|| ()>
                {move || {
                    letters
                        .get()
                        .map(|result| match result {
                            Ok(list) if list.is_empty() => {
                                view! { <p class="empty">"No dead letters."</p> }.into_any()
                            }
                            Ok(list) => {
                                view! {
                                    <table class="letters">
                                        <thead>
                                            <tr>
                                                <th>"Event"</th>
                                                <th>"Type"</th>
                                                <th>"Queue"</th>
                                                <th>"Attempts"</th>
                                                <th>"Last error"</th>
                                                <th>"Dead since"</th>
                                                <th></th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {list
                                                .into_iter()
                                                .map(|d| {
                                                    let id = d.id.clone();
                                                    let row_id = d.id.clone();
                                                    view! {
                                                        <tr data-letter=row_id>
                                                            <td class="id" title=d.id.clone()>{short_id(&d.id)}</td>
                                                            <td>{d.event_type}</td>
                                                            <td>{d.queue_id.unwrap_or_default()}</td>
                                                            <td>{d.attempts}</td>
                                                            <td class="error-text">{d.last_error}</td>
                                                            <td>{d.dead_at}</td>
                                                            <td>
                                                                <button
                                                                    data-testid="replay"
                                                                    disabled=move || replay.pending().get()
                                                                    on:click=move |_| {
                                                                        replay
                                                                            .dispatch(ReplayDeadLetter {
                                                                                id: id.clone(),
                                                                                admin_token: token.get_untracked(),
                                                                            });
                                                                    }
                                                                >
                                                                    "Replay"
                                                                </button>
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                }
                                    .into_any()
                            }
                            Err(_) => {
                                view! {
                                    <p class="error" role="alert">"Dead letters are unavailable."</p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
        </section>
    }
}

/// Event ids may be 64-character digests: show the start, the whole id is in the tooltip.
fn short_id(id: &str) -> String {
    match id.char_indices().nth(16) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_owned(),
    }
}

/// The message a server function sent, without the error-type prefix.
fn server_message(err: &ServerFnError) -> String {
    match err {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}
