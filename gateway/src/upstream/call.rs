//! A validated request for one Console operation, in the generated types: what the routes build,
//! what authorize checks, what the cache keys, what the upstream sends.

use agora_console_client::types;
use chrono::NaiveDate;

use crate::policy::Operation;

/// A validated request for one Console operation, in the generated types.
#[derive(Debug, Clone)]
pub enum UpstreamCall {
    CreateProject(types::CreateProjectRequest),
    ListProjects,
    GetProject {
        id: Option<String>,
        name: Option<String>,
    },
    SetProjectStatus(types::SetProjectStatusRequest),
    DeleteProject(types::ProjectIdRequest),
    SetRecordingConfig(types::SetRecordingConfigRequest),
    EnableSignKey(types::EnableSignKeyRequest),
    ResetSignKey(types::ProjectIdRequest),
    /// `projects` empty means every project of the account.
    GetUsage {
        from: NaiveDate,
        to: NaiveDate,
        projects: Vec<String>,
    },
    GetUsageV3 {
        from: NaiveDate,
        to: NaiveDate,
        project_id: String,
        business: types::UsageBusiness,
    },
    CreateKickingRule(types::CreateKickingRuleRequest),
    ListKickingRules {
        appid: String,
    },
    UpdateKickingRule(types::UpdateKickingRuleRequest),
    DeleteKickingRule(types::DeleteKickingRuleRequest),
    GetUserProperty {
        appid: String,
        uid: u32,
        cname: String,
    },
    ListChannelUsers {
        appid: String,
        cname: String,
    },
    ListChannels {
        appid: String,
        page_no: u32,
        page_size: u32,
    },
}

impl UpstreamCall {
    pub fn operation(&self) -> Operation {
        match self {
            Self::CreateProject(_) => Operation::CreateProject,
            Self::ListProjects => Operation::ListProjects,
            Self::GetProject { .. } => Operation::GetProject,
            Self::SetProjectStatus(_) => Operation::SetProjectStatus,
            Self::DeleteProject(_) => Operation::DeleteProject,
            Self::SetRecordingConfig(_) => Operation::SetRecordingConfig,
            Self::EnableSignKey(_) => Operation::EnableSignKey,
            Self::ResetSignKey(_) => Operation::ResetSignKey,
            Self::GetUsage { .. } => Operation::GetUsage,
            Self::GetUsageV3 { .. } => Operation::GetUsageV3,
            Self::CreateKickingRule(_) => Operation::CreateKickingRule,
            Self::ListKickingRules { .. } => Operation::ListKickingRules,
            Self::UpdateKickingRule(_) => Operation::UpdateKickingRule,
            Self::DeleteKickingRule(_) => Operation::DeleteKickingRule,
            Self::GetUserProperty { .. } => Operation::GetUserProperty,
            Self::ListChannelUsers { .. } => Operation::ListChannelUsers,
            Self::ListChannels { .. } => Operation::ListChannels,
        }
    }

    /// The cache key: the operation and its parameters, normalized (defaults filled, lists sorted).
    pub fn cache_key(&self) -> String {
        let id = self.operation().id();
        match self {
            Self::ListProjects => id.to_string(),
            Self::GetProject { id: project, name } => format!("{id}?id={project:?}&name={name:?}"),
            Self::GetUsage { from, to, projects } => {
                let mut projects = projects.clone();
                projects.sort();
                projects.dedup();
                format!("{id}?from_date={from}&to_date={to}&projects={}", projects.join(","))
            }
            Self::GetUsageV3 { from, to, project_id, business } => {
                format!("{id}?from_date={from}&to_date={to}&project_id={project_id:?}&business={business}")
            }
            Self::ListKickingRules { appid } => kicking_rules_key(appid),
            Self::GetUserProperty { appid, uid, cname } => {
                format!("{id}/{appid:?}/{uid}/{cname:?}")
            }
            Self::ListChannelUsers { appid, cname } => format!("{id}/{appid:?}/{cname:?}"),
            Self::ListChannels { appid, page_no, page_size } => {
                format!("{id}/{appid:?}?page_no={page_no}&page_size={page_size}")
            }
            // Writes are never cached; their key only names them in logs.
            _ => id.to_string(),
        }
    }

    /// The `appid` the request is about, if any.
    pub fn appid(&self) -> Option<&str> {
        match self {
            Self::CreateKickingRule(body) => Some(&body.appid),
            Self::UpdateKickingRule(body) => Some(&body.appid),
            Self::DeleteKickingRule(body) => Some(&body.appid),
            Self::ListKickingRules { appid }
            | Self::GetUserProperty { appid, .. }
            | Self::ListChannelUsers { appid, .. }
            | Self::ListChannels { appid, .. } => Some(appid),
            _ => None,
        }
    }

    /// The project ID the request is about, if any.
    pub fn project_id(&self) -> Option<&str> {
        match self {
            Self::SetProjectStatus(body) => Some(&body.id),
            Self::DeleteProject(body) | Self::ResetSignKey(body) => Some(&body.id),
            Self::SetRecordingConfig(body) => Some(&body.id),
            Self::EnableSignKey(body) => Some(&body.id),
            Self::GetUsageV3 { project_id, .. } => Some(project_id),
            _ => None,
        }
    }
}

/// The cache key of an app's kicking-rule list (what kicking-rule writes invalidate).
pub fn kicking_rules_key(appid: &str) -> String {
    format!("list_kicking_rules?appid={appid:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_normalize_defaults_and_order() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let usage = |projects: &[&str]| UpstreamCall::GetUsage {
            from: day("2026-01-01"),
            to: day("2026-01-31"),
            projects: projects.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(usage(&["b", "a", "b"]).cache_key(), usage(&["a", "b"]).cache_key());
        assert_ne!(usage(&["a"]).cache_key(), usage(&["a", "b"]).cache_key());
        let get = |id: Option<&str>, name: Option<&str>| UpstreamCall::GetProject {
            id: id.map(Into::into),
            name: name.map(Into::into),
        };
        assert_ne!(get(Some("x"), None).cache_key(), get(None, Some("x")).cache_key());
        let list = UpstreamCall::ListKickingRules { appid: "abc".into() };
        assert_eq!(list.cache_key(), kicking_rules_key("abc"));
    }
}
