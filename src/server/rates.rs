//! Events per second over the last minute, for the status API (in-memory, per process).

use std::sync::Mutex;

const WINDOW_SECS: usize = 60;

/// Counts per second in a ring of the last 60 seconds.
#[derive(Debug)]
pub struct RateMeter {
    /// (unix second, count) per slot.
    slots: Mutex<[(i64, u64); WINDOW_SECS]>,
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter {
            slots: Mutex::new([(i64::MIN, 0); WINDOW_SECS]),
        }
    }
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl RateMeter {
    pub fn record(&self, n: u64) {
        self.record_at(now_secs(), n);
    }

    fn record_at(&self, second: i64, n: u64) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let slot = &mut slots[second.rem_euclid(WINDOW_SECS as i64) as usize];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += n;
    }

    /// Average per second over the last minute.
    pub fn per_second(&self) -> f64 {
        self.per_second_at(now_secs())
    }

    fn per_second_at(&self, second: i64) -> f64 {
        let Ok(slots) = self.slots.lock() else {
            return 0.0;
        };
        let total: u64 = slots
            .iter()
            .filter(|(s, _)| second - *s < WINDOW_SECS as i64 && *s <= second)
            .map(|(_, n)| n)
            .sum();
        total as f64 / WINDOW_SECS as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_age_out_after_a_minute() {
        let meter = RateMeter::default();
        meter.record_at(1000, 60);
        meter.record_at(1030, 60);
        assert_eq!(meter.per_second_at(1030), 2.0);
        assert_eq!(meter.per_second_at(1075), 1.0);
        assert_eq!(meter.per_second_at(1100), 0.0);
        meter.record_at(1060, 6); // reuses the slot of second 1000
        assert_eq!(meter.per_second_at(1060), 1.1);
    }
}
