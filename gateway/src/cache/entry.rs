//! What the cache holds: an upstream answer as JSON, and for project answers each project
//! pre-rendered with and without its App certificate, so egress joins bytes instead of serializing.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::policy::CacheClass;
use crate::upstream::Answer;

/// One project of a project answer, pre-rendered both ways so that answering a tenant is
/// concatenating bytes, not serializing.
pub struct ProjectItem {
    pub id: String,
    pub name: String,
    pub vendor_key: String,
    /// The project as Agora sent it.
    pub full: Bytes,
    /// The same with `sign_key: null`.
    pub redacted: Bytes,
}

/// What egress needs to cut an answer down to a tenant.
pub enum View {
    /// Passed through as is.
    Raw,
    /// `{"projects": [...]}` or `{"project": [...]}`.
    Projects { field: &'static str, items: Vec<ProjectItem> },
}

/// An upstream answer, ready to be served to any tenant.
pub struct Entry {
    pub class: Option<CacheClass>,
    /// The answer's JSON.
    pub body: Bytes,
    pub view: View,
    pub fetched_at: Instant,
    pub(super) weight: u32,
}

impl Entry {
    pub fn new(class: Option<CacheClass>, answer: Answer) -> Self {
        let body = answer.to_json();
        let view = match answer {
            Answer::Projects(list) => Self::projects("projects", list.projects),
            Answer::Project(response) => Self::projects("project", response.project),
            _ => View::Raw,
        };
        let items_weight: usize = match &view {
            View::Raw => 0,
            View::Projects { items, .. } => items
                .iter()
                .map(|item| {
                    item.full.len() + item.redacted.len() + item.id.len() + item.name.len() + item.vendor_key.len() + 96
                })
                .sum(),
        };
        let weight = u32::try_from(body.len() + items_weight + 256).unwrap_or(u32::MAX);
        Self { class, body, view, fetched_at: Instant::now(), weight }
    }

    fn projects(field: &'static str, projects: Vec<agora_console_client::types::Project>) -> View {
        let items = projects
            .into_iter()
            .map(|mut project| {
                let full = Bytes::from(serde_json::to_vec(&project).expect("projects serialize"));
                project.sign_key = None;
                let redacted = Bytes::from(serde_json::to_vec(&project).expect("projects serialize"));
                ProjectItem { id: project.id, name: project.name, vendor_key: project.vendor_key, full, redacted }
            })
            .collect();
        View::Projects { field, items }
    }

    pub fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }

    /// Whether this answer is about the project (for invalidation).
    pub(super) fn mentions_project(&self, project_id: &str) -> bool {
        match &self.view {
            View::Projects { field: "projects", .. } => true,
            View::Projects { items, .. } => items.iter().any(|item| item.id == project_id),
            View::Raw => false,
        }
    }
}
