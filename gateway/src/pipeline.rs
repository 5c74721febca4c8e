//! Steps 4 to 8 of the pipeline for one validated request ([`serve`]): authorize (scope, then
//! ownership), the cache for reads (coalesced on a miss), a slot of the budget and the upstream
//! call through the generated dispatch (`fetch.rs`), and egress — the answer cut down to the tenant. Routes and
//! admin handlers call it; it calls down into the steps' modules and never back up.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::audit::{MaybeDone, ServedBy};
use crate::auth::Principal;
use crate::authorize::{self, Decision, Directory};
use crate::cache::{CacheStatus, Entry, Outcome, Read};
use crate::call::Call;
use crate::egress;
use crate::error::GatewayError;
use crate::fetch::{Plan, Sending};
use crate::fields;
use crate::memo;
use crate::operations::Operation;
use crate::policy::{CacheClass, Invalidation, Scope};
use crate::respond::{Cached, answer_response, from_notices};
use crate::state::Gateway;
use crate::telemetry;
use crate::throttle::Promotion;

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
    if let Some(domain) = sending.and_then(|sending| sending.domain()) {
        response.extensions_mut().insert(ServedBy(domain));
    }
    add_rate_limit(gateway, &principal, operation, &mut response, std::time::Instant::now());
    response
}

/// The budget, and the caller's lane in it as of `now`, on every answer (a 429 of ours too).
pub(crate) fn add_rate_limit(
    gateway: &Gateway,
    principal: &Principal,
    operation: Operation,
    response: &mut Response,
    now: std::time::Instant,
) {
    let [policy, rate_limit] = gateway.throttle.rate_limit_fields(&principal.tenant, operation, now);
    let headers = response.headers_mut();
    headers.insert(fields::RATELIMIT_POLICY.clone(), policy);
    headers.insert(fields::RATELIMIT.clone(), rate_limit);
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
        // How this request reaches the upstream, should it need to (a hit does not).
        let upstream = Plan { gateway: self, tenant: &principal.tenant, deadline: directives.deadline, traced };
        // 4. authorize
        authorize::require_scope(principal, policy)?;
        let directory = ProjectDirectory { gateway: self, upstream };
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
                if outcome == Outcome::of(CacheStatus::Hit) {
                    memo::answered(&entry, class, &body);
                }
                let cached = Cached { outcome, age: entry.age(), ttl: self.cache.ttl(class) };
                Ok(answer_response(&entry.answer, body, Some(cached)))
            }
            // 6-7, invalidation, 8.
            None => {
                let operation = call.operation;
                let sent = sending.unwrap_or_default();
                let fetcher = upstream.fetcher().for_write(caller, sent.clone());
                // Boxed: the upstream call's future is large, and reads (most requests) should not
                // carry or move it.
                let result = Box::pin(fetcher.fetch(call.clone(), None)).await;
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
                        if sent.may_have_arrived() =>
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

    /// A read through the cache: fresh, or one coalesced upstream call (for the whole cluster,
    /// with Redis), or stale.
    async fn read(
        &self,
        upstream: Plan<'_>,
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
        let fill = move |promotion: Arc<Promotion>| {
            let upstream = upstream.fetcher();
            async move { upstream.fetch(call, Some(promotion)).await }
        };
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
        memo::answered(&list, CacheClass::Project, &body);
        let cached = Cached::hit(list.age(), self.cache.ttl(CacheClass::Project));
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
    upstream: Plan<'a>,
}

impl Directory for ProjectDirectory<'_> {
    async fn projects(&self, refresh: bool) -> Result<Arc<Entry>, GatewayError> {
        let list = Call::new(Operation::ListProjects);
        let read = self.gateway.read(self.upstream, list, CacheClass::Project, refresh, self.upstream.tenant.index);
        read.await.map(|(entry, _)| entry)
    }

    async fn catch_up(&self) -> bool {
        self.gateway.cache.catch_up().await
    }

    async fn kicking_rules(&self, appid: &str, refresh: bool) -> Result<Arc<Entry>, GatewayError> {
        let rules = Call::with(Operation::ListKickingRules, &[("appid", appid)]);
        let tenant = self.upstream.tenant.index;
        let read = self.gateway.read(self.upstream, rules, CacheClass::Channel, refresh, tenant);
        read.await.map(|(entry, _)| entry)
    }
}

/// The span of egress (entered while the answer is cut down), when the request is traced.
fn egress_span(traced: bool) -> tracing::span::EnteredSpan {
    telemetry::child(traced, || tracing::info_span!(target: telemetry::TARGET, "egress")).entered()
}
