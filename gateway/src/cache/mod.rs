//! Step 5 of the pipeline: the response cache, one for all tenants. It holds upstream answers
//! keyed by the normalized request (per-tenant filtering happens after it, in `egress/`), so
//! tenant A's read warms tenant B's. Concurrent identical misses make one upstream call.
//! Entries stay in the cache `stale_for` past their freshness, to be served `X-Cache: STALE` when
//! the upstream fails or no slot is free. Writes invalidate what they change; an in-flight read
//! that started before a write is answered but not stored. With Redis, the replicas share
//! invalidations and fills (`cluster/`); hits never leave the process. Fills are `fill.rs`,
//! invalidation `invalidation.rs`; each serving thread keeps its last entries in front of the
//! cache (`front.rs`), answering exactly what the cache would.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::answer::Answer;
use crate::config::CacheConfig;
use crate::error::GatewayError;
use crate::memo;
use crate::metrics::Metrics;
use crate::operations::Operation;
use crate::policy::CacheClass;
use crate::throttle::Promotion;

pub(crate) mod cluster;
mod entry;
mod fill;
mod front;
mod invalidation;

pub(crate) use cluster::ClusterCache;
pub(crate) use entry::Entry;
use fill::{Filled, UnderWay, may_serve_stale};

/// How a read was answered (the `X-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    Hit,
    Miss,
    Stale,
    /// `Cache-Control: no-cache`: refreshed from the upstream.
    Bypass,
}

/// How a read was answered: its `X-Cache`, and what `Cache-Status` says beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: CacheStatus,
    /// Answered by another replica's fill, through Redis (no upstream call here).
    pub(crate) shared: bool,
    /// Waited for another caller's fill rather than making its own.
    pub(crate) collapsed: bool,
    /// A stale copy answers for Agora, which failed so (its status, when it answered one).
    pub(crate) failed_with: Option<u16>,
}

impl Outcome {
    pub(crate) fn of(status: CacheStatus) -> Self {
        Self { status, shared: false, collapsed: false, failed_with: None }
    }
}

impl CacheStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Bypass => "bypass",
        }
    }
}

pub(crate) struct Inner {
    entries: moka::future::Cache<String, Arc<Entry>>,
    /// Fills under way, by key: late callers join them.
    filling: Mutex<HashMap<String, UnderWay>>,
    /// Bumped by every invalidation of a class: a fill that started before is not stored.
    generations: [AtomicU64; CacheClass::ALL.len()],
    /// Freshness by class, and how long past it an entry may still cover a failure (a reload may
    /// change them).
    timings: Arc<Timings>,
    /// Bumped when invalidations may have been missed: only entries whose fill started in the
    /// current trust epoch are fresh (the others may still cover a failure, as stale answers).
    trust: AtomicU64,
    /// The shared tier and the invalidations of the other replicas, with Redis.
    cluster: Option<Arc<ClusterCache>>,
    metrics: Arc<Metrics>,
    /// This cache among the process's (the serving threads' fronts, `front.rs`, tell them apart).
    id: u64,
    /// Bumped once every change to the entries is done — a fill stored, an invalidation, a purge,
    /// a loss of trust: what the fronts remembered before it is not answered after it.
    version: AtomicU64,
}

/// The cache's timings, in nanoseconds: the TTL of each class, and `stale_for`.
#[derive(Default)]
struct Timings {
    ttls: [AtomicU64; CacheClass::ALL.len()],
    stale_for: AtomicU64,
}

impl Timings {
    fn set(&self, config: &CacheConfig) {
        let nanos = |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let ttls = [config.project_ttl, config.channel_ttl, config.usage_ttl, config.addresses_ttl];
        for (slot, ttl) in self.ttls.iter().zip(ttls) {
            slot.store(nanos(ttl), Ordering::Relaxed);
        }
        self.stale_for.store(nanos(config.stale_for), Ordering::Relaxed);
    }

    fn ttl(&self, class: CacheClass) -> Duration {
        Duration::from_nanos(self.ttls[class as usize].load(Ordering::Relaxed))
    }

