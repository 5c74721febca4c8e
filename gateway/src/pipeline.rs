//! Steps 4 to 8 of the pipeline for one validated request ([`serve`]): authorize (scope, then
//! ownership), the cache for reads (coalesced on a miss), a slot of the budget, the upstream call
//! through the generated dispatch, and egress — the answer cut down to the tenant. Routes and
//! admin handlers call it; it calls down into the steps' modules and never back up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::answer::Answer;
use crate::audit::{MaybeDone, ServedBy};
use crate::auth::{Principal, Tenant};
use crate::authorize::{self, Decision, Directory};
use crate::cache::{CacheStatus, Entry, Outcome, Read};
use crate::call::Call;
use crate::egress;
use crate::error::GatewayError;
use crate::fields;
use crate::operations::Operation;
use crate::policy::{CacheClass, Invalidation, Priority, Scope};
use crate::respond::{Cached, answer_response, from_notices};
use crate::state::Gateway;
use crate::telemetry;
use crate::throttle::{Budgets, Promotion};
use crate::upstream::{Attempt, Retry, Upstream};

/// The caller of a write, while it waits: the sender is dropped when it goes away.
pub(crate) type Caller = tokio::sync::watch::Receiver<()>;

/// How the client wants its request handled: `refresh` when it sent `Cache-Control: no-cache` (or
/// `Pragma: no-cache`); `deadline`, the edge's, by when it must be answered; `traced`, the steps
/// make their spans (`telemetry/`).
#[derive(Clone, Copy)]
pub(crate) struct Directives {
    pub(crate) refresh: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) traced: bool,
}

/// Steps 4 to 8 for one validated request; errors become their responses here. `caller`, for a
/// write: closed when the caller goes away, which calls the write off if it was not sent yet.
pub(crate) async fn serve(
    gateway: &Arc<Gateway>,
    principal: Arc<Principal>,
    call: Call,
    directives: Directives,
    caller: Option<Caller>,
) -> Response {
    let operation = call.operation;
    let write = operation.policy().cache.is_none();
    let sending = write.then(|| Arc::new(Sending::default()));
    let mut response = match gateway.pipeline(&principal, call, directives, caller, sending.clone()).await {
        Ok(response) => response,
        Err(error) => {
            let status = fields::CacheStatus::of_error(&error, write);
            let mut response = error.into_response();
            fields::set_cache_status(response.headers_mut(), status);
            response
        }
    };
    // Where a write went, for its audit event (an error answer of Agora's too).
    if let Some(domain) = sending.and_then(|sending| *sending.domain.lock().unwrap_or_else(|p| p.into_inner())) {
        response.extensions_mut().insert(ServedBy(domain));
    }
    // The budget, and the caller's lane in it, on every answer (a 429 of ours too).
    let [policy, rate_limit] = gateway.throttle.rate_limit_fields(&principal.tenant, operation);
    let headers = response.headers_mut();
    headers.insert(fields::RATELIMIT_POLICY.clone(), policy);
    headers.insert(fields::RATELIMIT.clone(), rate_limit);
    response
}

