//! `/`: the live pipeline counts and per-queue statistics.

use leptos::prelude::*;

use super::dead_letters::DeadLetters;
use crate::model::{EventCounts, QueueStatus, StatusSnapshot};

/// The current status snapshot, read from the database (the first render; after hydration
/// the page follows `GET /api/v2/stream`).
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
    let initial = Resource::new(|| (), |_| get_status());
    // Snapshots pushed by the server once the page is live in the browser.
    let pushed = RwSignal::new(None::<StatusSnapshot>);
    let hydrated = RwSignal::new(false);
    let current = move || match pushed.get() {
        Some(snapshot) => Some(Ok(snapshot)),
        None => initial.get(),
    };
    // The dead-letter list reloads when the number of dead letters or the processing rate
    // changes (a replayed letter that fails again leaves the count as it was).
    let dead_letters_key = Memo::new(move |_| {
        current()
            .and_then(Result::ok)
            .map(|s| (s.pipeline.counts.dead, s.pipeline.out_per_second.to_bits()))
            .unwrap_or_default()
    });

    // Effects run only in the browser: mark the page live and follow the status stream.
    Effect::new(move |_| {
        hydrated.set(true);
        #[cfg(feature = "hydrate")]
        follow_stream(pushed);
    });

    view! {
        <section class="status" data-hydrated=move || hydrated.get().to_string()>
            <h1>"gc-status"</h1>
            <p class="lead">"Genesys Cloud webhooks: pipeline and live queue status."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    current()
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
            <DeadLetters refresh=dead_letters_key />
        </section>
    }
}

/// Subscribes to the server-sent `status` events; the browser reconnects by itself if the
/// connection drops.
#[cfg(feature = "hydrate")]
fn follow_stream(pushed: RwSignal<Option<StatusSnapshot>>) {
    use wasm_bindgen::{closure::Closure, JsCast};

    let Ok(source) = web_sys::EventSource::new("/api/v2/stream") else {
        leptos::logging::warn!("live updates unavailable: cannot open the status stream");
        return;
    };
    let on_status =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let snapshot = event
                .data()
                .as_string()
                .and_then(|text| serde_json::from_str::<StatusSnapshot>(&text).ok());
            if let Some(snapshot) = snapshot {
                pushed.set(Some(snapshot));
            }
        });
    if source
        .add_event_listener_with_callback("status", on_status.as_ref().unchecked_ref())
        .is_err()
    {
        leptos::logging::warn!("live updates unavailable: cannot listen to the status stream");
    }
    // Both live as long as the page: dropped (and the stream closed) on cleanup.
    let keep = send_wrapper::SendWrapper::new((source, on_status));
    on_cleanup(move || keep.0.close());
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
