//! Channel state from Agora's Notifications service (NCS), for the projects that have a
//! `[[notifications]]` entry.
//!
//! - **Intake** (`POST /agora/ncs/{appid}`, [`Notifications::intake`]): the signature checked over
//!   the raw body (`signature.rs`), a `noticeId` seen before answered 200 and not applied again
//!   (remembered for an hour, at most `SEEN_CAPACITY` of them), the event applied to the
//!   project's [`Book`] (`book.rs`: each user's events in `clientSeq` order).
//! - **Reads** ([`Notifications::answer`]): while a project is live — its book was reconciled with
//!   Agora once since start, and a notice came within `silence_after` — `list_channel_users`,
//!   `list_channel_hosts`, `get_user_property` and `list_channels` for it are answered from the
//!   book, in Agora's shapes, with no upstream call. Otherwise they go the usual way (cache, then
//!   a budgeted poll).
//! - **Reconciliation** (`reconcile.rs`): polls of Agora in idle slots of the budget, every
//!   channel every `reconcile_every`, correct what lost notices left wrong.
//! - **Addresses** (`allow.rs`): with `allow_agora_ips`, a project's notices are let in only from
//!   Agora's NCS servers.
//! - **Several replicas** (`relay.rs`): each notice taken from Agora is passed on, sealed, through
//!   Redis, so every replica's books see every notice.

pub(crate) mod allow;
mod book;
mod event;
pub(crate) mod reconcile;
mod relay;
mod signature;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use tokio::time::Instant;

pub(crate) use book::{Book, Polled};
pub(crate) use event::Role;
use event::{Event, Notice};

use crate::call::Call;
use crate::config::NotificationsConfig;
use crate::error::GatewayError;
use crate::metrics::{Metrics, ResultLabels};
use crate::operations::Operation;
use allow::AgoraAddresses;
use relay::{Relay, Relayed};

/// At most this many `noticeId`s are remembered (for an hour each) to answer a resent one.
const SEEN_CAPACITY: u64 = 200_000;
const SEEN_FOR: Duration = Duration::from_secs(3600);

/// One project's notifications: its secret, its book and how fresh it is.
pub(crate) struct Project {
    pub(crate) appid: String,
    secret: Vec<u8>,
    pub(crate) reconcile_every: Duration,
    silence_after: Duration,
    /// Notices only from Agora's NCS servers' addresses.
    allow_agora_ips: bool,
    book: Mutex<Book>,
    /// When the last notice of this project was accepted.
    last_notice: Mutex<Option<Instant>>,
    /// The `Content-Type` of Agora's channel answers, as the last poll had it.
    pub(crate) content_type: Mutex<Option<http::HeaderValue>>,
    /// The generation of notices (see [`Notifications::generation`]) the book was last baselined
    /// in, plus one; 0: never.
    baselined: AtomicU64,
}

impl Project {
    pub(crate) fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A notice came within `silence_after`.
    pub(crate) fn heard(&self, now: Instant) -> bool {
        let last = *self.last_notice.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last.is_some_and(|at| now.saturating_duration_since(at) < self.silence_after)
    }

    /// The book was baselined since notices last could have been missed (`generation`).
    pub(crate) fn is_baselined(&self, generation: u64) -> bool {
        self.baselined.load(Ordering::SeqCst) == generation + 1
    }

    /// The book was baselined in `generation`; `None`: it is not trusted any more.
    pub(crate) fn set_baselined(&self, generation: Option<u64>) {
        self.baselined.store(generation.map_or(0, |generation| generation + 1), Ordering::SeqCst);
    }
}

/// What became of a notice that was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intake {
    Accepted,
    Duplicate,
}

pub(crate) struct Notifications {
    projects: HashMap<String, Arc<Project>>,
    seen: moka::sync::Cache<String, ()>,
    /// With several replicas: the notices each one takes, passed on to the others.
    relay: Option<Arc<Relay>>,
    /// The addresses of Agora's NCS servers, when a project takes notices from them alone.
    pub(crate) agora: Option<Arc<AgoraAddresses>>,
    metrics: Arc<Metrics>,
}

