//! `/`: live counts of stored events by status.

use leptos::prelude::*;

use crate::model::EventCounts;

/// How often the page refreshes its counts in the browser.
#[cfg(feature = "hydrate")]
const REFRESH_MS: u64 = 1000;

/// Counts of stored events by status, read from the database.
#[server]
pub async fn get_event_counts() -> Result<EventCounts, ServerFnError> {
    let db = expect_context::<crate::server::store::Db>();
    db.event_counts().await.map_err(|err| {
        tracing::warn!(error = %err, "cannot read event counts");
        ServerFnError::new("the database is unavailable")
    })
}

#[component]
pub fn HomePage() -> impl IntoView {
    let (tick, set_tick) = signal(0u64);
    let counts = Resource::new(move || tick.get(), |_| get_event_counts());
    let hydrated = RwSignal::new(false);

    // Effects run only in the browser: mark the page live and refresh the counts periodically.
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
            <p class="lead">"Genesys Cloud webhooks stored and waiting for processing."</p>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    counts
                        .get()
                        .map(|result| match result {
                            Ok(c) => view! { <Counts counts=c /> }.into_any(),
                            Err(_) => {
                                view! {
                                    <p class="error" role="alert">
                                        "The database is unavailable; counts will return when it answers."
                                    </p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Transition>
        </section>
    }
}

#[component]
fn Counts(counts: EventCounts) -> impl IntoView {
    let tiles = [
        ("pending", "Pending", counts.pending),
        ("processing", "Processing", counts.processing),
        ("done", "Done", counts.done),
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
