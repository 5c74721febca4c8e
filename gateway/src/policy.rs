//! The vocabulary of the gateway's policy: scopes, cache classes, ownership rules, invalidations,
//! priorities, input checks, and the shape of one row of the operation table. The table itself is
//! generated from the spec's `x-gateway` extensions (`generated/operations.rs`, by `cargo xtask
//! regen`, which also defines a row's type, as a row names its `Operation`);
//! handlers and the pipeline read it, and none of them repeats it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token may do. A token's scopes are its `scope` claim cut down to its tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Scope {
    #[serde(rename = "projects:read")]
    ProjectsRead,
    #[serde(rename = "projects:write")]
    ProjectsWrite,
    /// See App certificates (`sign_key`); without it they read `null`.
    #[serde(rename = "projects:secrets")]
    ProjectsSecrets,
    #[serde(rename = "usage:read")]
    UsageRead,
    #[serde(rename = "kicking:read")]
    KickingRead,
    #[serde(rename = "kicking:write")]
    KickingWrite,
    #[serde(rename = "channels:read")]
    ChannelsRead,
    /// Every project of the account, and the cache purge.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub(crate) const ALL: [Scope; 8] = [
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::ProjectsSecrets,
        Scope::UsageRead,
        Scope::KickingRead,
        Scope::KickingWrite,
        Scope::ChannelsRead,
        Scope::Admin,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::ProjectsRead => "projects:read",
            Scope::ProjectsWrite => "projects:write",
            Scope::ProjectsSecrets => "projects:secrets",
            Scope::UsageRead => "usage:read",
            Scope::KickingRead => "kicking:read",
            Scope::KickingWrite => "kicking:write",
            Scope::ChannelsRead => "channels:read",
            Scope::Admin => "admin",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == text)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ScopeSet(u16);

impl ScopeSet {
    pub(crate) fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub(crate) fn intersection(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    /// The scopes of a space-separated `scope` claim; unknown names are ignored.
    pub(crate) fn from_claim(claim: &str) -> ScopeSet {
        claim.split_ascii_whitespace().filter_map(Scope::parse).collect()
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |scope| self.contains(*scope))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet(iter.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

/// Cache classes, each with its own TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CacheClass {
    Project,
    Channel,
    Usage,
    /// Agora's own addresses (the NCS servers'), which change rarely.
    Addresses,
}

impl CacheClass {
    pub(crate) const ALL: [CacheClass; 4] =
        [CacheClass::Project, CacheClass::Channel, CacheClass::Usage, CacheClass::Addresses];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheClass::Project => "project",
            CacheClass::Channel => "channel",
            CacheClass::Usage => "usage",
            CacheClass::Addresses => "addresses",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<CacheClass> {
        CacheClass::ALL.into_iter().find(|class| class.as_str() == text)
    }
}

/// How a request is checked against the tenant's projects (`x-gateway.ownership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ownership {
    /// `create_project`: the name (`owner-param`) must carry the tenant's prefix.
    NamePrefix,
    /// `list_projects`: the answer is cut down to the tenant's projects.
    FilterProjects,
    /// `get_project`: the project asked for (by `id` and/or `name`) must be the tenant's.
    ResultProject,
    /// The project ID in `owner-param` must be the tenant's.
    ProjectId,
    /// `get_usage`: the project IDs in `owner-param` are cut down to the tenant's; none means all
    /// of them.
    UsageProjects,
    /// The App ID (a project's `vendor_key`) in `owner-param` must be the tenant's.
    AppId,
    /// As `AppId`, and the kicking rule (the body's `id`) must be one of that app's rules.
    AppRule,
    /// The account's own (Agora's addresses): no project's, so for the `admin` scope only.
    Account,
}

/// What a write makes stale (`x-gateway.invalidates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidation {
    Nothing,
    /// That project (its `id`) and the project list.
    Project,
    /// That app's (its `appid`) kicking-rule list.
    KickingRules,
}

/// Order within a tenant's queue for an upstream slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Priority {
    High = 0,
    Normal = 1,
    Low = 2,
}

impl Priority {
    #[cfg(test)]
    pub(crate) const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];
}

/// A documented input rule beyond what the spec's types say (`x-gateway.checks`), run before any
/// budget is spent (`routes/checks.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// `get_project` needs an `id` or a `name` (the gateway must know which project to check).
    IdOrName,
    /// `from_date` not after `to_date`, at most a year apart.
    UsageRange,
    /// A kicking rule's `cname`, `uid` and `ip` as the document allows them (`""` read as not set).
    KickingRule,
}

/// Where a parameter is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Path,
    Query,
}

/// A parameter's type, as the spec gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParamKind {
    Text,
    /// `YYYY-MM-DD`.
    Date,
    /// An unsigned 32-bit integer.
    Uint32,
    /// One of these values.
    OneOf(&'static [&'static str]),
}

/// One parameter of an operation.
#[derive(Debug)]
pub(crate) struct ParamSpec {
    pub(crate) name: &'static str,
    pub(crate) location: Location,
    pub(crate) kind: ParamKind,
    pub(crate) required: bool,
    /// The spec's default, as text.
    pub(crate) default: Option<&'static str>,
    /// The spec's `maximum`, for integers.
    pub(crate) maximum: Option<u64>,
}

