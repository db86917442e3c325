//! The live status every dashboard view shares: the server-rendered snapshot, then the pushed
//! ones from `GET /api/v2/stream`, a one-second clock for ticking waits, and the state of the
//! connection (driven by the stream's heartbeats).

use leptos::prelude::*;

use super::format;
use crate::model::{Role, StatusSnapshot};

/// The current status snapshot (the first render; in the browser the stream takes over).
#[server(endpoint = "status", input = server_fn::codec::Json)]
pub async fn get_status() -> Result<StatusSnapshot, ServerFnError> {
    let status = expect_context::<std::sync::Arc<crate::server::status::StatusSource>>();
    status.snapshot().await.map_err(|err| {
        tracing::warn!("cannot read the status: {err:#}");
        ServerFnError::new("the database is unavailable")
    })
}

/// Who the visitor is signed in as, so the page shows only the controls they may use (the
/// server checks every action again).
#[server(endpoint = "whoami", input = server_fn::codec::Json)]
pub async fn get_role() -> Result<Option<Role>, ServerFnError> {
    Ok(crate::server::portal::context::visitor_role().await)
}

/// How the page is connected to the live stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Server-rendered, no script running yet (or scripts are off).
    Static,
    Live,
    Reconnecting,
}

impl Connection {
    pub fn label(self) -> &'static str {
        match self {
            Connection::Static => "Not live",
            Connection::Live => "Live",
            Connection::Reconnecting => "Reconnecting…",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Connection::Static => "static",
            Connection::Live => "live",
            Connection::Reconnecting => "reconnecting",
        }
    }
}

/// The stream's address. A page opened with the viewer token in its URL (the widget framed by
/// a portal on another site, where no session cookie is sent) passes the token on.
#[cfg(feature = "hydrate")]
fn stream_url() -> String {
    let search = window().location().search().unwrap_or_default();
    let token = search
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    match token {
        // Still percent-encoded as it came: it goes into a URL again.
        Some(token) if !token.is_empty() => format!("/api/v2/stream?token={token}"),
        _ => "/api/v2/stream".to_owned(),
    }
}

/// A stream that sent nothing (no change, no heartbeat) for this long is taken as broken.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const SILENCE_MS: f64 = 12_000.0;

#[derive(Clone, Copy)]
pub struct Live {
    initial: Resource<Result<StatusSnapshot, ServerFnError>>,
    pushed: RwSignal<Option<StatusSnapshot>>,
    pub connection: RwSignal<Connection>,
    /// Browser clock (ms) when the current figures arrived; 0 until the page is live.
    figures_at: RwSignal<f64>,
    /// The newest heartbeat's "as of" time.
    beat_as_of: RwSignal<Option<String>>,
    /// Browser clock (ms) of the last message on the stream.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    last_message: RwSignal<f64>,
    /// Browser clock (ms), ticking every second; 0 on the server.
    now: RwSignal<f64>,
}

impl Live {
    /// Loads the snapshot for the server render and, in the browser, follows the stream.
    pub fn start() -> Self {
        let live = Live {
            initial: Resource::new(|| (), |_| get_status()),
            pushed: RwSignal::new(None),
            connection: RwSignal::new(Connection::Static),
            figures_at: RwSignal::new(0.0),
            beat_as_of: RwSignal::new(None),
            last_message: RwSignal::new(0.0),
            now: RwSignal::new(0.0),
        };
        Effect::new(move |_| {
            #[cfg(feature = "hydrate")]
            live.follow();
        });
        live
    }

    /// The newest snapshot, or the error that prevented reading one.
    pub fn current(&self) -> Option<Result<StatusSnapshot, ServerFnError>> {
        match self.pushed.get() {
            Some(snapshot) => Some(Ok(snapshot)),
            None => self.initial.get(),
        }
    }

    /// Changes whenever dead letters come or go: their count, or the processing rate (a
    /// replayed letter that fails again leaves the count as it was).
    pub fn dead_letter_changes(&self) -> Memo<Option<(i64, u64)>> {
        let live = *self;
        Memo::new(move |_| {
            live.current()
                .and_then(Result::ok)
                .map(|s| (s.pipeline.counts.dead, s.pipeline.out_per_second.to_bits()))
        })
    }

    /// Time since the figures were read, for ticking waits (0 on the server and at hydration,
    /// so both renders agree).
    pub fn elapsed_ms(&self) -> i64 {
        let (now, at) = (self.now.get(), self.figures_at.get());
        if now > 0.0 && at > 0.0 {
            (now - at).max(0.0) as i64
        } else {
            0
        }
    }

    /// When the shown figures were last confirmed current.
    pub fn as_of(&self, snapshot: &StatusSnapshot) -> String {
        let newest = match self.beat_as_of.get() {
            Some(beat) if format::parse_utc(&beat) > format::parse_utc(&snapshot.as_of) => beat,
            _ => snapshot.as_of.clone(),
        };
        format::parse_utc(&newest)
            .map(format::utc_time)
            .unwrap_or_default()
    }

    /// How long no event has arrived (`None`: none ever did).
    pub fn quiet_ms(&self, snapshot: &StatusSnapshot) -> Option<i64> {
        let last = format::parse_utc(snapshot.pipeline.last_event_at.as_deref()?)?;
        let as_of = format::parse_utc(&snapshot.as_of)?;
        Some((as_of - last).max(0) + self.elapsed_ms())
    }

