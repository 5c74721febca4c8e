//! Agora's Notifications service (NCS), simulated: the channel events of the sandbox's world,
//! signed as Agora signs them (`Agora-Signature`: hex HMAC-SHA1, `Agora-Signature-V2`: hex
//! HMAC-SHA256, both of the raw body, keyed with the NCS secret) and POSTed to a configured URL,
//! one after another; a notice that is not answered 200 is sent again at once, then after one and
//! two seconds, then dropped. Faults (`POST /__sandbox/notify`) drop, duplicate and reorder
//! notices, or pause the service, as Agora's delivery may.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::world::ChannelEvent;

/// Where notices go (`{appid}` in a URL is replaced with the event's App ID) and their secret.
/// With several URLs, each notice (and each resending of one) goes to the next, as a load
/// balancer in front of several replicas would send them.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub urls: Vec<String>,
    /// The NCS secret of every app...
    pub secret: String,
    /// ... but these, which have their own (by App ID).
    pub app_secrets: std::collections::BTreeMap<String, String>,
}

impl NotifyConfig {
    fn secret_of(&self, appid: &str) -> &str {
        self.app_secrets.get(appid).unwrap_or(&self.secret)
    }
}

/// Faults of delivery; each rate from 0.0 to 1.0, drawn per notice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFaults {
    /// Share of notices never sent.
    #[serde(default)]
    pub drop: f64,
    /// Share of notices sent twice (the same `noticeId`).
    #[serde(default)]
    pub duplicate: f64,
    /// Share of notices held back and sent after the next one.
    #[serde(default)]
    pub reorder: f64,
    /// The service stops: every notice is dropped.
    #[serde(default)]
    pub paused: bool,
}

impl NotifyFaults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [("drop", self.drop), ("duplicate", self.duplicate), ("reorder", self.reorder)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0.0 and 1.0"));
            }
        }
        Ok(())
    }
}

/// What became of one batch of notices (the events of one change), when its delivery ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Notices answered 200 (a duplicate counts once).
    pub delivered: u32,
    /// Notices dropped by a fault, or after three retries.
    pub dropped: u32,
    /// Notices sent twice.
    pub duplicated: u32,
    /// A notice of this batch is held back, to be sent after the next one.
    pub held: bool,
}

/// Counters since start, `GET /__sandbox/notify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyCounts {
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

struct Batch {
    events: Vec<ChannelEvent>,
    done: Option<oneshot::Sender<Delivery>>,
}

/// The sender of notices: a task of the sandbox's runtime, fed batches in the order of changes.
pub(crate) struct Notifier {
    batches: mpsc::UnboundedSender<Batch>,
    faults: Arc<Mutex<NotifyFaults>>,
    counts: Arc<Mutex<NotifyCounts>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Notifier {
    /// Starts the sending task (in the current runtime).
    pub(crate) fn start(config: NotifyConfig) -> Self {
        let (batches, receiver) = mpsc::unbounded_channel();
        let faults = Arc::new(Mutex::new(NotifyFaults::default()));
        let counts = Arc::new(Mutex::new(NotifyCounts::default()));
        let sender = Sender {
            config,
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
            faults: faults.clone(),
            counts: counts.clone(),
            rng: fastrand::Rng::new(),
            held: None,
            next_url: std::sync::atomic::AtomicUsize::new(0),
        };
        tokio::spawn(sender.run(receiver));
        Self { batches, faults, counts }
    }

    /// Sends the events of one change; answers what became of them once they were sent.
    pub(crate) async fn send(&self, events: Vec<ChannelEvent>) -> Delivery {
        let (done, delivered) = oneshot::channel();
        if events.is_empty() || self.batches.send(Batch { events, done: Some(done) }).is_err() {
            return Delivery::default();
        }
        delivered.await.unwrap_or_default()
    }

    /// Sends the events of one change without waiting (an operation's side effect).
    pub(crate) fn send_later(&self, events: Vec<ChannelEvent>) {
        if !events.is_empty() {
            let _ = self.batches.send(Batch { events, done: None });
        }
    }

    pub(crate) fn set_faults(&self, faults: NotifyFaults) {
        *lock(&self.faults) = faults;
    }

    pub(crate) fn report(&self) -> serde_json::Value {
        json!({ "faults": *lock(&self.faults), "counts": *lock(&self.counts) })
    }
}

struct Sender {
    config: NotifyConfig,
    client: reqwest::Client,
    faults: Arc<Mutex<NotifyFaults>>,
    counts: Arc<Mutex<NotifyCounts>>,
    rng: fastrand::Rng,
    /// A notice held back (a reorder), with its App ID: sent after the next one.
    held: Option<(String, String)>,
    /// The URL the next sending goes to.
    next_url: std::sync::atomic::AtomicUsize,
}

impl Sender {
    async fn run(mut self, mut batches: mpsc::UnboundedReceiver<Batch>) {
        while let Some(batch) = batches.recv().await {
            let mut delivery = Delivery::default();
            for event in batch.events {
                self.one(event, &mut delivery).await;
            }
            delivery.held = self.held.is_some() && delivery.held;
            if let Some(done) = batch.done {
                let _ = done.send(delivery);
            }
        }
    }

