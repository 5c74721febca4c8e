//! Reconciliation: Agora's own answers correct what lost or late notices left wrong in a project's
//! book. One task per project:
//!
//! - when notices start (or come back after `silence_after` of silence), the book is **baselined**:
//!   every page of `list_channels`, then `list_channel_users` of each channel the book does not
//!   know as listed. Only then are reads answered from it;
//! - while notices come, every channel is polled every `reconcile_every`, and the channel list too;
//! - while none come, nothing is polled (reads go the usual way) and the book is no longer trusted.
//!
//! Every poll spends a slot of the budget, at low priority in the shared lane, and only when no
//! request of this replica is waiting for one: reconciliation takes idle slots only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use agora_console_client::types::{ChannelListResponse, ChannelUsersResponse};
use tokio::time::Instant;

use super::{Polled, Project, Role};
use crate::answer::Answer;
use crate::call::Call;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::operations::Operation;

/// A poll of Agora through the budget (low priority, idle slots).
pub(crate) type PollFn =
    Arc<dyn Fn(Call) -> Pin<Box<dyn Future<Output = Result<Answer, GatewayError>> + Send>> + Send + Sync>;

/// Whether this replica has nobody waiting for a slot.
pub(crate) type IdleFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// The generation of notices (`Notifications::generation`): a book baselined in an older one
/// may have missed notices.
pub(crate) type GenerationFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How often the task looks at its project.
const TICK: Duration = Duration::from_millis(200);
/// After a failed poll, wait this long before the next.
const BACK_OFF: Duration = Duration::from_secs(1);
/// At most this many users' properties are polled after one channel poll.
const LEARN_AT_MOST: usize = 20;
/// The page size of the channel list's polls (Agora's maximum).
const PAGE_SIZE: u32 = agora_console_client::rules::MAX_PAGE_SIZE;

pub(crate) struct Reconciler {
    pub(crate) project: Arc<Project>,
    pub(crate) poll: PollFn,
    pub(crate) idle: IdleFn,
    pub(crate) generation: GenerationFn,
    pub(crate) metrics: Arc<Metrics>,
}

impl Reconciler {
    /// Runs until `alive` says the gateway is gone.
    pub(crate) async fn run(self, alive: impl Fn() -> bool) {
        let mut listed_at: Option<Instant> = None;
        while alive() {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            let project = &self.project;
            if !project.heard(now) {
                // Silence: the book is no longer trusted, and nothing is polled for it.
                project.set_baselined(None);
                continue;
            }
            let every = project.reconcile_every;
            let generation = (self.generation)();
            let baselined = project.is_baselined(generation);
            if !baselined || listed_at.is_none_or(|at| now.saturating_duration_since(at) >= every) {
                match self.list().await {
                    Ok(()) => listed_at = Some(now),
                    Err(error) => {
                        tracing::debug!(appid = %project.appid, %error, "NCS reconciliation: the channel list failed");
                        tokio::time::sleep(BACK_OFF).await;
                        continue;
                    }
                }
                if !baselined {
                    project.set_baselined(Some(generation));
                    tracing::info!(appid = %project.appid, "NCS: channel reads of this project are answered from notices");
                }
            }
            let due = project.book().due(every, now);
            for cname in due {
                if let Err(error) = self.channel(&cname, true).await {
                    tracing::debug!(appid = %project.appid, %error, "NCS reconciliation: a channel poll failed");
                    tokio::time::sleep(BACK_OFF).await;
                    break;
                }
            }
            project.book().prune(now);
        }
    }

    /// One poll, when this replica has nobody waiting for a slot.
    async fn poll(&self, call: Call) -> Result<(Answer, Instant), String> {
        while !(self.idle)() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = Instant::now();
        self.metrics.ncs_reconcile_polls.inc();
        let answer = (self.poll)(call).await.map_err(|error| error.to_string())?;
        if answer.status != 200 {
            return Err(format!("Agora answered {}", answer.status));
        }
        if let Some(content_type) = answer.headers.get(http::header::CONTENT_TYPE) {
            *self.project.content_type.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                Some(content_type.clone());
        }
        Ok((answer, sent))
    }

    /// Every page of `list_channels`; then the users of each channel that is new to the book or of
    /// another count.
    async fn list(&self) -> Result<(), String> {
        let appid = self.project.appid.as_str();
        let (mut listed, mut page_no, mut first_sent) = (Vec::new(), 0u32, None);
        loop {
            let (page_no_text, page_size) = (page_no.to_string(), PAGE_SIZE.to_string());
            let params = [("appid", appid), ("page_no", page_no_text.as_str()), ("page_size", page_size.as_str())];
            let (answer, sent) = self.poll(Call::with(Operation::ListChannels, &params)).await?;
            first_sent.get_or_insert(sent);
            let page: ChannelListResponse = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
            let count = page.data.channels.len();
            listed.extend(page.data.channels.into_iter().map(|c| (c.channel_name, c.user_count.unwrap_or(0))));
            let total = page.data.total_size.map_or(usize::MAX, |total| usize::try_from(total).unwrap_or(0));
            if count < PAGE_SIZE as usize || listed.len() >= total {
                break;
            }
            page_no += 1;
        }
        let sent = first_sent.unwrap_or_else(Instant::now);
        let (corrections, due) = self.project.book().reconcile_list(&listed, sent);
        self.metrics.ncs_corrections.inc_by(corrections);
        // A baseline learns whole channels: their users' join times are learned when first asked.
        let learn = self.project.is_baselined((self.generation)());
        for cname in due {
            self.channel(&cname, learn).await?;
        }
        Ok(())
    }

    /// `list_channel_users` of one channel, and the book corrected by it; with `learn`, the join
    /// time and platform of the users it added too (a few: their join notices were lost).
    async fn channel(&self, cname: &str, learn: bool) -> Result<(), String> {
        let params = [("appid", self.project.appid.as_str()), ("cname", cname)];
        let (answer, sent) = self.poll(Call::with(Operation::ListChannelUsers, &params)).await?;
        let users: ChannelUsersResponse = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
        let data = users.data;
        let polled = data.channel_exist.then(|| {
            let mut users: Vec<(u32, Role)> = data.users.iter().map(|&uid| (uid, Role::Communication)).collect();
            users.extend(data.broadcasters.iter().map(|&uid| (uid, Role::Broadcaster)));
            users.extend(data.audience.iter().map(|&uid| (uid, Role::Audience)));
            let partial = data.audience_total.is_some_and(|total| total > data.audience.len() as i64);
            Polled { mode: data.mode, users, partial }
        });
        let (corrections, added) = self.project.book().reconcile(cname, polled, sent, Instant::now());
        if corrections > 0 {
            tracing::info!(appid = %self.project.appid, cname, corrections, "NCS reconciliation corrected a channel");
        }
        self.metrics.ncs_corrections.inc_by(corrections);
        for uid in added.into_iter().take(if learn { LEARN_AT_MOST } else { 0 }) {
            let uid_text = uid.to_string();
            let params = [("appid", self.project.appid.as_str()), ("uid", uid_text.as_str()), ("cname", cname)];
            let (answer, sent) = self.poll(Call::with(Operation::GetUserProperty, &params)).await?;
            let answer: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
            self.project.book().learn(cname, uid, &answer, sent);
        }
        Ok(())
    }
}
