//! `/admin/dead-letters`: the dead-letter console. Filters live in the URL (bookmarkable),
//! pages go by cursor, newest first; replay and discard act on one letter, a selection, or
//! exactly the filtered set after a confirmation that says how many.

use std::collections::BTreeSet;

use leptos::prelude::*;
use leptos_router::{components::Form, hooks::use_query_map};
use serde::{Deserialize, Serialize};

use super::{
    format,
    live::{get_role, Live},
    nav::Nav,
};
use crate::model::{ConsoleFilter, DeadLetterList, DeadLetterRow};

/// Rows per console page.
#[cfg(feature = "ssr")]
const PAGE_SIZE: i64 = 50;

/// What an admin does to dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    Replay,
    Discard,
}

/// Which dead letters an action applies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Target {
    Ids(Vec<String>),
    /// Every letter matching `filter` that was dead by `counted_at` (when the admin saw the
    /// count), so the action covers exactly what the confirmation said.
    Matching {
        filter: ConsoleFilter,
        counted_at: i64,
    },
}

/// What an action did, for the console to say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActResult {
    pub act: Act,
    pub count: u64,
}

/// One page of dead letters matching `filter`, older than the cursor `before`.
#[server(endpoint = "dead-letters", input = server_fn::codec::Json)]
pub async fn list_dead_letters(
    filter: ConsoleFilter,
    before: Option<String>,
) -> Result<DeadLetterList, ServerFnError> {
    use crate::server::{domain::now_ms, portal::context::require_admin, store::Db};
    require_admin().await?;
    let filter = server::store_filter(&filter)?;
    let cursor = before.as_deref().and_then(|c| {
        let (at, id) = c.split_once('.')?;
        Some((at.parse::<i64>().ok()?, id))
    });
    let counted_at = now_ms();
    let (letters, total) = expect_context::<Db>()
        .dead_letters_before(&filter, cursor, PAGE_SIZE)
        .await
        .map_err(server::unavailable)?;
    let next = (letters.len() as i64 == PAGE_SIZE)
        .then(|| letters.last().map(|d| format!("{}.{}", d.dead_at, d.id)))
        .flatten();
    Ok(DeadLetterList {
        rows: letters.into_iter().map(server::row).collect(),
        total,
        next,
        counted_at,
    })
}

/// Replays or discards the target letters; recorded in the audit trail.
#[server(endpoint = "dead-letters/act", input = server_fn::codec::Json)]
pub async fn act_on_dead_letters(act: Act, target: Target) -> Result<ActResult, ServerFnError> {
    use crate::server::{
        admin::AdminAccess,
        dead_letters,
        domain::Selection,
        portal::context::{actor, require_admin},
        store::Db,
    };
    require_admin().await?;
    let selection = match target {
        Target::Ids(ids) if ids.is_empty() => {
            return Err(ServerFnError::new("select at least one dead letter"))
        }
        Target::Ids(ids) => Selection::Ids(ids),
        Target::Matching { filter, counted_at } => {
            let mut filter = server::store_filter(&filter)?;
            let by = counted_at.saturating_add(1);
            filter.until = Some(filter.until.map_or(by, |until| until.min(by)));
            Selection::Filter(filter)
        }
    };
    let actor = actor("admin session").await;
    let db = expect_context::<Db>();
    let count = match act {
        Act::Replay => {
            let access = expect_context::<AdminAccess>();
            dead_letters::replay(&db, access.wake_workers(), &actor, &selection).await
        }
        Act::Discard => dead_letters::discard(&db, &actor, &selection).await,
    }
    .map_err(server::unavailable)?;
    Ok(ActResult { act, count })
}

#[cfg(feature = "ssr")]
pub(crate) mod server {
    use leptos::prelude::ServerFnError;

    use crate::{
        model::{ConsoleFilter, DeadLetterRow},
        server::domain::{DeadLetter, DeadLetterFilter, FilterText},
    };

