//! Step 4 of the pipeline: may this principal make this call? First the scope the policy table
//! names (403), then ownership (404: another tenant's project or app looks exactly like a missing
//! one). Ownership is decided from the cached project list — the project directory — so it costs
//! no upstream budget in the steady state.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::auth::Principal;
use crate::cache::Entry;
use crate::call::Call;
use crate::egress::ProjectItem;
use crate::error::GatewayError;
use crate::policy::{OperationPolicy, Ownership};

/// A project missing from a directory at least this old is looked for once more, upstream.
pub(crate) const DIRECTORY_RECHECK_AGE: Duration = Duration::from_secs(5);

pub(crate) fn require_scope(principal: &Principal, policy: &OperationPolicy) -> Result<(), GatewayError> {
    if principal.has(policy.scope) { Ok(()) } else { Err(GatewayError::InsufficientScope { scope: policy.scope }) }
}

/// What to do after the ownership check.
pub(crate) enum Decision {
    /// Send this (possibly narrowed) call.
    Send(Call),
    /// Answer this body without calling upstream.
    Answer(Bytes),
}

/// Access to the project directory: `refresh` asks for a fresh list from upstream.
pub(crate) trait Directory {
    fn projects(&self, refresh: bool) -> impl Future<Output = Result<Arc<Entry>, GatewayError>> + Send;
}

fn items(entry: &Entry) -> &[ProjectItem] {
    entry.projects()
}

/// The caller's project matching `matches`, looking upstream once more if the directory is old.
async fn find_owned(
    directory: &impl Directory,
    principal: &Principal,
    matches: impl Fn(&ProjectItem) -> bool,
) -> Result<bool, GatewayError> {
    let entry = directory.projects(false).await?;
    if let Some(item) = items(&entry).iter().find(|item| matches(item)) {
        return Ok(principal.owns(&item.id, &item.name));
    }
    if entry.age() < DIRECTORY_RECHECK_AGE {
        return Ok(false);
    }
    let entry = directory.projects(true).await?;
    Ok(items(&entry).iter().any(|item| matches(item) && principal.owns(&item.id, &item.name)))
}

pub(crate) async fn check_ownership(
    directory: &impl Directory,
    principal: &Principal,
    policy: &OperationPolicy,
    mut call: Call,
) -> Result<Decision, GatewayError> {
    // The input the rule reads; a call without it owns nothing.
    let input = policy.owner_param.and_then(|name| call.value(name)).unwrap_or_default().to_string();
    if principal.is_admin() {
        if policy.ownership == Ownership::UsageProjects {
            call.set("projects", id_list(&input).join(","));
        }
        return Ok(Decision::Send(call));
    }
    let tenant = &principal.tenant;
    match policy.ownership {
        Ownership::NamePrefix => match &tenant.project_name_prefix {
            Some(prefix) if input.starts_with(prefix.as_str()) => Ok(Decision::Send(call)),
            Some(prefix) => Err(GatewayError::Forbidden(format!(
                "tenant {} may create only projects whose name starts with {prefix:?}",
                tenant.id
            ))),
            None => Err(GatewayError::Forbidden(format!(
                "tenant {} has no project_name_prefix, so it may not create projects",
                tenant.id
            ))),
        },
        // Filtered on the way out.
        Ownership::FilterProjects => Ok(Decision::Send(call)),
        // Decided before asking, so that another tenant's project and a missing one answer alike.
        Ownership::ResultProject => {
            let (id, name) = (call.get("id"), call.get("name"));
            let matches =
                |item: &ProjectItem| id.is_none_or(|id| id == item.id) && name.is_none_or(|name| name == item.name);
            if (id.is_some() || name.is_some()) && find_owned(directory, principal, matches).await? {
                Ok(Decision::Send(call))
            } else {
                Err(GatewayError::not_found("project not found"))
            }
        }
        Ownership::ProjectId => {
            if find_owned(directory, principal, |item| item.id == input).await? {
                Ok(Decision::Send(call))
            } else {
                Err(GatewayError::not_found(format!("project {input:?} not found")))
            }
        }
        Ownership::AppId => {
            if find_owned(directory, principal, |item| item.vendor_key == input).await? {
                Ok(Decision::Send(call))
            } else {
                Err(GatewayError::not_found(format!("app {input:?} not found")))
            }
        }
        Ownership::UsageProjects => {
            let entry = directory.projects(false).await?;
            let wanted = id_list(&input);
            let owned = items(&entry).iter().filter(|item| principal.owns(&item.id, &item.name));
            // Unknown or foreign IDs are dropped, as Agora ignores unknown ones.
            let mut projects: Vec<String> = if wanted.is_empty() {
                owned.map(|item| item.id.clone()).collect()
            } else {
                owned.filter(|item| wanted.contains(&item.id)).map(|item| item.id.clone()).collect()
            };
            if projects.is_empty() {
                // An empty `projects` would mean "every project of the account" upstream.
                return Ok(Decision::Answer(Bytes::from_static(b"{\"usages\":[]}")));
            }
            projects.sort();
            call.set("projects", projects.join(","));
            Ok(Decision::Send(call))
        }
    }
}

/// A comma-separated list of IDs, trimmed, sorted, without repeats (one cache key for one set).
fn id_list(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_string).collect();
    ids.sort();
    ids.dedup();
    ids
}