/// Where the relay of notices across replicas lives: `throttle.redis_url`, its key prefix, the
/// account's namespace, and the customer secret its seal is derived from.
pub(crate) struct RelayTerms<'a> {
    pub(crate) redis_url: &'a str,
    pub(crate) prefix: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) customer_secret: &'a str,
}

impl Notifications {
    pub(crate) fn new(
        configs: &[NotificationsConfig],
        relay: Option<RelayTerms<'_>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, crate::config::ConfigError> {
        let projects = configs
            .iter()
            .map(|config| {
                let project = Project {
                    appid: config.appid.clone(),
                    secret: config.secret.expose().as_bytes().to_vec(),
                    reconcile_every: config.reconcile_every,
                    silence_after: config.silence_after,
                    allow_agora_ips: config.allow_agora_ips,
                    book: Mutex::new(Book::default()),
                    last_notice: Mutex::new(None),
                    content_type: Mutex::new(None),
                    baselined: AtomicU64::new(0),
                };
                (config.appid.clone(), Arc::new(project))
            })
            .collect();
        let seen = moka::sync::Cache::builder().max_capacity(SEEN_CAPACITY).time_to_live(SEEN_FOR).build();
        let relay = match relay.filter(|_| !configs.is_empty()) {
            Some(terms) => {
                Some(Arc::new(Relay::new(terms.redis_url, terms.prefix, terms.namespace, terms.customer_secret)?))
            }
            None => None,
        };
        let agora = configs.iter().any(|config| config.allow_agora_ips).then(Arc::default);
        let notifications = Arc::new(Self { projects, seen, relay, agora, metrics });
        if let Some(relay) = &notifications.relay {
            relay::start(relay, Arc::downgrade(&notifications));
        }
        Ok(notifications)
    }

    /// Notices could have been missed before this: the relay's subscriptions so far (0 alone).
    pub(crate) fn generation(&self) -> u64 {
        self.relay.as_ref().map_or(0, |relay| relay.subscriptions.load(Ordering::SeqCst))
    }

    /// Reads are answered from `project`'s book: it was baselined since notices last could have
    /// been missed, every notice reaches this replica, and notices keep coming.
    fn is_live(&self, project: &Project, now: Instant) -> bool {
        let relayed = self.relay.as_ref().is_none_or(|relay| relay.is_subscribed());
        relayed && project.is_baselined(self.generation()) && project.heard(now)
    }

    pub(crate) fn projects(&self) -> impl Iterator<Item = &Arc<Project>> {
        self.projects.values()
    }

    fn count(&self, result: &'static str) {
        self.metrics.ncs_notices.get_or_create(&ResultLabels { result }).inc();
    }

    /// One notice for `appid`: from an allowed address (if the project says so; `peer`: where it
    /// came from, when the listener tells), verified, then applied unless it was seen before.
    pub(crate) async fn intake(
        &self,
        appid: &str,
        headers: &HeaderMap,
        body: &[u8],
        peer: Option<std::net::IpAddr>,
    ) -> Result<Intake, GatewayError> {
        let Some(project) = self.projects.get(appid) else {
            self.count("refused");
            return Err(GatewayError::not_found("no [[notifications]] entry for this App ID"));
        };
        if project.allow_agora_ips
            && let Some(agora) = &self.agora
            && let Err(refused) = agora.admits(peer)
        {
            self.count("refused");
            return Err(refused);
        }
        if let Err(refused) = signature::verify(&project.secret, headers, body) {
            self.count("refused");
            return Err(GatewayError::BadSignature(refused.message().into()));
        }
        let (notice, event) = match read(body) {
            Ok(read) => read,
            Err(message) => {
                self.count("refused");
                return Err(GatewayError::bad_request(message));
            }
        };
        let Some(seen) = self.first_time(appid, &notice) else {
            self.count("duplicate");
            return Ok(Intake::Duplicate);
        };
        if let Some(relay) = &self.relay
            && let Err(error) = relay.publish(appid, body).await
        {
            // Agora sends it again; then it is new again.
            self.seen.invalidate(&seen);
            self.count("unrelayed");
            tracing::warn!(%error, "could not pass an NCS notice on to the other replicas: answered 503");
            return Err(GatewayError::Unavailable("the notice could not be passed on to every replica".into()));
        }
        self.apply(project, &notice, event);
        self.count("accepted");
        Ok(Intake::Accepted)
    }

