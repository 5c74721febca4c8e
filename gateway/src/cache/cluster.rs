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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Inner;
use crate::config::ConfigError;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::CacheClass;
use crate::redis_link::within_timeout;
use crate::upstream::Answer;

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
const LOOKUP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local e = redis.call('HMGET', KEYS[1], 'at', 'status', 'headers', 'body', 'generation')
local generation = tonumber(redis.call('GET', KEYS[3]) or '0')
local copy = false
if e[1] and tonumber(e[1]) >= tonumber(ARGV[2]) and tonumber(e[5]) == generation then
  copy = true
  if now - tonumber(e[1]) < tonumber(ARGV[1]) then
    return {1, now - tonumber(e[1]), e[2], e[3], e[4]}
  end
end
local function stale(kind, number)
  if copy then return {kind, number, e[2], e[3], e[4], now - tonumber(e[1])} end
  return {kind, number}
end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return stale(2, generation)
end
return stale(3, 0)
"#;

/// Store a fill's answer and free its lock: `KEYS` entry, lock, class generation. `ARGV`: token,
/// the generation the fill started at, status, headers, body, lifetime ms. Stored only if no
/// invalidation of the class came meanwhile.
const STORE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('GET', KEYS[3]) or '0') == tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'at', now, 'status', ARGV[3], 'headers', ARGV[4], 'body', ARGV[5], 'generation', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 1
"#;

/// Renew (`ARGV[2]` ms) or free (`ARGV[2]` = 0) a fill's lock, if it is still `ARGV[1]`'s.
const LOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  else
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return 0
"#;

/// An invalidation: `KEYS` the class generation, the epoch, then the shared copies to drop.
/// `ARGV`: the channel, the message (its `epoch` filled in here). Answers the new epoch.
const INVALIDATE: &str = r#"
redis.call('INCR', KEYS[1])
local epoch = redis.call('INCR', KEYS[2])
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
end
local message = string.gsub(ARGV[2], '"epoch":0', '"epoch":' .. epoch, 1)
redis.call('PUBLISH', ARGV[1], message)
return epoch
"#;

/// Redis's clock, in ms.
const NOW: &str = r#"
local t = redis.call('TIME')
return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// What one replica tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    /// The invalidation's number in the cluster (filled in by Redis).
    epoch: u64,
    /// The replica that wrote (it applied the invalidation itself already).
    from: String,
    #[serde(flatten)]
    change: Change,
}

/// What changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(crate) enum Change {
    /// A project: the project list, and answers about it.
    Project { project: String },
    /// One answer, by cache key.
    Key { key: String, class: String },
    /// Everything of a class, or everything (an admin's purge).
    Purge { class: Option<String> },
}

/// What a replica learnt of a key from the shared tier.
pub(crate) enum Shared {
    /// A fresh copy, and its age.
    Fresh(Answer, Duration),
    /// This replica fills the key: the lock's token, the class generation, a stale copy if any.
    Fill { token: String, generation: i64, stale: Option<(Answer, Duration)> },
    /// Another replica fills it.
    Wait { stale: Option<(Answer, Duration)> },
}

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
    /// Set once the local cache exists (the subscriber applies invalidations to it).
    local: Mutex<Option<Weak<Inner>>>,
}

fn class_name(class: CacheClass) -> &'static str {
    class.as_str()
}

fn encode_headers(headers: &HeaderMap) -> String {
    headers.iter().filter_map(|(name, value)| Some(format!("{name}: {}\n", value.to_str().ok()?))).collect()
}

fn decode(status: &str, headers: &str, body: Vec<u8>) -> Option<Answer> {
    let status = StatusCode::from_u16(status.parse().ok()?).ok()?;
    let mut map = HeaderMap::new();
    for line in headers.lines() {
        let (name, value) = line.split_once(": ")?;
        map.append(HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?);
    }
    Some(Answer { status, headers: map, body: Bytes::from(body) })
}

type Reply = Vec<redis::Value>;

fn text(value: Option<&redis::Value>) -> Option<String> {
    match value? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        redis::Value::Int(number) => Some(number.to_string()),
        _ => None,
    }
}

