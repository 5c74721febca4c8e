//! The metrics every request moves — `requests`, `request_duration_seconds` and `cache_events` —
//! counted by each thread in a shard of its own, and summed when `/metrics` is read. A request
//! takes its thread's shard's lock, which no other thread takes but a scrape: no counter, lock or
//! reference count that another core touches, where shared counters and prometheus-client's
//! histogram (a lock per observation) had both cores' requests take turns with one cache line.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use rustc_hash::FxHashMap;

use super::{CACHE_RESULTS, CacheLabels, OperationLabels, RequestLabels};
use crate::policy::CacheClass;

/// The latency buckets' upper bounds: 0.25 ms, doubling, to about 8 s (as the other histograms).
const BOUNDS: usize = 16;

fn upper_bound(bucket: usize) -> f64 {
    0.00025 * 2f64.powi(i32::try_from(bucket).unwrap_or(i32::MAX))
}

/// Cache events: one counter per (class, result).
const CACHE_EVENTS: usize = CacheClass::ALL.len() * CACHE_RESULTS.len();

/// One operation's latencies.
#[derive(Clone, Default)]
struct Latencies {
    sum: f64,
    count: u64,
    /// Per bucket (the last one past every bound: `+Inf`), not cumulative.
    buckets: [u64; BOUNDS + 1],
}

impl Latencies {
    fn observe(&mut self, seconds: f64) {
        self.sum += seconds;
        self.count += 1;
        let bucket = (0..BOUNDS).find(|&bucket| seconds <= upper_bound(bucket)).unwrap_or(BOUNDS);
        self.buckets[bucket] += 1;
    }

    fn add(&mut self, other: &Latencies) {
        self.sum += other.sum;
        self.count += other.count;
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }
}

