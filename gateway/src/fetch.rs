//! Steps 6 and 7 of the pipeline for one request: a slot of its operation's budget (its tenant's
//! turn, by its deadline), then the call through the upstream, failing over between domains and
//! pausing the budget on Agora's 429. `pipeline.rs` plans it; a cache hit never gets here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::answer::Answer;
use crate::auth::Tenant;
use crate::call::Call;
use crate::error::GatewayError;
use crate::pipeline::Caller;
use crate::policy::Priority;
use crate::state::Gateway;
use crate::telemetry;
use crate::throttle::{Budgets, Promotion};
use crate::upstream::{Attempt, Retry, Upstream};

impl Gateway {
    /// How this request reaches the upstream: its tenant's turn in the budget, by its deadline.
    pub(crate) fn fetcher(&self, tenant: &Arc<Tenant>, deadline: Option<Instant>) -> Fetcher {
        Fetcher {
            throttle: self.throttle.clone(),
            upstream: self.upstream.clone(),
            tenant: tenant.clone(),
            deadline,
            caller: None,
            sent: None,
            priority: None,
            traced: false,
        }
    }

    /// A poll of Agora for the reconciliation of notices' channel state (`notify/reconcile.rs`):
    /// the gateway's own, at low priority, in the shared lane.
    pub(crate) async fn reconcile_poll(&self, call: Call) -> Result<Answer, GatewayError> {
        let promotion = Arc::new(Promotion::default());
        promotion.raise();
        let fetcher = Fetcher { priority: Some(Priority::Low), ..self.fetcher(&self.itself, None) };
        fetcher.fetch(call, Some(promotion)).await
    }
}

/// How one request would reach the upstream, should it need to: made into a [`Fetcher`] only
/// then (a cache hit takes no reference to the budgets, the upstream or the tenant).
#[derive(Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub(crate) gateway: &'a Gateway,
    pub(crate) tenant: &'a Arc<Tenant>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) traced: bool,
}

impl Plan<'_> {
    pub(crate) fn fetcher(&self) -> Fetcher {
        Fetcher { traced: self.traced, ..self.gateway.fetcher(self.tenant, self.deadline) }
    }
}

/// Steps 6 and 7 for one request: its tenant's turn in the budget, then the call.
#[derive(Clone)]
pub(crate) struct Fetcher {
    /// The budgets: the call spends its operation's.
    throttle: Budgets,
    upstream: Arc<Upstream>,
    tenant: Arc<Tenant>,
    /// The request's own deadline: it queues only as long as leaves time for the upstream call.
    deadline: Option<Instant>,
    /// A write's caller: gone before the first attempt is sent, the write is called off.
    caller: Option<Caller>,
    /// A write's attempts as they leave (for its audit event).
    sent: Option<Arc<Sending>>,
    /// Another priority than the operation's (the gateway's own background polls).
    priority: Option<Priority>,
    /// The request is traced: the wait for a slot and each attempt make their spans.
    traced: bool,
}

impl Fetcher {
    /// A write's: called off if `caller` goes before it is sent; its attempts noted in `sent`.
    pub(crate) fn for_write(self, caller: Option<Caller>, sent: Arc<Sending>) -> Self {
        Fetcher { caller, sent: Some(sent), ..self }
    }

    /// A slot, then the call. If Agora answers 429 anyway, the budget pauses (for its
    /// `Retry-After`, at most `upstream.max_retry_after`) and an idempotent read is tried once
    /// more, if a slot comes within its deadline. `promotion`: the call fills the cache, and moves
    /// to the shared lane of the budget when another tenant waits for it too.
    pub(crate) async fn fetch(mut self, call: Call, promotion: Option<Arc<Promotion>>) -> Result<Answer, GatewayError> {
        let promotion = promotion.as_deref();
        let policy = call.operation.policy();
        let budget = self.throttle.of(call.operation).clone();
        let queue_until = Instant::now() + budget.max_wait();
        let deadline = match self.deadline.and_then(|d| d.checked_sub(self.upstream.timeout())) {
            Some(latest) => latest.min(queue_until),
            None => queue_until,
        };
        let (mut attempts, mut paused) = (0, false);
        // The outcome of the last attempt, answered if no slot comes for the next one.
        let mut last: Option<Result<Answer, GatewayError>> = None;
        loop {
            // Every attempt spends a slot: Agora counts them all.
            let priority = self.priority.unwrap_or(policy.priority);
            let waiting = telemetry::child(self.traced, || {
                tracing::info_span!(target: telemetry::TARGET, "budget slot", gateway.priority = ?priority,
                    gateway.lane = Empty, gateway.queue.position = Empty, gateway.queue.depth = Empty)
            });
            let acquire = budget.acquire(&self.tenant, priority, deadline, promotion).instrument(waiting);
            let granted = match self.caller.as_mut().filter(|_| attempts == 0) {
                None => acquire.await,
                Some(caller) => tokio::select! {
                    granted = acquire => granted,
                    _ = caller.changed() => return Err(GatewayError::ClientClosed),
                },
            };
            match granted {
                Ok(permit) => permit.sending(),
                Err(refused) => return last.unwrap_or(Err(refused)),
            }
            attempts += 1;
            let Attempt { result, retry, domain } =
                self.upstream.execute(&call, self.traced.then_some(attempts as u32)).await;
            if let Some(sending) = &self.sent {
                sending.attempted(domain, retry != Retry::NotSent);
            }
            // Another domain: at once when the request was not sent; for a read, while its
            // deadline allows; a write that may have been sent is never sent twice.
            let fail_over = attempts < self.upstream.domains()
                && match retry {
                    Retry::NotSent => true,
                    Retry::IfIdempotent => policy.is_idempotent_read() && Instant::now() < deadline,
                    Retry::No => false,
                };
            if fail_over {
                last = Some(result);
                continue;
            }
            match result {
                // Agora answered 429 anyway: the budget pauses (for its `Retry-After`, at most
                // `upstream.max_retry_after`) and an idempotent read is tried once more.
                Err(GatewayError::Upstream(refused)) if refused.status.as_u16() == 429 && !paused => {
                    let pause =
                        refused.retry_after().unwrap_or(Duration::from_secs(1)).min(self.upstream.max_retry_after());
                    budget.pause(pause);
                    let too_late = Instant::now().checked_add(pause).is_none_or(|after| after >= deadline);
                    if !policy.is_idempotent_read() || too_late {
                        return Err(GatewayError::Upstream(refused));
                    }
                    paused = true;
                    last = Some(Err(GatewayError::Upstream(refused)));
                }
                result => return result,
            }
        }
    }
}

/// A write as it leaves: whether an attempt may have reached Agora, and the domain of the last.
#[derive(Default)]
pub(crate) struct Sending {
    sent: AtomicBool,
    domain: std::sync::Mutex<Option<&'static str>>,
}

impl Sending {
    /// The domain of its last attempt, if one was made.
    pub(crate) fn domain(&self) -> Option<&'static str> {
        *self.domain.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an attempt may have reached Agora.
    pub(crate) fn may_have_arrived(&self) -> bool {
        self.sent.load(Ordering::SeqCst)
    }

    fn attempted(&self, domain: &'static str, may_have_arrived: bool) {
        *self.domain.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(domain);
        if may_have_arrived {
            self.sent.store(true, Ordering::SeqCst);
        }
    }
}
