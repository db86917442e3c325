//! `/widget` and `/widget/{queue}`: the compact live view the internal portal embeds in an
//! iframe. No navigation; legible from 300 px wide. Only the origins in
//! `GC_STATUS_FRAME_ANCESTORS` may frame it, and only they are told its height.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::{
    format,
    live::{ConnectionBadge, Live, StaleBadge},
    wallboard::{breach, ticking_wait, BoardView, BreachNote, MediaFilter, Sparkline},
};
use crate::model::{MediaStatus, QueueStatus, Thresholds};

#[component]
pub fn WidgetPage() -> impl IntoView {
    let params = use_params_map();
    let only = Memo::new(move |_| params.with(|p| p.get("queue")));
    let live = Live::start();
    let hydrated = super::use_hydrated();
    let board = BoardView::from_query();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                live.current()
                    .map(|result| match result {
                        Ok(snapshot) => {
                            let origins = snapshot.board.frame_origins.join(" ");
                            let view_of = board.get();
                            let media = view_of.media.clone();
                            let cards: Vec<(QueueStatus, MediaStatus, Thresholds)> = snapshot
                                .queues
                                .iter()
                                .filter(|q| only.get().is_none_or(|id| q.queue_id == id))
                                .filter_map(|q| {
                                    Some((q.clone(), q.part(media.as_deref())?, *snapshot.board.thresholds_for(&q.queue_id)))
                                })
                                .collect();
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
                                    {only.get().is_none().then(|| view! { <MediaFilter snapshot=snapshot.clone() view_of=view_of.clone() path="/widget" /> })}
                                    {if cards.is_empty() {
                                        view! { <p class="empty">{empty}</p> }.into_any()
                                    } else {
                                        view! {
                                            <ul class="widget-queues">
                                                {cards
                                                    .into_iter()
                                                    .map(|(q, part, thresholds)| view! { <Card live=live queue=q part=part thresholds=thresholds /> })
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
fn Card(
    live: Live,
    queue: QueueStatus,
    part: MediaStatus,
    thresholds: Thresholds,
) -> impl IntoView {
    let longest = ticking_wait(live, &part);
    let found = breach(live, &part, thresholds);
    let today = part.today.clone().unwrap_or_default();
    view! {
        <li
            class="card"
            data-queue=queue.queue_id.clone()
            data-breach=move || found.get().is_some().to_string()
            data-level=move || found.get().map(|(l, _)| l.as_str()).unwrap_or("")
        >
            <h2>
                <span class="name" title=queue.name.clone()>{queue.name.clone()}</span>
            </h2>
            <BreachNote found=found />
            <dl>
                <div class="figure main">
                    <dt>"Waiting"</dt>
                    <dd data-testid="queue-waiting">{format::count(part.waiting)}</dd>
                </div>
                <div class="figure">
                    <dt>"Longest"</dt>
                    <dd data-testid="queue-longest">{move || format::wait(longest())}</dd>
                </div>
                <div class="figure">
                    <dt>"Interacting"</dt>
                    <dd>{format::count(part.interacting)}</dd>
                </div>
                <div class="figure">
                    <dt>"Answered"</dt>
                    <dd>{format::count(today.answered)}</dd>
                </div>
                <div class="figure">
                    <dt>"Abandon %"</dt>
                    <dd>{format::percent(today.abandon_rate)}</dd>
                </div>
                <div class="figure">
                    <dt>"Service level"</dt>
                    <dd>{format::percent(today.service_level)}</dd>
                </div>
            </dl>
            <Sparkline points=queue.history.clone() label=format!("Waiting in {} over the last hour", queue.name) />
        </li>
    }
}
