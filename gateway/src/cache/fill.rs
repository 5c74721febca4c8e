//! Filling the cache on a miss: one fill for any number of concurrent callers of a key (a task of
//! its own, so a caller that goes away does not cancel the others' answer), through the cluster's
//! shared tier when there is one, stored unless an invalidation of its class came meanwhile.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use opentelemetry::trace::SpanContext;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use super::{Entry, Inner, Read, ResponseCache, cluster};
use crate::answer::Answer;
use crate::error::GatewayError;
use crate::operations::Operation;
use crate::policy::CacheClass;
use crate::telemetry;
use crate::throttle::Promotion;

pub(super) type SharedFill = Shared<BoxFuture<'static, Result<Arc<Entry>, GatewayError>>>;

/// A fill under way: its answer, shared by every caller; who waits for it; how to promote it.
/// Kept a moment after it ends ([`COMPLETED_GRACE`]), so a caller that looked at the cache just
/// before the fill stored its entry takes that entry instead of making a second upstream call.
pub(super) struct UnderWay {
    id: u64,
    answer: SharedFill,
    first_tenant: usize,
    promotion: Arc<Promotion>,
    /// The fill's span, when its request is traced: the traced callers that join it link to it.
    span: Option<SpanContext>,
}

impl UnderWay {
    /// Whether its fill has ended (it is only kept to be joined a moment longer).
    #[cfg(test)]
    pub(super) fn has_ended(&self) -> bool {
        self.answer.peek().is_some()
    }
}

/// How long an ended fill stays joinable.
const COMPLETED_GRACE: Duration = Duration::from_secs(1);

/// Source of [`UnderWay::id`].
static NEXT_FILL: AtomicU64 = AtomicU64::new(1);

/// What a caller of a fill learns beside the entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Filled {
    /// It came from the cluster's shared tier (no upstream call).
    pub(super) shared: bool,
    /// The caller joined another's fill.
    pub(super) collapsed: bool,
}

impl ResponseCache {
    /// One fill for any number of concurrent callers of the same key; answers the entry, and
    /// whether it came from the cluster's shared tier and whether this caller joined another's.
    pub(super) async fn fill<F, Fut>(&self, read: Read, fill: F) -> Result<(Arc<Entry>, Filled), GatewayError>
    where
        F: FnOnce(Arc<Promotion>) -> Fut,
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
    {
        let mut collapsed = true;
        let mut joined = None;
        let answer = {
            let mut filling = self.inner.filling.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match filling.get(&read.key) {
                Some(under_way) if under_way.answer.peek().is_none() => {
                    // Another tenant waits for it too: it is nobody's now.
                    if under_way.first_tenant != read.tenant {
                        under_way.promotion.raise();
                    }
                    joined.clone_from(&under_way.span);
                    under_way.answer.clone()
                }
                // Ended a moment ago, between this caller's look at the cache and now: its entry,
                // if still fresh and still in the cache (no invalidation came since).
                Some(under_way)
                    if !read.refresh
                        && matches!(under_way.answer.peek(), Some(Ok(entry))
                            if self.is_fresh(entry, read.class) && self.inner.entries.contains_key(&read.key)) =>
                {
                    joined.clone_from(&under_way.span);
                    under_way.answer.clone()
                }
                _ => {
                    collapsed = false;
                    let id = NEXT_FILL.fetch_add(1, Ordering::Relaxed);
                    let promotion = Arc::new(Promotion::default());
                    let upstream = fill(promotion.clone());
                    let params = read_params(&read);
                    let task = self.inner.clone().fill_task(read.key.clone(), id, params, upstream);
                    let (task, span) = match read.traced {
                        false => (tokio::spawn(task), None),
                        true => {
                            let span = tracing::info_span!(target: telemetry::TARGET, "cache fill",
                                gateway.cache.key = read.key.as_str(), gateway.cache.class = read.class.as_str());
                            let context = telemetry::span_context(&span);
                            // Its log lines with the request's that started it.
                            (tokio::spawn(task.instrument(Span::current()).instrument(span)), context)
                        }
                    };
                    let answer = async move {
                        task.await.unwrap_or_else(|error| {
                            Err(GatewayError::Internal(format!("a cache fill failed: {error}")))
                        })
                    }
                    .boxed()
                    .shared();
                    let under_way = UnderWay { id, answer: answer.clone(), first_tenant: read.tenant, promotion, span };
                    filling.insert(read.key.clone(), under_way);
                    answer
                }
            }
        };
        // A traced caller that joined another's fill waits in a span linked to that fill's.
        let answer = match read.traced && collapsed {
            false => answer.await,
            true => {
                let waiting =
                    tracing::info_span!(target: telemetry::TARGET, "cache wait", gateway.cache.collapsed = true);
                if let Some(fill) = &joined {
                    telemetry::link(&waiting, fill);
                }
                answer.instrument(waiting).await
            }
        };
        answer.map(|entry| {
            let shared = entry.shared;
            (entry, Filled { shared, collapsed })
        })
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
    id: u64,
}

impl UnderWayGuard {
    fn remove(inner: &Inner, key: &str, id: u64) {
        let mut filling = inner.filling.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if filling.get(key).is_some_and(|under_way| under_way.id == id) {
            filling.remove(key);
        }
    }
}

impl Drop for UnderWayGuard {
    fn drop(&mut self) {
        // After a grace, unless a newer fill of the key took its place meanwhile.
        let (inner, key, id) = (self.inner.clone(), std::mem::take(&mut self.key), self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(COMPLETED_GRACE).await;
                    Self::remove(&inner, &key, id);
                });
            }
            Err(_) => Self::remove(&inner, &key, id),
        }
    }
}

impl Inner {
    /// The fill of `key`: from the cluster's shared tier when it may, or from `upstream`; stored
    /// here unless an invalidation of its class came meanwhile.
    async fn fill_task<Fut>(
        self: Arc<Self>,
        key: String,
        id: u64,
        params: FillParams,
        upstream: Fut,
    ) -> Result<Arc<Entry>, GatewayError>
    where
        Fut: Future<Output = Result<Answer, GatewayError>> + Send + 'static,
    {
        let _under_way = UnderWayGuard { inner: self.clone(), key: key.clone(), id };
        let class = params.class;
        let generation = self.generations[class as usize].load(Ordering::SeqCst);
        let trust = self.trust.load(Ordering::Acquire);
        let ttl = self.timings.ttl(class);
        let lifetime = self.timings.lifetime(class);
        let cluster =
            self.cluster.as_ref().filter(|cluster| params.tenant_shared && cluster.is_up() && cluster.trusts(class));
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
                            entry.stale = true;
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
            self.changed();
        }
        Ok(entry)
    }
}

/// Failures a stale answer may cover: the upstream is down, slow, overloaded, or no slot is free.
pub(super) fn may_serve_stale(error: &GatewayError) -> bool {
    match error {
        GatewayError::Throttled { .. }
        | GatewayError::BadGateway(_)
        | GatewayError::UpstreamCredentials { .. }
        | GatewayError::GatewayTimeout(_) => true,
        GatewayError::Upstream(upstream) => upstream.status.is_server_error() || upstream.status.as_u16() == 429,
        _ => false,
    }
}
