//! What `/readyz` reports: background tasks that stopped and storage faults, by part.
//!
//! The supervisor records a task that ended or panicked; the writer records a storage fault
//! (disk full, read-only or locked database) on a failed commit and clears it on the next
//! good one, so readiness follows recovery by itself.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Shared health of the process's parts; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Health {
    unhealthy: Arc<Mutex<BTreeMap<&'static str, String>>>,
    /// Parts in trouble that do not stop webhooks being taken (Genesys Cloud out of reach):
    /// `/readyz` names them and stays ready.
    degraded: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Health {
    /// Marks `part` degraded with a short cause: shown in `/readyz`, which stays ready.
    pub fn degrade(&self, part: &'static str, cause: impl Into<String>) {
        lock(&self.degraded).insert(part, cause.into());
    }

    /// Marks `part` no longer degraded.
    pub fn undegrade(&self, part: &'static str) {
        lock(&self.degraded).remove(part);
    }

    /// Every degraded part with its cause.
    pub fn degradations(&self) -> BTreeMap<&'static str, String> {
        lock(&self.degraded).clone()
    }

    /// Marks `part` unhealthy with a short cause (shown in `/readyz`).
    pub fn fail(&self, part: &'static str, cause: impl Into<String>) {
        self.parts().insert(part, cause.into());
    }

    /// Marks `part` healthy again.
    pub fn recover(&self, part: &'static str) {
        self.parts().remove(part);
    }

    /// Every unhealthy part with its cause.
    pub fn problems(&self) -> BTreeMap<&'static str, String> {
        self.parts().clone()
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        lock(&self.unhealthy)
    }
}

fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map half-updated: recover it.
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_fail_and_recover_independently() {
        let health = Health::default();
        health.fail("storage", "disk full");
        health.fail("writer", "panicked");
        health.recover("storage");
        assert_eq!(
            health.problems().into_iter().collect::<Vec<_>>(),
            vec![("writer", "panicked".to_owned())]
        );
    }
}
