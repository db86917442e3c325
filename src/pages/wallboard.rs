//! `/`: the live queue wallboard — a pipeline strip, then every queue, busiest first.

use leptos::prelude::*;

use super::{
    format,
    live::{get_role, ConnectionBadge, Live, StaleBadge},
    nav::Nav,
};
use crate::model::{breaches, ForwardingStatus, QueueStatus, Role, StatusSnapshot, Thresholds};

#[component]
pub fn WallboardPage() -> impl IntoView {
    let live = Live::start();
    let role = Resource::new(|| (), |_| get_role());
    let hydrated = super::use_hydrated();

    view! {
        <Nav role=role current="wallboard" />
        <main class="wallboard" data-hydrated=hydrated>
            <h1 class="visually-hidden">"Queue wallboard"</h1>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    let is_admin = matches!(role.get(), Some(Ok(Some(Role::Admin))));
                    live.current()
                        .map(|result| match result {
                            Ok(snapshot) => {
                                view! {
                                    <Strip live=live snapshot=snapshot.clone() is_admin=is_admin />
                                    <QueueTable live=live snapshot=snapshot />
                                }
                                    .into_any()
                            }
                            Err(_) => {
                                view! {
                                    <p class="error" role="alert">
                                        "The database is unavailable; the figures return when it answers."
                                    </p>
                                }
                                    .into_any()
                            }
                        })
                }}
            </Suspense>
        </main>
    }
}

/// The pipeline strip: flow per minute, backlog, dead letters, freshness and connection.
#[component]
fn Strip(live: Live, snapshot: StatusSnapshot, is_admin: bool) -> impl IntoView {
    let p = &snapshot.pipeline;
    let dead = p.counts.dead;
    let dead_value = if is_admin {
        view! {
            <a href="/admin/dead-letters" data-testid="count-dead">
                {dead}
            </a>
        }
        .into_any()
    } else {
        view! { <span data-testid="count-dead">{dead}</span> }.into_any()
    };
    let as_of = {
        let snapshot = snapshot.clone();
        move || live.as_of(&snapshot)
    };
    view! {
        <div class="strip">
            <dl class="counts">
                <div class="tile">
                    <dt>"In / min"</dt>
                    <dd data-testid="rate-in">{format::per_minute(p.in_per_second)}</dd>
                </div>
                <div class="tile">
                    <dt>"Processed / min"</dt>
                    <dd data-testid="rate-out">{format::per_minute(p.out_per_second)}</dd>
                </div>
                <div class="tile" data-status="pending">
                    <dt>"Pending"</dt>
                    <dd data-testid="count-pending">{p.counts.pending + p.counts.processing}</dd>
                </div>
                <div class="tile" data-status="retrying">
                    <dt>"Retrying"</dt>
                    <dd data-testid="count-retrying">{p.counts.retrying}</dd>
                </div>
                <div class="tile" data-status="dead" data-alert=(dead > 0).to_string()>
                    <dt>"Dead letters"</dt>
                    <dd>{dead_value}</dd>
                </div>
                <div class="tile" data-status="total">
                    <dt>"Stored"</dt>
                    <dd data-testid="count-total">{p.counts.total}</dd>
                </div>
            </dl>
            {p.forwarding.clone().map(|forwarding| view! { <Forwarding forwarding=forwarding /> })}
            <p class="freshness">
                <span class="as-of">
                    "As of " <time data-testid="as-of">{as_of}</time> " UTC"
                </span>
                <ConnectionBadge live=live />
                <StaleBadge live=live snapshot=snapshot.clone() />
            </p>
        </div>
    }
}