    /// The console's form as the store's filter, parsed as the admin API and the CLI parse
    /// theirs.
    pub fn store_filter(filter: &ConsoleFilter) -> Result<DeadLetterFilter, ServerFnError> {
        FilterText {
            event_type: Some(filter.event_type.clone()),
            queue: Some(filter.queue.clone()),
            error: Some(filter.error.clone()),
            since: Some(filter.since.clone()),
            until: Some(filter.until.clone()),
            stage: Some(filter.stage.clone()),
        }
        .parse()
        .map_err(|err| ServerFnError::new(err.to_string()))
    }

    pub fn row(d: DeadLetter) -> DeadLetterRow {
        DeadLetterRow {
            id: d.id,
            event_type: d.event_type,
            queue_id: d.queue_id,
            attempts: d.attempts,
            last_error: d.last_error,
            received_at: d.received_at,
            dead_at: d.dead_at,
            stage: d.stage.to_string(),
            zone: zone(),
        }
    }

    /// `GC_STATUS_TIMEZONE` now, for the times a server function answers with.
    pub fn zone() -> crate::model::Zone {
        leptos::prelude::use_context::<std::sync::Arc<crate::server::status::StatusSource>>()
            .map(|status| status.zone())
            .unwrap_or_default()
    }

    /// A storage failure as the page shows it (the detail goes to the log).
    pub fn unavailable(err: sqlx::Error) -> ServerFnError {
        tracing::warn!(error = %err, "dead-letter console: database error");
        ServerFnError::new("the database is unavailable; try again")
    }
}

/// The filter in the URL's query.
fn filter_from_query(q: &leptos_router::params::ParamsMap) -> ConsoleFilter {
    let get = |key: &str| q.get(key).unwrap_or_default();
    ConsoleFilter {
        event_type: get("type"),
        queue: get("queue"),
        error: get("error"),
        since: get("since"),
        until: get("until"),
        stage: get("stage"),
    }
}

/// The query string of a console view, for links that keep the filter.
pub fn query_of(filter: &ConsoleFilter, before: Option<&str>) -> String {
    let pairs = [
        ("type", filter.event_type.as_str()),
        ("queue", filter.queue.as_str()),
        ("error", filter.error.as_str()),
        ("since", filter.since.as_str()),
        ("until", filter.until.as_str()),
        ("stage", filter.stage.as_str()),
        ("before", before.unwrap_or_default()),
    ];
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", format::encode_component(v)))
        .collect();
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

/// What an action did, as the console and the detail page say it.
pub fn outcome_text(result: &Result<ActResult, ServerFnError>) -> String {
    match result {
        Ok(ActResult { act, count }) => {
            let letters = format::plural(*count, "dead letter", "dead letters");
            match act {
                Act::Replay => {
                    let which = if *count == 1 { "it is" } else { "they are" };
                    format!("Replayed {letters}; {which} being processed again.")
                }
                Act::Discard => format!("Discarded {letters}."),
            }
        }
        Err(err) => format!("Nothing done: {}", super::server_message(err)),
    }
}

/// An action waiting for the admin's confirmation.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub act: Act,
    pub target: Target,
    /// The question, stating how many.
    pub question: String,
    pub confirm_label: String,
}

impl Pending {
    pub fn new(act: Act, target: Target, count: u64, scope: &str) -> Self {
        let letters = format::plural(count, "dead letter", "dead letters");
        let (question, confirm_label) = match act {
            Act::Replay => (
                format!("Replay {letters}{scope}? They are processed again at once."),
                format!("Replay {count}"),
            ),
            Act::Discard => (
                format!("Discard {letters}{scope} for good? This cannot be undone."),
                format!("Discard {count}"),
            ),
        };
        Pending {
            act,
            target,
            question,
            confirm_label,
        }
    }
}

