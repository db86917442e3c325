//! `/`: the live queue wallboard — a pipeline strip, then every queue, busiest first.

use leptos::prelude::*;

use super::{
    format,
    live::{get_role, ConnectionBadge, Live, StaleBadge},
    nav::Nav,
};
use crate::model::{
    breaches, ConnectorStatus, Figures, ForwardingStatus, Level, Limits, MediaStatus, QueueStatus,
    Role, StatusSnapshot, Thresholds,
};

/// The wallboard's view, as kept in its URL: `?media=voice` shows one media type's figures,
/// `?tv=1` the wall-display mode (large figures, worst queues first, no controls).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BoardView {
    pub media: Option<String>,
    pub tv: bool,
}

impl BoardView {
    /// The view the current URL asks for.
    pub fn from_query() -> Memo<BoardView> {
        let query = leptos_router::hooks::use_query_map();
        Memo::new(move |_| {
            query.with(|q| BoardView {
                media: q.get("media").filter(|m| !m.is_empty()),
                tv: q.get("tv").is_some_and(|t| t == "1" || t == "true"),
            })
        })
    }
}

#[component]
pub fn WallboardPage() -> impl IntoView {
    let live = Live::start();
    let role = Resource::new(|| (), |_| get_role());
    let hydrated = super::use_hydrated();
    let board = BoardView::from_query();

    view! {
        <Show when=move || !board.get().tv>
            <Nav role=role current="wallboard" />
        </Show>
        <main class="wallboard" class:tv=move || board.get().tv data-hydrated=hydrated>
            <h1 class="visually-hidden">"Queue wallboard"</h1>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || {
                    let is_admin = matches!(role.get(), Some(Ok(Some(Role::Admin))));
                    let view_of = board.get();
                    live.current()
                        .map(|result| match result {
                            Ok(snapshot) => {
                                view! {
                                    <Strip live=live snapshot=snapshot.clone() is_admin=is_admin tv=view_of.tv />
                                    <MediaFilter snapshot=snapshot.clone() view_of=view_of.clone() path="/" />
                                    <QueueTable live=live snapshot=snapshot view_of=view_of />
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

/// Every media type the snapshot's queues report.
pub fn media_types(snapshot: &StatusSnapshot) -> Vec<String> {
    let mut all: Vec<String> = snapshot
        .queues
        .iter()
        .flat_map(|q| q.media.keys().cloned())
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Links that choose a media type (kept in the URL); none in wall-display mode.
#[component]
pub fn MediaFilter(
    snapshot: StatusSnapshot,
    view_of: BoardView,
    path: &'static str,
) -> impl IntoView {
    let types = media_types(&snapshot);
    if view_of.tv || (types.len() < 2 && view_of.media.is_none()) {
        return ().into_any();
    }
    let current = view_of.media.clone();
    let link = move |media: Option<&str>, label: String| {
        let href = match media {
            Some(m) => format!("{path}?media={}", format::encode_component(m)),
            None => path.to_owned(),
        };
        let here = (current.as_deref() == media).then_some("page");
        view! {
            <li>
                <a href=href aria-current=here data-testid="media-filter">
                    {label}
                </a>
            </li>
        }
    };
    view! {
        <nav class="media-filter" aria-label="Media type">
            <ul>
                {link(None, "All media".to_owned())}
                {types.iter().map(|m| link(Some(m), format::media(m))).collect_view()}
            </ul>
        </nav>
    }
    .into_any()
}

/// The pipeline strip: flow per minute, backlog, dead letters, freshness and connection.
#[component]
fn Strip(live: Live, snapshot: StatusSnapshot, is_admin: bool, tv: bool) -> impl IntoView {
    let p = &snapshot.pipeline;
    let zone = snapshot.board.zone.clone();
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
    if tv {
        return view! {
            <div class="strip">
                <p class="freshness">
                    <span class="as-of">
                        "As of " <time data-testid="as-of">{as_of}</time> " " {zone}
                    </span>
                    <ConnectionBadge live=live />
                    <StaleBadge live=live snapshot=snapshot.clone() />
                </p>
            </div>
        }
        .into_any();
    }
    let offset = snapshot.board.utc_offset_secs;
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
            {p.forwarding.clone().map(|forwarding| view! { <Forwarding forwarding=forwarding offset=offset zone=zone.clone() /> })}
            {p.genesys.clone().map(|genesys| view! { <Connector genesys=genesys offset=offset zone=zone.clone() /> })}
            <p class="freshness">
                <span class="as-of">
                    "As of " <time data-testid="as-of">{as_of}</time> " " {zone.clone()}
                </span>
                <ConnectionBadge live=live />
                <StaleBadge live=live snapshot=snapshot.clone() />
            </p>
        </div>
    }
    .into_any()
}

/// Forwarding to the sink: delivered per minute, waiting, and a pause with its reason.
#[component]
fn Forwarding(forwarding: ForwardingStatus, offset: i64, zone: String) -> impl IntoView {
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
                            " since {} {zone}: the sink keeps failing ({}). Events wait; one is tried again at {} {zone}.",
                            format::local_time(pause.since_ms, offset),
                            pause.reason,
                            format::local_time(pause.until_ms, offset),
                        )}
                    </p>
                }
            })}
    }
}

