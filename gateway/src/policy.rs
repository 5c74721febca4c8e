//! The one policy table of the 17 Console operations: for each, its route, the scope it needs, its
//! cache class, how ownership is checked, what it invalidates and its throttle priority. Handlers
//! and the pipeline read this table; none of them repeats it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a token may do. A token's scopes are its `scope` claim cut down to its tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
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
    pub const ALL: [Scope; 8] = [
        Scope::ProjectsRead,
        Scope::ProjectsWrite,
        Scope::ProjectsSecrets,
        Scope::UsageRead,
        Scope::KickingRead,
        Scope::KickingWrite,
        Scope::ChannelsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
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

    pub fn parse(text: &str) -> Option<Scope> {
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
pub struct ScopeSet(u16);

impl ScopeSet {
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn intersection(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }

    /// The scopes of a space-separated `scope` claim; unknown names are ignored.
    pub fn from_claim(claim: &str) -> ScopeSet {
        claim.split_ascii_whitespace().filter_map(Scope::parse).collect()
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
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
pub enum CacheClass {
    Project,
    Channel,
    Usage,
}

impl CacheClass {
    pub const ALL: [CacheClass; 3] = [CacheClass::Project, CacheClass::Channel, CacheClass::Usage];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheClass::Project => "project",
            CacheClass::Channel => "channel",
            CacheClass::Usage => "usage",
        }
    }

    pub fn parse(text: &str) -> Option<CacheClass> {
        CacheClass::ALL.into_iter().find(|class| class.as_str() == text)
    }
}

/// How a request is checked against the tenant's projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// `create_project`: the name must carry the tenant's prefix.
    NamePrefix,
    /// `list_projects`: the answer is cut down to the tenant's projects.
    FilterProjects,
    /// `get_project`: the project answered must be the tenant's.
    ResultProject,
    /// The body's project `id` must be the tenant's.
    BodyProjectId,
    /// `get_usage`: `projects` is cut down to the tenant's; none means all of them.
    UsageProjects,
    /// `get_usage_v3`: `project_id` must be the tenant's.
    QueryProjectId,
    /// The `appid` (a project's `vendor_key`) must be the tenant's.
    AppId,
}

/// What a successful write makes stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    Nothing,
    /// That project and the project list.
    Project,
    /// That app's kicking-rule list.
    KickingRules,
}

/// Order within a tenant's queue for an upstream slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    High = 0,
    Normal = 1,
    Low = 2,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateProject,
    ListProjects,
    GetProject,
    SetProjectStatus,
    DeleteProject,
    SetRecordingConfig,
    EnableSignKey,
    ResetSignKey,
    GetUsage,
    GetUsageV3,
    CreateKickingRule,
    ListKickingRules,
    UpdateKickingRule,
    DeleteKickingRule,
    GetUserProperty,
    ListChannelUsers,
    ListChannels,
}

/// One row of the table.
#[derive(Debug)]
pub struct OperationPolicy {
    pub operation: Operation,
    /// The spec's operationId.
    pub id: &'static str,
    pub method: http::Method,
    /// Path under `/dev`, as the spec writes it.
    pub path: &'static str,
    pub scope: Scope,
    /// Reads only; writes are never cached.
    pub cache: Option<CacheClass>,
    pub ownership: Ownership,
    pub invalidates: Invalidation,
    pub priority: Priority,
}

impl OperationPolicy {
    /// Safe to repeat: a read the gateway may retry after Agora's own 429.
    pub fn is_idempotent_read(&self) -> bool {
        self.method == http::Method::GET
    }
}

macro_rules! policy {
    ($op:ident, $id:literal, $method:ident $path:literal, $scope:ident, $cache:expr, $owner:ident, $inv:ident, $prio:ident) => {
        OperationPolicy {
            operation: Operation::$op,
            id: $id,
            method: http::Method::$method,
            path: $path,
            scope: Scope::$scope,
            cache: $cache,
            ownership: Ownership::$owner,
            invalidates: Invalidation::$inv,
            priority: Priority::$prio,
        }
    };
}

