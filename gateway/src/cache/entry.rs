//! What the cache holds: an upstream answer as it came (status, headers, body bytes) and what
//! egress keeps beside it (`egress/views.rs`: project answers split once, the tenants' views
//! rendered so far) — computed once per entry, dropped with it. Ages are read on tokio's clock, so
//! tests can pause it.

use std::time::Duration;

use tokio::time::Instant;

use crate::answer::Answer;
use crate::egress::{ProjectItem, Views};
use crate::error::GatewayError;
use crate::operations::Operation;
use crate::policy::CacheClass;

/// An upstream answer, ready to be served to any tenant.
pub(crate) struct Entry {
    pub(crate) class: Option<CacheClass>,
    pub(crate) answer: Answer,
    /// Egress's split of the answer and the tenants' views of it.
    pub(crate) views: Views,
    pub(crate) fetched_at: Instant,
    /// The cache's trust epoch when its fill started (`cache/mod.rs`, `Inner::distrust`).
    pub(crate) trust: u64,
    /// It came from the cluster's shared tier, not from an upstream call of this replica.
    pub(crate) shared: bool,
    /// A stale copy of the shared tier, covering an upstream failure (answered as `STALE`).
    pub(crate) stale: bool,
    pub(super) weight: u32,
}

impl Entry {
    /// An answer of `operation`, split for egress when egress must edit it; a 502 naming what is
    /// missing when it cannot be.
    pub(crate) fn new(operation: Operation, answer: Answer) -> Result<Self, GatewayError> {
        let views = Views::new(operation, &answer)?;
        let weight = answer.body.len() + views.weight() + 256;
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        let now = Instant::now();
        Ok(Self { class: None, answer, views, fetched_at: now, trust: 0, shared: false, stale: false, weight })
    }

    pub(crate) fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    /// Its age at `now`.
    pub(crate) fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched_at)
    }

    /// It was fetched `age` ago (a copy of the shared tier).
    pub(super) fn backdate(&mut self, age: Duration) {
        self.fetched_at = Instant::now().checked_sub(age).unwrap_or(self.fetched_at);
    }

    /// The projects of a project answer (none for other answers).
    pub(crate) fn projects(&self) -> &[ProjectItem] {
        self.views.projects()
    }

    /// Whether this answer is about the project (for invalidation).
    pub(super) fn mentions_project(&self, project_id: &str) -> bool {
        self.projects().iter().any(|item| item.id == project_id)
    }
}
