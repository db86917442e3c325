//! Slowing down secret guessing: the admin token (sign-in and the admin API) and the viewer
//! token share one [`SignInGuard`].
//!
//! - Each client (an address; an IPv6 /64) may fail [`FREE_FAILURES`] times; each further
//!   failure locks it out for a doubling time, up to [`MAX_LOCKOUT`]. Failures decay (one is
//!   forgiven every [`DECAY`]), so an admin who mistyped last week starts afresh.
//! - Across all clients, more than [`GLOBAL_FAILURES_PER_MINUTE`] failures a minute mean
//!   someone guesses from many addresses: then every failing client is locked out from its
//!   first failure, while a right secret still works for everyone else.
//! - Only failures count, so a script calling the admin API with the right token never
//!   spends anything. That is also why this is not `governor`: its limiters spend a cell on
//!   every check and cannot ask "is this client locked out?" without spending one.
//! - Failures are audited at most once per client per [`AUDIT_EVERY`], with their count, so a
//!   flood cannot fill the audit table.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::client::ClientIp;

/// Failures a client may make before each further one locks it out.
pub const FREE_FAILURES: u32 = 5;
/// The longest lock-out: it doubles with each failure past the free ones, up to this.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(300);
/// One failure is forgiven per this much time without failures.
pub const DECAY: Duration = Duration::from_secs(60);
/// Failures a minute across all clients before every failing client is locked out at once.
pub const GLOBAL_FAILURES_PER_MINUTE: u32 = 60;
/// A client's failures are written to the audit trail at most this often.
pub const AUDIT_EVERY: Duration = Duration::from_secs(60);
/// Clients remembered at most; beyond it the quiet ones are forgotten.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Shared guessing budget; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct SignInGuard(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    clients: HashMap<IpAddr, Failures>,
    /// Failures in the current global minute, and when it began.
    global: u32,
    global_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Failures not yet forgiven, as of `last`.
    count: u32,
    last: Instant,
    blocked_until: Instant,
    /// Failures since the last audit row, and when that row was written.
    unaudited: u32,
    audited_at: Option<Instant>,
}

/// A client that must wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub wait: Duration,
}

impl Throttled {
    /// Seconds for `Retry-After` (at least 1).
    pub fn retry_after_secs(self) -> u64 {
        self.wait.as_secs().max(1)
    }
}

/// The outcome of an attempt the guard let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Granted,
    /// A wrong (or empty) secret. `audit` is the number of failures to write to the audit
    /// trail now, in one row, if it is time for one.
    Denied {
        audit: Option<u32>,
    },
}

impl SignInGuard {
    /// Runs `verify` for `client` unless the client is locked out; counts a failure when it
    /// returns false. `what` names the secret for logs and metrics. Without a client address
    /// (a router unit test) only the global budget applies.
    pub fn attempt(
        &self,
        client: Option<ClientIp>,
        what: &'static str,
        verify: impl FnOnce() -> bool,
    ) -> Result<Verdict, Throttled> {
        let now = Instant::now();
        let key = client.map(ClientIp::bucket);
        if let Some(key) = key {
            if let Some(f) = self.state().clients.get(&key) {
                if f.blocked_until > now {
                    metrics::counter!("gc_status_sign_ins_throttled_total", "secret" => what)
                        .increment(1);
                    return Err(Throttled {
                        wait: f.blocked_until - now,
                    });
                }
            }
        }
        if verify() {
            if let Some(key) = key {
                self.state().clients.remove(&key);
            }
            return Ok(Verdict::Granted);
        }
        let mut state = self.state();
        let global_flood = state.count_global(now) > GLOBAL_FAILURES_PER_MINUTE;
        let Some(key) = key else {
            return Ok(Verdict::Denied { audit: Some(1) });
        };
        if state.clients.len() >= MAX_TRACKED_CLIENTS {
            state
                .clients
                .retain(|_, f| f.blocked_until > now || now.duration_since(f.last) < DECAY);
        }
        let f = state.clients.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
            unaudited: 0,
            audited_at: None,
        });
        // Forgive one failure per DECAY since the last one.
        let forgiven = now.duration_since(f.last).as_secs() / DECAY.as_secs().max(1);
        f.count = f
            .count
            .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
            .saturating_add(1);
        f.last = now;
        let free = if global_flood { 0 } else { FREE_FAILURES };
        if f.count > free {
            let doublings = (f.count - free - 1).min(16);
            let lockout = Duration::from_secs(1u64 << doublings).min(MAX_LOCKOUT);
            f.blocked_until = now + lockout;
            tracing::warn!(client = %key, failures = f.count, lockout_secs = lockout.as_secs(), global_flood, secret = what, "repeated wrong secrets; locking the address out");
        } else {
            tracing::warn!(client = %key, failures = f.count, secret = what, "wrong secret");
        }
        f.unaudited += 1;
        let audit_due = f
            .audited_at
            .is_none_or(|at| now.duration_since(at) >= AUDIT_EVERY);
        let audit = audit_due.then(|| {
            f.audited_at = Some(now);
            std::mem::take(&mut f.unaudited)
        });
        Ok(Verdict::Denied { audit })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// Counts one failure in the current global minute; returns the minute's count.
    fn count_global(&mut self, now: Instant) -> u32 {
        match self.global_since {
            Some(since) if now.duration_since(since) < Duration::from_secs(60) => {}
            _ => {
                self.global_since = Some(now);
                self.global = 0;
            }
        }
        self.global = self.global.saturating_add(1);
        self.global
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(last: u8) -> Option<ClientIp> {
        Some(ClientIp(IpAddr::from([10, 0, 0, last])))
    }

    #[test]
    fn a_guesser_is_locked_out_after_the_free_failures_and_others_are_not() {
        let guard = SignInGuard::default();
        for _ in 0..FREE_FAILURES {
            assert!(matches!(
                guard.attempt(client(1), "test", || false),
                Ok(Verdict::Denied { .. })
            ));
        }
        assert!(matches!(
            guard.attempt(client(1), "test", || false),
            Ok(Verdict::Denied { .. })
        ));
        // Locked: not even the right secret is looked at.
        let throttled = guard
            .attempt(client(1), "test", || panic!("not checked while locked out"))
            .expect_err("locked out");
        assert!(throttled.retry_after_secs() >= 1);
        // Another address is not slowed down.
        assert_eq!(
            guard.attempt(client(2), "test", || true),
            Ok(Verdict::Granted)
        );
    }

    #[test]
    fn failures_are_audited_once_a_minute_with_their_count() {
        let guard = SignInGuard::default();
        let audits: Vec<Option<u32>> = (0..3)
            .map(|_| match guard.attempt(client(3), "test", || false) {
                Ok(Verdict::Denied { audit }) => audit,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(audits, vec![Some(1), None, None]);
    }

    #[test]
    fn guessing_from_many_addresses_locks_each_out_at_its_first_failure() {
        let guard = SignInGuard::default();
        for i in 0..=GLOBAL_FAILURES_PER_MINUTE {
            let ip = ClientIp(IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8]));
            let _ = guard.attempt(Some(ip), "test", || false);
        }
        let next = client(200);
        let _ = guard.attempt(next, "test", || false);
        assert!(guard.attempt(next, "test", || true).is_err());
        // The admin elsewhere still gets in.
        assert_eq!(
            guard.attempt(client(201), "test", || true),
            Ok(Verdict::Granted)
        );
    }
}
