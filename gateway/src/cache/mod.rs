//! Step 5 of the pipeline: the response cache, one for all tenants. It holds upstream answers
//! keyed by the normalized request (per-tenant filtering happens after it, in `egress/`), so
//! tenant A's read warms tenant B's. Concurrent identical misses make one upstream call.
//! Entries stay in the cache `stale_for` past their freshness, to be served `X-Cache: STALE` when
//! the upstream fails or no slot is free. Writes invalidate what they change; an in-flight read
//! that started before a write is answered but not stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::call::Call;
use crate::config::CacheConfig;
use crate::error::GatewayError;
use crate::generated::Operation;
use crate::metrics::{CacheLabels, Metrics};
use crate::policy::CacheClass;

mod entry;

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

struct Inner {
    entries: moka::future::Cache<String, Arc<Entry>>,
    /// Fills under way, by key: late callers join them.
    filling: Mutex<HashMap<String, SharedFill>>,
    /// Bumped by every invalidation of a class: a fill that started before is not stored.
    generations: [AtomicU64; 3],
    ttls: [Duration; 3],
    stale_for: Duration,
    metrics: Arc<Metrics>,
}

/// Entries live their class's TTL plus `stale_for`; freshness is decided on read.
struct ClassExpiry {
    lifetimes: [Duration; 3],
}

impl moka::Expiry<String, Arc<Entry>> for ClassExpiry {
    fn expire_after_create(&self, _key: &String, entry: &Arc<Entry>, _now: std::time::Instant) -> Option<Duration> {
        entry.class.map(|class| self.lifetimes[class as usize])
    }
}

#[derive(Clone)]
pub(crate) struct ResponseCache {
    inner: Arc<Inner>,
}

impl ResponseCache {
    pub(crate) fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        let ttls = [config.project_ttl, config.channel_ttl, config.usage_ttl];
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes.as_u64())
            .weigher(|key: &String, entry: &Arc<Entry>| {
                entry.weight.saturating_add(u32::try_from(key.len()).unwrap_or(u32::MAX))
            })
            .expire_after(ClassExpiry { lifetimes: ttls.map(|ttl| ttl + config.stale_for) })
            .support_invalidation_closures()
            .build();
        let inner = Inner {
            entries,
            filling: Mutex::new(HashMap::new()),
            generations: Default::default(),
            ttls,
            stale_for: config.stale_for,
            metrics,
        };
        Self { inner: Arc::new(inner) }
    }

    pub(crate) fn ttl(&self, class: CacheClass) -> Duration {
        self.inner.ttls[class as usize]
    }

    fn is_fresh(&self, entry: &Entry, class: CacheClass) -> bool {
        entry.age() < self.ttl(class)
    }

    /// Counts a lookup in `agora_gateway_cache_events_total`.
    pub(crate) fn record(&self, class: CacheClass, status: CacheStatus) {
        self.inner
            .metrics
            .cache_events
            .get_or_create(&CacheLabels { class: class.as_str(), result: status.metric() })
            .inc();
    }

    /// A fresh entry, if there is one (no upstream call).
    pub(crate) async fn fresh(&self, key: &str, class: CacheClass) -> Option<Arc<Entry>> {
        self.inner.entries.get(key).await.filter(|entry| self.is_fresh(entry, class))
    }

    /// Answers a read: fresh from the cache, or from one (coalesced) upstream call made by
    /// `fill`, or stale when that fails in a way a stale answer may cover.
    pub(crate) async fn read<F, Fut>(
        &self,
        key: String,
        class: CacheClass,
        refresh: bool,
        fill: F,
    ) -> Result<(Arc<Entry>, CacheStatus), GatewayError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, GatewayError>> + Send + 'static,
    {
        let existing = self.inner.entries.get(&key).await;
        if !refresh && let Some(entry) = existing.as_ref().filter(|entry| self.is_fresh(entry, class)) {
            self.record(class, CacheStatus::Hit);
            return Ok((entry.clone(), CacheStatus::Hit));
        }
        match self.fill(key, class, fill).await {
            Ok(entry) => {
                let status = if refresh { CacheStatus::Bypass } else { CacheStatus::Miss };
                self.record(class, status);
                Ok((entry, status))
            }
            Err(error) if !refresh && may_serve_stale(&error) => {
                let limit = self.ttl(class) + self.inner.stale_for;
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

    /// One upstream call for any number of concurrent callers of the same key.
    async fn fill<F, Fut>(&self, key: String, class: CacheClass, fill: F) -> Result<Arc<Entry>, GatewayError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, GatewayError>> + Send + 'static,
    {
        let shared = {
            let mut filling = self.inner.filling.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match filling.get(&key) {
                Some(under_way) => under_way.clone(),
                None => {
                    let generation = self.inner.generations[class as usize].load(Ordering::SeqCst);
                    let inner = self.inner.clone();
                    let task_key = key.clone();
                    let upstream = fill();
                    // Its own task: a caller that goes away does not cancel the others' answer.
                    let task = tokio::spawn(async move {
                        let result = upstream.await.map(|mut entry| {
                            entry.class = Some(class);
                            Arc::new(entry)
                        });
                        if let Ok(entry) = &result
                            && inner.generations[class as usize].load(Ordering::SeqCst) == generation
                        {
                            inner.entries.insert(task_key.clone(), entry.clone()).await;
                        }
                        inner.filling.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&task_key);
                        result
                    });
                    let shared = async move {
                        task.await.unwrap_or_else(|error| {
                            Err(GatewayError::Internal(format!("a cache fill failed: {error}")))
                        })
                    }
                    .boxed()
                    .shared();
                    filling.insert(key, shared.clone());
                    shared
                }
            }
        };
        shared.await
    }

    fn bump(&self, class: CacheClass) {
        self.inner.generations[class as usize].fetch_add(1, Ordering::SeqCst);
    }

    /// A project changed: drop the project list and every answer about that project.
    pub(crate) fn invalidate_project(&self, project_id: &str) {
        self.bump(CacheClass::Project);
        let project_id = project_id.to_string();
        let list = Call::new(Operation::ListProjects).cache_key();
        let result = self.inner.entries.invalidate_entries_if(move |key, entry| {
            entry.class == Some(CacheClass::Project) && (*key == list || entry.mentions_project(&project_id))
        });
        if let Err(error) = result {
            tracing::error!(%error, "could not invalidate project entries; purging the class");
            self.purge(Some(CacheClass::Project));
        }
    }

    /// An app's kicking rules changed.
    pub(crate) async fn invalidate_key(&self, key: &str, class: CacheClass) {
        self.bump(class);
        self.inner.entries.invalidate(key).await;
    }

    /// Drops every entry, or every entry of one class.
    pub(crate) fn purge(&self, class: Option<CacheClass>) {
        match class {
            None => {
                for class in CacheClass::ALL {
                    self.bump(class);
                }
                self.inner.entries.invalidate_all();
            }
            Some(class) => {
                self.bump(class);
                if self.inner.entries.invalidate_entries_if(move |_, entry| entry.class == Some(class)).is_err() {
                    self.inner.entries.invalidate_all();
                }
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
