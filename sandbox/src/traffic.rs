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
    /// Requests that arrived under `/dev`, by domain (its index: `Sandbox::serve_domains`).
    #[serde(default)]
    pub by_domain: BTreeMap<String, u64>,
    /// The rate limit groups' own counters, by group name (`--rate-limit-group`).
    #[serde(default)]
    pub groups: BTreeMap<String, GroupStats>,
}

/// One rate limit group's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Requests of the group's operations that arrived.
    pub requests: u64,
    /// Of those, answered 429 by the group's limit.
    pub throttled: u64,
    /// The most of them that arrived within any sliding one-second window.
    pub max_in_1s: u64,
}

/// Operations with a rate limit of their own, apart from the account's (as Agora states for some
/// APIs): `NAME=OPERATION,OPERATION:RATE`, e.g. `channel-queries=list_channels,list_channel_users:20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitGroup {
    pub name: String,
    /// operationIds.
    pub operations: Vec<String>,
    /// Requests per sliding second before 429.
    pub rate: u32,
}

impl std::str::FromStr for RateLimitGroup {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let shape = || format!("{text:?} is not NAME=OPERATION[,OPERATION...]:RATE");
        let (name, rest) = text.split_once('=').ok_or_else(shape)?;
        let (operations, rate) = rest.rsplit_once(':').ok_or_else(shape)?;
        let operations: Vec<String> = operations.split(',').map(str::trim).map(String::from).collect();
        if name.is_empty() || operations.iter().any(String::is_empty) {
            return Err(shape());
        }
        let rate = rate.parse().map_err(|_| format!("{rate:?} is not a rate (requests per second)"))?;
        Ok(Self { name: name.to_string(), operations, rate })
    }
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

/// A group's limit and its windows.
struct Group {
    limit: RateLimitGroup,
    /// Arrival times of its admitted requests within the last second.
    admitted: VecDeque<Instant>,
    /// Arrival times of all its requests within the last second (for its `max_in_1s`).
    arrivals: VecDeque<Instant>,
    stats: GroupStats,
}

