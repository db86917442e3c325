//! `/admin/audit`: every admin action, newest first.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{format, live::get_role, nav::Nav};
use crate::model::AuditEntry;

/// Entries per page.
#[cfg(feature = "ssr")]
const PAGE_SIZE: i64 = 100;

/// Audit entries older than entry `before` (the newest without it).
#[server(endpoint = "audit", input = server_fn::codec::Json)]
pub async fn get_audit(before: Option<i64>) -> Result<Vec<AuditEntry>, ServerFnError> {
    use crate::server::{portal::context::require_admin, store::Db};
    require_admin().await?;
    let zone = super::console::server::zone();
    let entries = expect_context::<Db>()
        .list_audit(before, PAGE_SIZE)
        .await
        .map_err(super::console::server::unavailable)?;
    Ok(entries
        .into_iter()
        .map(|e| AuditEntry {
            zone: zone.clone(),
            ..e
        })
        .collect())
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let role = Resource::new(|| (), |_| get_role());
    let query = use_query_map();
    let before =
        Memo::new(move |_| query.with(|q| q.get("before").and_then(|b| b.parse::<i64>().ok())));
    let entries = Resource::new(move || before.get(), get_audit);
    let hydrated = super::use_hydrated();
    view! {
        <Nav role=role current="audit" />
        <main class="audit" data-hydrated=hydrated>
            <h1>"Audit trail"</h1>
            <p class="lead">"Sign-ins, replays and discards, newest first."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    entries
                        .get()
                        .map(|result| match result {
                            Ok(list) if list.is_empty() => {
                                view! { <p class="empty">"Nothing recorded yet."</p> }.into_any()
                            }
                            Ok(list) => {
                                let older = list.last().map(|e| format!("/admin/audit?before={}", e.id));
                                view! {
                                    <div class="table-scroll">
                                        <table class="audit-log">
                                            <thead>
                                                <tr>
                                                    <th scope="col">"When"</th>
                                                    <th scope="col">"Who"</th>
                                                    <th scope="col">"Action"</th>
                                                    <th scope="col" class="num">"Events"</th>
                                                    <th scope="col">"Selection"</th>
                                                </tr>
                                            </thead>
                                            <tbody>
                                                {list
                                                    .into_iter()
                                                    .map(|e| {
                                                        view! {
                                                            <tr data-action=e.action.clone()>
                                                                <td class="time">{format::in_zone(e.at, &e.zone)}</td>
                                                                <td>{e.actor}</td>
                                                                <td>{e.action.replace('_', " ")}</td>
                                                                <td class="num">{format::count(e.count)}</td>
                                                                <td><code class="detail">{e.detail}</code></td>
                                                            </tr>
                                                        }
                                                    })
                                                    .collect_view()}
                                            </tbody>
                                        </table>
                                    </div>
                                    <nav class="pager" aria-label="Pages">
                                        {older.map(|href| view! { <a href=href>"Older →"</a> })}
                                    </nav>
                                }
                                    .into_any()
                            }
                            Err(err) => {
                                view! {
                                    <p class="error" role="alert">{super::server_message(&err)}</p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
        </main>
    }
}
