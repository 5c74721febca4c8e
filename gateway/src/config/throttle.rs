//! `[throttle]`: the upstream budget, and its groups (`[[throttle.groups]]`): operations whose
//! upstream limit Agora states apart from the account's. Each group is a budget of its own — its
//! own GCRA and fair queue, locally and in Redis — and every operation no group names stays in the
//! default budget (`throttle.rate`).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret, human};
use crate::operations::Operation;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ThrottleConfig {
    /// Upstream calls per second for the whole deployment (Agora allows 10 per account).
    pub(crate) rate: u32,
    /// Slots that may be taken at once after idle time. Above 1, the spacing grows so that no
    /// one-second window ever holds more than `rate` calls.
    pub(crate) burst: u32,
    /// Longest a request may queue for a slot; a request that would wait longer gets 429 at once.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) max_wait: Duration,
    /// Extra spacing between slots, as a fraction of the interval, so that late timers never crowd
    /// more than `rate` calls into one second at Agora.
    pub(crate) safety_margin: f64,
    /// Redis shared by the replicas (`redis://host:6379/`): every replica takes its slots there.
    pub(crate) redis_url: Option<Secret>,
    /// Replicas to assume at least when Redis grants each its share of the budget (what it may
    /// spend on its own while cut off): `floor(rate / max(replicas alive, this))`.
    pub(crate) replicas: Option<u32>,
    /// Prefix of the gateway's Redis keys; the customer ID is appended, one budget per account.
    pub(crate) redis_key_prefix: String,
    /// Budgets of their own for the operations they name (`throttle/groups.rs`); none by default.
    pub(crate) groups: Vec<BudgetGroup>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            rate: 10,
            burst: 1,
            max_wait: Duration::from_secs(5),
            safety_margin: 0.02,
            redis_url: None,
            replicas: None,
            redis_key_prefix: "agora-gateway".into(),
            groups: Vec::new(),
        }
    }
}

/// The most groups a deployment may have (Agora states a few limits apart, not one per operation).
pub(crate) const MAX_GROUPS: usize = 7;

/// The default budget's name, in `RateLimit-Policy` and the logs.
pub(crate) const DEFAULT_GROUP: &str = "agora";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetGroup {
    /// Its name: in `RateLimit-Policy`, the logs and its Redis keys.
    pub(crate) name: String,
    /// The operations (by `operationId`) it takes out of the default budget.
    pub(crate) operations: Vec<String>,
    /// Upstream calls per second for these operations, for the whole deployment.
    pub(crate) rate: u32,
    /// Slots that may be taken at once after idle time (as `throttle.burst`).
    #[serde(default = "one")]
    pub(crate) burst: u32,
}

fn one() -> u32 {
    1
}

impl BudgetGroup {
    /// The group's operations (validated: every name is an operation).
    pub(crate) fn operations(&self) -> impl Iterator<Item = Operation> + '_ {
        self.operations.iter().filter_map(|id| Operation::ALL.into_iter().find(|op| op.id() == id))
    }
}

impl ThrottleConfig {
    /// The settings of one group's budget: the group's rate and burst, the rest of `[throttle]`.
    pub(crate) fn of_group(&self, group: &BudgetGroup) -> ThrottleConfig {
        ThrottleConfig { rate: group.rate, burst: group.burst, groups: Vec::new(), ..self.clone() }
    }

    /// Whether `other` has the same groups, by name and operations (rates and bursts aside).
    pub(crate) fn same_groups(&self, other: &ThrottleConfig) -> bool {
        let structure = |config: &ThrottleConfig| {
            config.groups.iter().map(|group| (group.name.clone(), group.operations.clone())).collect::<Vec<_>>()
        };
        structure(self) == structure(other)
    }

    /// Names are tokens, unique, not the default's; operations exist and are in one group only;
    /// rates and bursts as the default budget's.
    pub(super) fn validate_groups(&self) -> Result<(), ConfigError> {
        if self.groups.len() > MAX_GROUPS {
            return Err(ConfigError::new("throttle.groups", format!("at most {MAX_GROUPS} groups")));
        }
        let mut taken: Vec<(&str, &str)> = Vec::new();
        for (index, group) in self.groups.iter().enumerate() {
            let field = |name: &str| format!("throttle.groups[{index}].{name}");
            let token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if group.name.is_empty() || group.name.len() > 32 || !group.name.chars().all(token) {
                return Err(ConfigError::new(field("name"), "must be 1 to 32 letters, digits, '-', '_' or '.'"));
            }
            if group.name == DEFAULT_GROUP || self.groups[..index].iter().any(|other| other.name == group.name) {
                return Err(ConfigError::new(
                    field("name"),
                    format!("{:?} is taken (\"{DEFAULT_GROUP}\" is the default budget's)", group.name),
                ));
            }
            if group.operations.is_empty() {
                return Err(ConfigError::new(field("operations"), "must name at least one operation"));
            }
            for id in &group.operations {
                if !Operation::ALL.iter().any(|op| op.id() == id) {
                    let known: Vec<&str> = Operation::ALL.iter().map(|op| op.id()).collect();
                    return Err(ConfigError::new(
                        field("operations"),
                        format!("{id:?} is not an operation of the Console API (one of {})", known.join(", ")),
                    ));
                }
                if let Some((_, other)) = taken.iter().find(|(taken, _)| taken == id) {
                    return Err(ConfigError::new(
                        field("operations"),
                        format!("{id} is already in group {other:?}: an operation belongs to one budget"),
                    ));
                }
                taken.push((id, &group.name));
            }
            if !(1..=1000).contains(&group.rate) {
                return Err(ConfigError::new(field("rate"), "must be between 1 and 1000"));
            }
            if group.burst == 0 || group.burst > group.rate {
                return Err(ConfigError::new(
                    field("burst"),
                    format!("must be between 1 and its rate ({})", group.rate),
                ));
            }
        }
        Ok(())
    }
}
