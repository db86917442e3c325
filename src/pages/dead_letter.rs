//! `/admin/dead-letter?id=…`: one dead letter with every attempt and its payload.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{
    console::{outcome_text, Act, ActOnDeadLetters, ConfirmDialog, Pending, Target},
    format,
    live::{get_role, Live},
    nav::Nav,
};
use crate::model::DeadLetterDetail;

/// The dead letter `id` with its attempts and payload; `None` if there is no such letter.
#[server(endpoint = "dead-letter", input = server_fn::codec::Json)]
pub async fn get_dead_letter(id: String) -> Result<Option<DeadLetterDetail>, ServerFnError> {
    use crate::server::{portal::context::require_admin, store::Db};
    require_admin().await?;
    let letter = expect_context::<Db>()
        .get_dead_letter(&id)
        .await
        .map_err(super::console::server::unavailable)?;
    Ok(letter.map(|d| {
        let attempts = d
            .errors
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|a| crate::model::Attempt {
                        at: a.get("at").and_then(serde_json::Value::as_i64).unwrap_or(0),
                        error: a
                            .get("error")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let raw = d.payload.clone().unwrap_or_default();
        let payload = serde_json::from_str::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or(raw);
        DeadLetterDetail {
            row: super::console::server::row(d),
            attempts,
            payload,
        }
    }))
}

#[component]
pub fn DeadLetterPage() -> impl IntoView {
    let role = Resource::new(|| (), |_| get_role());
    let query = use_query_map();
    let id = Memo::new(move |_| query.with(|q| q.get("id").unwrap_or_default()));
    let act = ServerAction::<ActOnDeadLetters>::new();
    // Follows the letter live: after a replay it disappears, and if it fails again it comes
    // back with the new attempt.
    let live = Live::start();
    let changes = live.dead_letter_changes();
    let letter = Resource::new(
        move || (id.get(), act.version().get(), changes.get()),
        |(id, _, _)| get_dead_letter(id),
    );
    let pending = RwSignal::new(None::<Pending>);
    let outcome = move || act.value().get().map(|result| outcome_text(&result));
    let hydrated = super::use_hydrated();
    view! {
        <Nav role=role current="dead-letters" />
        <main class="letter-detail" data-hydrated=hydrated>
            <p>
                <a href="/admin/dead-letters">"← All dead letters"</a>
            </p>
            <p class="result" role="status" data-testid="console-result">
                {outcome}
            </p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    letter
                        .get()
                        .map(|result| match result {
                            Ok(Some(detail)) => view! { <Detail detail=detail pending=pending act=act /> }.into_any(),
                            Ok(None) => {
                                view! {
                                    <h1>"Dead letter"</h1>
                                    <p class="empty">
                                        "No dead letter with this id: it was replayed or discarded."
                                    </p>
                                }
                                    .into_any()
                            }
                            Err(err) => {
                                view! {
                                    <p class="error" role="alert">
                                        {super::server_message(&err)}
                                    </p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
            <ConfirmDialog pending=pending act=act />
        </main>
    }
}

#[component]
fn Detail(
    detail: DeadLetterDetail,
    pending: RwSignal<Option<Pending>>,
    act: ServerAction<ActOnDeadLetters>,
) -> impl IntoView {
    let row = detail.row;
    let zone = row.zone.clone();
    let id = StoredValue::new(row.id.clone());
    view! {
        <h1>"Dead letter " <code class="id">{row.id.clone()}</code></h1>
        <dl class="facts">
            <dt>"Type"</dt>
            <dd>{row.event_type.clone()}</dd>
            <dt>"Queue"</dt>
            <dd>{row.queue_id.clone().unwrap_or_else(|| "–".to_owned())}</dd>
            <dt>"Received"</dt>
            <dd>{format::in_zone(row.received_at, &row.zone)}</dd>
            <dt>"Dead since"</dt>
            <dd>{format::in_zone(row.dead_at, &row.zone)}</dd>
            <dt>"Failed at"</dt>
            <dd data-testid="stage">{format::stage(&row.stage)}</dd>
            <dt>"Attempts since the last replay"</dt>
            <dd>{row.attempts}</dd>
        </dl>
        <div class="toolbar">
            <button
                data-testid="replay"
                disabled=move || act.pending().get()
                on:click=move |_| {
                    act.dispatch(ActOnDeadLetters {
                        act: Act::Replay,
                        target: Target::Ids(vec![id.get_value()]),
                    });
                }
            >
                "Replay"
            </button>
            <button
                class="danger"
                data-testid="discard"
                disabled=move || act.pending().get()
                on:click=move |_| {
                    pending.set(Some(Pending::new(Act::Discard, Target::Ids(vec![id.get_value()]), 1, "")))
                }
            >
                "Discard"
            </button>
        </div>
        <h2>"Attempts"</h2>
        <ol class="attempts" data-testid="attempts">
            {detail
                .attempts
                .into_iter()
                .map(|a| {
                    view! {
                        <li>
                            <time>{format::in_zone(a.at, &zone)}</time>
                            " "
                            <span class="error-text">{a.error}</span>
                        </li>
                    }
                })
                .collect_view()}
        </ol>
        <h2>"Payload"</h2>
        // Text, never markup: the payload is whatever a sender posted.
        <pre class="payload" data-testid="payload" tabindex="0">{detail.payload}</pre>
    }
}
