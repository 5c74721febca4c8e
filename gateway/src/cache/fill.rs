//! Filling the cache on a miss: one fill for any number of concurrent callers of a key (a task of
//! its own, so a caller that goes away does not cancel the others' answer), through the cluster's
//! shared tier when there is one, stored unless an invalidation of its class came meanwhile.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::{Entry, Inner, Read, ResponseCache, cluster};
use crate::answer::Answer;
use crate::error::GatewayError;
use crate::operations::Operation;
use crate::policy::CacheClass;
use crate::throttle::Promotion;

pub(super) type SharedFill = Shared<BoxFuture<'static, Result<Arc<Entry>, GatewayError>>>;

/// A fill under way: its answer, shared by every caller; who waits for it; how to promote it.
pub(super) struct UnderWay {
    answer: SharedFill,
    first_tenant: usize,
    promotion: Arc<Promotion>,
}

impl ResponseCache {
    /// One fill for any number of concurrent callers of the same key; answers the entry and
    /// whether it came from the cluster's shared tier (no upstream call).
    pub(super) async fn fill<F, Fut>(&self, read: Read, fill: F) -> Result<(Arc<Entry>, bool), GatewayError>
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