    fn stale_for(&self) -> Duration {
        Duration::from_nanos(self.stale_for.load(Ordering::Relaxed))
    }

    /// How long an entry of `class` is kept: fresh, then stale.
    fn lifetime(&self, class: CacheClass) -> Duration {
        self.ttl(class).saturating_add(self.stale_for())
    }
}

/// Entries live their class's TTL plus `stale_for` (as they were when the entry was stored);
/// freshness is decided on read.
struct ClassExpiry {
    timings: Arc<Timings>,
}

impl moka::Expiry<String, Arc<Entry>> for ClassExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Arc<Entry>, _now: std::time::Instant) -> Option<Duration> {
        entry.class.map(|class| self.timings.lifetime(class))
    }
}

/// One read through the cache.
pub(crate) struct Read {
    pub(crate) key: String,
    pub(crate) operation: Operation,
    pub(crate) class: CacheClass,
    /// `Cache-Control: no-cache`: fetch anew.
    pub(crate) refresh: bool,
    /// The tenant reading (a fill that another tenant joins is promoted).
    pub(crate) tenant: usize,
    /// Whether the answer may come from, and go to, the shared tier of the cluster.
    pub(crate) shared: bool,
    /// How long a fill waits for another replica's before filling the key itself.
    pub(crate) wait_for_others: Duration,
    /// The request is traced: a fill, or the wait for another's, makes its span.
    pub(crate) traced: bool,
}

/// The id of the next cache made (a process may hold several: tests, the benchmarks' scenarios).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
pub(crate) struct ResponseCache {
    inner: Arc<Inner>,
}

