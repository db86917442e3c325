//! What the wallboard's strip and `/readyz` show of the connector: live over the websocket,
//! polling, or failing with the reason and the next try.

use std::{sync::Mutex, time::Duration};

use crate::{
    model::ConnectorStatus,
    server::{domain::now_ms, health::Health},
};

/// What the wallboard and `/readyz` show of the connector.
pub struct ConnectorMonitor {
    state: Mutex<MonitorState>,
    health: Health,
}

#[derive(Default)]
struct MonitorState {
    queues: usize,
    /// Why the last call failed, and when the next try is (epoch ms); `None` after a success.
    failing: Option<(String, i64)>,
    last_poll_at: Option<i64>,
    today_at: Option<i64>,
    /// One entry per channel wanted: `None` while its socket is up, else why not.
    sockets: Vec<Option<String>>,
    notifications: bool,
    last_notification_at: Option<i64>,
    /// Why this replica does not run the connector (another one does).
    standby: Option<String>,
}

impl ConnectorMonitor {
    pub(super) fn new(notifications: bool, health: Health) -> Self {
        ConnectorMonitor {
            state: Mutex::new(MonitorState {
                notifications,
                ..MonitorState::default()
            }),
            health,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MonitorState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The connector's state as the wallboard shows it.
    pub fn status(&self) -> ConnectorStatus {
        let utc = |ms: Option<i64>| {
            ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|t| t.to_string())
        };
        self.with(|s| {
            let socket_trouble = s.sockets.iter().flatten().next().cloned();
            let live = s.notifications && !s.sockets.is_empty() && socket_trouble.is_none();
            let (state, reason, next) = match (&s.failing, s.last_poll_at) {
                _ if s.standby.is_some() => ("standby", s.standby.clone(), None),
                (Some((why, next)), _) => ("failing", Some(why.clone()), Some(*next)),
                (None, None) => ("starting", None, None),
                (None, Some(_)) if live => ("websocket", None, None),
                (None, Some(_)) => ("polling", socket_trouble.filter(|_| s.notifications), None),
            };
            ConnectorStatus {
                state: state.into(),
                reason,
                next_try_at: utc(next),
                queues: s.queues,
                last_poll_at: utc(s.last_poll_at),
                today_at: utc(s.today_at),
                last_notification_at: utc(s.last_notification_at),
            }
        })
    }

    pub(super) fn failed(&self, why: &str, wait: Duration) {
        let next = now_ms() + wait.as_millis() as i64;
        self.with(|s| s.failing = Some((why.to_owned(), next)));
        // Ready still (webhooks are taken), but `/readyz` says Genesys is out of reach.
        self.health.degrade("genesys", why.to_owned());
    }

    pub(super) fn succeeded(&self) {
        self.with(|s| s.failing = None);
        self.health.undegrade("genesys");
    }

    pub(super) fn sockets_wanted(&self, n: usize) {
        self.with(|s| s.sockets = vec![Some("connecting".to_owned()); n]);
    }

    pub(super) fn socket_up(&self, slot: usize) {
        self.with(|s| {
            if let Some(socket) = s.sockets.get_mut(slot) {
                *socket = None;
            }
        });
    }

    pub(super) fn socket_down(&self, slot: usize, why: &str, wait: Duration) {
        let text = if wait.is_zero() {
            format!("websocket reconnecting: {why}")
        } else {
            format!("websocket down ({why}); next try in {} s", wait.as_secs())
        };
        self.with(|s| {
            if let Some(socket) = s.sockets.get_mut(slot) {
                *socket = Some(text);
            }
        });
    }

    pub(super) fn standing_by(&self, why: Option<&str>) {
        self.with(|s| s.standby = why.map(str::to_owned));
    }

    pub(super) fn watching(&self, queues: usize) {
        self.with(|s| s.queues = queues);
    }

    pub(super) fn polled(&self, at: i64) {
        self.with(|s| s.last_poll_at = Some(at));
    }

    pub(super) fn got_today(&self, at: i64) {
        self.with(|s| s.today_at = Some(at));
    }

    pub(super) fn notified(&self) {
        self.with(|s| s.last_notification_at = Some(now_ms()));
    }
}