#[component]
pub fn ConsolePage() -> impl IntoView {
    let role = Resource::new(|| (), |_| get_role());
    let query = use_query_map();
    let filter = Memo::new(move |_| query.with(filter_from_query));
    let before = Memo::new(move |_| query.with(|q| q.get("before")));
    let act = ServerAction::<ActOnDeadLetters>::new();
    let live = Live::start();
    // Reload when letters come or go (a replayed letter that fails again is back).
    let changes = live.dead_letter_changes();
    let list = Resource::new(
        move || {
            (
                filter.get(),
                before.get(),
                act.version().get(),
                changes.get(),
            )
        },
        |(filter, before, _, _)| list_dead_letters(filter, before),
    );
    let selected = RwSignal::new(BTreeSet::<String>::new());
    let pending = RwSignal::new(None::<Pending>);
    let hydrated = super::use_hydrated();
    // Selections do not outlive the filter they were made under.
    Effect::new(move |_| {
        filter.track();
        selected.set(BTreeSet::new());
    });
    let outcome = move || act.value().get().map(|result| outcome_text(&result));
    Effect::new(move |_| {
        if act.version().get() > 0 {
            selected.set(BTreeSet::new());
        }
    });

    view! {
        <Nav role=role current="dead-letters" />
        <main class="console" data-hydrated=hydrated>
            <h1>"Dead letters"</h1>
            <FilterForm filter=filter />
            <p class="result" role="status" data-testid="console-result">
                {outcome}
            </p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    list.get()
                        .map(|result| match result {
                            Ok(page) => {
                                view! {
                                    <Letters
                                        page=page
                                        filter=filter.get_untracked()
                                        before=before.get_untracked()
                                        selected=selected
                                        pending=pending
                                        act=act
                                    />
                                }
                                    .into_any()
                            }
                            Err(err) => {
                                view! {
                                    <p class="error" role="alert">
                                        {super::server_message(&err)} " "
                                        <a href="/login?next=%2Fadmin%2Fdead-letters">"Sign in"</a>
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
fn FilterForm(filter: Memo<ConsoleFilter>) -> impl IntoView {
    let field = move |get: fn(&ConsoleFilter) -> String| move || filter.with(get);
    view! {
        <Form method="GET" action="/admin/dead-letters" attr:class="filters" attr:role="search">
            <label>
                "Type" <input name="type" data-testid="filter-type" prop:value=field(|f| f.event_type.clone()) />
            </label>
            <label>
                "Queue" <input name="queue" data-testid="filter-queue" prop:value=field(|f| f.queue.clone()) />
            </label>
            <label>
                "Error contains"
                <input name="error" data-testid="filter-error" prop:value=field(|f| f.error.clone()) />
            </label>
            <label>
                "Dead since (UTC)"
                <input
                    name="since"
                    type="datetime-local"
                    data-testid="filter-since"
                    prop:value=field(|f| f.since.clone())
                />
            </label>
            <label>
                "Dead before (UTC)"
                <input
                    name="until"
                    type="datetime-local"
                    data-testid="filter-until"
                    prop:value=field(|f| f.until.clone())
                />
            </label>
            <label>
                "Failed at"
                <select name="stage" data-testid="filter-stage" prop:value=field(|f| f.stage.clone())>
                    <option value="">"Any step"</option>
                    <option value="payload" selected=move || filter.with(|f| f.stage == "payload")>
                        "Processing (payload)"
                    </option>
                    <option value="sink" selected=move || filter.with(|f| f.stage == "sink")>
                        "Forwarding (sink)"
                    </option>
                </select>
            </label>
            <div class="filter-actions">
                <button type="submit" data-testid="apply-filter">
                    "Apply"
                </button>
                <a href="/admin/dead-letters">"Clear"</a>
            </div>
        </Form>
    }
}

#[component]
fn Letters(
    page: DeadLetterList,
    filter: ConsoleFilter,
    before: Option<String>,
    selected: RwSignal<BTreeSet<String>>,
    pending: RwSignal<Option<Pending>>,
    act: ServerAction<ActOnDeadLetters>,
) -> impl IntoView {
    let total = page.total;
    let counted_at = page.counted_at;
    let on_page: Vec<String> = page.rows.iter().map(|r| r.id.clone()).collect();
    let on_page = StoredValue::new(on_page);
    let filtered = filter != ConsoleFilter::default();
    let scope = if filtered {
        " matching this filter"
    } else {
        ""
    };
    let matching = {
        let filter = filter.clone();
        move |a: Act| {
            pending.set(Some(Pending::new(
                a,
                Target::Matching {
                    filter: filter.clone(),
                    counted_at,
                },
                u64::try_from(total).unwrap_or(0),
                if filtered {
                    " matching this filter"
                } else {
                    " (all of them)"
                },
            )))
        }
    };
    let matching_replay = matching.clone();
    let selection = move |a: Act| {
        let ids: Vec<String> = selected.get_untracked().into_iter().collect();
        let n = ids.len() as u64;
        pending.set(Some(Pending::new(a, Target::Ids(ids), n, " (selected)")));
    };
    let all_checked = move || {
        let chosen = selected.get();
        on_page.with_value(|ids| !ids.is_empty() && ids.iter().all(|id| chosen.contains(id)))
    };
    let toggle_all = move |_| {
        let check = !all_checked();
        selected.update(|chosen| {
            on_page.with_value(|ids| {
                for id in ids {
                    if check {
                        chosen.insert(id.clone());
                    } else {
                        chosen.remove(id);
                    }
                }
            })
        });
    };
    let busy = move || act.pending().get();
    let none_selected = move || selected.with(BTreeSet::is_empty) || busy();
    let older = page
        .next
        .as_deref()
        .map(|next| format!("/admin/dead-letters{}", query_of(&filter, Some(next))));
    let newest = before
        .is_some()
        .then(|| format!("/admin/dead-letters{}", query_of(&filter, None)));

    view! {
        <p class="total" data-testid="total">
            {format::plural(u64::try_from(total).unwrap_or(0), "dead letter", "dead letters")}
            {if filtered { " match this filter." } else { " in all." }}
        </p>
        <div class="toolbar" role="toolbar" aria-label="Act on dead letters">
            <button
                data-testid="replay-selected"
                disabled=none_selected
                on:click=move |_| selection(Act::Replay)
            >
                {move || format!("Replay selected ({})", selected.with(BTreeSet::len))}
            </button>
            <button
                class="danger"
                data-testid="discard-selected"
                disabled=none_selected
                on:click=move |_| selection(Act::Discard)
            >
                {move || format!("Discard selected ({})", selected.with(BTreeSet::len))}
            </button>
            <button
                data-testid="replay-matching"
                disabled=move || total == 0 || busy()
                on:click=move |_| matching_replay(Act::Replay)
            >
                {format!("Replay all{scope} ({total})")}
            </button>
            <button
                class="danger"
                data-testid="discard-matching"
                disabled=move || total == 0 || busy()
                on:click=move |_| matching(Act::Discard)
            >
                {format!("Discard all{scope} ({total})")}
            </button>
        </div>
        {if page.rows.is_empty() {
            view! { <p class="empty">"No dead letters here."</p> }.into_any()
        } else {
            view! {
                <div class="table-scroll">
                    <table class="letters">
                        <caption class="visually-hidden">"Dead letters, newest first"</caption>
                        <thead>
                            <tr>
                                <th scope="col">
                                    <input
                                        type="checkbox"
                                        aria-label="Select every letter on this page"
                                        data-testid="select-page"
                                        prop:checked=all_checked
                                        on:change=toggle_all
                                    />
                                </th>
                                <th scope="col">"Event"</th>
                                <th scope="col">"Type"</th>
                                <th scope="col">"Queue"</th>
                                <th scope="col" class="num" title="Attempts">"Tries"</th>
                                <th scope="col" title="The step that failed">"Stage"</th>
                                <th scope="col">"Last error"</th>
                                <th scope="col">"Received"</th>
                                <th scope="col">"Dead since"</th>
                                <th scope="col">
                                    <span class="visually-hidden">"Actions"</span>
                                </th>
                            </tr>
                        </thead>
                        <tbody>
                            {page
                                .rows
                                .into_iter()
                                .map(|row| view! { <Letter row=row selected=selected pending=pending act=act /> })
                                .collect_view()}
                        </tbody>
                    </table>
                </div>
            }
                .into_any()
        }}
        <nav class="pager" aria-label="Pages">
            {newest.map(|href| view! { <a href=href data-testid="newest">"← Newest"</a> })}
            {older.map(|href| view! { <a href=href data-testid="older">"Older →"</a> })}
        </nav>
    }
}

#[component]
fn Letter(
    row: DeadLetterRow,
    selected: RwSignal<BTreeSet<String>>,
    pending: RwSignal<Option<Pending>>,
    act: ServerAction<ActOnDeadLetters>,
) -> impl IntoView {
    let id = StoredValue::new(row.id.clone());
    let checked = move || id.with_value(|id| selected.with(|s| s.contains(id)));
    let toggle = move |_| {
        let id = id.get_value();
        selected.update(|s| {
            if !s.remove(&id) {
                s.insert(id);
            }
        });
    };
    let replay = move |_| {
        act.dispatch(ActOnDeadLetters {
            act: Act::Replay,
            target: Target::Ids(vec![id.get_value()]),
        });
    };
    let discard = move |_| {
        pending.set(Some(Pending::new(
            Act::Discard,
            Target::Ids(vec![id.get_value()]),
            1,
            "",
        )));
    };
    let detail = format!(
        "/admin/dead-letter?id={}",
        format::encode_component(&row.id)
    );
    view! {
        <tr data-letter=row.id.clone()>
            <td>
                <input
                    type="checkbox"
                    aria-label=format!("Select {}", row.id)
                    data-testid="select"
                    prop:checked=checked
                    on:change=toggle
                />
            </td>
            <td class="id">
                <a href=detail title=row.id.clone() data-testid="open">
                    {format::short_id(&row.id)}
                </a>
            </td>
            <td class="type">
                <span title=row.event_type.clone() tabindex="0">{row.event_type.clone()}</span>
            </td>
            <td class="queue" title=row.queue_id.clone().unwrap_or_default()>
                {row.queue_id.clone().unwrap_or_default()}
            </td>
            <td class="num">{row.attempts}</td>
            <td data-testid="stage">{format::stage(&row.stage)}</td>
            <td>
                <div class="error-text" title=row.last_error.clone()>{row.last_error.clone()}</div>
            </td>
            <td class="time">{format::in_zone(row.received_at, &row.zone)}</td>
            <td class="time">{format::in_zone(row.dead_at, &row.zone)}</td>
            <td class="row-actions">
                <button data-testid="replay" disabled=move || act.pending().get() on:click=replay>
                    "Replay"
                </button>
                <button class="danger" data-testid="discard" disabled=move || act.pending().get() on:click=discard>
                    "Discard"
                </button>
            </td>
        </tr>
    }
}

/// A modal confirmation (the native `<dialog>`: focus moves into it, Escape cancels, focus
/// returns afterwards) that states what is about to happen and to how many letters.
#[component]
pub fn ConfirmDialog(
    pending: RwSignal<Option<Pending>>,
    act: ServerAction<ActOnDeadLetters>,
) -> impl IntoView {
    let dialog = NodeRef::<leptos::html::Dialog>::new();
    Effect::new(move |_| {
        let open = pending.with(Option::is_some);
        #[cfg(feature = "hydrate")]
        if let Some(el) = dialog.get() {
            if open && !el.open() {
                let _ = el.show_modal();
            } else if !open && el.open() {
                el.close();
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (open, dialog);
    });
    let confirm = move |_| {
        if let Some(p) = pending.get_untracked() {
            act.dispatch(ActOnDeadLetters {
                act: p.act,
                target: p.target,
            });
        }
        pending.set(None);
    };
    view! {
        <dialog
            node_ref=dialog
            class="confirm"
            aria-labelledby="confirm-title"
            data-testid="confirm"
            on:close=move |_| pending.set(None)
        >
            <h2 id="confirm-title">"Please confirm"</h2>
            <p data-testid="confirm-question">
                {move || pending.with(|p| p.as_ref().map(|p| p.question.clone()))}
            </p>
            <div class="dialog-actions">
                <button data-testid="confirm-cancel" autofocus on:click=move |_| pending.set(None)>
                    "Cancel"
                </button>
                <button
                    data-testid="confirm-ok"
                    class=move || {
                        pending
                            .with(|p| match p.as_ref().map(|p| p.act) {
                                Some(Act::Discard) => "danger",
                                _ => "primary",
                            })
                    }
                    on:click=confirm
                >
                    {move || pending.with(|p| p.as_ref().map(|p| p.confirm_label.clone()))}
                </button>
            </div>
        </dialog>
    }
}