    async fn one(&mut self, event: ChannelEvent, delivery: &mut Delivery) {
        let faults = lock(&self.faults).clone();
        let body = notice(&event, &mut self.rng);
        if faults.paused || self.rng.f64() < faults.drop {
            delivery.dropped += 1;
            lock(&self.counts).dropped += 1;
            return;
        }
        if self.held.is_none() && self.rng.f64() < faults.reorder {
            self.held = Some((event.appid, body));
            delivery.held = true;
            lock(&self.counts).reordered += 1;
            return;
        }
        let twice = self.rng.f64() < faults.duplicate;
        self.post(&event.appid, &body, delivery).await;
        if twice {
            delivery.duplicated += 1;
            lock(&self.counts).duplicated += 1;
            self.post(&event.appid, &body, &mut Delivery::default()).await;
        }
        if let Some((appid, body)) = self.held.take() {
            self.post(&appid, &body, delivery).await;
        }
    }

    /// One notice, answered 200 or sent again: at once, after one second, after two; then dropped.
    async fn post(&self, appid: &str, body: &str, delivery: &mut Delivery) {
        let (v1, v2) = sign(self.config.secret_of(appid), body.as_bytes());
        for pause in [0, 0, 1, 2] {
            tokio::time::sleep(Duration::from_secs(pause)).await;
            let turn = self.next_url.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(url) = self.config.urls.get(turn % self.config.urls.len().max(1)) else { break };
            let url = url.replace("{appid}", appid);
            let sent = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("agora-signature", &v1)
                .header("agora-signature-v2", &v2)
                .body(body.to_string())
                .send()
                .await;
            if sent.is_ok_and(|answer| answer.status() == reqwest::StatusCode::OK) {
                delivery.delivered += 1;
                lock(&self.counts).delivered += 1;
                return;
            }
        }
        delivery.dropped += 1;
        lock(&self.counts).dropped += 1;
    }
}

/// The body of a notice of an RTC event (`productId` 1).
fn notice(event: &ChannelEvent, rng: &mut fastrand::Rng) -> String {
    let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
        (0..n).map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0')).collect()
    };
    let notice_id = format!("{}-{}-{}-{}-{}", hex(rng, 8), hex(rng, 4), hex(rng, 4), hex(rng, 4), hex(rng, 12));
    let body = json!({
        "noticeId": notice_id,
        "productId": 1,
        "eventType": event.event_type,
        "notifyMs": chrono::Utc::now().timestamp_millis(),
        "sid": hex(rng, 32),
        "payload": event.payload,
    });
    body.to_string()
}

/// `(Agora-Signature, Agora-Signature-V2)` of a body: hex HMAC-SHA1 and HMAC-SHA256.
pub fn sign(secret: &str, body: &[u8]) -> (String, String) {
    let mut v1 = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    v1.update(body);
    let mut v2 = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    v2.update(body);
    (hex::encode(v1.finalize().into_bytes()), hex::encode(v2.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    /// Agora's own example of a signed notice.
    #[test]
    fn signs_agoras_test_vector() {
        let body = r#"{"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f","notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}"#;
        let (v1, v2) = super::sign("secret", body.as_bytes());
        assert_eq!(v1, "5a3bb6a6d9fad2ea9ae3fb707a14c9d7f3136df1");
        assert_eq!(v2, "de96da5acf03b0021ac3b4fa2225e7ae6f3533a30d50bb02c08ea4fa748bda24");
    }
}