/// The Genesys Cloud connector: live over the websocket, polling, or failing with the reason
/// and the next try.
#[component]
fn Connector(genesys: ConnectorStatus, offset: i64, zone: String) -> impl IntoView {
    let at = |text: &Option<String>| {
        text.as_deref()
            .and_then(format::parse_utc)
            .map(|ms| format!("{} {zone}", format::local_time(ms, offset)))
    };
    let queues = format::plural(genesys.queues as u64, "queue", "queues");
    let polled = at(&genesys.last_poll_at)
        .map(|t| format!(", last poll {t}"))
        .unwrap_or_default();
    let text = match genesys.state.as_str() {
        "websocket" => format!("live over the websocket, {queues}{polled}"),
        "polling" => match &genesys.reason {
            Some(why) => format!("polling {queues}{polled} ({why})"),
            None => format!("polling {queues}{polled}"),
        },
        "failing" => format!(
            "failing: {}. Next try at {}; webhooks are still taken.",
            genesys.reason.clone().unwrap_or_default(),
            at(&genesys.next_try_at).unwrap_or_else(|| "once it can".into())
        ),
        "standby" => format!(
            "standing by: {}",
            genesys.reason.clone().unwrap_or_default()
        ),
        _ => "connecting…".to_owned(),
    };
    view! {
        <p class="genesys" role="status" data-testid="genesys" data-state=genesys.state.clone()>
            <strong>{if genesys.state == "failing" { "⚠ Genesys Cloud" } else { "Genesys Cloud" }}</strong>
            {format!(" {text}")}
        </p>
    }
}

/// One row of the table: a queue (or one media type of it) with the figures shown.
#[derive(Clone)]
struct Row {
    queue: QueueStatus,
    part: MediaStatus,
    thresholds: Thresholds,
}

