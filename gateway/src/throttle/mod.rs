//! Step 6 of the pipeline: the upstream budget (one per budget group, `groups.rs`; by default
//! one for every operation). A request asks for a slot of its operation's budget; it is admitted to
//! the fair queue (or refused at once with 429 and `Retry-After`) and waits. One dispatcher task
//! takes slots — from the local GCRA, or from the shared GCRA in Redis when replicas share the
//! budget — and gives each to the request the fair queue picks. Cache hits never come here.
//!
//! The request reports when it actually leaves ([`Permit::sending`]); the next slot is counted
//! from then — locally, and across replicas through Redis — so a request that was scheduled late
//! cannot end up closer than one interval to the next one.
//!
//! A cache fill that several tenants wait for is nobody's: once a second tenant joins it
//! ([`Promotion`]), its request leaves the lane of the tenant that started it for a lane of its
//! own, which takes its turn beside the tenants' lanes — one tenant's backlog cannot hold up an
//! answer every tenant needs — and it still spends exactly one slot.

mod cluster;
mod dispatch;
mod fair;
mod gcra;
mod groups;
mod permit;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::auth::Tenant;
use crate::config::ThrottleConfig;
use crate::error::GatewayError;
use crate::metrics::{Metrics, TenantLabels};
use crate::policy::Priority;
pub(crate) use cluster::ClusterBudget;
use fair::{FairQueue, Pace};
pub(crate) use gcra::{Gcra, interval_for};
pub(crate) use groups::{Budgets, Source};
use permit::{DEPARTURE_REPORT_WAIT, Grant, Waiter};
pub(crate) use permit::{Permit, Promotion};

/// Where slots come from.
enum Slots {
    Local(Mutex<Gcra>),
    Cluster(Arc<ClusterBudget>),
}

/// The longest pause of the budget, whatever the upstream says (`upstream.max_retry_after`, which
/// the caller applies first, is at most this too).
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(86_400);

struct Shared {
    queue: Mutex<FairQueue<Waiter>>,
    /// The lane of shared fills (after the tenants' lanes).
    shared_lane: usize,
    /// Wakes the dispatcher: work arrived, or the throttle was dropped.
    work: Arc<Notify>,
    slots: Slots,
    /// The local slot spacing and the longest queueing (a reload may change them).
    pacing: std::sync::RwLock<(Duration, Duration)>,
    /// This budget's rate, as `RateLimit-Policy` says it (a reload may change it).
    policy_rate: std::sync::atomic::AtomicU32,
    named: Named,
    /// The queue's depth as last added to the depth gauge (which sums every budget's).
    depth: std::sync::atomic::AtomicI64,
    metrics: Arc<Metrics>,
}

/// Which budget this is: its name (`RateLimit-Policy`, the logs) and its place among the budgets
/// (the default is 0), which picks its memo of each tenant's `RateLimit`.
pub(crate) struct Named {
    pub(crate) name: Arc<str>,
    pub(crate) index: usize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.work.notify_one();
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, FairQueue<Waiter>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Interval the queue can count on: the whole budget locally; in a cluster, the share of it
    /// this replica gets while the other busy replicas take theirs.
    fn pace(&self, now: Instant) -> Pace {
        let (local_interval, max_wait) = self.pacing();
        let (next_slot, interval) = match &self.slots {
            Slots::Local(gcra) => (lock(gcra).next_slot(now.into_std()), local_interval),
            Slots::Cluster(cluster) => (cluster.next_slot(now).into_std(), cluster.effective_interval()),
        };
        Pace { next_slot, interval, max_wait }
    }

