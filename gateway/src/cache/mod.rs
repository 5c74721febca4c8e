//! Step 5 of the pipeline: the response cache, one for all tenants. It holds upstream answers
//! keyed by the normalized request (per-tenant filtering happens after it, in `egress/`), so
//! tenant A's read warms tenant B's. Concurrent identical misses make one upstream call.
//! Entries stay in the cache `stale_for` past their freshness, to be served `X-Cache: STALE` when
//! the upstream fails or no slot is free. Writes invalidate what they change; an in-flight read
//! that started before a write is answered but not stored. With Redis, the replicas share
//! invalidations and fills (`cluster.rs`); hits never leave the process.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use tokio::time::Instant;

use crate::call::Call;
use crate::config::CacheConfig;
use crate::error::GatewayError;
use crate::generated::Operation;
use crate::metrics::Metrics;
use crate::policy::CacheClass;
use crate::throttle::Promotion;
use crate::upstream::Answer;

pub(crate) mod cluster;
mod entry;

use cluster::Change;
pub(crate) use cluster::ClusterCache;
pub(crate) use entry::{Entry, View, ViewKey};

/// How a read was answered (the `X-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheStatus {
    Hit,
    Miss,
    Stale,
    /// `Cache-Control: no-cache`: refreshed from the upstream.
    Bypass,
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

type SharedFill = Shared<BoxFuture<'static, Result<Arc<Entry>, GatewayError>>>;

/// A fill under way: its answer, shared by every caller; who waits for it; how to promote it.
struct UnderWay {
    answer: SharedFill,
    first_tenant: usize,
    promotion: Arc<Promotion>,
}

pub(crate) struct Inner {
    entries: moka::future::Cache<String, Arc<Entry>>,
    /// Fills under way, by key: late callers join them.
    filling: Mutex<HashMap<String, UnderWay>>,
    /// Bumped by every invalidation of a class: a fill that started before is not stored.
    generations: [AtomicU64; 3],
    /// Freshness by class, and how long past it an entry may still cover a failure (a reload may
    /// change them).
    timings: Arc<Timings>,
    /// Bumped when invalidations may have been missed: only entries whose fill started in the
    /// current trust epoch are fresh (the others may still cover a failure, as stale answers).
    trust: AtomicU64,
    /// The shared tier and the invalidations of the other replicas, with Redis.
    cluster: Option<Arc<ClusterCache>>,
    metrics: Arc<Metrics>,
}

/// The cache's timings, in nanoseconds: the TTL of each class, and `stale_for`.
#[derive(Default)]
struct Timings {
    ttls: [AtomicU64; 3],
    stale_for: AtomicU64,
}

impl Timings {
    fn set(&self, config: &CacheConfig) {
        let nanos = |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        for (slot, ttl) in self.ttls.iter().zip([config.project_ttl, config.channel_ttl, config.usage_ttl]) {
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
}

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
        entry.age() < self.ttl(class) && self.inner.trusts(entry)
    }

    /// Counts a lookup in `agora_gateway_cache_events_total`.
    pub(crate) fn record(&self, class: CacheClass, status: CacheStatus) {
        self.inner.record(class, status.metric());
    }

