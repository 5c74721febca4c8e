//! What reaches the sandbox: its own rate limit (a sliding one-second window, like Agora's), the
//! counters the tests read from `/__sandbox/stats`, and the faults they inject.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const WINDOW: Duration = Duration::from_secs(1);

/// The counters of `GET /__sandbox/stats`, since start or the last `POST /__sandbox/reset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every request that arrived under `/dev`, whatever its answer.
    pub requests: u64,
    /// Requests answered 429 by the sandbox's own rate limit.
    pub throttled: u64,
    /// The most requests that arrived within any sliding one-second window.
    pub max_in_1s: u64,
    /// Requests answered 401 (missing or wrong Basic credentials).
    pub unauthorized: u64,
    /// Requests that reached an operation, by operationId.
    pub by_operation: BTreeMap<String, u64>,
}

/// Faults injected through `POST /__sandbox/faults`; every field may be left out (= off).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Extra latency before every `/dev` answer, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of `/dev` requests (0.0 to 1.0) answered with the fault's answer instead.
    #[serde(default)]
    pub fail_rate: f64,
    /// Status of the fault's answer (default 500); any status from 200 to 599, so a test can
    /// also play an upstream whose successes are not what the document says.
    #[serde(default)]
    pub status: Option<u16>,
    /// Body of the fault's answer, byte for byte (default `{"error_msg": "fault injected by the sandbox"}`).
    #[serde(default)]
    pub body: Option<String>,
    /// Headers of the fault's answer (e.g. `Retry-After`, `Content-Type`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only requests whose path starts with this (e.g. `/dev/v1/projects`).
    #[serde(default)]
    pub path: Option<String>,
    /// Only the next this many matching requests (then the faults are off).
    #[serde(default)]
    pub times: Option<u64>,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err("fail_rate must be between 0.0 and 1.0".into());
        }
        if let Some(status) = self.status
            && !(200..=599).contains(&status)
        {
            return Err("status must be between 200 and 599".into());
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || http::HeaderValue::from_str(value).is_err() {
                return Err(format!("header {name:?} is not a valid header"));
            }
        }
        Ok(())
    }

    fn matches(&self, path: &str) -> bool {
        self.path.as_deref().is_none_or(|prefix| path.starts_with(prefix)) && self.times != Some(0)
    }
}

/// The answer a fault gives instead of the operation's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FaultAnswer {
    pub status: u16,
    pub body: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// What to do with an arriving request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Over the rate limit: 429.
    Throttled,
    /// Go on after `delay`; answer `fail_with` instead if set.
    Admitted { delay: Duration, fail_with: Option<FaultAnswer> },
}

/// How many arrivals the log keeps.
const ARRIVAL_LOG: usize = 100_000;

pub(crate) struct Traffic {
    rate_limit: u32,
    base_latency: Duration,
    /// Arrival times of admitted requests within the last second (the rate limit's window).
    admitted: VecDeque<Instant>,
    /// Arrival times of every request within the last second (for `max_in_1s`).
    arrivals: VecDeque<Instant>,
    /// Arrival times of the last `ARRIVAL_LOG` requests, in µs since the Unix epoch (a wall
    /// clock, so the logs of several sandboxes can be merged).
    log: VecDeque<u64>,
    /// The `traceparent` of the last `TRACE_LOG` requests that carried one, with their paths.
    traces: VecDeque<(String, String)>,
    stats: Stats,
    faults: Faults,
}

/// Traced requests remembered (`GET /__sandbox/traceparents`).
const TRACE_LOG: usize = 1000;

fn expire(window: &mut VecDeque<Instant>, now: Instant) {
    while window.front().is_some_and(|&t| now.duration_since(t) >= WINDOW) {
        window.pop_front();
    }
}

impl Traffic {
    /// `rate_limit` 0 turns the limit off.
    pub(crate) fn new(rate_limit: u32, base_latency: Duration) -> Self {
        Self {
            rate_limit,
            base_latency,
            admitted: VecDeque::new(),
            arrivals: VecDeque::new(),
            log: VecDeque::new(),
            traces: VecDeque::new(),
            stats: Stats::default(),
            faults: Faults::default(),
        }
    }

