//! Invalidations across replicas: a write publishes what it changed (numbered by a cluster epoch),
//! every replica applies it to its own cache, and a replica that may have missed one — a gap in
//! the epochs, a lost subscription — distrusts what it fetched before.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::wire::{Change, Message};
use super::{CATCH_UP_POLL, CATCH_UP_WAIT, CHECK_EPOCH_EVERY, ClusterCache, RESUBSCRIBE_EVERY};
use crate::policy::CacheClass;
use crate::redis_link::within_timeout;

impl ClusterCache {
    /// Tells every replica what changed (voiding the shared copies of `class`, the generation's).
    /// If Redis does not take it, it is tried again (every 200 ms to 1 s) until it does, and this
    /// replica takes no shared copy of the class meanwhile.
    pub(crate) async fn publish(self: &Arc<Self>, class: CacheClass, change: Change, drop: &[String]) {
        if self.publish_once(class, &change, drop).await {
            return;
        }
        self.unpublished[class as usize].store(true, Ordering::SeqCst);
        let (cache, drop) = (Arc::downgrade(self), drop.to_vec());
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            loop {
                tokio::time::sleep(wait).await;
                let Some(cache) = cache.upgrade() else { return };
                if cache.publish_once(class, &change, &drop).await {
                    cache.unpublished[class as usize].store(false, Ordering::SeqCst);
                    tracing::info!("an invalidation that could not be published is published now");
                    return;
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        });
    }

    async fn publish_once(&self, class: CacheClass, change: &Change, drop: &[String]) -> bool {
        let Some(seal) = self.seal.tag(&Message::context(&self.replica, change)) else { return false };
        let message = Message { epoch: 0, from: self.replica.clone(), change: change.clone(), seal };
        let Ok(message) = serde_json::to_string(&message) else { return false };
        let mut invocation = self.invalidate.key(self.generation_key(class));
        invocation.key(self.epoch_key());
        for key in drop {
            invocation.key(self.key("entry", key));
        }
        invocation.arg(&self.channel).arg(message);
        match self.run::<u64>(invocation).await {
            // Our own message is applied already; the epoch moves past it.
            Ok(epoch) => {
                let _ = self.applied_epoch.compare_exchange(epoch - 1, epoch, Ordering::SeqCst, Ordering::SeqCst);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not tell the other replicas about a write: trying again");
                false
            }
        }
    }

    /// The last invalidation published in the cluster.
    async fn epoch(&self) -> Result<u64, String> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.epoch_key());
        Ok(within_timeout(get.query_async::<Option<u64>>(&mut connection)).await?.unwrap_or(0))
    }

    /// Waits (at most [`CATCH_UP_WAIT`]) until every invalidation published so far in the
    /// cluster is applied here; one that does not come in time counts as missed (this replica's
    /// cache is distrusted). Answers whether any was pending.
    pub(crate) async fn catch_up(&self) -> bool {
        if !self.is_up() {
            return false;
        }
        let Ok(epoch) = self.epoch().await else { return false };
        if self.applied_epoch.load(Ordering::SeqCst) >= epoch {
            return false;
        }
        let until = Instant::now() + CATCH_UP_WAIT;
        while self.applied_epoch.load(Ordering::SeqCst) < epoch {
            if Instant::now() >= until {
                tracing::warn!("invalidations did not arrive: distrusting this replica's cache");
                self.metrics.cache_invalidations_missed.inc();
                if let Some(local) = self.local() {
                    local.distrust();
                }
                self.applied_epoch.fetch_max(epoch, Ordering::SeqCst);
                break;
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        true
    }

    /// Applies one replica's message here.
    fn apply(&self, message: Message) {
        let applied = self.applied_epoch.load(Ordering::SeqCst);
        let Some(local) = self.local() else { return };
        if message.epoch > applied + 1 {
            tracing::warn!(
                missed = message.epoch - applied - 1,
                "missed invalidations: distrusting this replica's cache"
            );
            self.metrics.cache_invalidations_missed.inc();
            local.distrust();
        }
        self.applied_epoch.fetch_max(message.epoch, Ordering::SeqCst);
        if message.from == self.replica {
            return;
        }
        match message.change {
            Change::Project { project } => local.invalidate_project_here(&project),
            Change::Key { key, class } => match CacheClass::parse(&class) {
                Some(class) => local.invalidate_key_here(&key, class),
                None => local.distrust(),
            },
            Change::Purge { class } => local.purge_here(class.as_deref().and_then(CacheClass::parse)),
        }
    }

    /// (Re)subscribed: whatever came meanwhile is unknown, so nothing fetched or shared before
    /// now is trusted as fresh.
    async fn resynchronise(&self) -> Result<(), String> {
        let now_ms: u64 = self.run(self.now.prepare_invoke()).await?;
        self.applied_epoch.store(self.epoch().await?, Ordering::SeqCst);
        self.trusted_from_ms.store(now_ms, Ordering::SeqCst);
        if let Some(local) = self.local() {
            local.distrust();
        }
        Ok(())
    }
}

/// Subscribes to the invalidations and applies them, resubscribing (and resynchronising) when
/// the connection is lost. Ends when the cache is dropped.
pub(super) async fn subscriber(cache: Weak<ClusterCache>) {
    loop {
        let Some(strong) = cache.upgrade() else { return };
        let Ok(pubsub) = crate::redis_link::subscribe(&strong.client, &strong.channel).await else {
            strong.subscribed.store(false, Ordering::SeqCst);
            strong.metrics.cache_cluster_up.set(0);
            drop(strong);
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
            continue;
        };
        if let Err(error) = strong.resynchronise().await {
            tracing::debug!(%error, "could not resynchronise with the shared cache");
            drop(strong);
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
            continue;
        }
        strong.subscribed.store(true, Ordering::SeqCst);
        strong.metrics.cache_cluster_up.set(1);
        tracing::info!("shared cache: invalidations from every replica are applied here");
        drop(strong);
        let mut messages = pubsub.into_on_message();
        let mut check = tokio::time::interval(CHECK_EPOCH_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    let Some(strong) = cache.upgrade() else { return };
                    let text = message.get_payload::<String>().ok();
                    match text.and_then(|text| serde_json::from_str::<Message>(&text).ok()) {
                        Some(message) if strong.seal.verify(&Message::context(&message.from, &message.change), &message.seal) => {
                            strong.apply(message);
                        }
                        Some(_) => {
                            strong.metrics.cache_shared_rejected.inc();
                            tracing::warn!("an invalidation message failed its seal: ignored");
                        }
                        None => tracing::warn!("an invalidation message could not be read"),
                    }
                }
                _ = check.tick() => {
                    let Some(strong) = cache.upgrade() else { return };
                    // Runs beside the messages: a pending one arrives meanwhile.
                    tokio::spawn(async move { strong.catch_up().await });
                }
            }
        }
        let Some(strong) = cache.upgrade() else { return };
        tracing::warn!("lost the shared cache's invalidations: this replica's cache stands alone until Redis answers");
        strong.subscribed.store(false, Ordering::SeqCst);
        strong.metrics.cache_cluster_up.set(0);
        drop(strong);
        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
    }
}
