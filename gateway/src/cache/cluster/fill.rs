//! Shared fills: a replica's miss looks in the shared tier first; a cold key is fetched by one
//! replica for the whole cluster, under a lock that its holder keeps renewing, while the others
//! wait for its answer (or, past their wait, fill it themselves).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::wire::{Reply, SealedCopy, copy, decode, encode_headers, entry_context, int};
use super::{ClusterCache, LOCK_LIFETIME, MAX_SHARED_BYTES, WAIT_POLL};
use crate::answer::Answer;
use crate::error::GatewayError;
use crate::policy::CacheClass;

/// What a replica learnt of a key from the shared tier.
pub(crate) enum Shared {
    /// A fresh copy, and its age.
    Fresh(Answer, Duration),
    /// This replica fills the key: the lock's token, the class generation, a stale copy if any.
    Fill { token: String, generation: i64, stale: Option<(Answer, Duration)> },
    /// Another replica fills it.
    Wait { stale: Option<(Answer, Duration)> },
}

impl ClusterCache {
    /// What the shared tier has for `key`, or the lock to fill it.
    pub(crate) async fn look_up(&self, key: &str, class: CacheClass, fresh_for: Duration) -> Result<Shared, String> {
        let token = format!("{}-{}", self.replica, self.fills.fetch_add(1, Ordering::Relaxed));
        let mut invocation = self.lookup.key(self.key("entry", key));
        invocation
            .key(self.key("lock", key))
            .key(self.generation_key(class))
            .arg(u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX))
            .arg(self.trusted_from_ms.load(Ordering::SeqCst))
            .arg(&token)
            .arg(u64::try_from(LOCK_LIFETIME.as_millis()).unwrap_or(1200));
        let reply: Reply = self.run(invocation).await?;
        Ok(match int(reply.first()) {
            1 => match self.open(key, copy(&reply, 2, 1)) {
                Some((answer, age)) => Shared::Fresh(answer, age),
                None => return Err("a shared copy could not be read, or failed its seal".into()),
            },
            2 => Shared::Fill { token, generation: int(reply.get(1)), stale: self.open(key, copy(&reply, 2, 5)) },
            _ => Shared::Wait { stale: self.open(key, copy(&reply, 2, 5)) },
        })
    }

    /// A shared copy, if its seal holds (`seal.rs`); one that fails it is counted and ignored.
    fn open(&self, key: &str, copy: Option<SealedCopy>) -> Option<(Answer, Duration)> {
        let copy = copy?;
        let context = entry_context(key, &copy.status, &copy.headers);
        let Some(body) = self.seal.open(&context, &copy.body) else {
            self.metrics.cache_shared_rejected.inc();
            tracing::warn!(
                key,
                "a shared cache entry failed its seal: ignored (not written by a gateway of this account)"
            );
            return None;
        };
        Some((decode(&copy.status, &copy.headers, body)?, copy.age))
    }

    /// Keeps the lock of a fill alive until the returned guard is dropped.
    pub(crate) fn hold(self: &Arc<Self>, key: &str, token: &str) -> LockGuard {
        let (cache, lock, token) = (self.clone(), self.key("lock", key), token.to_string());
        let renewal = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(LOCK_LIFETIME / 3);
            loop {
                ticker.tick().await;
                let mut invocation = cache.lock.key(&lock);
                invocation.arg(&token).arg(u64::try_from(LOCK_LIFETIME.as_millis()).unwrap_or(1200));
                if cache.run::<i64>(invocation).await != Ok(1) {
                    return;
                }
            }
        });
        LockGuard { renewal }
    }

    /// Stores a fill's answer (unless an invalidation came meanwhile, or it is too large) and
    /// frees its lock.
    pub(crate) async fn store(
        &self,
        key: &str,
        class: CacheClass,
        token: &str,
        generation: i64,
        answer: &Answer,
        lifetime: Duration,
    ) {
        let (status, headers) = (answer.status.as_u16().to_string(), encode_headers(&answer.headers));
        let sealed = self.seal.seal(&entry_context(key, &status, &headers), &answer.body);
        let Some(sealed) = sealed.filter(|_| answer.body.len() <= MAX_SHARED_BYTES) else {
            return self.release(key, token).await;
        };
        let mut invocation = self.store.key(self.key("entry", key));
        invocation
            .key(self.key("lock", key))
            .key(self.generation_key(class))
            .arg(token)
            .arg(generation)
            .arg(status)
            .arg(headers)
            .arg(sealed)
            .arg(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX));
        if let Err(error) = self.run::<i64>(invocation).await {
            tracing::debug!(%error, "could not share a cache fill");
        }
    }

    /// Frees a fill's lock without storing (the fill failed).
    pub(crate) async fn release(&self, key: &str, token: &str) {
        let mut invocation = self.lock.key(self.key("lock", key));
        invocation.arg(token).arg(0);
        let _ = self.run::<i64>(invocation).await;
    }
}

