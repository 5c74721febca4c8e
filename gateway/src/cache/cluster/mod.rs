//! The cache across replicas (with `throttle.redis_url`): one truth for every replica.
//!
//! - **Invalidation.** A write through any replica runs one Lua script that bumps the class's
//!   generation (a fill that started before it is not stored), numbers the invalidation (a cluster
//!   epoch), deletes the shared copies it makes stale, and publishes it; every replica applies it
//!   to its own cache. Pub/sub messages can be lost: a replica that reconnects, or sees a gap in
//!   the epochs, stops trusting as fresh anything fetched before that moment (and any shared copy
//!   stored before it); and before answering "not yours" from a young project directory, a replica
//!   checks that no invalidation is pending (the epoch in Redis is not ahead of the one it applied).
//! - **Shared fills.** Project and channel answers are kept in Redis too, with the same TTL and
//!   stale rules. A replica's miss looks there first; a cold key is fetched by one replica for the
//!   whole cluster, under a lock that expires unless its holder keeps renewing it (a replica that
//!   dies mid-fill frees the key within a second); the others wait for its answer. Hits never
//!   leave the process.
//! - **Redis down.** Each replica falls back to its own cache and coalescing, as without Redis;
//!   entries keep their TTLs. When Redis answers again, the replica resynchronises (see above)
//!   before trusting the shared tier.
//!
//! Here: the shared state and Redis's keys; `fill.rs` the shared fills, `invalidation.rs` the
//! invalidations and the subscriber, `wire.rs` what goes over the wire (sealed: `seal.rs`), and the Lua scripts each
//! in a file of its own.

mod fill;
mod invalidation;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::Inner;
use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::policy::CacheClass;
use crate::redis_link::within_timeout;
pub(crate) use fill::{FillTerms, fill};
pub(crate) use wire::Change;

/// A fill's lock lives this long unless renewed; its holder renews it every third of that.
const LOCK_LIFETIME: Duration = Duration::from_millis(1200);
/// While another replica fills a key, ask again this often.
const WAIT_POLL: Duration = Duration::from_millis(15);
/// Answers larger than this stay in the replica's own cache only.
const MAX_SHARED_BYTES: usize = 4 * 1024 * 1024;
/// After losing the subscription, try again this often.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);
/// How long a replica waits for an invalidation it knows was published before counting it missed.
const CATCH_UP_WAIT: Duration = Duration::from_millis(250);
const CATCH_UP_POLL: Duration = Duration::from_millis(2);
/// How often a subscribed replica checks that it has missed no invalidation (the last one
/// published may be lost with no later one to reveal the gap).
const CHECK_EPOCH_EVERY: Duration = Duration::from_secs(1);

/// A shared copy: `KEYS` the entry hash, the fill lock, the class generation. `ARGV`: freshness
/// ms, trusted-from (Redis ms), lock token, lock ms. A copy stored before the class's last
/// invalidation, or before this replica last resynchronised, is no copy. Answers `{kind, age ms, status, headers,
/// body}`: kind 1 fresh, 2 the caller holds the lock now (with the class generation as `age`,
/// and a stale copy if any), 3 another replica fills it (with a stale copy if any).
const LOOKUP: &str = include_str!("lookup.lua");

/// Store a fill's answer and free its lock: `KEYS` entry, lock, class generation. `ARGV`: token,
/// the generation the fill started at, status, headers, body, lifetime ms. Stored only if no
/// invalidation of the class came meanwhile.
const STORE: &str = include_str!("store.lua");

/// Renew (`ARGV[2]` ms) or free (`ARGV[2]` = 0) a fill's lock, if it is still `ARGV[1]`'s.
const LOCK: &str = include_str!("lock.lua");

/// An invalidation: `KEYS` the class generation, the epoch, then the shared copies to drop.
/// `ARGV`: the channel, the message (its `epoch` filled in here). Answers the new epoch.
const INVALIDATE: &str = include_str!("invalidate.lua");

/// Redis's clock, in ms.
const NOW: &str = include_str!("now.lua");

pub(crate) struct ClusterCache {
    connection: ConnectionManager,
    client: redis::Client,
    prefix: String,
    channel: String,
    replica: String,
    fills: AtomicU64,
    lookup: Script,
    store: Script,
    lock: Script,
    invalidate: Script,
    now: Script,
    /// The subscription is live (invalidations reach this replica).
    subscribed: AtomicBool,
    /// The last invalidation this replica applied.
    applied_epoch: AtomicU64,
    /// Shared copies stored before this (Redis ms) are not trusted.
    trusted_from_ms: AtomicU64,
    metrics: Arc<Metrics>,
    /// Seals what goes into Redis (`seal.rs`).
    seal: crate::seal::Seal,
    /// Classes whose last invalidation could not be published yet (retried until it is): this
    /// replica takes no shared copy of them meanwhile.
    unpublished: [AtomicBool; CacheClass::ALL.len()],
    /// Set once the local cache exists (the subscriber applies invalidations to it).
    local: Mutex<Option<Weak<Inner>>>,
}

impl ClusterCache {
    pub(crate) fn new(
        redis_url: &str,
        prefix: &str,
        namespace: &str,
        customer_secret: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ConfigError> {
        let (client, connection) = crate::redis_link::connect_lazily(redis_url)?;
        let prefix = format!("{prefix}:{namespace}:cache");
        let cache = Arc::new(Self {
            connection,
            client,
            channel: format!("{prefix}:invalidations"),
            prefix,
            replica: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            fills: AtomicU64::new(0),
            lookup: Script::new(LOOKUP),
            store: Script::new(STORE),
            lock: Script::new(LOCK),
            invalidate: Script::new(INVALIDATE),
            now: Script::new(NOW),
            subscribed: AtomicBool::new(false),
            applied_epoch: AtomicU64::new(0),
            trusted_from_ms: AtomicU64::new(u64::MAX),
            metrics,
            seal: crate::seal::Seal::of_account(customer_secret),
            unpublished: Default::default(),
            local: Mutex::new(None),
        });
        Ok(cache)
    }

    /// Starts applying the others' invalidations to `local`.
    pub(super) fn attach(self: &Arc<Self>, local: &Arc<Inner>) {
        *self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::downgrade(local));
        tokio::spawn(invalidation::subscriber(Arc::downgrade(self)));
    }

    /// The shared tier and the invalidations are in use (Redis answers and the subscription is live).
    pub(crate) fn is_up(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Whether this replica takes shared copies of `class`: not while one of its invalidations
    /// of the class is still to be published.
    pub(crate) fn trusts(&self, class: CacheClass) -> bool {
        !self.unpublished[class as usize].load(Ordering::SeqCst)
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}:{kind}:{key}", self.prefix)
    }

    fn generation_key(&self, class: CacheClass) -> String {
        format!("{}:generation:{}", self.prefix, class.as_str())
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, String> {
        let mut connection = self.connection.clone();
        within_timeout(invocation.invoke_async::<T>(&mut connection)).await
    }

    fn local(&self) -> Option<Arc<Inner>> {
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().and_then(Weak::upgrade)
    }
}