/// The gateway's policy of one operation: its spec's `x-gateway`.
#[derive(Debug)]
pub(crate) struct OperationPolicy {
    pub(crate) scope: Scope,
    /// Reads only; writes are never cached.
    pub(crate) cache: Option<CacheClass>,
    pub(crate) ownership: Ownership,
    /// The input the ownership rule reads (a parameter or a body field).
    pub(crate) owner_param: Option<&'static str>,
    pub(crate) invalidates: Invalidation,
    pub(crate) priority: Priority,
    pub(crate) checks: &'static [Check],
}

impl OperationPolicy {
    /// Safe to repeat: a read the gateway may retry after Agora's own 429.
    pub(crate) fn is_idempotent_read(&self) -> bool {
        self.cache.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::{OPERATIONS, Operation};

    #[test]
    fn the_table_is_in_variant_order_and_names_each_operation_once() {
        for (index, spec) in OPERATIONS.iter().enumerate() {
            assert_eq!(spec.operation as usize, index, "{} is out of order", spec.id);
            assert_eq!(Operation::ALL[index], spec.operation);
        }
        let mut ids: Vec<_> = OPERATIONS.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), OPERATIONS.len());
    }

    #[test]
    fn reads_are_cached_and_writes_invalidate() {
        for spec in &OPERATIONS {
            let policy = &spec.policy;
            assert_eq!(policy.cache.is_some(), spec.method == http::Method::GET, "{}", spec.id);
            if policy.cache.is_some() {
                assert_eq!(policy.invalidates, Invalidation::Nothing, "{}", spec.id);
            } else {
                assert_ne!(policy.invalidates, Invalidation::Nothing, "{}", spec.id);
            }
        }
    }

    #[test]
    fn every_rule_that_reads_an_input_names_one_the_operation_has() {
        for spec in &OPERATIONS {
            let policy = &spec.policy;
            let needs_param = matches!(
                policy.ownership,
                Ownership::NamePrefix
                    | Ownership::ProjectId
                    | Ownership::UsageProjects
                    | Ownership::AppId
                    | Ownership::AppRule
            );
            assert_eq!(policy.owner_param.is_some(), needs_param, "{}: owner-param", spec.id);
            if let Some(name) = policy.owner_param {
                let in_params = spec.params.iter().any(|p| p.name == name);
                assert!(in_params || spec.body.is_some(), "{}: no input {name}", spec.id);
            }
        }
    }

    /// `NamePrefix` → `name-prefix`, as the spec writes the policy's names.
    fn kebab(value: impl fmt::Debug) -> String {
        let mut out = String::new();
        for (index, c) in format!("{value:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && index > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// `x-gateway.base: root`: at Agora's domain root, not under `/dev`.
    fn x_root(operation: &serde_json::Value) -> bool {
        operation["x-gateway"]["base"] == "root"
    }

    /// The table `cargo xtask regen` generated says what the spec says, operation by operation.
    #[test]
    fn the_generated_table_agrees_with_the_spec() {
        let text = include_str!("../../openapi/agora-console.yaml");
        let spec: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let mut seen = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            // A path item's `servers` are not an operation.
            for (method, operation) in item.as_object().unwrap().iter().filter(|(key, _)| *key != "servers") {
                seen += 1;
                let id = operation["operationId"].as_str().unwrap();
                assert_eq!(OPERATIONS.iter().find(|row| row.id == id).map(|row| row.root), Some(x_root(operation)));
                let row =
                    OPERATIONS.iter().find(|row| row.id == id).unwrap_or_else(|| panic!("{id} is not in the table"));
                assert_eq!((row.method.as_str(), row.path), (method.to_uppercase().as_str(), path.as_str()), "{id}");
                assert_eq!(row.body.is_some(), operation.get("requestBody").is_some(), "{id}: body");
                let params: Vec<(&str, bool)> = operation["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().map(|p| (p["name"].as_str().unwrap(), p["required"] == true)).collect())
                    .unwrap_or_default();
                let table: Vec<(&str, bool)> = row.params.iter().map(|p| (p.name, p.required)).collect();
                assert_eq!(table, params, "{id}: parameters");
                let x = &operation["x-gateway"];
                let policy = &row.policy;
                assert_eq!(policy.scope.as_str(), x["scope"], "{id}: scope");
                assert_eq!(policy.cache.map(CacheClass::as_str), x["cache"].as_str(), "{id}: cache");
                assert_eq!(kebab(policy.ownership), x["ownership"], "{id}: ownership");
                assert_eq!(policy.owner_param, x["owner-param"].as_str(), "{id}: owner-param");
                assert_eq!(
                    kebab(policy.invalidates),
                    x["invalidates"].as_str().unwrap_or("nothing"),
                    "{id}: invalidates"
                );
                assert_eq!(kebab(policy.priority), x["priority"], "{id}: priority");
                let checks: Vec<String> = policy.checks.iter().map(kebab).collect();
                let spec_checks: Vec<String> = x["checks"]
                    .as_array()
                    .map(|cs| cs.iter().map(|c| c.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                assert_eq!(checks, spec_checks, "{id}: checks");
            }
        }
        assert_eq!(seen, OPERATIONS.len(), "as many operations in the table as in the spec");
    }

    #[test]
    fn scope_claims_parse_and_intersect() {
        let token = ScopeSet::from_claim("projects:read  kicking:write unknown admin");
        let tenant: ScopeSet = [Scope::ProjectsRead, Scope::KickingWrite].into_iter().collect();
        let effective = token.intersection(tenant);
        assert!(effective.contains(Scope::ProjectsRead) && effective.contains(Scope::KickingWrite));
        assert!(!effective.contains(Scope::Admin));
        assert_eq!(effective.to_string(), "projects:read kicking:write");
    }
}