/// Forwarding to the sink: delivered per minute, waiting, and a pause with its reason.
#[component]
fn Forwarding(forwarding: ForwardingStatus) -> impl IntoView {
    let paused = forwarding.paused.is_some();
    view! {
        <dl class="counts forwarding" aria-label="Forwarding to the sink" data-testid="forwarding">
            <div class="tile">
                <dt>"Forwarded / min"</dt>
                <dd data-testid="rate-forwarded">
                    {format::per_minute(forwarding.delivered_per_second)}
                </dd>
            </div>
            <div class="tile" data-alert=paused.to_string()>
                <dt>"Waiting to forward"</dt>
                <dd data-testid="count-forward-waiting">{forwarding.waiting}</dd>
            </div>
            <div class="tile">
                <dt>"Forward retrying"</dt>
                <dd data-testid="count-forward-retrying">{forwarding.retrying}</dd>
            </div>
        </dl>
        {forwarding
            .paused
            .map(|pause| {
                view! {
                    <p class="forward-paused" role="status" data-testid="forward-paused">
                        <strong>"⚠ Forwarding paused"</strong>
                        {format!(
                            " since {} UTC: the sink keeps failing ({}). Events wait; one is tried again at {} UTC.",
                            format::utc_time(pause.since_ms),
                            pause.reason,
                            format::utc_time(pause.until_ms),
                        )}
                    </p>
                }
            })}
    }
}

#[component]
fn QueueTable(live: Live, snapshot: StatusSnapshot) -> impl IntoView {
    if snapshot.queues.is_empty() {
        return view! {
            <p class="empty">"No queue activity yet. Queues appear with their first event."</p>
        }
        .into_any();
    }
    let thresholds = snapshot.board.thresholds.clone();
    view! {
        <div class="table-scroll">
            <table class="queues">
                <caption class="visually-hidden">"Queues, busiest first"</caption>
                <thead>
                    <tr>
                        <th scope="col">"Queue"</th>
                        <th scope="col" class="num">"Waiting"</th>
                        <th scope="col" class="num">"Interacting"</th>
                        <th scope="col" class="num">"Agents"</th>
                        <th scope="col" class="num">"Longest wait"</th>
                        <th scope="col" class="num">"Offered"</th>
                        <th scope="col" class="num">"Answered"</th>
                        <th scope="col" class="num">"Abandoned"</th>
                        <th scope="col" class="num">"Abandon %"</th>
                        <th scope="col" class="num">"Service level"</th>
                        <th scope="col" class="num">"ASA"</th>
                        <th scope="col">"Last hour"</th>
                    </tr>
                </thead>
                <tbody>
                    {snapshot
                        .queues
                        .into_iter()
                        .map(|q| view! { <QueueRow live=live queue=q thresholds=thresholds.clone() /> })
                        .collect_view()}
                </tbody>
            </table>
        </div>
        <Legend thresholds=snapshot.board.thresholds />
    }
    .into_any()
}

/// The longest wait now: the figure as read, plus the time since (ticking in the browser).
pub fn ticking_wait(
    live: Live,
    q: &QueueStatus,
) -> impl Fn() -> Option<i64> + Send + Sync + 'static {
    let base = q.longest_waiting_ms;
    move || base.map(|ms| ms + live.elapsed_ms())
}

/// The text cue for the thresholds `queue` breaches now (colour is never the only cue);
/// `None` while it is within them. Follows the ticking wait.
pub fn breach(live: Live, queue: &QueueStatus, thresholds: Thresholds) -> Memo<Option<String>> {
    let longest = ticking_wait(live, queue);
    let q = StoredValue::new(queue.clone());
    Memo::new(move |_| {
        let found = q.with_value(|q| breaches(q, &thresholds, longest()));
        (!found.is_empty()).then(|| format!("Over threshold: {}", found.join(", ")))
    })
}

