//! What egress keeps beside a cached answer: project answers split once (`projects.rs`), and each
//! tenant's view of the answer rendered once and kept, so a cache hit writes ready bytes. It lives
//! and dies with its cache entry.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;

use super::projects::{ProjectItem, ProjectsView};
use crate::answer::Answer;
use crate::error::GatewayError;
use crate::operations::Operation;
use crate::policy::{Invalidation, OperationPolicy, Ownership};

/// What egress needs to cut an answer down to a tenant.
pub(crate) enum View {
    /// Passed through as is.
    Raw,
    /// A project list, or one project.
    Projects(ProjectsView),
}

/// One rendering of an answer: for whom (the tenant, whether its projects are filtered out of the
/// answer, whether it may see App certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ViewKey {
    pub(crate) tenant: u64,
    pub(crate) filtered: bool,
    pub(crate) secrets: bool,
}

/// An answer's split for egress, and the tenants' views of it rendered so far.
pub(crate) struct Views {
    pub(crate) view: View,
    /// Tenants' views rendered so far (`None`: nothing to show, answered 404).
    rendered: RwLock<HashMap<ViewKey, Option<Bytes>>>,
}

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

impl Views {
    /// An answer of `operation`, split for egress when egress must edit it; a 502 naming what is
    /// missing when it cannot be.
    pub(crate) fn new(operation: Operation, answer: &Answer) -> Result<Self, GatewayError> {
        let view = match project_field(operation.policy()) {
            Some((field, required)) => match ProjectsView::parse(&answer.body, field, required) {
                Ok(Some(view)) => View::Projects(view),
                Ok(None) => View::Raw,
                Err(detail) => return Err(GatewayError::BadGateway(detail)),
            },
            None => View::Raw,
        };
        Ok(Self { view, rendered: RwLock::default() })
    }

    /// Bytes held beyond the answer's.
    pub(crate) fn weight(&self) -> usize {
        match &self.view {
            View::Raw => 0,
            View::Projects(view) => view.weight(),
        }
    }

    /// The projects of a project answer (none for other answers).
    pub(crate) fn projects(&self) -> &[ProjectItem] {
        match &self.view {
            View::Projects(view) => &view.items,
            View::Raw => &[],
        }
    }

    /// The answer rendered for `key`: kept from an earlier request, or rendered now and kept.
    pub(crate) fn view_for(&self, key: ViewKey, render: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if let Some(rendered) = self.rendered.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
            return rendered.clone();
        }
        let rendered = render();
        self.rendered.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, rendered.clone());
        rendered
    }
}