#[component]
fn QueueTable(live: Live, snapshot: StatusSnapshot, view_of: BoardView) -> impl IntoView {
    let media = view_of.media.clone();
    let mut rows: Vec<Row> = snapshot
        .queues
        .iter()
        .filter_map(|q| {
            Some(Row {
                part: q.part(media.as_deref())?,
                thresholds: *snapshot.board.thresholds_for(&q.queue_id),
                queue: q.clone(),
            })
        })
        .collect();
    if rows.is_empty() {
        let text = match &media {
            Some(m) => format!("No {} activity yet.", format::media(m)),
            None => "No queue activity yet. Queues appear with their first event.".to_owned(),
        };
        return view! { <p class="empty">{text}</p> }.into_any();
    }
    if view_of.tv {
        // The worst first: critical, then warning, then the busiest.
        rows.sort_by_key(|r| {
            let level = breaches(&r.part, &r.thresholds, r.part.longest_waiting_ms).map(|(l, _)| l);
            std::cmp::Reverse((
                level,
                r.part.waiting.unwrap_or(0),
                r.part.longest_waiting_ms.unwrap_or(0),
            ))
        });
    }
    let zone = snapshot.board.zone.clone();
    let totals = Totals::of(&rows);
    let since = today_since(&rows);
    let caption = match &media {
        Some(m) => format!("{} by queue, busiest first", format::media(m)),
        None => "Queues, busiest first".to_owned(),
    };
    let split = media.is_none() && !view_of.tv;
    view! {
        <div class="table-scroll">
            <table class="queues" data-media=media.clone().unwrap_or_default()>
                <caption class="visually-hidden">{caption}</caption>
                <thead>
                    <tr>
                        <th scope="col" class="queue-col">"Queue"</th>
                        <th scope="col" class="num">"Waiting"</th>
                        <th scope="col" class="num">"Longest wait"</th>
                        <th scope="col" class="num" title="Agents on queue and idle">"Available"</th>
                        <th scope="col" class="num">"Interacting"</th>
                        <th scope="col" class="num" title="Agents not responding to what is offered">"Not resp."</th>
                        <th scope="col" class="num" title="Members signed in but off queue">"Off queue"</th>
                        <th scope="col" class="num today">"Offered"</th>
                        <th scope="col" class="num today">"Answered"</th>
                        <th scope="col" class="num today" title="Abandoned ÷ offered">"Abandon %"</th>
                        <th scope="col" class="num today" title="Answered within the target ÷ (answered + abandoned)">"Service level"</th>
                        <th scope="col" class="num today" title="Average speed of answer">"ASA"</th>
                        {(!view_of.tv).then(|| view! { <th scope="col">"Last hour"</th> })}
                    </tr>
                </thead>
                <tbody>
                    {rows
                        .into_iter()
                        .map(|row| view! { <QueueRow live=live row=row split=split tv=view_of.tv /> })
                        .collect_view()}
                </tbody>
                <tfoot>
                    <TotalsRow live=live totals=totals tv=view_of.tv />
                </tfoot>
            </table>
        </div>
        <p class="today-note" data-testid="today-note">
            {match since {
                Some(since) => format!("Offered to ASA: today since {since} {zone}."),
                None => format!("Offered to ASA: today ({zone})."),
            }}
        </p>
        {(!view_of.tv).then(|| view! { <Legend thresholds=snapshot.board.thresholds /> })}
    }
    .into_any()
}

/// When today's figures begin, if later than midnight for any queue shown: `11:00`.
fn today_since(rows: &[Row]) -> Option<String> {
    rows.iter()
        .filter_map(|r| r.part.today.as_ref())
        .filter_map(|t| t.since.as_deref()?.get(11..16))
        .filter(|hm| *hm != "00:00")
        .max()
        .map(str::to_owned)
}

/// The totals over every queue shown: counts add, ratios weighted.
#[derive(Clone, Default)]
struct Totals {
    waiting: i64,
    interacting: i64,
    longest_waiting_ms: Option<i64>,
    idle: Option<i64>,
    not_responding: Option<i64>,
    off_queue: Option<i64>,
    today: Figures,
}

impl Totals {
    fn of(rows: &[Row]) -> Totals {
        let mut t = Totals::default();
        let add = |slot: &mut Option<i64>, v: Option<i64>| {
            if let Some(v) = v {
                *slot = Some(slot.unwrap_or(0) + v);
            }
        };
        for r in rows {
            t.waiting += r.part.waiting.unwrap_or(0);
            t.interacting += r.part.interacting.unwrap_or(0);
            t.longest_waiting_ms = t.longest_waiting_ms.max(r.part.longest_waiting_ms);
            if let Some(a) = &r.queue.agents {
                add(&mut t.idle, a.idle);
                add(&mut t.not_responding, a.not_responding);
                add(&mut t.off_queue, a.off_queue);
            }
            if let Some(today) = &r.part.today {
                t.today.add(today);
            }
        }
        t
    }
}

