//! `/widget` and `/widget/{queue}`: the compact live view the internal portal embeds in an
//! iframe. No navigation; legible from 300 px wide. Only the origins in
//! `GC_STATUS_FRAME_ANCESTORS` may frame it, and only they are told its height.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::{
    format,
    live::{ConnectionBadge, Live, StaleBadge},
    wallboard::{breach, ticking_wait, Sparkline},
};
use crate::model::{QueueStatus, Thresholds};

#[component]
pub fn WidgetPage() -> impl IntoView {
    let params = use_params_map();
    let only = Memo::new(move |_| params.with(|p| p.get("queue")));
    let live = Live::start();
    let hydrated = super::use_hydrated();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                live.current()
                    .map(|result| match result {
                        Ok(snapshot) => {
                            let origins = snapshot.board.frame_origins.join(" ");
                            let thresholds = snapshot.board.thresholds.clone();
                            let queues: Vec<QueueStatus> = match only.get() {
                                Some(id) => snapshot.queues.iter().filter(|q| q.queue_id == id).cloned().collect(),
                                None => snapshot.queues.clone(),
                            };
                            let empty = match only.get() {
                                Some(id) => format!("No activity in queue {id} yet."),
                                None => "No queue activity yet.".to_owned(),
                            };
                            view! {
                                <main
                                    class="widget"
                                    id="gc-widget"
                                    data-parent-origins=origins
                                    data-hydrated=hydrated
                                >
                                    <header class="widget-head">
                                        <ConnectionBadge live=live />
                                        <StaleBadge live=live snapshot=snapshot.clone() />
                                    </header>
                                    {if queues.is_empty() {
                                        view! { <p class="empty">{empty}</p> }.into_any()
                                    } else {
                                        view! {
                                            <ul class="widget-queues">
                                                {queues
                                                    .into_iter()
                                                    .map(|q| view! { <Card live=live queue=q thresholds=thresholds.clone() /> })
                                                    .collect_view()}
                                            </ul>
                                        }
                                            .into_any()
                                    }}
                                </main>
                            }
                                .into_any()
                        }
                        Err(_) => {
                            view! {
                                <main class="widget">
                                    <p class="error" role="alert">"Queue status is unavailable."</p>
                                </main>
                            }
                                .into_any()
                        }
                    })
            }}
        </Suspense>
        <script src="/widget-frame.js" defer></script>
    }
}

#[component]
fn Card(live: Live, queue: QueueStatus, thresholds: Thresholds) -> impl IntoView {
    let longest = ticking_wait(live, &queue);
    let found = breach(live, &queue, thresholds);
    view! {
        <li class="card" data-queue=queue.queue_id.clone() data-breach=move || found.get().is_some().to_string()>
            <h2>
                {move || {
                    found
                        .get()
                        .map(|text| view! { <span class="breach-icon" role="img" aria-label=text.clone() title=text>"⚠"</span> })
                }}
                {queue.name.clone()}
            </h2>
            <dl>
                <div class="figure main">
                    <dt>"Waiting"</dt>
                    <dd data-testid="queue-waiting">{queue.waiting}</dd>
                </div>
                <div class="figure">
                    <dt>"Longest"</dt>
                    <dd data-testid="queue-longest">{move || format::wait(longest())}</dd>
                </div>
                <div class="figure">
                    <dt>"Interacting"</dt>
                    <dd>{queue.interacting}</dd>
                </div>
                <div class="figure">
                    <dt>"Answered"</dt>
                    <dd>{queue.answered}</dd>
                </div>
                <div class="figure">
                    <dt>"Abandoned"</dt>
                    <dd>{queue.abandoned}</dd>
                </div>
            </dl>
            <Sparkline points=queue.history.clone() label=format!("Waiting in {} over the last hour", queue.name) />
        </li>
    }
}
