//! Step 8 of the pipeline, on the way out: an upstream answer (shared by every tenant) cut down to
//! the caller — only its projects in a project list, `sign_key` null without `projects:secrets` —
//! and nothing else changed: every field the gateway does not know stays, in place. Project
//! answers are split once per cache entry (`projects.rs`), and each tenant's view of an entry is
//! rendered once and kept beside it, so a cache hit writes ready bytes.

pub(crate) mod json;
pub(crate) mod projects;

use bytes::Bytes;

use crate::auth::Principal;
use crate::cache::{Entry, View, ViewKey};
use crate::error::GatewayError;
use crate::policy::{Invalidation, OperationPolicy, Ownership, Scope};
pub(crate) use projects::{ProjectItem, ProjectsView};

/// Where an operation's answer keeps its projects, if egress must edit it: the member, and
/// whether the answer is unusable without it.
pub(crate) fn project_field(policy: &OperationPolicy) -> Option<(&'static str, bool)> {
    match (policy.ownership, policy.invalidates) {
        // The list is filtered and the lookup checked: both need their projects.
        (Ownership::FilterProjects, _) => Some(("projects", true)),
        (Ownership::ResultProject, _) => Some(("project", true)),
        // Project writes may answer the project (live) or only `{"success": true}` (the document).
        (_, Invalidation::Project) => Some(("project", false)),
        _ => None,
    }
}

/// The body to send this principal, for an answer of an operation with this ownership rule.
pub(crate) fn render(principal: &Principal, ownership: Ownership, entry: &Entry) -> Result<Bytes, GatewayError> {
    let View::Projects(view) = &entry.view else {
        return Ok(entry.answer.body.clone());
    };
    let secrets = principal.has(Scope::ProjectsSecrets);
    if principal.is_admin() && secrets {
        return Ok(entry.answer.body.clone());
    }
    let filtered = matches!(ownership, Ownership::FilterProjects | Ownership::ResultProject) && !principal.is_admin();
    let key = ViewKey { tenant: principal.tenant.uid, filtered, secrets };
    let rendered = entry.view_for(key, || {
        let visible: Vec<&ProjectItem> = if filtered {
            view.items.iter().filter(|item| principal.owns(&item.id, &item.name)).collect()
        } else {
            view.items.iter().collect()
        };
        // Another tenant's project looks exactly like a missing one.
        if ownership == Ownership::ResultProject && visible.is_empty() {
            return None;
        }
        Some(view.render(&visible, secrets))
    });
    rendered.ok_or_else(|| GatewayError::not_found("project not found"))
}