#[component]
fn QueueRow(live: Live, queue: QueueStatus, thresholds: Thresholds) -> impl IntoView {
    let longest = ticking_wait(live, &queue);
    let found = breach(live, &queue, thresholds);
    view! {
        <tr
            data-queue=queue.queue_id.clone()
            data-breach=move || found.get().is_some().to_string()
            title=format!("{} ({})", queue.queue_id, queue.source)
        >
            <th scope="row" class="queue-name">
                {move || {
                    found
                        .get()
                        .map(|text| {
                            view! {
                                <span class="breach-icon" role="img" aria-label=text.clone() title=text>
                                    "⚠"
                                </span>
                            }
                        })
                }}
                {queue.name.clone()}
            </th>
            <td class="num big" data-testid="queue-waiting">{queue.waiting}</td>
            <td class="num" data-testid="queue-interacting">{queue.interacting}</td>
            <td class="num">{format::count(queue.agents_on_queue())}</td>
            <td class="num" data-testid="queue-longest">{move || format::wait(longest())}</td>
            <td class="num">{format::count(queue.offered)}</td>
            <td class="num" data-testid="queue-answered">{queue.answered}</td>
            <td class="num" data-testid="queue-abandoned">{queue.abandoned}</td>
            <td class="num">{format::percent(queue.abandon_ratio())}</td>
            <td class="num">{format::percent(queue.service_level)}</td>
            <td class="num">{format::wait(queue.average_wait_ms.map(|ms| ms as i64))}</td>
            <td class="spark-cell">
                <Sparkline points=queue.history.clone() label=format!("Waiting in {} over the last hour", queue.name) />
            </td>
        </tr>
    }
}

/// What the thresholds are, so a flagged queue can be understood.
#[component]
fn Legend(thresholds: Thresholds) -> impl IntoView {
    let mut parts = Vec::new();
    if let Some(n) = thresholds.waiting {
        parts.push(format!("more than {n} waiting"));
    }
    if let Some(s) = thresholds.longest_wait_secs {
        parts.push(format!(
            "a wait over {}",
            format::wait(Some(s.saturating_mul(1000)))
        ));
    }
    if let Some(level) = thresholds.service_level {
        parts.push(format!(
            "service level under {}",
            format::percent(Some(level))
        ));
    }
    (!parts.is_empty()).then(|| {
        view! {
            <p class="legend">
                <span aria-hidden="true">"⚠ "</span>
                "marks a queue with "
                {parts.join(" or ")}
                "."
            </p>
        }
    })
}

/// Waiting conversations per minute as an inline SVG line; gaps where no sample exists.
#[component]
pub fn Sparkline(points: Vec<Option<i64>>, label: String) -> impl IntoView {
    // Integer coordinates in a 1200 × 280 box, scaled by CSS.
    const W: i64 = 1200;
    const H: i64 = 280;
    let max = points.iter().flatten().copied().max().unwrap_or(0).max(1);
    let last = i64::try_from(points.len())
        .unwrap_or(1)
        .saturating_sub(1)
        .max(1);
    // One polyline per run of known points.
    let mut runs: Vec<String> = Vec::new();
    let mut run = String::new();
    for (i, point) in (0_i64..).zip(points.iter()) {
        match point {
            Some(v) => {
                let x = i * W / last;
                let y = H - 20 - v.clamp(&0, &max) * (H - 40) / max;
                run.push_str(&format!("{x},{y} "));
            }
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    // A lone minute is a zero-length line: drawn as a dot by the round line cap.
    for run in &mut runs {
        if run.split_whitespace().count() == 1 {
            *run = format!("{run}{run}");
        }
    }
    let peak = points.iter().flatten().copied().max();
    let title = match peak {
        Some(peak) => format!("{label}: peak {peak}"),
        None => format!("{label}: no samples yet"),
    };
    let aria_label = title.clone();
    view! {
        <svg
            class="sparkline"
            viewBox=format!("0 0 {W} {H}")
            preserveAspectRatio="none"
            role="img"
            aria-label=aria_label
        >
            <title>{title}</title>
            <line class="baseline" x1="0" y1=H - 20 x2=W y2=H - 20 />
            {runs.into_iter().map(|points| view! { <polyline points=points /> }).collect_view()}
        </svg>
    }
}