#[component]
fn TotalsRow(live: Live, totals: Totals, tv: bool) -> impl IntoView {
    let base = totals.longest_waiting_ms;
    let longest = move || base.map(|ms| ms + live.elapsed_ms());
    let f = totals.today;
    view! {
        <tr class="totals" data-testid="totals">
            <th scope="row">"All queues"</th>
            <td class="num big" data-testid="total-waiting">{totals.waiting}</td>
            <td class="num">{move || format::wait(longest())}</td>
            <td class="num">{format::count(totals.idle)}</td>
            <td class="num">{totals.interacting}</td>
            <td class="num">{format::count(totals.not_responding)}</td>
            <td class="num">{format::count(totals.off_queue)}</td>
            <td class="num" data-testid="total-offered">{format::count(f.offered)}</td>
            <td class="num" data-testid="total-answered">{format::count(f.answered)}</td>
            <td class="num" data-testid="total-abandon-rate">{format::percent(f.abandon_rate)}</td>
            <td class="num" data-testid="total-service-level">{format::percent(f.service_level)}</td>
            <td class="num" data-testid="total-asa">{format::wait(f.average_answer_ms.map(|ms| ms as i64))}</td>
            {(!tv).then(|| view! { <td></td> })}
        </tr>
    }
}

/// The longest wait now: the figure as read, plus the time since (ticking in the browser).
pub fn ticking_wait(
    live: Live,
    part: &MediaStatus,
) -> impl Fn() -> Option<i64> + Send + Sync + 'static {
    let base = part.longest_waiting_ms;
    move || base.map(|ms| ms + live.elapsed_ms())
}

/// The threshold level `part` breaches now and why, as text (colour is never the only cue);
/// `None` while it is within them. Follows the ticking wait.
pub fn breach(
    live: Live,
    part: &MediaStatus,
    thresholds: Thresholds,
) -> Memo<Option<(Level, String)>> {
    let longest = ticking_wait(live, part);
    let part = StoredValue::new(part.clone());
    Memo::new(move |_| {
        let found = part.with_value(|p| breaches(p, &thresholds, longest()))?;
        let label = match found.0 {
            Level::Critical => "Critical",
            Level::Warning => "Warning",
        };
        Some((found.0, format!("{label}: {}", found.1.join(", "))))
    })
}

/// The icon and text of a breach.
#[component]
pub fn BreachNote(found: Memo<Option<(Level, String)>>) -> impl IntoView {
    move || {
        found.get().map(|(level, text)| {
            let icon = match level {
                Level::Critical => "⛔",
                Level::Warning => "⚠",
            };
            view! {
                <span class="breach-note" data-level=level.as_str() data-testid="breach">
                    <span class="breach-icon" aria-hidden="true">{icon}</span>
                    " "
                    {text}
                </span>
            }
        })
    }
}