pub(crate) struct Traffic {
    rate_limit: u32,
    groups: Vec<Group>,
    /// Requests by the domain they came through (`Stats::by_domain`, by index).
    by_domain: Vec<u64>,
    base_latency: Duration,
    /// Arrival times of admitted requests within the last second (the account's rate limit's
    /// window: the requests of no group).
    admitted: VecDeque<Instant>,
    /// Arrival times of every request within the last second (for `max_in_1s`).
    arrivals: VecDeque<Instant>,
    /// Arrival times of the last `ARRIVAL_LOG` requests, in µs since the Unix epoch (a wall
    /// clock, so the logs of several sandboxes can be merged).
    log: VecDeque<(u64, Option<&'static str>)>,
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
    #[cfg(test)]
    pub(crate) fn new(rate_limit: u32, base_latency: Duration) -> Self {
        Self::with_groups(rate_limit, &[], base_latency)
    }

    /// `rate_limit` 0 turns the account's limit off; `groups` have limits of their own for their
    /// operations.
    pub(crate) fn with_groups(rate_limit: u32, groups: &[RateLimitGroup], base_latency: Duration) -> Self {
        let groups = groups.iter().map(|limit| Group {
            limit: limit.clone(),
            admitted: VecDeque::new(),
            arrivals: VecDeque::new(),
            stats: GroupStats::default(),
        });
        Self {
            rate_limit,
            groups: groups.collect(),
            by_domain: Vec::new(),
            base_latency,
            admitted: VecDeque::new(),
            arrivals: VecDeque::new(),
            log: VecDeque::new(),
            traces: VecDeque::new(),
            stats: Stats::default(),
            faults: Faults::default(),
        }
    }

    /// The limit `operation` counts against, and how many requests it admitted in the last second
    /// (for `RateLimit-Limit` and `RateLimit-Remaining`).
    pub(crate) fn limit_of(&self, operation: Option<&str>) -> (u32, u32) {
        let used = |window: &VecDeque<Instant>| u32::try_from(window.len()).unwrap_or(u32::MAX);
        match self.group_of(operation) {
            Some(index) => (self.groups[index].limit.rate, used(&self.groups[index].admitted)),
            None => (self.rate_limit, used(&self.admitted)),
        }
    }

    fn group_of(&self, operation: Option<&str>) -> Option<usize> {
        let operation = operation?;
        self.groups.iter().position(|group| group.limit.operations.iter().any(|named| named == operation))
    }

    /// A request arrives (of `operation`, when its route names one; through domain `domain`).
    pub(crate) fn arrive(
        &mut self,
        now: Instant,
        path: &str,
        operation: Option<&'static str>,
        domain: usize,
    ) -> Admission {
        self.stats.requests += 1;
        if self.by_domain.len() <= domain {
            self.by_domain.resize(domain + 1, 0);
        }
        self.by_domain[domain] += 1;
        let wall = std::time::SystemTime::now().checked_sub(now.elapsed()).unwrap_or_else(std::time::SystemTime::now);
        let unix_us = wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
        if self.log.len() == ARRIVAL_LOG {
            self.log.pop_front();
        }
        self.log.push_back((unix_us, operation));
        expire(&mut self.arrivals, now);
        self.arrivals.push_back(now);
        self.stats.max_in_1s = self.stats.max_in_1s.max(self.arrivals.len() as u64);

        let (rate, admitted, group) = match self.group_of(operation) {
            Some(index) => {
                let group = &mut self.groups[index];
                group.stats.requests += 1;
                expire(&mut group.arrivals, now);
                group.arrivals.push_back(now);
                group.stats.max_in_1s = group.stats.max_in_1s.max(group.arrivals.len() as u64);
                (group.limit.rate, &mut group.admitted, Some(&mut group.stats))
            }
            None => (self.rate_limit, &mut self.admitted, None),
        };
        expire(admitted, now);
        if rate > 0 && admitted.len() >= rate as usize {
            self.stats.throttled += 1;
            if let Some(group) = group {
                group.throttled += 1;
            }
            return Admission::Throttled;
        }
        admitted.push_back(now);
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
        let groups = self.groups.iter().map(|group| (group.limit.name.clone(), group.stats.clone()));
        let by_domain = self.by_domain.iter().enumerate().map(|(domain, count)| (domain.to_string(), *count));
        Stats { groups: groups.collect(), by_domain: by_domain.collect(), ..self.stats.clone() }
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

    /// The arrival log (`GET /__sandbox/arrivals`): when, and the operation if the path named one.
    pub(crate) fn arrivals(&self) -> Vec<(u64, Option<&'static str>)> {
        self.log.iter().copied().collect()
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Clears the counters, the faults and the rate limit's window.
    pub(crate) fn reset(&mut self) {
        self.stats = Stats::default();
        self.by_domain.clear();
        self.faults = Faults::default();
        self.admitted.clear();
        self.arrivals.clear();
        for group in &mut self.groups {
            group.admitted.clear();
            group.arrivals.clear();
            group.stats = GroupStats::default();
        }
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
            assert!(
                matches!(traffic.arrive(at, "/dev/v1/projects", None, 0), Admission::Admitted { .. }),
                "request {n}"
            );
        }
        assert_eq!(
            traffic.arrive(start + Duration::from_millis(950), "/dev/v1/projects", None, 0),
            Admission::Throttled
        );
        // The first admitted request leaves the window one second after it came.
        assert!(matches!(
            traffic.arrive(start + Duration::from_millis(1000), "/dev/v1/projects", None, 0),
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
            assert!(matches!(traffic.arrive(at, "/dev/v1/projects", None, 0), Admission::Admitted { .. }));
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
            traffic.arrive(now, "/dev/v1/projects", None, 0),
            Admission::Admitted { delay: Duration::from_millis(25), fail_with: Some(failed) }
        );
        traffic.reset();
        assert_eq!(
            traffic.arrive(now, "/dev/v1/projects", None, 0),
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
        assert!(!failed(traffic.arrive(now, "/dev/v1/projects", None, 0)), "another path");
        assert!(failed(traffic.arrive(now, "/dev/v1/channel/abc", None, 0)));
        assert!(!failed(traffic.arrive(now, "/dev/v1/channel/abc", None, 0)), "only once");
    }

    #[test]
    fn a_group_has_a_window_of_its_own_and_the_rest_share_the_account_s() {
        let group: RateLimitGroup = "channel-queries=list_channels,list_channel_users:20".parse().unwrap();
        assert_eq!((group.operations.len(), group.rate), (2, 20));
        assert!("no-rate=list_channels".parse::<RateLimitGroup>().is_err());
        assert!("=list_channels:3".parse::<RateLimitGroup>().is_err());
        let mut traffic = Traffic::with_groups(10, &[group], Duration::ZERO);
        let now = Instant::now();
        let admitted = |admission: Admission| matches!(admission, Admission::Admitted { .. });
        let channels = (0..21).filter(|_| admitted(traffic.arrive(now, "/dev/v1/channel/a", Some("list_channels"), 0)));
        assert_eq!(channels.count(), 20, "the group's 20");
        let projects = (0..11).filter(|_| admitted(traffic.arrive(now, "/dev/v1/projects", Some("list_projects"), 1)));
        assert_eq!(projects.count(), 10, "the account's 10, untouched by the group's");
        assert_eq!(traffic.limit_of(Some("list_channel_users")), (20, 20));
        assert_eq!(traffic.limit_of(Some("get_project")), (10, 10));
        let stats = traffic.stats();
        assert_eq!((stats.requests, stats.throttled), (32, 2));
        let channel_stats = &stats.groups["channel-queries"];
        assert_eq!((channel_stats.requests, channel_stats.throttled, channel_stats.max_in_1s), (21, 1, 21));
        assert_eq!((stats.by_domain["0"], stats.by_domain["1"]), (21, 11));
    }
}