use CacheClass::{Channel, Project, Usage};

/// In the order of [`Operation`]'s variants.
#[rustfmt::skip]
pub static POLICIES: [OperationPolicy; 17] = [
    policy!(CreateProject,      "create_project",       POST   "/v1/project",        ProjectsWrite, None,          NamePrefix,     Project,      Normal),
    policy!(ListProjects,       "list_projects",        GET    "/v1/projects",       ProjectsRead,  Some(Project), FilterProjects, Nothing,      Normal),
    policy!(GetProject,         "get_project",          GET    "/v1/project",        ProjectsRead,  Some(Project), ResultProject,  Nothing,      Normal),
    policy!(SetProjectStatus,   "set_project_status",   POST   "/v1/project_status", ProjectsWrite, None,          BodyProjectId,  Project,      Normal),
    policy!(DeleteProject,      "delete_project",       DELETE "/v1/project",        ProjectsWrite, None,          BodyProjectId,  Project,      Normal),
    policy!(SetRecordingConfig, "set_recording_config", POST   "/v1/recording_config", ProjectsWrite, None,        BodyProjectId,  Project,      Normal),
    policy!(EnableSignKey,      "enable_sign_key",      POST   "/v1/signkey",        ProjectsWrite, None,          BodyProjectId,  Project,      Normal),
    policy!(ResetSignKey,       "reset_sign_key",       POST   "/v1/reset_signkey",  ProjectsWrite, None,          BodyProjectId,  Project,      Normal),
    policy!(GetUsage,           "get_usage",            GET    "/v1/usage",          UsageRead,     Some(Usage),   UsageProjects,  Nothing,      Low),
    policy!(GetUsageV3,         "get_usage_v3",         GET    "/v3/usage",          UsageRead,     Some(Usage),   QueryProjectId, Nothing,      Low),
    policy!(CreateKickingRule,  "create_kicking_rule",  POST   "/v1/kicking-rule",   KickingWrite,  None,          AppId,          KickingRules, High),
    policy!(ListKickingRules,   "list_kicking_rules",   GET    "/v1/kicking-rule",   KickingRead,   Some(Channel), AppId,          Nothing,      Normal),
    policy!(UpdateKickingRule,  "update_kicking_rule",  PUT    "/v1/kicking-rule",   KickingWrite,  None,          AppId,          KickingRules, High),
    policy!(DeleteKickingRule,  "delete_kicking_rule",  DELETE "/v1/kicking-rule",   KickingWrite,  None,          AppId,          KickingRules, High),
    policy!(GetUserProperty,    "get_user_property",    GET    "/v1/channel/user/property/{appid}/{uid}/{cname}", ChannelsRead, Some(Channel), AppId, Nothing, Normal),
    policy!(ListChannelUsers,   "list_channel_users",   GET    "/v1/channel/user/{appid}/{cname}", ChannelsRead, Some(Channel), AppId, Nothing, Normal),
    policy!(ListChannels,       "list_channels",        GET    "/v1/channel/{appid}", ChannelsRead, Some(Channel), AppId,          Nothing,      Normal),
];

impl Operation {
    pub fn policy(self) -> &'static OperationPolicy {
        &POLICIES[self as usize]
    }

    pub fn id(self) -> &'static str {
        self.policy().id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_variant_order_and_names_each_operation_once() {
        for (index, policy) in POLICIES.iter().enumerate() {
            assert_eq!(policy.operation as usize, index, "{} is out of order", policy.id);
        }
        let mut ids: Vec<_> = POLICIES.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 17);
    }

    #[test]
    fn reads_are_cached_and_writes_invalidate() {
        for policy in &POLICIES {
            assert_eq!(policy.cache.is_some(), policy.method == http::Method::GET, "{}", policy.id);
            if policy.cache.is_some() {
                assert_eq!(policy.invalidates, Invalidation::Nothing, "{}", policy.id);
            } else {
                assert_ne!(policy.invalidates, Invalidation::Nothing, "{}", policy.id);
            }
        }
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
