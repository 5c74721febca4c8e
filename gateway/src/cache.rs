//! Step 5 of the pipeline: the response cache, one for all tenants. It holds upstream answers
//! keyed by the normalized request (per-tenant filtering happens after it, in `egress.rs`), so
//! tenant A's read warms tenant B's. Concurrent identical misses make one upstream call.
//! Entries stay in the cache `stale_for` past their freshness, to be served `X-Cache: STALE` when
//! the upstream fails or no slot is free. Writes invalidate what they change; an in-flight read
//! that started before a write is answered but not stored.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::config::CacheConfig;
use crate::error::GatewayError;
use crate::metrics::{CacheLabels, Metrics};
use crate::policy::CacheClass;
use crate::upstream::Answer;

/// How a read was answered (the `X-Cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
    /// `Cache-Control: no-cache`: refreshed from the upstream.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
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

/// One project of a project answer, pre-rendered both ways so that answering a tenant is
/// concatenating bytes, not serializing.
pub struct ProjectItem {
    pub id: String,
    pub name: String,
    pub vendor_key: String,
    /// The project as Agora sent it.
    pub full: Bytes,
    /// The same with `sign_key: null`.
    pub redacted: Bytes,
}

/// What egress needs to cut an answer down to a tenant.
pub enum View {
    /// Passed through as is.
    Raw,
    /// `{"projects": [...]}` or `{"project": [...]}`.
    Projects { field: &'static str, items: Vec<ProjectItem> },
}

/// An upstream answer, ready to be served to any tenant.
pub struct Entry {
    pub class: Option<CacheClass>,
    /// The answer's JSON.
    pub body: Bytes,
    pub view: View,
    pub fetched_at: Instant,
    weight: u32,
}

impl Entry {
    pub fn new(class: Option<CacheClass>, answer: Answer) -> Self {
        let body = answer.to_json();
        let view = match answer {
            Answer::Projects(list) => Self::projects("projects", list.projects),
            Answer::Project(response) => Self::projects("project", response.project),
            _ => View::Raw,
        };
        let items_weight: usize = match &view {
            View::Raw => 0,
            View::Projects { items, .. } => items
                .iter()
                .map(|item| {
                    item.full.len() + item.redacted.len() + item.id.len() + item.name.len() + item.vendor_key.len() + 96
                })
                .sum(),
        };
        let weight = u32::try_from(body.len() + items_weight + 256).unwrap_or(u32::MAX);
        Self { class, body, view, fetched_at: Instant::now(), weight }
    }

    fn projects(field: &'static str, projects: Vec<agora_console_client::types::Project>) -> View {
        let items = projects
            .into_iter()
            .map(|mut project| {
                let full = Bytes::from(serde_json::to_vec(&project).expect("projects serialize"));
                project.sign_key = None;
                let redacted = Bytes::from(serde_json::to_vec(&project).expect("projects serialize"));
                ProjectItem { id: project.id, name: project.name, vendor_key: project.vendor_key, full, redacted }
            })
            .collect();
        View::Projects { field, items }
    }

    pub fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }

