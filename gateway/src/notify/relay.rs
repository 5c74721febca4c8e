//! Notices across replicas (with `throttle.redis_url`). Agora sends each notice to one replica
//! (whichever the load balancer picks); that replica publishes it, sealed with the account's key
//! (`seal.rs`), on a Redis channel, and every other replica applies it as its own. So every
//! replica's books see every notice.
//!
//! - A notice that cannot be published is answered 503: Agora sends it again (at once, then
//!   later), and it is let in as new then — perhaps at another replica.
//! - A replica that is not subscribed misses the others' notices: it answers no read from its
//!   books until it is subscribed again and its books are baselined anew (`reconcile.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::redis_link::within_timeout;
use crate::seal::Seal;

/// After losing the subscription, try again this often.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(500);
/// What the seal authenticates beside the notice.
const CONTEXT: &[u8] = b"agora-gateway ncs relay v1";

#[derive(Serialize, Deserialize)]
struct Message {
    /// The replica that took the notice from Agora (it applied it already).
    from: String,
    /// `appid`, a newline, the notice's body: sealed, in base64.
    sealed: String,
}

/// What a relayed message carries.
pub(crate) struct Relayed {
    pub(crate) appid: String,
    pub(crate) body: Vec<u8>,
}

pub(crate) struct Relay {
    client: redis::Client,
    connection: ConnectionManager,
    channel: String,
    replica: String,
    seal: Seal,
    subscribed: AtomicBool,
    /// Bumped each time the subscription is (re)made: notices may have been missed before it.
    pub(crate) subscriptions: AtomicU64,
}

impl Relay {
    pub(crate) fn new(
        redis_url: &str,
        prefix: &str,
        namespace: &str,
        customer_secret: &str,
    ) -> Result<Self, ConfigError> {
        let (client, connection) = crate::redis_link::connect_lazily(redis_url)?;
        Ok(Self {
            client,
            connection,
            channel: format!("{prefix}:{namespace}:ncs"),
            replica: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            seal: Seal::of_account(customer_secret),
            subscribed: AtomicBool::new(false),
            subscriptions: AtomicU64::new(0),
        })
    }

    /// The other replicas' notices reach this one.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Publishes a notice taken from Agora to the other replicas.
    pub(crate) async fn publish(&self, appid: &str, body: &[u8]) -> Result<(), String> {
        let mut plain = Vec::with_capacity(appid.len() + 1 + body.len());
        plain.extend_from_slice(appid.as_bytes());
        plain.push(b'\n');
        plain.extend_from_slice(body);
        let sealed = self.seal.seal(CONTEXT, &plain).ok_or("no random numbers for the seal")?;
        let sealed = base64::engine::general_purpose::STANDARD.encode(sealed);
        let message =
            serde_json::to_string(&Message { from: self.replica.clone(), sealed }).map_err(|e| e.to_string())?;
        let mut connection = self.connection.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(message);
        within_timeout(publish.query_async::<i64>(&mut connection)).await.map(drop)
    }

    /// A message of another replica, opened; `None` for this replica's own, or one that fails
    /// its seal (counted by the caller).
    fn open(&self, payload: &str) -> Result<Option<Relayed>, ()> {
        let message: Message = serde_json::from_str(payload).map_err(drop)?;
        if message.from == self.replica {
            return Ok(None);
        }
        let sealed = base64::engine::general_purpose::STANDARD.decode(message.sealed).map_err(drop)?;
        let plain = self.seal.open(CONTEXT, &sealed).ok_or(())?;
        let newline = plain.iter().position(|byte| *byte == b'\n').ok_or(())?;
        let appid = String::from_utf8(plain[..newline].to_vec()).map_err(drop)?;
        Ok(Some(Relayed { appid, body: plain[newline + 1..].to_vec() }))
    }
}

/// Receives the other replicas' notices for as long as `relay` lives, handing each to `apply`;
/// `rejected` counts a message that fails its seal.
pub(crate) async fn subscriber(relay: Weak<Relay>, apply: impl Fn(Relayed), rejected: impl Fn()) {
    loop {
        let Some(strong) = relay.upgrade() else { return };
        let Ok(pubsub) = crate::redis_link::subscribe(&strong.client, &strong.channel).await else {
            strong.subscribed.store(false, Ordering::SeqCst);
            drop(strong);
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
            continue;
        };
        strong.subscriptions.fetch_add(1, Ordering::SeqCst);
        strong.subscribed.store(true, Ordering::SeqCst);
        tracing::info!("NCS: notices taken by every replica are applied here");
        drop(strong);
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Some(strong) = relay.upgrade() else { return };
            match message.get_payload::<String>().map_err(drop).and_then(|payload| strong.open(&payload)) {
                Ok(Some(relayed)) => apply(relayed),
                Ok(None) => {}
                Err(()) => {
                    rejected();
                    tracing::warn!("a relayed NCS notice failed its seal: ignored");
                }
            }
        }
        let Some(strong) = relay.upgrade() else { return };
        tracing::warn!("lost the other replicas' NCS notices: channel reads go through the cache until Redis answers");
        strong.subscribed.store(false, Ordering::SeqCst);
        drop(strong);
        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
    }
}

/// Starts the subscriber for `notifications`' relay.
pub(crate) fn start(relay: &Arc<Relay>, notifications: Weak<super::Notifications>) {
    let rejected_counter = notifications.clone();
    let apply = move |relayed: Relayed| {
        if let Some(notifications) = notifications.upgrade() {
            notifications.apply_relayed(&relayed);
        }
    };
    let rejected = move || {
        if let Some(notifications) = rejected_counter.upgrade() {
            notifications.metrics.cache_shared_rejected.inc();
        }
    };
    tokio::spawn(subscriber(Arc::downgrade(relay), apply, rejected));
}