/// What one thread counted, by label pointers (tenant and operation labels are `'static`).
#[derive(Default)]
struct Counts {
    requests: FxHashMap<(usize, usize, u16), (RequestLabels, u64)>,
    latencies: FxHashMap<usize, (&'static str, Latencies)>,
    cache_events: Vec<u64>,
}

#[derive(Default)]
struct Shard(Mutex<Counts>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The shards of one [`RequestMetrics`]: one per thread that counted.
pub(crate) struct RequestMetrics {
    id: u64,
    shards: Mutex<Vec<Arc<Shard>>>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The id of the next set made (a process may hold several: tests).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Shards a thread keeps at hand, by set; beyond it the oldest is let go (its counts stay in its
/// set, which keeps every shard it made).
const AT_HAND: usize = 4;

thread_local! {
    static SHARDS: RefCell<Vec<(u64, Arc<Shard>)>> = const { RefCell::new(Vec::new()) };
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        Self { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), shards: Mutex::default() }
    }

    /// Runs `count` on this thread's shard (made and registered on the thread's first count; a
    /// thread whose locals are already gone, as it ends, counts in a shard of its own).
    fn with_shard(&self, count: impl FnOnce(&mut Counts)) {
        let shard = SHARDS.try_with(|at_hand| {
            let mut at_hand = at_hand.borrow_mut();
            if let Some((_, shard)) = at_hand.iter().find(|(id, _)| *id == self.id) {
                return shard.clone();
            }
            let shard = self.new_shard();
            if at_hand.len() == AT_HAND {
                at_hand.remove(0);
            }
            at_hand.push((self.id, shard.clone()));
            shard
        });
        count(&mut shard.unwrap_or_else(|_| self.new_shard()).lock());
    }

    fn new_shard(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::default());
        self.shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(shard.clone());
        shard
    }

    /// One answered request and its latency.
    pub(crate) fn request(&self, tenant: &'static str, operation: &'static str, status: u16, seconds: f64) {
        self.with_shard(|counts| {
            let key = (tenant.as_ptr() as usize, operation.as_ptr() as usize, status);
            counts.requests.entry(key).or_insert_with(|| (RequestLabels { tenant, operation, status }, 0)).1 += 1;
            let latencies = counts
                .latencies
                .entry(operation.as_ptr() as usize)
                .or_insert_with(|| (operation, Latencies::default()));
            latencies.1.observe(seconds);
        });
    }

    /// One cache lookup: `event` is the class's index times the results, plus the result's.
    pub(crate) fn cache_event(&self, event: usize) {
        self.with_shard(|counts| {
            if counts.cache_events.is_empty() {
                counts.cache_events = vec![0; CACHE_EVENTS];
            }
            if let Some(count) = counts.cache_events.get_mut(event) {
                *count += 1;
            }
        });
    }

    /// Every shard's counts, summed.
    fn sum(&self) -> Totals {
        let shards = self.shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut requests: FxHashMap<RequestLabels, u64> = FxHashMap::default();
        let mut latencies: FxHashMap<&'static str, Latencies> = FxHashMap::default();
        let mut cache_events = vec![0; CACHE_EVENTS];
        for shard in shards {
            let counts = shard.lock();
            for (labels, count) in counts.requests.values() {
                *requests.entry(labels.clone()).or_default() += count;
            }
            for (operation, observed) in counts.latencies.values() {
                latencies.entry(operation).or_default().add(observed);
            }
            for (sum, count) in cache_events.iter_mut().zip(&counts.cache_events) {
                *sum += count;
            }
        }
        Totals { requests, latencies, cache_events }
    }
}

/// Every shard's counts, summed, by label.
struct Totals {
    requests: FxHashMap<RequestLabels, u64>,
    latencies: FxHashMap<&'static str, Latencies>,
    cache_events: Vec<u64>,
}

impl Collector for RequestMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Totals { requests, latencies, cache_events } = self.sum();
        // As a family with nothing in it: not listed until something is counted.
        if !requests.is_empty() {
            // prometheus-client ends the help of what is registered with a full stop: so here.
            let help = "Requests answered, by tenant, operation and status.";
            let mut family = encoder.encode_descriptor("requests", help, None, MetricType::Counter)?;
            for (labels, count) in &requests {
                ConstCounter::new(*count).encode(family.encode_family(labels)?)?;
            }
        }
        if !latencies.is_empty() {
            let help = "Time to answer a request.";
            let mut family =
                encoder.encode_descriptor("request_duration_seconds", help, None, MetricType::Histogram)?;
            for (operation, observed) in &latencies {
                let buckets: Vec<(f64, u64)> = (0..=BOUNDS)
                    .map(|bucket| if bucket < BOUNDS { upper_bound(bucket) } else { f64::MAX })
                    .zip(observed.buckets)
                    .collect();
                let labels = OperationLabels { operation };
                family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                    observed.sum,
                    observed.count,
                    &buckets,
                    None,
                )?;
            }
        }
        let help = "Cache lookups by class and result (hit, miss, stale, bypass).";
        let mut family = encoder.encode_descriptor("cache_events", help, None, MetricType::Counter)?;
        for (event, count) in cache_events.iter().enumerate() {
            let class = CacheClass::ALL[event / CACHE_RESULTS.len()].as_str();
            let labels = CacheLabels { class, result: CACHE_RESULTS[event % CACHE_RESULTS.len()] };
            ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;

    fn lines(registry: &Registry) -> Vec<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// What the shards expose is, line for line, what prometheus-client's own families exposed
    /// for the same requests — counted here on two threads.
    #[test]
    fn the_shards_sum_to_what_the_shared_families_exposed() {
        // Binary fractions, so that sums in any order are the same.
        let observed = [
            ("acme", "list_projects", 200, 0.000_122_070_312_5),
            ("acme", "list_projects", 200, 0.003_906_25),
            ("globex", "list_projects", 401, 0.0),
            ("acme", "get_usage", 502, 9.5),
            ("globex", "get_usage", 200, 0.000_244_140_625),
        ];
        let events = [0, 0, 7, CACHE_EVENTS - 1];

        let counts = Arc::new(RequestMetrics::new());
        let mut sharded = Registry::with_prefix("agora_gateway");
        sharded.register_collector(Box::new(counts.clone()));
        std::thread::scope(|scope| {
            for half in [&observed[..2], &observed[2..]] {
                let counts = &counts;
                scope.spawn(move || {
                    for &(tenant, operation, status, seconds) in half {
                        counts.request(tenant, operation, status, seconds);
                    }
                    for event in events {
                        counts.cache_event(event);
                    }
                });
            }
        });
        assert_eq!(counts.shards.lock().unwrap().len(), 2, "one shard per thread");

        let mut shared = Registry::with_prefix("agora_gateway");
        let requests: Family<RequestLabels, Counter> = Family::default();
        shared.register("requests", "Requests answered, by tenant, operation and status", requests.clone());
        let durations = Family::<OperationLabels, Histogram, _>::new_with_constructor(super::super::latency_histogram);
        shared.register("request_duration_seconds", "Time to answer a request", durations.clone());
        let cache: Family<CacheLabels, Counter> = Family::default();
        shared.register("cache_events", "Cache lookups by class and result (hit, miss, stale, bypass)", cache.clone());
        for _ in 0..2 {
            for &(tenant, operation, status, seconds) in &observed {
                requests.get_or_create(&RequestLabels { tenant, operation, status }).inc();
                durations.get_or_create(&OperationLabels { operation }).observe(seconds);
            }
        }
        for event in 0..CACHE_EVENTS {
            let class = CacheClass::ALL[event / CACHE_RESULTS.len()].as_str();
            let counter =
                cache.get_or_create(&CacheLabels { class, result: CACHE_RESULTS[event % CACHE_RESULTS.len()] });
            counter.inc_by(2 * events.iter().filter(|&&counted| counted == event).count() as u64);
        }
        // The shared families saw every request twice and every event twice (once per thread):
        // a third thread counts the requests a second time.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for &(tenant, operation, status, seconds) in &observed {
                    counts.request(tenant, operation, status, seconds);
                }
            });
        });
        assert_eq!(lines(&sharded), lines(&shared));
    }
}