    /// Requests admitted in the last second (for `RateLimit-Remaining`).
    pub(crate) fn admitted_in_window(&self) -> u32 {
        u32::try_from(self.admitted.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn rate_limit(&self) -> u32 {
        self.rate_limit
    }

    pub(crate) fn arrive(&mut self, now: Instant, path: &str) -> Admission {
        self.stats.requests += 1;
        let wall = std::time::SystemTime::now().checked_sub(now.elapsed()).unwrap_or_else(std::time::SystemTime::now);
        let unix_us = wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
        if self.log.len() == ARRIVAL_LOG {
            self.log.pop_front();
        }
        self.log.push_back(unix_us);
        expire(&mut self.arrivals, now);
        self.arrivals.push_back(now);
        self.stats.max_in_1s = self.stats.max_in_1s.max(self.arrivals.len() as u64);

        expire(&mut self.admitted, now);
        if self.rate_limit > 0 && self.admitted.len() >= self.rate_limit as usize {
            self.stats.throttled += 1;
            return Admission::Throttled;
        }
        self.admitted.push_back(now);
        let faults = &mut self.faults;
        if !faults.matches(path) {
            return Admission::Admitted { delay: self.base_latency, fail_with: None };
        }
        if let Some(times) = &mut faults.times {
            *times -= 1;
        }
        let fail_with = (faults.fail_rate > 0.0 && fastrand::f64() < faults.fail_rate).then(|| FaultAnswer {
            status: faults.status.unwrap_or(500),
            body: faults.body.clone(),
            headers: faults.headers.clone(),
        });
        Admission::Admitted { delay: self.base_latency + Duration::from_millis(faults.latency_ms), fail_with }
    }

    pub(crate) fn count_unauthorized(&mut self) {
        self.stats.unauthorized += 1;
    }

    pub(crate) fn count_operation(&mut self, operation: &str) {
        *self.stats.by_operation.entry(operation.to_string()).or_default() += 1;
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// A request that carried a `traceparent` (W3C Trace Context), by path.
    pub(crate) fn note_trace(&mut self, path: &str, traceparent: &str) {
        if self.traces.len() == TRACE_LOG {
            self.traces.pop_front();
        }
        self.traces.push_back((path.to_string(), traceparent.to_string()));
    }

    /// The traced requests, oldest first (`GET /__sandbox/traceparents`).
    pub(crate) fn traces(&self) -> Vec<(String, String)> {
        self.traces.iter().cloned().collect()
    }

    /// The arrival log (`GET /__sandbox/arrivals`).
    pub(crate) fn arrivals(&self) -> Vec<u64> {
        self.log.iter().copied().collect()
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Clears the counters, the faults and the rate limit's window.
    pub(crate) fn reset(&mut self) {
        self.stats = Stats::default();
        self.faults = Faults::default();
        self.admitted.clear();
        self.arrivals.clear();
        self.log.clear();
        self.traces.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_request_within_one_second_is_throttled() {
        let mut traffic = Traffic::new(10, Duration::ZERO);
        let start = Instant::now();
        for n in 0..10 {
            let at = start + Duration::from_millis(n * 90);
            assert!(matches!(traffic.arrive(at, "/dev/v1/projects"), Admission::Admitted { .. }), "request {n}");
        }
        assert_eq!(traffic.arrive(start + Duration::from_millis(950), "/dev/v1/projects"), Admission::Throttled);
        // The first admitted request leaves the window one second after it came.
        assert!(matches!(
            traffic.arrive(start + Duration::from_millis(1000), "/dev/v1/projects"),
            Admission::Admitted { .. }
        ));
        let stats = traffic.stats();
        assert_eq!((stats.requests, stats.throttled, stats.max_in_1s), (12, 1, 11));
    }

    #[test]
    fn spaced_requests_never_fill_the_window() {
        let mut traffic = Traffic::new(10, Duration::ZERO);
        let start = Instant::now();
        for n in 0..100 {
            let at = start + Duration::from_millis(n * 100);
            assert!(matches!(traffic.arrive(at, "/dev/v1/projects"), Admission::Admitted { .. }));
        }
        assert_eq!(traffic.stats().max_in_1s, 10);
        assert_eq!(traffic.stats().throttled, 0);
    }

    #[test]
    fn faults_fail_everything_at_rate_one_and_reset_clears_them() {
        let mut traffic = Traffic::new(0, Duration::from_millis(5));
        traffic.set_faults(Faults { latency_ms: 20, fail_rate: 1.0, status: Some(503), ..Default::default() });
        let now = Instant::now();
        let failed = FaultAnswer { status: 503, body: None, headers: BTreeMap::new() };
        assert_eq!(
            traffic.arrive(now, "/dev/v1/projects"),
            Admission::Admitted { delay: Duration::from_millis(25), fail_with: Some(failed) }
        );
        traffic.reset();
        assert_eq!(
            traffic.arrive(now, "/dev/v1/projects"),
            Admission::Admitted { delay: Duration::from_millis(5), fail_with: None }
        );
        assert_eq!(traffic.stats().requests, 1);
        assert!(Faults { fail_rate: 1.5, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn faults_can_target_a_path_a_number_of_times() {
        let mut traffic = Traffic::new(0, Duration::ZERO);
        traffic.set_faults(Faults {
            fail_rate: 1.0,
            status: Some(429),
            path: Some("/dev/v1/channel".into()),
            times: Some(1),
            ..Default::default()
        });
        let now = Instant::now();
        let failed = |admission: Admission| matches!(admission, Admission::Admitted { fail_with: Some(_), .. });
        assert!(!failed(traffic.arrive(now, "/dev/v1/projects")), "another path");
        assert!(failed(traffic.arrive(now, "/dev/v1/channel/abc")));
        assert!(!failed(traffic.arrive(now, "/dev/v1/channel/abc")), "only once");
    }
}