impl Gateway {
    async fn pipeline(
        self: &Arc<Self>,
        principal: &Arc<Principal>,
        call: Call,
        directives: Directives,
        caller: Option<Caller>,
        sending: Option<Arc<Sending>>,
    ) -> Result<Response, GatewayError> {
        let policy = call.operation.policy();
        let refresh = directives.refresh;
        let traced = directives.traced;
        let upstream = Fetcher { traced, ..self.fetcher(&principal.tenant, directives.deadline) };
        // 4. authorize
        authorize::require_scope(principal, policy)?;
        let directory = ProjectDirectory { gateway: self, upstream: &upstream };
        let call = match authorize::check_ownership(&directory, principal, policy, call).await? {
            Decision::Send(call) => call,
            Decision::Answer(body) => {
                let mut response = Response::new(Body::from(body));
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                // None of the tenant's projects: answered here, nothing asked.
                let status = fields::CacheStatus { detail: Some("no-projects"), ..Default::default() };
                fields::set_cache_status(response.headers_mut(), status);
                return Ok(response);
            }
        };
        match policy.cache {
            // 5. cache, 6-7 on a miss, 8. egress
            Some(class) => {
                if !refresh && let Some(response) = self.project_from_list(principal, &call).await? {
                    return Ok(response);
                }
                // A channel read of a project whose channel state comes from notices.
                if !refresh && let Some((body, content_type)) = self.notifications.answer(&call) {
                    return Ok(from_notices(body, content_type));
                }
                // Agora's answer about a user teaches the notices' state its join time.
                let learn = (call.operation == Operation::GetUserProperty).then(|| (call.clone(), Instant::now()));
                let (entry, outcome) = self.read(upstream, call, class, refresh, principal.tenant.index).await?;
                let _egress = egress_span(traced);
                if let Some((call, asked)) = learn
                    && entry.answer.status == 200
                    // Fetched for this read, not a copy from before it.
                    && Instant::now().checked_sub(entry.age()).is_some_and(|fetched| fetched >= asked)
                {
                    self.notifications.learn(&call, &entry.answer.body, asked);
                }
                let body = egress::render(principal, policy.ownership, &entry.answer.body, &entry.views)?;
                let cached = Cached { outcome, age: entry.age(), ttl: self.cache.ttl(class) };
                Ok(answer_response(&entry.answer, body, Some(cached)))
            }
            // 6-7, invalidation, 8.
            None => {
                let operation = call.operation;
                let sent = sending.unwrap_or_default();
                let fetcher = Fetcher { caller, sent: Some(sent.clone()), ..upstream };
                let result = fetcher.fetch(call.clone(), None).await;
                // A write refused or called off before it was sent changed nothing; any other
                // outcome may have.
                if !matches!(result, Err(GatewayError::Throttled { .. } | GatewayError::ClientClosed)) {
                    self.invalidate(&call, policy.invalidates).await;
                }
                let answered = (|| {
                    let entry = Entry::new(operation, result?)?;
                    let _egress = egress_span(traced);
                    let body = egress::render(principal, policy.ownership, &entry.answer.body, &entry.views)?;
                    Ok(answer_response(&entry.answer, body, None))
                })();
                match answered {
                    // Sent, and what came back is not Agora's own answer (a broken connection, an
                    // answer that cannot be read or passed on): it may have been done.
                    Err(error @ (GatewayError::BadGateway(_) | GatewayError::Internal(_)))
                        if sent.sent.load(Ordering::SeqCst) =>
                    {
                        let mut response = error.into_response();
                        response.extensions_mut().insert(MaybeDone);
                        Ok(response)
                    }
                    answered => answered,
                }
            }
        }
    }

