//! The polls' memory: a poll that finds a quiet queue's figures unchanged need not add a row
//! every few seconds.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::feed::PolledGroup;

/// What the polls last stored per queue and media type, and when; a notification from the
/// websocket makes its queue's entries void (the figures it pushed are newer).
#[derive(Default)]
pub(super) struct PollMemo(Mutex<HashMap<(String, String), (String, std::time::Instant)>>);

impl PollMemo {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (String, std::time::Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn is_repeat(&self, group: &PolledGroup, within: Duration) -> bool {
        self.lock()
            .get(&(group.queue.clone(), group.media.clone()))
            .is_some_and(|(figures, at)| *figures == group.figures && at.elapsed() < within)
    }

    pub(super) fn stored(&self, group: PolledGroup) {
        self.lock().insert(
            (group.queue, group.media),
            (group.figures, std::time::Instant::now()),
        );
    }

    /// Forgets what was polled for `queue`.
    pub(super) fn forget(&self, queue: &str) {
        self.lock().retain(|(q, _), _| q != queue);
    }
}