    fn pacing(&self) -> (Duration, Duration) {
        *self.pacing.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queue holds `len` requests now (called under its lock).
    fn report_depth(&self, len: usize) {
        let len = len as i64;
        let before = self.depth.swap(len, std::sync::atomic::Ordering::Relaxed);
        self.metrics.throttle_queue_depth.inc_by(len - before);
    }
}

/// A request of a tenant a reload removed, still waiting or arriving late.
fn tenant_removed() -> GatewayError {
    GatewayError::Unauthorized("the token's tenant was removed from the gateway's configuration".into())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The upstream budget: cheap to clone, one dispatcher per budget.
#[derive(Clone)]
pub(crate) struct Throttle {
    shared: Arc<Shared>,
}

impl Throttle {
    /// A budget of this process alone.
    pub(crate) fn local(config: &ThrottleConfig, named: Named, tenants: &[Arc<Tenant>], metrics: Arc<Metrics>) -> Self {
        let interval = interval_for(config.rate, config.burst, config.safety_margin);
        let gcra = Gcra::new(interval, config.burst, Instant::now().into_std());
        Self::start(Slots::Local(Mutex::new(gcra)), interval, config, named, tenants, metrics)
    }

    /// A budget shared with every replica through Redis.
    pub(crate) fn cluster(
        config: &ThrottleConfig,
        cluster: Arc<ClusterBudget>,
        named: Named,
        tenants: &[Arc<Tenant>],
        metrics: Arc<Metrics>,
    ) -> Self {
        let interval = interval_for(config.rate, config.burst, config.safety_margin);
        Self::start(Slots::Cluster(cluster), interval, config, named, tenants, metrics)
    }

    fn start(
        slots: Slots,
        interval: Duration,
        config: &ThrottleConfig,
        named: Named,
        tenants: &[Arc<Tenant>],
        metrics: Arc<Metrics>,
    ) -> Self {
        // One lane per tenant, and one for shared fills, weighted as the heaviest tenant.
        let mut weights: Vec<u32> = tenants.iter().map(|t| t.weight).collect();
        weights.push(weights.iter().copied().max().unwrap_or(1));
        let shared_lane = tenants.len();
        let shared = Arc::new(Shared {
            shared_lane,
            queue: Mutex::new(FairQueue::new(&weights)),
            work: Arc::new(Notify::new()),
            slots,
            pacing: std::sync::RwLock::new((interval, config.max_wait)),
            policy_rate: config.rate.into(),
            named,
            depth: 0.into(),
            metrics,
        });
        tokio::spawn(dispatch::dispatch(Arc::downgrade(&shared), shared.work.clone()));
        Self { shared }
    }

    pub(crate) fn max_wait(&self) -> Duration {
        self.shared.pacing().1
    }

    /// `RateLimit-Policy` and `RateLimit` for `tenant`: this budget of the deployment; how many
    /// more requests its lane may have waiting (its share of a `max_wait` window, less what it has
    /// waiting); and the whole seconds until the next slot. The latter is worked out at most every
    /// 50 ms per tenant and budget (it takes the queue's lock): a cache hit reads it.
    pub(crate) fn rate_limit_fields(&self, tenant: &Tenant, now: std::time::Instant) -> [http::HeaderValue; 2] {
        let Named { name, index } = &self.shared.named;
        let rate = self.shared.policy_rate.load(std::sync::atomic::Ordering::Relaxed);
        let memo = &tenant.rate_limit[*index];
        let (remaining, reset) = match memo.get(now) {
            Some(memo) => memo,
            None => memo.set(now, self.rate_limit_now(tenant, now)),
        };
        [crate::fields::policy(name, rate), crate::fields::rate_limit(name, remaining, reset)]
    }

    fn rate_limit_now(&self, tenant: &Tenant, now: std::time::Instant) -> (u64, u64) {
        let shared = &self.shared;
        let pace = shared.pace(Instant::from_std(now));
        let remaining = {
            let queue = shared.queue();
            match queue.is_retired(tenant.index) {
                true => 0,
                false => queue.share(tenant.index, now, &pace).saturating_sub(queue.waiting(tenant.index)),
            }
        };
        let next = pace.next_slot.saturating_duration_since(now);
        (remaining as u64, next.as_secs() + u64::from(next.subsec_nanos() > 0))
    }

    /// Nobody of this replica waits for a slot (background polls take only such slots).
    pub(crate) fn is_idle(&self) -> bool {
        self.shared.queue().is_empty()
    }

    /// A reload: the new rate, burst, margin and `max_wait`, and the tenants' lanes — kept, new,
    /// re-weighted; a removed tenant's waiting requests are answered at once (401: the tenant is
    /// gone), and its lane admits nothing more.
    pub(crate) fn reconfigure(&self, config: &ThrottleConfig, lanes: &crate::auth::LaneChanges) {
        let shared = &self.shared;
        let interval = interval_for(config.rate, config.burst, config.safety_margin);
        *shared.pacing.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = (interval, config.max_wait);
        shared.policy_rate.store(config.rate, std::sync::atomic::Ordering::Relaxed);
        match &shared.slots {
            Slots::Local(gcra) => lock(gcra).reconfigure(interval, config.burst, Instant::now().into_std()),
            Slots::Cluster(cluster) => cluster.reconfigure(config),
        }
        let mut queue = shared.queue();
        for (lane, weight) in &lanes.lanes {
            queue.set_lane(*lane, *weight);
        }
        let heaviest = lanes.lanes.iter().map(|(_, weight)| *weight).max().unwrap_or(1);
        queue.set_lane(shared.shared_lane, heaviest);
        for lane in &lanes.removed {
            // Dropping a waiter's sender ends its wait; it finds its lane retired.
            drop(queue.retire(*lane));
        }
        shared.report_depth(queue.len());
        drop(queue);
        shared.work.notify_one();
    }

    /// Waits for an upstream slot, or refuses at once when the wait would pass `deadline`
    /// (at most `max_wait` from now). When `promotion` is raised while the request waits, it
    /// moves to the shared lane.
    pub(crate) async fn acquire(
        &self,
        tenant: &Tenant,
        priority: Priority,
        deadline: Instant,
        promotion: Option<&Promotion>,
    ) -> Result<Permit, GatewayError> {
        let shared = &self.shared;
        let now = Instant::now();
        let deadline = deadline.min(now + shared.pacing().1);
        let lane = if promotion.is_some_and(Promotion::is_raised) { shared.shared_lane } else { tenant.index };
        let (granted, mut wait_for_grant) = oneshot::channel();
        {
            let pace = shared.pace(now);
            let mut queue = shared.queue();
            if queue.is_retired(lane) {
                return Err(tenant_removed());
            }
            queue.retain(|waiter| !waiter.granted.is_closed());
            let admitted = queue.admit(lane, priority, deadline.into_std(), Waiter { granted }, now.into_std(), &pace);
            // The lane changed (or is full): its `RateLimit` is worked out again for this answer.
            tenant.rate_limit[shared.named.index].forget();
            shared.report_depth(queue.len());
            let lane_name = if lane == shared.shared_lane { "shared" } else { tenant.label };
            crate::telemetry::record_wait(lane_name, queue.waiting(lane), queue.len());
            if let Err((refusal, _)) = admitted {
                shared.metrics.throttle_rejected.get_or_create(&TenantLabels { tenant: tenant.label }).inc();
                return Err(GatewayError::Throttled { retry_after: refusal.retry_after });
            }
        }
        shared.work.notify_one();
        let stopped = || match shared.queue().is_retired(tenant.index) {
            true => tenant_removed(),
            false => GatewayError::Internal("the throttle's dispatcher stopped".into()),
        };
        let wait = async {
            Ok::<Grant, GatewayError>(match promotion.filter(|_| lane != shared.shared_lane) {
                None => wait_for_grant.await.map_err(|_| stopped())?,
                Some(promotion) => tokio::select! {
                    biased;
                    grant = &mut wait_for_grant => grant.map_err(|_| stopped())?,
                    () = promotion.raised() => match wait_for_grant.try_recv() {
                        Ok(grant) => grant,
                        // Leave the tenant's lane (the dropped receiver is skipped there) for the
                        // shared lane, keeping the deadline it was admitted with.
                        Err(_) => {
                            drop(wait_for_grant);
                            crate::telemetry::record_wait("shared", 0, 0);
                            let (granted, moved) = oneshot::channel();
                            shared.queue().requeue(shared.shared_lane, priority, deadline.into_std(), Waiter { granted });
                            shared.work.notify_one();
                            moved.await.map_err(|_| stopped())?
                        }
                    },
                },
            })
        };
        // Admission predicts the wait; a shared budget can still move its slots later (another
        // replica's 429 paused it). Nobody waits past its deadline: it leaves with a 429 (or a
        // stale answer), and a slot that comes later is not used with too little time left.
        let grant = match tokio::time::timeout_at(deadline, wait).await {
            Ok(grant) => grant?,
            Err(_) => {
                shared.metrics.throttle_rejected.get_or_create(&TenantLabels { tenant: tenant.label }).inc();
                let next = shared.pace(Instant::now()).next_slot;
                let retry_after = Instant::from_std(next).saturating_duration_since(Instant::now());
                return Err(GatewayError::Throttled { retry_after: retry_after.max(Duration::from_secs(1)) });
            }
        };
        let waited = grant.at.saturating_duration_since(now);
        shared
            .metrics
            .throttle_wait
            .get_or_create(&TenantLabels { tenant: tenant.label })
            .observe(waited.as_secs_f64());
        Ok(Permit { departed: Some(grant.departed), waited })
    }

    /// Agora answered 429 anyway (someone else spends the account): no slot before `duration` from
    /// now — at most [`MAX_PAUSE`], whatever the caller asks (it comes from the upstream).
    pub(crate) fn pause(&self, duration: Duration) {
        let duration = duration.min(MAX_PAUSE);
        let until = Instant::now() + duration;
        match &self.shared.slots {
            Slots::Local(gcra) => lock(gcra).pause_until(until.into_std()),
            Slots::Cluster(cluster) => cluster.pause(duration),
        }
        let budget = &*self.shared.named.name;
        tracing::warn!(
            budget,
            pause_ms = duration.as_millis() as u64,
            "Agora answered 429: the upstream budget pauses"
        );
    }

    /// Why the budget is degraded (the shared budget's Redis is unreachable), if it is.
    pub(crate) fn degraded(&self) -> Option<String> {
        match &self.shared.slots {
            Slots::Local(_) => None,
            Slots::Cluster(cluster) => cluster.degraded(),
        }
    }

    /// Shutting down: a shared budget hands this replica's lease and share back at once.
    pub(crate) async fn leave(&self) {
        if let Slots::Cluster(cluster) = &self.shared.slots {
            cluster.leave().await;
        }
    }

    /// Why this process cannot spend the budget yet (a shared budget that has not granted it a
    /// share), if so.
    pub(crate) fn starting(&self) -> Option<String> {
        match &self.shared.slots {
            Slots::Local(_) => None,
            Slots::Cluster(cluster) => cluster.starting(),
        }
    }
}

#[cfg(test)]
impl Throttle {
    fn queue_depth(&self) -> usize {
        self.shared.queue().len()
    }
}

#[cfg(test)]
mod tests;