    /// Whether this answer is about the project (for invalidation).
    fn mentions_project(&self, project_id: &str) -> bool {
        match &self.view {
            View::Projects { field: "projects", .. } => true,
            View::Projects { items, .. } => items.iter().any(|item| item.id == project_id),
            View::Raw => false,
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
    max_bytes: u64,
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
pub struct ResponseCache {
    inner: Arc<Inner>,
}

impl ResponseCache {
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Self {
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
            max_bytes: config.max_bytes.as_u64(),
            metrics,
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn ttl(&self, class: CacheClass) -> Duration {
        self.inner.ttls[class as usize]
    }

    fn is_fresh(&self, entry: &Entry, class: CacheClass) -> bool {
        entry.age() < self.ttl(class)
    }

    /// Counts a lookup in `agora_gateway_cache_events_total`.
    pub fn record(&self, class: CacheClass, status: CacheStatus) {
        self.inner
            .metrics
            .cache_events
            .get_or_create(&CacheLabels { class: class.as_str(), result: status.metric() })
            .inc();
    }

    /// A fresh entry, if there is one (no upstream call).
    pub async fn fresh(&self, key: &str, class: CacheClass) -> Option<Arc<Entry>> {
        self.inner.entries.get(key).await.filter(|entry| self.is_fresh(entry, class))
    }

    /// Answers a read: fresh from the cache, or from one (coalesced) upstream call made by
    /// `fill`, or stale when that fails in a way a stale answer may cover.
    pub async fn read<F, Fut>(
        &self,
        key: String,
        class: CacheClass,
        refresh: bool,
        fill: F,
    ) -> Result<(Arc<Entry>, CacheStatus), GatewayError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
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
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
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
                        let result = upstream.await.map(|answer| Arc::new(Entry::new(Some(class), answer)));
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
    pub fn invalidate_project(&self, project_id: &str) {
        self.bump(CacheClass::Project);
        let project_id = project_id.to_string();
        let result = self.inner.entries.invalidate_entries_if(move |_, entry| {
            entry.class == Some(CacheClass::Project) && entry.mentions_project(&project_id)
        });
        if let Err(error) = result {
            tracing::error!(%error, "could not invalidate project entries; purging the class");
            self.purge(Some(CacheClass::Project));
        }
    }

    /// An app's kicking rules changed.
    pub async fn invalidate_key(&self, key: &str, class: CacheClass) {
        self.bump(class);
        self.inner.entries.invalidate(key).await;
    }

    /// Drops every entry, or every entry of one class.
    pub fn purge(&self, class: Option<CacheClass>) {
        match class {
            None => {
                CacheClass::ALL.into_iter().for_each(|class| self.bump(class));
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
    pub async fn weighted_size(&self) -> u64 {
        self.inner.entries.run_pending_tasks().await;
        let size = self.inner.entries.weighted_size();
        self.inner.metrics.cache_bytes.set(i64::try_from(size).unwrap_or(i64::MAX));
        size
    }

    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }
}

/// Failures a stale answer may cover: the upstream is down, slow, overloaded, or no slot is free.
fn may_serve_stale(error: &GatewayError) -> bool {
    match error {
        GatewayError::Throttled { .. } | GatewayError::BadGateway(_) | GatewayError::GatewayTimeout(_) => true,
        GatewayError::Upstream(upstream) => upstream.status.is_server_error() || upstream.status.as_u16() == 429,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use agora_console_client::types;
    use bytesize::ByteSize;

    use super::*;

    fn config(ttl: Duration) -> CacheConfig {
        CacheConfig {
            project_ttl: ttl,
            channel_ttl: ttl,
            usage_ttl: ttl,
            stale_for: Duration::from_secs(60),
            max_bytes: ByteSize::kib(256),
        }
    }

    fn projects(names: &[&str]) -> Answer {
        let projects = names
            .iter()
            .map(|name| types::Project {
                id: format!("id-{name}"),
                name: name.to_string(),
                vendor_key: "f".repeat(32),
                sign_key: Some("e".repeat(32)),
                recording_server: Some(String::new()),
                status: types::ProjectStatus::try_from(1).unwrap(),
                created: 1,
            })
            .collect();
        Answer::Projects(types::ProjectList { projects })
    }

    #[tokio::test]
    async fn concurrent_identical_misses_make_one_call() {
        let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for _ in 0..50 {
            let cache = cache.clone();
            let calls = calls.clone();
            readers.push(tokio::spawn(async move {
                cache
                    .read("list_projects".into(), CacheClass::Project, false, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(projects(&["a"]))
                    })
                    .await
                    .map(|(_, status)| status)
            }));
        }
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap(), CacheStatus::Miss);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let (_, status) =
            cache.read("list_projects".into(), CacheClass::Project, false, || async { unreachable!() }).await.unwrap();
        assert_eq!(status, CacheStatus::Hit);
    }

    #[tokio::test]
    async fn a_failed_refresh_serves_the_stale_entry_and_client_errors_pass() {
        let cache = ResponseCache::new(&config(Duration::from_millis(20)), Arc::new(Metrics::new()));
        let key = || "list_projects".to_string();
        cache.read(key(), CacheClass::Project, false, || async { Ok(projects(&["a"])) }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let down = || async { Err(GatewayError::BadGateway("down".into())) };
        let (entry, status) = cache.read(key(), CacheClass::Project, false, down).await.unwrap();
        assert_eq!(status, CacheStatus::Stale);
        assert!(entry.age() >= Duration::from_millis(20));
        let missing = || async { Err(GatewayError::not_found("gone")) };
        assert!(cache.read(key(), CacheClass::Project, false, missing).await.is_err(), "a 4xx is not covered by stale");
    }

    #[tokio::test]
    async fn a_write_during_a_fill_keeps_the_old_answer_out_of_the_cache() {
        let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let reader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .read("list_projects".into(), CacheClass::Project, false, move || async move {
                        let _ = wait.await;
                        Ok(projects(&["old"]))
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        cache.invalidate_project("id-new");
        release.send(()).unwrap();
        reader.await.unwrap().unwrap();
        assert!(
            cache.fresh("list_projects", CacheClass::Project).await.is_none(),
            "the pre-write answer was not stored"
        );
    }

    #[tokio::test]
    async fn invalidation_drops_the_list_and_that_project_only() {
        let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
        cache
            .read("list_projects".into(), CacheClass::Project, false, || async { Ok(projects(&["a", "b"])) })
            .await
            .unwrap();
        for name in ["a", "b"] {
            let answer = match projects(&[name]) {
                Answer::Projects(list) => Answer::Project(types::ProjectResponse { project: list.projects }),
                _ => unreachable!(),
            };
            cache
                .read(format!("get_project {name}"), CacheClass::Project, false, move || async move { Ok(answer) })
                .await
                .unwrap();
        }
        cache.invalidate_project("id-a");
        assert!(cache.fresh("list_projects", CacheClass::Project).await.is_none());
        assert!(cache.fresh("get_project a", CacheClass::Project).await.is_none());
        assert!(cache.fresh("get_project b", CacheClass::Project).await.is_some());
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_byte_bound() {
        let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
        let names: Vec<String> = (0..20).map(|n| format!("project-with-a-long-name-{n}")).collect();
        for key in 0..500 {
            let names = names.clone();
            cache
                .read(format!("key-{key}"), CacheClass::Channel, false, move || async move {
                    Ok(projects(&names.iter().map(String::as_str).collect::<Vec<_>>()))
                })
                .await
                .unwrap();
        }
        let size = cache.weighted_size().await;
        assert!(size <= cache.max_bytes(), "{size} > {}", cache.max_bytes());
        assert!(size > cache.max_bytes() / 2, "the cache is used: {size}");
    }
}
