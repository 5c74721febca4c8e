//! What the cache holds: an upstream answer as it came (status, headers, body bytes), for project
//! answers the same split for egress (`egress/projects.rs`), and the tenants' views rendered so
//! far — computed once per entry, dropped with it. Ages are read on tokio's clock, so tests can
//! pause it.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use crate::egress::{self, ProjectsView};
use crate::error::GatewayError;
use crate::policy::{CacheClass, Operation};
use crate::upstream::Answer;

/// What egress needs to cut an answer down to a tenant.
pub(crate) enum View {
    /// Passed through as is.
    Raw,
    /// A project list, or one project.
    Projects(ProjectsView),
}

/// One rendering of an entry: for whom (the tenant, whether its projects are filtered out of the
/// answer, whether it may see App certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ViewKey {
    pub(crate) tenant: u64,
    pub(crate) filtered: bool,
    pub(crate) secrets: bool,
}

/// An upstream answer, ready to be served to any tenant.
pub(crate) struct Entry {
    pub(crate) class: Option<CacheClass>,
    pub(crate) answer: Answer,
    pub(crate) view: View,
    pub(crate) fetched_at: Instant,
    /// The cache's trust epoch when its fill started (`cache/mod.rs`, `Inner::distrust`).
    pub(crate) trust: u64,
    /// It came from the cluster's shared tier, not from an upstream call of this replica.
    pub(crate) shared: bool,
    pub(super) weight: u32,
    /// Tenants' views rendered so far (`None`: nothing to show, answered 404).
    views: RwLock<HashMap<ViewKey, Option<Bytes>>>,
}

impl Entry {
    /// An answer of `operation`, split for egress when egress must edit it; a 502 naming what is
    /// missing when it cannot be.
    pub(crate) fn new(operation: Operation, answer: Answer) -> Result<Self, GatewayError> {
        let view = match egress::project_field(operation.policy()) {
            Some((field, required)) => match ProjectsView::parse(&answer.body, field, required) {
                Ok(Some(view)) => View::Projects(view),
                Ok(None) => View::Raw,
                Err(detail) => return Err(GatewayError::BadGateway(detail)),
            },
            None => View::Raw,
        };
        let view_weight = match &view {
            View::Raw => 0,
            View::Projects(view) => view.weight(),
        };
        let weight = answer.body.len() + view_weight + 256;
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        let now = Instant::now();
        Ok(Self {
            class: None,
            answer,
            view,
            fetched_at: now,
            trust: 0,
            shared: false,
            weight,
            views: RwLock::default(),
        })
    }

    pub(crate) fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }

    /// It was fetched `age` ago (a copy of the shared tier).
    pub(super) fn backdate(&mut self, age: Duration) {
        self.fetched_at = Instant::now().checked_sub(age).unwrap_or(self.fetched_at);
    }

    /// This entry rendered for `key`: kept from an earlier request, or rendered now and kept.
    pub(crate) fn view_for(&self, key: ViewKey, render: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        if let Some(rendered) = self.views.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
            return rendered.clone();
        }
        let rendered = render();
        self.views.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, rendered.clone());
        rendered
    }

    /// The projects of a project answer (none for other answers).
    pub(crate) fn projects(&self) -> &[egress::ProjectItem] {
        match &self.view {
            View::Projects(view) => &view.items,
            View::Raw => &[],
        }
    }

    /// Whether this answer is about the project (for invalidation).
    pub(super) fn mentions_project(&self, project_id: &str) -> bool {
        self.projects().iter().any(|item| item.id == project_id)
    }
}