    #[cfg(feature = "hydrate")]
    fn follow(self) {
        use std::{cell::RefCell, rc::Rc, time::Duration};

        let start = js_sys::Date::now();
        self.now.set(start);
        self.figures_at.set(start);
        self.last_message.set(start);
        let ticker = set_interval_with_handle(
            move || {
                let now = js_sys::Date::now();
                self.now.set(now);
                if self.connection.get_untracked() == Connection::Live
                    && now - self.last_message.get_untracked() > SILENCE_MS
                {
                    self.connection.set(Connection::Reconnecting);
                }
            },
            Duration::from_secs(1),
        )
        .ok();
        let stream: Rc<RefCell<Option<Stream>>> = Rc::default();
        self.connect(stream.clone());
        let keep = send_wrapper::SendWrapper::new(stream);
        on_cleanup(move || {
            if let Some(stream) = keep.borrow_mut().take() {
                stream.source.close();
            }
            if let Some(ticker) = ticker {
                ticker.clear();
            }
        });
    }

    /// Opens the stream. The browser retries a dropped connection by itself, but gives up
    /// for good on an error answer (a proxy's 502 during a deploy): then this opens a new
    /// one a few seconds later, for as long as the page is open.
    #[cfg(feature = "hydrate")]
    fn connect(self, slot: std::rc::Rc<std::cell::RefCell<Option<Stream>>>) {
        use wasm_bindgen::{closure::Closure, JsCast};

        const RETRY: std::time::Duration = std::time::Duration::from_secs(3);
        let Ok(source) = web_sys::EventSource::new(&stream_url()) else {
            leptos::logging::warn!("live updates unavailable: cannot open the status stream");
            return;
        };
        let on_status = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                let now = js_sys::Date::now();
                self.last_message.set(now);
                self.connection.set(Connection::Live);
                let snapshot = event
                    .data()
                    .as_string()
                    .and_then(|text| serde_json::from_str::<StatusSnapshot>(&text).ok());
                if let Some(snapshot) = snapshot {
                    self.figures_at.set(now);
                    self.now.set(now);
                    self.pushed.set(Some(snapshot));
                }
            },
        );
        let on_beat = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(
            move |event: web_sys::MessageEvent| {
                self.last_message.set(js_sys::Date::now());
                self.connection.set(Connection::Live);
                #[derive(serde::Deserialize)]
                struct Beat {
                    as_of: String,
                }
                let beat = event
                    .data()
                    .as_string()
                    .and_then(|text| serde_json::from_str::<Beat>(&text).ok());
                if let Some(beat) = beat {
                    self.beat_as_of.set(Some(beat.as_of));
                }
            },
        );
        let on_open = Closure::<dyn FnMut()>::new(move || {
            self.last_message.set(js_sys::Date::now());
            self.connection.set(Connection::Live);
        });
        let retry_slot = slot.clone();
        let on_error = Closure::<dyn FnMut()>::new(move || {
            self.connection.set(Connection::Reconnecting);
            let closed = retry_slot
                .borrow()
                .as_ref()
                .is_some_and(|s| s.source.ready_state() == web_sys::EventSource::CLOSED);
            if closed {
                let slot = retry_slot.clone();
                set_timeout(
                    move || {
                        // Not if the page went away meanwhile (the slot is emptied then).
                        if slot.borrow().is_some() {
                            self.connect(slot);
                        }
                    },
                    RETRY,
                );
            }
        });
        let listen = |kind: &str, f: &js_sys::Function| {
            if source.add_event_listener_with_callback(kind, f).is_err() {
                leptos::logging::warn!("live updates unavailable: cannot listen for {kind}");
            }
        };
        listen("status", on_status.as_ref().unchecked_ref());
        listen("heartbeat", on_beat.as_ref().unchecked_ref());
        listen("open", on_open.as_ref().unchecked_ref());
        listen("error", on_error.as_ref().unchecked_ref());
        let previous = slot.borrow_mut().replace(Stream {
            source,
            _listeners: (on_status, on_beat, on_open, on_error),
        });
        if let Some(previous) = previous {
            previous.source.close();
        }
    }
}

/// An open stream and its listeners (which live exactly as long as it).
#[cfg(feature = "hydrate")]
struct Stream {
    source: web_sys::EventSource,
    _listeners: (OnMessage, OnMessage, OnSignal, OnSignal),
}

#[cfg(feature = "hydrate")]
type OnMessage = wasm_bindgen::closure::Closure<dyn FnMut(web_sys::MessageEvent)>;
#[cfg(feature = "hydrate")]
type OnSignal = wasm_bindgen::closure::Closure<dyn FnMut()>;

/// A badge for the stream's state.
#[component]
pub fn ConnectionBadge(live: Live) -> impl IntoView {
    view! {
        <span
            class="badge connection"
            data-testid="connection"
            data-state=move || live.connection.get().key()
            role="status"
        >
            <span class="dot" aria-hidden="true"></span>
            {move || live.connection.get().label()}
        </span>
    }
}

/// The "stale" badge: shown when no event arrived for the configured quiet time.
#[component]
pub fn StaleBadge(live: Live, snapshot: StatusSnapshot) -> impl IntoView {
    let limit_ms = snapshot.board.stale_after_secs.saturating_mul(1000) as i64;
    let snapshot = StoredValue::new(snapshot);
    let state = move || {
        snapshot.with_value(|s| match live.quiet_ms(s) {
            None => Some("No events received yet".to_owned()),
            Some(quiet) if quiet > limit_ms => {
                Some(format!("Stale: no event for {}", format::wait(Some(quiet))))
            }
            Some(_) => None,
        })
    };
    view! {
        {move || {
            state()
                .map(|text| {
                    view! {
                        <span class="badge stale" data-testid="stale" role="status">
                            <span aria-hidden="true">"⚠ "</span>
                            {text}
                        </span>
                    }
                })
        }}
    }
}