    /// A fresh entry, if there is one (no upstream call).
    pub(crate) async fn fresh(&self, key: &str, class: CacheClass) -> Option<Arc<Entry>> {
        self.inner.entries.get(key).await.filter(|entry| self.is_fresh(entry, class))
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
    pub(crate) async fn read<F, Fut>(&self, read: Read, fill: F) -> Result<(Arc<Entry>, CacheStatus), GatewayError>
    where
        F: FnOnce(Arc<Promotion>) -> Fut,
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
    {
        let existing = self.inner.entries.get(&read.key).await;
        let class = read.class;
        if !read.refresh
            && let Some(entry) = existing.as_ref().filter(|entry| self.is_fresh(entry, class))
        {
            self.record(class, CacheStatus::Hit);
            return Ok((entry.clone(), CacheStatus::Hit));
        }
        let refresh = read.refresh;
        match self.fill(read, fill).await {
            Ok((entry, shared)) => {
                let status = match (refresh, shared) {
                    (true, _) => CacheStatus::Bypass,
                    (false, true) => CacheStatus::Hit,
                    (false, false) => CacheStatus::Miss,
                };
                self.inner.record(class, if shared { "shared_hit" } else { status.metric() });
                Ok((entry, status))
            }
            Err(error) if !refresh && may_serve_stale(&error) => {
                let limit = self.inner.timings.lifetime(class);
                match existing.filter(|entry| entry.age() < limit) {
                    Some(entry) => {
                        tracing::info!(%error, class = class.as_str(), "serving a stale answer");
                        self.record(class, CacheStatus::Stale);
                        Ok((entry, CacheStatus::Stale))
                    }
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// One fill for any number of concurrent callers of the same key; answers the entry and
    /// whether it came from the cluster's shared tier (no upstream call).
    async fn fill<F, Fut>(&self, read: Read, fill: F) -> Result<(Arc<Entry>, bool), GatewayError>
    where
        F: FnOnce(Arc<Promotion>) -> Fut,
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
    {
        let answer = {
            let mut filling = self.inner.filling.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match filling.get(&read.key) {
                Some(under_way) => {
                    // Another tenant waits for it too: it is nobody's now.
                    if under_way.first_tenant != read.tenant {
                        under_way.promotion.raise();
                    }
                    under_way.answer.clone()
                }
                None => {
                    let promotion = Arc::new(Promotion::default());
                    let upstream = fill(promotion.clone());
                    let task =
                        tokio::spawn(self.inner.clone().fill_task(read.key.clone(), read_params(&read), upstream));
                    let answer = async move {
                        task.await.unwrap_or_else(|error| {
                            Err(GatewayError::Internal(format!("a cache fill failed: {error}")))
                        })
                    }
                    .boxed()
                    .shared();
                    let under_way = UnderWay { answer: answer.clone(), first_tenant: read.tenant, promotion };
                    filling.insert(read.key.clone(), under_way);
                    answer
                }
            }
        };
        answer.await.map(|entry| {
            let shared = entry.shared;
            (entry, shared)
        })
    }

    /// A project changed: drop the project list and every answer about that project, here and
    /// on every replica.
    pub(crate) async fn invalidate_project(&self, project_id: &str) {
        self.inner.invalidate_project_here(project_id);
        if let Some(cluster) = &self.inner.cluster {
            let list = Call::new(Operation::ListProjects).cache_key();
            let change = Change::Project { project: project_id.to_string() };
            cluster.publish(CacheClass::Project, change, &[list]).await;
        }
    }

    /// One answer changed (an app's kicking rules), here and on every replica.
    pub(crate) async fn invalidate_key(&self, key: &str, class: CacheClass) {
        self.inner.invalidate_key_here(key, class);
        if let Some(cluster) = &self.inner.cluster {
            let change = Change::Key { key: key.to_string(), class: class.as_str().to_string() };
            cluster.publish(class, change, &[key.to_string()]).await;
        }
    }

    /// Drops every entry, or every entry of one class, here and on every replica (whose shared
    /// copies of the class are void after it).
    pub(crate) async fn purge(&self, class: Option<CacheClass>) {
        self.inner.purge_here(class);
        if let Some(cluster) = &self.inner.cluster {
            let change = Change::Purge { class: class.map(|class| class.as_str().to_string()) };
            for voided in class.map_or(CacheClass::ALL.to_vec(), |class| vec![class]) {
                cluster.publish(voided, change.clone(), &[]).await;
            }
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

/// What a fill task needs of its read.
struct FillParams {
    operation: Operation,
    class: CacheClass,
    tenant_shared: bool,
    wait_for_others: Duration,
    refresh: bool,
}

fn read_params(read: &Read) -> FillParams {
    FillParams {
        operation: read.operation,
        class: read.class,
        tenant_shared: read.shared,
        wait_for_others: read.wait_for_others,
        refresh: read.refresh,
    }
}

/// Removes a fill from the fills under way when its task ends, however it ends (an answer, an
/// error, a panic, or cancellation): a fill that failed never leaves its key stuck.
struct UnderWayGuard {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for UnderWayGuard {
    fn drop(&mut self) {
        self.inner.filling.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.key);
    }
}

impl Inner {
    fn record(&self, class: CacheClass, result: &'static str) {
        self.metrics.cache_event(class as usize, result);
    }

    fn bump(&self, class: CacheClass) {
        self.generations[class as usize].fetch_add(1, Ordering::SeqCst);
    }

    fn trusts(&self, entry: &Entry) -> bool {
        entry.trust == self.trust.load(Ordering::Acquire)
    }

    /// Invalidations may have been missed: nothing filled before now is fresh any more (it may
    /// still cover an upstream failure, as a stale answer), and fills under way are not stored.
    pub(super) fn distrust(&self) {
        self.trust.fetch_add(1, Ordering::AcqRel);
        for class in CacheClass::ALL {
            self.bump(class);
        }
    }

    /// A project changed: this replica's list and answers about it.
    pub(super) fn invalidate_project_here(&self, project_id: &str) {
        self.bump(CacheClass::Project);
        let project_id = project_id.to_string();
        let list = Call::new(Operation::ListProjects).cache_key();
        let result = self.entries.invalidate_entries_if(move |key, entry| {
            entry.class == Some(CacheClass::Project) && (*key == list || entry.mentions_project(&project_id))
        });
        if let Err(error) = result {
            tracing::error!(%error, "could not invalidate project entries; purging the class");
            self.entries.invalidate_all();
        }
    }

    /// An admin's purge: this replica's entries, of a class or all of them.
    pub(super) fn purge_here(&self, class: Option<CacheClass>) {
        match class {
            None => {
                for class in CacheClass::ALL {
                    self.bump(class);
                }
                self.entries.invalidate_all();
            }
            Some(class) => {
                self.bump(class);
                if self.entries.invalidate_entries_if(move |_, entry| entry.class == Some(class)).is_err() {
                    self.entries.invalidate_all();
                }
            }
        }
    }

    /// One answer changed: this replica's copy.
    pub(super) fn invalidate_key_here(&self, key: &str, class: CacheClass) {
        self.bump(class);
        let key = key.to_string();
        let entries = self.entries.clone();
        // moka's future cache invalidates asynchronously; this one is already gone for readers
        // (the generation changed, and `invalidate_entries_if` takes it out of `get`).
        if entries.invalidate_entries_if(move |candidate, _| *candidate == key).is_err() {
            self.entries.invalidate_all();
        }
    }

    /// The fill of `key`: from the cluster's shared tier when it may, or from `upstream`; stored
    /// here unless an invalidation of its class came meanwhile.
    async fn fill_task<Fut>(
        self: Arc<Self>,
        key: String,
        params: FillParams,
        upstream: Fut,
    ) -> Result<Arc<Entry>, GatewayError>
    where
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
    {
        let _under_way = UnderWayGuard { inner: self.clone(), key: key.clone() };
        let class = params.class;
        let generation = self.generations[class as usize].load(Ordering::SeqCst);
        let trust = self.trust.load(Ordering::Acquire);
        let ttl = self.timings.ttl(class);
        let lifetime = self.timings.lifetime(class);
        let cluster = self.cluster.as_ref().filter(|cluster| params.tenant_shared && cluster.is_up());
        let (answer, age, shared) = match cluster {
            None => (upstream.await?, Duration::ZERO, false),
            Some(cluster) => {
                let terms = cluster::FillTerms {
                    class,
                    fresh_for: ttl,
                    lifetime,
                    wait_until: Instant::now() + params.wait_for_others,
                    refresh: params.refresh,
                };
                match cluster::fill(cluster, &key, terms, upstream).await {
                    Ok((answer, Some(age))) => (answer, age, true),
                    Ok((answer, None)) => (answer, Duration::ZERO, false),
                    Err(failure) => match failure.stale {
                        // The shared tier's stale copy covers what a local one would have.
                        Some((answer, age)) if may_serve_stale(&failure.error) && age < lifetime => {
                            tracing::info!(error = %failure.error, "serving the shared tier's stale answer");
                            let mut entry = Entry::new(params.operation, answer)?;
                            entry.backdate(age);
                            entry.class = Some(class);
                            entry.trust = trust;
                            return Ok(Arc::new(entry));
                        }
                        _ => return Err(failure.error),
                    },
                }
            }
        };
        let mut entry = Entry::new(params.operation, answer)?;
        entry.class = Some(class);
        entry.shared = shared;
        entry.trust = trust;
        if shared {
            entry.backdate(age);
        }
        let entry = Arc::new(entry);
        if self.generations[class as usize].load(Ordering::SeqCst) == generation {
            self.entries.insert(key, entry.clone()).await;
        }
        Ok(entry)
    }
}

/// Failures a stale answer may cover: the upstream is down, slow, overloaded, or no slot is free.
fn may_serve_stale(error: &GatewayError) -> bool {
    match error {
        GatewayError::Throttled { .. }
        | GatewayError::BadGateway(_)
        | GatewayError::UpstreamCredentials { .. }
        | GatewayError::GatewayTimeout(_) => true,
        GatewayError::Upstream(upstream) => upstream.status.is_server_error() || upstream.status.as_u16() == 429,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
