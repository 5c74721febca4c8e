//! The local budget: GCRA (a leaky bucket) with one slot per interval and a tolerance of
//! `burst - 1` slots after idle time. The next slot is counted from when the last slot was really
//! granted, not from when it was due, so a late timer can never squeeze two grants closer than
//! one interval — the property Agora's sliding one-second window checks.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct Gcra {
    interval: Duration,
    tolerance: Duration,
    /// Theoretical arrival time of the next grant.
    tat: Instant,
    /// No grant before this (Agora answered 429; the budget pauses).
    paused_until: Instant,
}

impl Gcra {
    pub(crate) fn new(interval: Duration, burst: u32, now: Instant) -> Self {
        Self { interval, tolerance: interval * burst.saturating_sub(1), tat: now, paused_until: now }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// A new pace (a reload): slots after the next are spaced by `interval`. A larger burst is
    /// earned over time, not granted at once on top of the last second's slots.
    pub(crate) fn reconfigure(&mut self, interval: Duration, burst: u32, now: Instant) {
        let tolerance = interval * burst.saturating_sub(1);
        if tolerance > self.tolerance {
            self.tat = self.tat.max(now + tolerance);
        }
        self.interval = interval;
        self.tolerance = tolerance;
    }

    /// The earliest instant at or after `now` at which a slot may be granted.
    pub(crate) fn next_slot(&self, now: Instant) -> Instant {
        let earliest = self.tat.checked_sub(self.tolerance).unwrap_or(self.tat);
        now.max(earliest).max(self.paused_until)
    }

    /// A slot was granted at `at` (at or after `next_slot`).
    pub(crate) fn commit(&mut self, at: Instant) {
        self.tat = self.tat.max(at) + self.interval;
    }

    /// No grant before `until`.
    pub(crate) fn pause_until(&mut self, until: Instant) {
        self.paused_until = self.paused_until.max(until);
    }
}

/// The interval that keeps every one-second window at or under `rate` calls with `burst` at once,
/// stretched by `safety_margin` so late timers never crowd more than `rate` into a second.
pub(crate) fn interval_for(rate: u32, burst: u32, safety_margin: f64) -> Duration {
    let sustained = rate.saturating_sub(burst.saturating_sub(1)).max(1);
    Duration::from_secs(1).div_f64(f64::from(sustained)).mul_f64(1.0 + safety_margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_interval_counted_from_the_real_grant() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let mut gcra = Gcra::new(interval, 1, start);
        assert_eq!(gcra.next_slot(start), start);
        // The timer fired 7 ms late: the next slot is 100 ms after the real grant.
        gcra.commit(start + Duration::from_millis(7));
        assert_eq!(gcra.next_slot(start), start + Duration::from_millis(107));
        gcra.commit(start + Duration::from_millis(107));
        // After a long idle time there is still just one slot at once.
        let later = start + Duration::from_secs(10);
        assert_eq!(gcra.next_slot(later), later);
        gcra.commit(later);
        assert_eq!(gcra.next_slot(later), later + interval);
    }

    #[test]
    fn a_burst_allows_that_many_at_once_after_idle_time() {
        let start = Instant::now();
        let interval = interval_for(10, 3, 0.0);
        assert_eq!(interval, Duration::from_millis(125), "8 sustained per second plus 2 at once stays within 10");
        let mut gcra = Gcra::new(interval, 3, start);
        for _ in 0..3 {
            assert_eq!(gcra.next_slot(start), start);
            gcra.commit(start);
        }
        assert_eq!(gcra.next_slot(start), start + interval);
    }

    #[test]
    fn a_pause_holds_every_grant_back() {
        let start = Instant::now();
        let mut gcra = Gcra::new(Duration::from_millis(100), 1, start);
        gcra.pause_until(start + Duration::from_secs(1));
        assert_eq!(gcra.next_slot(start), start + Duration::from_secs(1));
    }

    #[test]
    fn a_burst_raised_under_load_is_earned_not_granted_at_once() {
        let start = Instant::now();
        let interval = Duration::from_millis(100);
        let mut gcra = Gcra::new(interval, 1, start);
        for k in 0..10 {
            let at = start + interval * k;
            assert_eq!(gcra.next_slot(at), at);
            gcra.commit(at);
        }
        let now = start + Duration::from_millis(950);
        gcra.reconfigure(interval, 5, now);
        // Still one slot per interval right after the reload: no four extra at once.
        let next = gcra.next_slot(now);
        gcra.commit(next);
        assert!(gcra.next_slot(next) >= next + interval, "no burst on top of the last second");
        // After idle time the larger burst is there.
        let later = now + Duration::from_secs(10);
        for _ in 0..5 {
            assert_eq!(gcra.next_slot(later), later);
            gcra.commit(later);
        }
    }

    #[test]
    fn the_margin_stretches_the_interval() {
        assert_eq!(interval_for(10, 1, 0.02), Duration::from_millis(102));
        assert_eq!(interval_for(10, 1, 0.0), Duration::from_millis(100));
    }
}
