//! `/`: the live pipeline counts and per-queue statistics.

use leptos::prelude::*;

use super::dead_letters::DeadLetters;
use crate::model::{EventCounts, QueueStatus, StatusSnapshot};

/// How often the page refreshes in the browser.
#[cfg(feature = "hydrate")]
const REFRESH_MS: u64 = 1000;

/// The current status snapshot, read from the database.
#[server]
pub async fn get_status() -> Result<StatusSnapshot, ServerFnError> {
    let status = expect_context::<std::sync::Arc<crate::server::status::StatusSource>>();
    status.snapshot().await.map_err(|err| {
        tracing::warn!("cannot read the status: {err:#}");
        ServerFnError::new("the database is unavailable")
    })
}

#[component]
pub fn HomePage() -> impl IntoView {
    let (tick, set_tick) = signal(0u64);
    let status = Resource::new(move || tick.get(), |_| get_status());
    let hydrated = RwSignal::new(false);

    // Effects run only in the browser: mark the page live and refresh it periodically.
    Effect::new(move |_| {
        hydrated.set(true);
        #[cfg(feature = "hydrate")]
        {
            if let Ok(handle) = set_interval_with_handle(
                move || set_tick.update(|t| *t += 1),
                std::time::Duration::from_millis(REFRESH_MS),
            ) {
                on_cleanup(move || handle.clear());
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = set_tick;
    });

    view! {
        <section class="status" data-hydrated=move || hydrated.get().to_string()>
            <h1>"gc-status"</h1>
            <p class="lead">"Genesys Cloud webhooks: pipeline and live queue status."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    status
                        .get()
                        .map(|result| match result {
                            Ok(s) => {
                                view! {
                                    <Counts counts=s.pipeline.counts />
                                    <Queues queues=s.queues />
                                }
                                    .into_any()
                            }
                            Err(_) => {
                                view! {
                                    <p class="error" role="alert">
                                        "The database is unavailable; the status returns when it answers."
                                    </p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
            <DeadLetters refresh=tick />
        </section>
    }
}

#[component]
fn Counts(counts: EventCounts) -> impl IntoView {
    let tiles = [
        ("pending", "Pending", counts.pending),
        ("retrying", "Retrying", counts.retrying),
        ("processing", "Processing", counts.processing),
        ("done", "Done", counts.done),
        ("dead", "Dead letters", counts.dead),
        ("total", "Stored", counts.total),
    ];
    view! {
        <dl class="counts">
            {tiles
                .into_iter()
                .map(|(key, label, n)| {
                    view! {
                        <div class="tile" data-status=key>
                            <dt>{label}</dt>
                            <dd data-testid=format!("count-{key}")>{n}</dd>
                        </div>
                    }
                })
                .collect_view()}
        </dl>
    }
}

fn seconds(ms: Option<f64>) -> String {
    ms.map(|ms| format!("{:.0} s", ms / 1000.0))
        .unwrap_or_else(|| "–".to_owned())
}

#[component]
fn Queues(queues: Vec<QueueStatus>) -> impl IntoView {
    if queues.is_empty() {
        return view! { <p class="empty">"No queue activity yet."</p> }.into_any();
    }
    view! {
        <table class="queues">
            <thead>
                <tr>
                    <th>"Queue"</th>
                    <th>"Waiting"</th>
                    <th>"Interacting"</th>
                    <th>"Longest wait"</th>
                    <th>"Answered"</th>
                    <th>"Abandoned"</th>
                    <th>"Avg wait"</th>
                </tr>
            </thead>
            <tbody>
                {queues
                    .into_iter()
                    .map(|q| {
                        view! {
                            <tr data-queue=q.queue_id.clone() title=q.source.clone()>
                                <td>{q.name}</td>
                                <td data-testid="queue-waiting">{q.waiting}</td>
                                <td>{q.interacting}</td>
                                <td>{seconds(q.longest_waiting_ms.map(|v| v as f64))}</td>
                                <td>{q.answered}</td>
                                <td>{q.abandoned}</td>
                                <td>{seconds(q.average_wait_ms)}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
