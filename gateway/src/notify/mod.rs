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

mod book;
mod event;
pub(crate) mod reconcile;
mod signature;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// At most this many `noticeId`s are remembered (for an hour each) to answer a resent one.
const SEEN_CAPACITY: u64 = 200_000;
const SEEN_FOR: Duration = Duration::from_secs(3600);

/// One project's notifications: its secret, its book and how fresh it is.
pub(crate) struct Project {
    pub(crate) appid: String,
    secret: Vec<u8>,
    pub(crate) reconcile_every: Duration,
    silence_after: Duration,
    book: Mutex<Book>,
    /// When the last notice of this project was accepted.
    last_notice: Mutex<Option<Instant>>,
    /// The book was reconciled with Agora's channel list once since start.
    pub(crate) baselined: AtomicBool,
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

    /// Reads are answered from the book: it was baselined, and notices keep coming.
    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.baselined.load(Ordering::SeqCst) && self.heard(now)
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
    /// Reads may be answered from the books (not in a fleet without a relay of the notices).
    serve_reads: bool,
    metrics: Arc<Metrics>,
}

impl Notifications {
    pub(crate) fn new(configs: &[NotificationsConfig], serve_reads: bool, metrics: Arc<Metrics>) -> Self {
        let projects = configs
            .iter()
            .map(|config| {
                let project = Project {
                    appid: config.appid.clone(),
                    secret: config.secret.expose().as_bytes().to_vec(),
                    reconcile_every: config.reconcile_every,
                    silence_after: config.silence_after,
                    book: Mutex::new(Book::default()),
                    last_notice: Mutex::new(None),
                    baselined: AtomicBool::new(false),
                };
                (config.appid.clone(), Arc::new(project))
            })
            .collect();
        let seen = moka::sync::Cache::builder().max_capacity(SEEN_CAPACITY).time_to_live(SEEN_FOR).build();
        Self { projects, seen, serve_reads, metrics }
    }

    pub(crate) fn projects(&self) -> impl Iterator<Item = &Arc<Project>> {
        self.projects.values()
    }

    fn count(&self, result: &'static str) {
        self.metrics.ncs_notices.get_or_create(&ResultLabels { result }).inc();
    }

    /// One notice for `appid`: verified, then applied unless it was seen before.
    pub(crate) fn intake(&self, appid: &str, headers: &HeaderMap, body: &[u8]) -> Result<Intake, GatewayError> {
        let Some(project) = self.projects.get(appid) else {
            self.count("refused");
            return Err(GatewayError::not_found("no [[notifications]] entry for this App ID"));
        };
        if let Err(refused) = signature::verify(&project.secret, headers, body) {
            self.count("refused");
            return Err(GatewayError::Unauthorized(refused.message().into()));
        }
        let read = serde_json::from_slice::<Notice>(body)
            .map_err(|error| format!("the notice is not an NCS notice: {error}"))
            .and_then(|notice| notice.event().map(|event| (notice, event)));
        let (notice, event) = match read {
            Ok(read) => read,
            Err(message) => {
                self.count("refused");
                return Err(GatewayError::bad_request(message));
            }
        };
        if !self.seen.entry(format!("{appid}/{}", notice.notice_id)).or_insert(()).is_fresh() {
            self.count("duplicate");
            return Ok(Intake::Duplicate);
        }
        let now = Instant::now();
        if event != Event::Other {
            project.book().apply(event, now);
        }
        *project.last_notice.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(now);
        self.count("accepted");
        tracing::debug!(appid, event_type = notice.event_type, "NCS notice applied");
        Ok(Intake::Accepted)
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

    /// A channel read answered from a live project's book: Agora's JSON body.
    pub(crate) fn answer(&self, call: &Call) -> Option<Bytes> {
        if !self.serve_reads {
            return None;
        }
        let project = self.projects.get(call.get("appid")?)?;
        if !project.is_live(Instant::now()) {
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
        Some(Bytes::from(body.to_string()))
    }
}