    fn apply(&self, project: &Project, notice: &Notice, event: Event) {
        let now = Instant::now();
        if event != Event::Other {
            project.book().apply(event, now);
        }
        *project.last_notice.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(now);
        tracing::debug!(appid = %project.appid, event_type = notice.event_type, "NCS notice applied");
    }

    /// A notice another replica took from Agora (its signature was checked there).
    fn apply_relayed(&self, relayed: &Relayed) {
        let Some(project) = self.projects.get(&relayed.appid) else { return };
        let Ok((notice, event)) = read(&relayed.body) else { return };
        if self.first_time(&relayed.appid, &notice).is_some() {
            self.apply(project, &notice, event);
            self.count("relayed");
        }
    }

    /// The notice's key among those seen, if it was not seen before (it is now).
    fn first_time(&self, appid: &str, notice: &Notice) -> Option<String> {
        let key = format!("{appid}/{}", notice.notice_id);
        self.seen.entry(key.clone()).or_insert(()).is_fresh().then_some(key)
    }

    /// Agora's answer to `get_user_property` (sent at `sent`), for a user the book has by a poll
    /// alone: its join time and platform, so the next such read is answered from the book.
    pub(crate) fn learn(&self, call: &Call, body: &[u8], sent: Instant) {
        if call.operation != Operation::GetUserProperty {
            return;
        }
        let Some(project) = call.get("appid").and_then(|appid| self.projects.get(appid)) else { return };
        let (Some(uid), Some(cname)) = (call.get("uid").and_then(|uid| uid.parse().ok()), call.get("cname")) else {
            return;
        };
        if let Ok(answer) = serde_json::from_slice(body) {
            project.book().learn(cname, uid, &answer, sent);
        }
    }

    /// A channel read answered from a live project's book: Agora's JSON body, and the
    /// `Content-Type` Agora gives it.
    pub(crate) fn answer(&self, call: &Call) -> Option<(Bytes, Option<http::HeaderValue>)> {
        if !may_answer(call.operation) {
            return None;
        }
        let project = self.projects.get(call.get("appid")?)?;
        if !self.is_live(project, Instant::now()) {
            return None;
        }
        let book = project.book();
        let cname = || call.get("cname").unwrap_or_default();
        let number = |name: &str, default: usize| call.get(name).map_or(Some(default), |text| text.parse().ok());
        let body = match call.operation {
            Operation::ListChannelUsers => book.channel_users(cname(), false),
            Operation::ListChannelHosts => book.channel_users(cname(), true),
            Operation::GetUserProperty => book.user_property(call.get("uid")?.parse().ok()?, cname())?,
            Operation::ListChannels => {
                let default_size = agora_console_client::rules::DEFAULT_PAGE_SIZE as usize;
                book.list_channels(number("page_no", 0)?, number("page_size", default_size)?)
            }
            _ => return None,
        };
        drop(book);
        self.metrics.ncs_reads.inc();
        let content_type = project.content_type.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        Some((Bytes::from(body.to_string()), content_type))
    }
}

/// A notice's body read, with its channel event, or what is wrong with it.
fn read(body: &[u8]) -> Result<(Notice, Event), String> {
    let notice: Notice =
        serde_json::from_slice(body).map_err(|error| format!("the notice is not an NCS notice: {error}"))?;
    let event = notice.event()?;
    Ok((notice, event))
}

/// Whether the channel state may answer `operation` (a channel read), for some project.
pub(crate) fn may_answer(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::ListChannelUsers
            | Operation::ListChannelHosts
            | Operation::GetUserProperty
            | Operation::ListChannels
    )
}
