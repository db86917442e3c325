//! The retry schedule: exponential backoff with full jitter.
//!
//! Full jitter (a uniformly random delay between zero and the exponential bound) spreads
//! retries of events that failed together, so a recovering downstream is not hit by a wave.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The upper bound of the delay after the `attempt`-th failure (1-based):
    /// `min(cap, base * 2^(attempt - 1))`.
    pub fn bound(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay after the `attempt`-th failure, for a uniform `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.bound(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay with a fresh random draw.
    pub fn jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }

    /// When the retry after `attempt` is due, from `now` (epoch ms; saturating).
    pub fn retry_at(&self, now: i64, attempt: u32) -> i64 {
        let delay = i64::try_from(self.jittered(attempt).as_millis()).unwrap_or(i64::MAX);
        now.saturating_add(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(1000),
    };

    #[test]
    fn bound_doubles_per_attempt_until_the_cap() {
        let bounds: Vec<u128> = (1..=6).map(|a| BACKOFF.bound(a).as_millis()).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn delay_is_the_bound_scaled_by_the_jitter() {
        assert_eq!(BACKOFF.delay(3, 0.0), Duration::ZERO);
        assert_eq!(BACKOFF.delay(3, 0.5), Duration::from_millis(200));
        assert!(BACKOFF.delay(3, 0.999_999) < Duration::from_millis(400));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(BACKOFF.bound(u32::MAX), BACKOFF.cap);
        for _ in 0..100 {
            assert!(BACKOFF.jittered(40) <= BACKOFF.cap);
        }
    }
}
