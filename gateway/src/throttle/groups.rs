//! The budgets: the default one (`throttle.rate`, every operation no group names) and one per
//! `[[throttle.groups]]`. Each is a whole [`Throttle`] — its own GCRA (locally, or in Redis under
//! keys of its own), fair queue, dispatcher and pause — so a flood of one group's operations
//! never delays another's, and Agora's 429 for one pauses only that one.

use std::sync::Arc;

use super::{ClusterBudget, Throttle};
use crate::auth::{LaneChanges, Tenant};
use crate::config::{ConfigError, DEFAULT_GROUP, ThrottleConfig};
use crate::metrics::Metrics;
use crate::operations::Operation;

/// Every budget of the deployment: cheap to clone.
#[derive(Clone)]
pub(crate) struct Budgets {
    inner: Arc<Inner>,
}

struct Inner {
    /// The default budget first, then the groups in the configuration's order.
    budgets: Vec<Throttle>,
    /// Each operation's budget (an index into `budgets`), by `Operation as usize`.
    of_operation: [u8; Operation::ALL.len()],
}

/// Where the budgets take their slots: this process alone, or Redis shared by the replicas.
pub(crate) enum Source<'a> {
    Local,
    Redis { url: &'a str, namespace: &'a str },
}

impl Budgets {
    pub(crate) fn start(
        config: &ThrottleConfig,
        source: Source<'_>,
        tenants: &[Arc<Tenant>],
        metrics: &Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let groups = config.groups.iter().map(|group| (group.name.as_str(), config.of_group(group)));
        let all = std::iter::once((DEFAULT_GROUP, config.clone())).chain(groups);
        let mut budgets = Vec::new();
        for (index, (name, settings)) in all.enumerate() {
            let named = super::Named { name: name.into(), index };
            budgets.push(match source {
                Source::Local => Throttle::local(&settings, named, tenants, metrics.clone()),
                Source::Redis { url, namespace } => {
                    // The default budget keeps the keys it always had; a group's are its own.
                    let namespace = match index {
                        0 => namespace.to_string(),
                        _ => format!("{namespace}:group:{name}"),
                    };
                    let cluster = ClusterBudget::new(&settings, url, &namespace, metrics.clone())?;
                    Throttle::cluster(&settings, cluster, named, tenants, metrics.clone())
                }
            });
        }
        let mut of_operation = [0; Operation::ALL.len()];
        for (index, group) in config.groups.iter().enumerate() {
            for operation in group.operations() {
                of_operation[operation as usize] = (index + 1) as u8;
            }
        }
        Ok(Self { inner: Arc::new(Inner { budgets, of_operation }) })
    }

    /// The budget `operation` spends.
    pub(crate) fn of(&self, operation: Operation) -> &Throttle {
        let index = self.inner.of_operation[operation as usize] as usize;
        &self.inner.budgets[index]
    }

    /// The default budget (every operation no group names).
    fn default_budget(&self) -> &Throttle {
        &self.inner.budgets[0]
    }

    /// Longest a request may queue for a slot (one setting for every budget).
    pub(crate) fn max_wait(&self) -> std::time::Duration {
        self.default_budget().max_wait()
    }

    /// `RateLimit-Policy` and `RateLimit` of the budget `operation` spends, for `tenant`.
    pub(crate) fn rate_limit_fields(
        &self,
        tenant: &Tenant,
        operation: Operation,
        now: std::time::Instant,
    ) -> [http::HeaderValue; 2] {
        self.of(operation).rate_limit_fields(tenant, now)
    }

    /// Nobody of this replica waits for a slot of any budget.
    pub(crate) fn is_idle(&self) -> bool {
        self.inner.budgets.iter().all(Throttle::is_idle)
    }

    /// A reload: rates, bursts, margin, `max_wait` and the tenants' lanes of every budget. The
    /// groups' names and operations are the ones it started with (`reload.rs` keeps them so).
    pub(crate) fn reconfigure(&self, config: &ThrottleConfig, lanes: &LaneChanges) {
        self.default_budget().reconfigure(config, lanes);
        for (group, budget) in config.groups.iter().zip(&self.inner.budgets[1..]) {
            budget.reconfigure(&config.of_group(group), lanes);
        }
    }

    /// Why a budget is degraded (its Redis is unreachable), if one is.
    pub(crate) fn degraded(&self) -> Option<String> {
        self.inner.budgets.iter().find_map(Throttle::degraded)
    }

    /// Why this process cannot spend a budget yet, if so.
    pub(crate) fn starting(&self) -> Option<String> {
        self.inner.budgets.iter().find_map(Throttle::starting)
    }

    /// Shutting down: every shared budget hands this replica's lease and share back.
    pub(crate) async fn leave(&self) {
        for budget in &self.inner.budgets {
            budget.leave().await;
        }
    }
}