fn bytes(value: Option<&redis::Value>) -> Option<Vec<u8>> {
    match value? {
        redis::Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    }
}

fn int(value: Option<&redis::Value>) -> i64 {
    match value {
        Some(redis::Value::Int(number)) => *number,
        other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// The copy at `offset` of a lookup's reply (status, headers, body, then its age at `age_at`).
fn copy(reply: &Reply, offset: usize, age_at: usize) -> Option<(Answer, Duration)> {
    let answer = decode(&text(reply.get(offset))?, &text(reply.get(offset + 1))?, bytes(reply.get(offset + 2))?)?;
    let age = Duration::from_millis(u64::try_from(int(reply.get(age_at))).unwrap_or(0));
    Some((answer, age))
}

impl ClusterCache {
    pub(crate) fn new(
        redis_url: &str,
        prefix: &str,
        account: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ConfigError> {
        let (client, connection) = crate::redis_link::connect_lazily(redis_url)?;
        let prefix = format!("{prefix}:{account}:cache");
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
            local: Mutex::new(None),
        });
        Ok(cache)
    }

    /// Starts applying the others' invalidations to `local`.
    pub(super) fn attach(self: &Arc<Self>, local: &Arc<Inner>) {
        *self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::downgrade(local));
        tokio::spawn(subscriber(Arc::downgrade(self)));
    }

    /// The shared tier and the invalidations are in use (Redis answers and the subscription is live).
    pub(crate) fn is_up(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}:{kind}:{key}", self.prefix)
    }

    fn generation_key(&self, class: CacheClass) -> String {
        format!("{}:generation:{}", self.prefix, class_name(class))
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, invocation: redis::ScriptInvocation<'_>) -> Result<T, String> {
        let mut connection = self.connection.clone();
        within_timeout(invocation.invoke_async::<T>(&mut connection)).await
    }

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
            1 => match copy(&reply, 2, 1) {
                Some((answer, age)) => Shared::Fresh(answer, age),
                None => return Err("a shared copy could not be read".into()),
            },
            2 => Shared::Fill { token, generation: int(reply.get(1)), stale: copy(&reply, 2, 5) },
            _ => Shared::Wait { stale: copy(&reply, 2, 5) },
        })
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
        if answer.body.len() > MAX_SHARED_BYTES {
            return self.release(key, token).await;
        }
        let mut invocation = self.store.key(self.key("entry", key));
        invocation
            .key(self.key("lock", key))
            .key(self.generation_key(class))
            .arg(token)
            .arg(generation)
            .arg(answer.status.as_u16())
            .arg(encode_headers(&answer.headers))
            .arg(answer.body.as_ref())
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

    /// Tells every replica what changed (voiding the shared copies of `class`, the generation's).
    pub(crate) async fn publish(&self, class: CacheClass, change: Change, drop: &[String]) {
        let message = Message { epoch: 0, from: self.replica.clone(), change };
        let Ok(message) = serde_json::to_string(&message) else { return };
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
            }
            Err(error) => tracing::warn!(%error, "could not tell the other replicas about a write"),
        }
    }

    /// The last invalidation published in the cluster.
    async fn epoch(&self) -> Result<u64, String> {
        let mut connection = self.connection.clone();
        let mut get = redis::cmd("GET");
        get.arg(self.epoch_key());
        Ok(within_timeout(get.query_async::<Option<u64>>(&mut connection)).await?.unwrap_or(0))
    }

    fn local(&self) -> Option<Arc<Inner>> {
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().and_then(Weak::upgrade)
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

/// Renews a fill's lock while it lives.
pub(crate) struct LockGuard {
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Subscribes to the invalidations and applies them, resubscribing (and resynchronising) when
/// the connection is lost. Ends when the cache is dropped.
async fn subscriber(cache: Weak<ClusterCache>) {
    loop {
        let Some(strong) = cache.upgrade() else { return };
        let subscription = async {
            let mut pubsub = strong.client.get_async_pubsub().await.map_err(|e| e.to_string())?;
            pubsub.subscribe(&strong.channel).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let Ok(Ok(pubsub)) = tokio::time::timeout(Duration::from_secs(2), subscription).await else {
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
                        Some(message) => strong.apply(message),
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