/// Renews a fill's lock while it lives.
pub(crate) struct LockGuard {
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// A fill that goes through the shared tier: a fresh shared copy if there is one, else this
/// replica fills the key for the cluster, or waits for the replica that does (until `wait_until`,
/// then fills it itself). A `refresh` takes no shared copy and waits for no other replica (it
/// stores its answer for the cluster when no other replica is filling the key). Answers the
/// answer, and its age when it is the shared copy.
pub(crate) async fn fill<F>(
    cluster: &Arc<ClusterCache>,
    key: &str,
    terms: FillTerms,
    upstream: F,
) -> Result<(Answer, Option<Duration>), FillFailure>
where
    F: Future<Output = Result<Answer, GatewayError>>,
{
    let FillTerms { class, fresh_for, lifetime, wait_until, refresh } = terms;
    let fresh_for = if refresh { Duration::ZERO } else { fresh_for };
    let mut stale = None;
    loop {
        match cluster.look_up(key, class, fresh_for).await {
            Ok(Shared::Fresh(answer, age)) => return Ok((answer, Some(age))),
            Ok(Shared::Fill { token, generation, stale: copy }) => {
                let _held = cluster.hold(key, &token);
                let result = upstream.await;
                return match result {
                    Ok(answer) => {
                        cluster.store(key, class, &token, generation, &answer, lifetime).await;
                        Ok((answer, None))
                    }
                    Err(error) => {
                        cluster.release(key, &token).await;
                        Err(FillFailure { error, stale: copy.or(stale) })
                    }
                };
            }
            Ok(Shared::Wait { stale: copy }) if !refresh && Instant::now() < wait_until => {
                stale = copy.or(stale);
                tokio::time::sleep(WAIT_POLL).await;
            }
            // Waited long enough (or a refresh, which does not wait): fill it here.
            Ok(Shared::Wait { stale: copy }) => {
                let stale = copy.or(stale);
                return upstream.await.map(|a| (a, None)).map_err(|error| FillFailure { error, stale });
            }
            Err(error) => {
                tracing::debug!(%error, "the shared cache does not answer: filling here");
                return upstream.await.map(|a| (a, None)).map_err(|error| FillFailure { error, stale });
            }
        }
    }
}

/// How a key is filled through the shared tier.
pub(crate) struct FillTerms {
    pub(crate) class: CacheClass,
    /// A shared copy younger than this is fresh (the class's TTL).
    pub(crate) fresh_for: Duration,
    /// How long a shared copy is kept (TTL and `stale_for`).
    pub(crate) lifetime: Duration,
    /// Until when to wait for another replica's fill.
    pub(crate) wait_until: Instant,
    /// `Cache-Control: no-cache`, or the directory's recheck: no shared copy, no waiting.
    pub(crate) refresh: bool,
}

/// A failed fill, with the shared tier's stale copy if it had one (and its age).
pub(crate) struct FillFailure {
    pub(crate) error: GatewayError,
    pub(crate) stale: Option<(Answer, Duration)>,
}