impl ResponseCache {
    pub(crate) fn new(config: &CacheConfig, cluster: Option<Arc<ClusterCache>>, metrics: Arc<Metrics>) -> Self {
        let timings = Arc::new(Timings::default());
        timings.set(config);
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes.as_u64())
            .weigher(|key: &String, entry: &Arc<Entry>| {
                entry.weight.saturating_add(u32::try_from(key.len()).unwrap_or(u32::MAX))
            })
            .expire_after(ClassExpiry { timings: timings.clone() })
            .support_invalidation_closures()
            .build();
        let inner = Arc::new(Inner {
            entries,
            filling: Mutex::new(HashMap::new()),
            generations: Default::default(),
            timings,
            trust: AtomicU64::new(0),
            cluster,
            metrics,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
        });
        if let Some(cluster) = &inner.cluster {
            cluster.attach(&inner);
        }
        Self { inner }
    }

    pub(crate) fn ttl(&self, class: CacheClass) -> Duration {
        self.inner.timings.ttl(class)
    }

    /// A reload: new TTLs and `stale_for` for every lookup from now on (entries already stored
    /// keep the lifetime they were stored with, at most).
    pub(crate) fn set_timings(&self, config: &CacheConfig) {
        self.inner.timings.set(config);
    }

    fn is_fresh(&self, entry: &Entry, class: CacheClass) -> bool {
        self.is_fresh_at(entry, class, tokio::time::Instant::now())
    }

    /// Whether `entry` of `class` is fresh at `now`.
    pub(crate) fn is_fresh_at(&self, entry: &Entry, class: CacheClass, now: tokio::time::Instant) -> bool {
        entry.age_at(now) < self.ttl(class) && self.inner.trusts(entry)
    }

    /// This cache among the process's, and its version now (`front.rs`): read before a lookup,
    /// what was found is current while the version stays.
    pub(crate) fn stamp(&self) -> (u64, u64) {
        (self.inner.id, self.inner.version.load(Ordering::Acquire))
    }

    /// Counts a lookup in `agora_gateway_cache_events_total`.
    pub(crate) fn record(&self, class: CacheClass, status: CacheStatus) {
        self.inner.record(class, status.metric());
    }

    /// Counts a lookup again, as a remembered answer (`memo.rs`) read it: `result` as recorded.
    pub(crate) fn count(&self, class: CacheClass, result: &'static str) {
        self.inner.record(class, result);
    }

    /// A fresh entry, if there is one (no upstream call).
    pub(crate) async fn fresh(&self, key: &str, class: CacheClass) -> Option<Arc<Entry>> {
        let entry = self.inner.entries.get(key).await.filter(|entry| self.is_fresh(entry, class));
        if let Some(entry) = &entry {
            memo::read(entry, class);
        }
        entry
    }

    /// Waits briefly for the other replicas' writes published so far to reach this cache;
    /// answers whether any was pending (then a cached answer read before may be out of date).
    pub(crate) async fn catch_up(&self) -> bool {
        match &self.inner.cluster {
            Some(cluster) => cluster.catch_up().await,
            None => false,
        }
    }

    /// Answers a read: fresh from the cache, or from one (coalesced) fill — the cluster's shared
    /// copy, or an upstream call made by `fill` — or stale when that fails in a way a stale answer
    /// may cover.
    pub(crate) async fn read<F, Fut>(&self, read: Read, fill: F) -> Result<(Arc<Entry>, Outcome), GatewayError>
    where
        F: FnOnce(Arc<Promotion>) -> Fut,
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
    {
        let class = read.class;
        // Read before the lookups: a change after it makes what they find unfit to remember.
        let version = self.inner.version.load(Ordering::Acquire);
        if !read.refresh
            && let Some(entry) =
                front::recall(self.inner.id, &read.key, version).filter(|entry| self.is_fresh(entry, class))
        {
            memo::read(&entry, class);
            self.record(class, CacheStatus::Hit);
            return Ok((entry, Outcome::of(CacheStatus::Hit)));
        }
        let existing = self.inner.entries.get(&read.key).await;
        if !read.refresh
            && let Some(entry) = existing.as_ref().filter(|entry| self.is_fresh(entry, class))
        {
            front::remember(self.inner.id, &read.key, version, entry);
            memo::read(entry, class);
            self.record(class, CacheStatus::Hit);
            return Ok((entry.clone(), Outcome::of(CacheStatus::Hit)));
        }
        let refresh = read.refresh;
        // Not a fresh entry's answer: not one to remember whole.
        memo::spoil();
        // Boxed: a miss's future is large, and a hit (most reads) should not carry or move it.
        match Box::pin(self.fill(read, fill)).await {
            // The shared tier's stale copy, covering a failure: labelled so, with its age.
            Ok((entry, _)) if entry.stale => {
                self.record(class, CacheStatus::Stale);
                Ok((entry, Outcome { shared: true, ..Outcome::of(CacheStatus::Stale) }))
            }
            Ok((entry, Filled { shared, collapsed })) => {
                let status = match (refresh, shared) {
                    (true, _) => CacheStatus::Bypass,
                    (false, true) => CacheStatus::Hit,
                    (false, false) => CacheStatus::Miss,
                };
                self.inner.record(class, if shared { "shared_hit" } else { status.metric() });
                Ok((entry, Outcome { status, shared, collapsed, failed_with: None }))
            }
            Err(error) if !refresh && may_serve_stale(&error) => {
                let limit = self.inner.timings.lifetime(class);
                match existing.filter(|entry| entry.age() < limit) {
                    Some(entry) => {
                        tracing::info!(%error, class = class.as_str(), "serving a stale answer");
                        self.record(class, CacheStatus::Stale);
                        let failed_with = match &error {
                            GatewayError::Upstream(answer) => Some(answer.status.as_u16()),
                            _ => None,
                        };
                        Ok((entry, Outcome { failed_with, ..Outcome::of(CacheStatus::Stale) }))
                    }
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Bytes held, after the cache's pending housekeeping (evictions) has run.
    pub(crate) async fn weighted_size(&self) -> u64 {
        self.inner.entries.run_pending_tasks().await;
        let size = self.inner.entries.weighted_size();
        self.inner.metrics.cache_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
        size
    }
}

impl Inner {
    fn record(&self, class: CacheClass, result: &'static str) {
        memo::counted(class, result);
        self.metrics.cache_event(class as usize, result);
    }
}

#[cfg(test)]
mod tests;