    /// How this request reaches the upstream: its tenant's turn in the budget, by its deadline.
    fn fetcher(&self, tenant: &Arc<Tenant>, deadline: Option<Instant>) -> Fetcher {
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

    /// A read through the cache: fresh, or one coalesced upstream call (for the whole cluster,
    /// with Redis), or stale.
    async fn read(
        &self,
        upstream: Fetcher,
        call: Call,
        class: CacheClass,
        refresh: bool,
        tenant: usize,
    ) -> Result<(Arc<Entry>, Outcome), GatewayError> {
        let read = Read {
            key: call.cache_key(),
            operation: call.operation,
            class,
            refresh,
            tenant,
            // Usage answers stay with each replica; `get_project` is answered from the list
            // first, so what reaches the shared tier are lists and channel answers.
            shared: class != CacheClass::Usage,
            // Another replica's fill may queue for a slot and then take the upstream's timeout.
            wait_for_others: self.throttle.max_wait() + self.upstream.timeout(),
            traced: upstream.traced,
        };
        let fill = move |promotion: Arc<Promotion>| async move { upstream.fetch(call, Some(promotion)).await };
        self.cache.read(read, fill).await
    }

    /// `get_project` answered from a fresh cached project list, when the project is in it (in the
    /// document's shape, `{"project": [...]}`, with the list's status).
    async fn project_from_list(&self, principal: &Principal, call: &Call) -> Result<Option<Response>, GatewayError> {
        if call.operation != Operation::GetProject {
            return Ok(None);
        }
        let (id, name) = (call.get("id"), call.get("name"));
        let Some(list) = self.cache.fresh(&Call::new(Operation::ListProjects).cache_key(), CacheClass::Project).await
        else {
            return Ok(None);
        };
        let Some(item) = list.projects().iter().find(|item| item.is_asked_for(id, name)) else {
            return Ok(None);
        };
        if !principal.owns(&item.id, &item.name) {
            return Err(GatewayError::not_found("project not found"));
        }
        self.cache.record(CacheClass::Project, CacheStatus::Hit);
        let body = egress::projects::single(item, principal.has(Scope::ProjectsSecrets));
        let outcome = Outcome { status: CacheStatus::Hit, shared: false, collapsed: false, failed_with: None };
        let cached = Cached { outcome, age: list.age(), ttl: self.cache.ttl(CacheClass::Project) };
        Ok(Some(answer_response(&list.answer, body, Some(cached))))
    }

    async fn invalidate(&self, call: &Call, invalidation: Invalidation) {
        match invalidation {
            Invalidation::Nothing => {}
            Invalidation::Project => self.cache.invalidate_project(call.value("id").unwrap_or_default()).await,
            Invalidation::KickingRules => {
                let appid = call.value("appid").unwrap_or_default();
                let rules = Call::with(Operation::ListKickingRules, &[("appid", appid)]);
                self.cache.invalidate_key(&rules.cache_key(), CacheClass::Channel).await;
            }
        }
    }
}

/// The project list through the cache, as the ownership checks see it.
struct ProjectDirectory<'a> {
    gateway: &'a Arc<Gateway>,
    upstream: &'a Fetcher,
}

impl Directory for ProjectDirectory<'_> {
    async fn projects(&self, refresh: bool) -> Result<Arc<Entry>, GatewayError> {
        let list = Call::new(Operation::ListProjects);
        let read =
            self.gateway.read(self.upstream.clone(), list, CacheClass::Project, refresh, self.upstream.tenant.index);
        read.await.map(|(entry, _)| entry)
    }

    async fn catch_up(&self) -> bool {
        self.gateway.cache.catch_up().await
    }

    async fn kicking_rules(&self, appid: &str, refresh: bool) -> Result<Arc<Entry>, GatewayError> {
        let rules = Call::with(Operation::ListKickingRules, &[("appid", appid)]);
        let tenant = self.upstream.tenant.index;
        let read = self.gateway.read(self.upstream.clone(), rules, CacheClass::Channel, refresh, tenant);
        read.await.map(|(entry, _)| entry)
    }
}

/// Steps 6 and 7 for one request: its tenant's turn in the budget, then the call.
#[derive(Clone)]
struct Fetcher {
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
    /// A slot, then the call. If Agora answers 429 anyway, the budget pauses (for its
    /// `Retry-After`, at most `upstream.max_retry_after`) and an idempotent read is tried once
    /// more, if a slot comes within its deadline. `promotion`: the call fills the cache, and moves
    /// to the shared lane of the budget when another tenant waits for it too.
    async fn fetch(mut self, call: Call, promotion: Option<Arc<Promotion>>) -> Result<Answer, GatewayError> {
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
    fn attempted(&self, domain: &'static str, may_have_arrived: bool) {
        *self.domain.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(domain);
        if may_have_arrived {
            self.sent.store(true, Ordering::SeqCst);
        }
    }
}

/// The span of egress (entered while the answer is cut down), when the request is traced.
fn egress_span(traced: bool) -> tracing::span::EnteredSpan {
    telemetry::child(traced, || tracing::info_span!(target: telemetry::TARGET, "egress")).entered()
}