#[component]
fn QueueRow(live: Live, row: Row, split: bool, tv: bool) -> impl IntoView {
    let Row {
        queue,
        part,
        thresholds,
    } = row;
    let longest = ticking_wait(live, &part);
    let found = breach(live, &part, thresholds);
    let agents = queue.agents.clone().unwrap_or_default();
    let f = part.today.clone().unwrap_or_default();
    let target = f
        .service_level_target
        .map(|t| format!("target {} % in {} s", t.percent.round() as i64, t.seconds));
    let interval = part.interval.as_ref().map(|i| {
        let start = i
            .start
            .as_deref()
            .and_then(|s| s.get(11..16))
            .unwrap_or_default();
        let end = i
            .end
            .as_deref()
            .and_then(|s| s.get(11..16))
            .unwrap_or_default();
        format!(
            "{start}–{end}: {} offered, {} answered, SL {}",
            format::count(i.offered),
            format::count(i.answered),
            format::percent(i.service_level)
        )
    });
    let not_responding = agents.not_responding.unwrap_or(0) > 0;
    let split_rows = (split && queue.media.len() > 1).then(|| {
        queue
            .media
            .iter()
            .map(|(name, m)| {
                let mf = m.today.clone().unwrap_or_default();
                let base = m.longest_waiting_ms;
                view! {
                    <tr class="media-row" data-media=name.clone()>
                        <th scope="row" class="media-name">{format::media(name)}</th>
                        <td class="num">{format::count(m.waiting)}</td>
                        <td class="num">{move || format::wait(base.map(|ms| ms + live.elapsed_ms()))}</td>
                        <td class="num"></td>
                        <td class="num">{format::count(m.interacting)}</td>
                        <td class="num"></td>
                        <td class="num"></td>
                        <td class="num">{format::count(mf.offered)}</td>
                        <td class="num">{format::count(mf.answered)}</td>
                        <td class="num">{format::percent(mf.abandon_rate)}</td>
                        <td class="num">{format::percent(mf.service_level)}</td>
                        <td class="num">{format::wait(mf.average_answer_ms.map(|ms| ms as i64))}</td>
                        <td></td>
                    </tr>
                }
            })
            .collect_view()
    });
    view! {
        <tr
            data-queue=queue.queue_id.clone()
            data-breach=move || found.get().is_some().to_string()
            data-level=move || found.get().map(|(l, _)| l.as_str()).unwrap_or("")
        >
            <th scope="row" class="queue-name">
                <span class="name" title=format!("{} ({}, {})", queue.name, queue.queue_id, queue.source) tabindex="0">
                    {queue.name.clone()}
                </span>
                <BreachNote found=found />
                {(!tv).then(|| interval.map(|text| view! { <span class="interval" data-testid="queue-interval">{text}</span> }))}
            </th>
            <td class="num big" data-testid="queue-waiting">{format::count(part.waiting)}</td>
            <td class="num" data-testid="queue-longest">{move || format::wait(longest())}</td>
            <td class="num" data-testid="queue-available">{format::count(agents.idle)}</td>
            <td class="num" data-testid="queue-interacting">{format::count(part.interacting)}</td>
            <td class="num" data-testid="queue-not-responding" data-flag=not_responding.to_string()>
                {not_responding.then_some("⚑ ")}
                {format::count(agents.not_responding)}
            </td>
            <td class="num">{format::count(agents.off_queue)}</td>
            <td class="num">{format::count(f.offered)}</td>
            <td class="num" data-testid="queue-answered">{format::count(f.answered)}</td>
            <td class="num" data-testid="queue-abandon-rate">{format::percent(f.abandon_rate)}</td>
            <td class="num" data-testid="queue-service-level" title=target>
                {format::percent(f.service_level)}
            </td>
            <td class="num" data-testid="queue-asa">{format::wait(f.average_answer_ms.map(|ms| ms as i64))}</td>
            {(!tv).then(|| view! {
                <td class="spark-cell">
                    <Sparkline points=queue.history.clone() label=format!("Waiting in {} over the last hour", queue.name) />
                </td>
            })}
        </tr>
        {split_rows}
    }
}

/// What the thresholds are, so a flagged queue can be understood.
#[component]
fn Legend(thresholds: Thresholds) -> impl IntoView {
    let describe = |l: &Limits| {
        let mut parts = Vec::new();
        if let Some(n) = l.waiting {
            parts.push(format!("more than {n} waiting"));
        }
        if let Some(s) = l.longest_wait_secs {
            parts.push(format!(
                "a wait over {}",
                format::wait(Some(s.saturating_mul(1000)))
            ));
        }
        if let Some(level) = l.service_level {
            parts.push(format!(
                "service level under {}",
                format::percent(Some(level))
            ));
        }
        parts.join(" or ")
    };
    let warning = describe(&thresholds.warning);
    let critical = describe(&thresholds.critical);
    view! {
        {(!warning.is_empty()).then(|| view! {
            <p class="legend" data-level="warning">
                <span aria-hidden="true">"⚠ "</span>"Warning: a queue with " {warning} "."
            </p>
        })}
        {(!critical.is_empty()).then(|| view! {
            <p class="legend" data-level="critical">
                <span aria-hidden="true">"⛔ "</span>"Critical: a queue with " {critical} "."
            </p>
        })}
    }
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
