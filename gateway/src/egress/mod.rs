//! Step 8 of the pipeline, on the way out: an upstream answer (shared by every tenant) cut down to
//! the caller — only its projects in a project list, `sign_key` null without `projects:secrets` —
//! and nothing else changed: every field the gateway does not know stays, in place. Project
//! answers are split once per cache entry (`projects.rs`), and each tenant's view of an entry is
//! rendered once and kept beside it (`views.rs`), so a cache hit writes ready bytes.

pub(crate) mod json;
pub(crate) mod projects;
mod views;

use bytes::Bytes;

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::policy::{Ownership, Scope};
pub(crate) use projects::ProjectItem;
pub(crate) use views::{View, ViewKey, Views};

/// The body to send this principal, for an answer (`body`, split in `views`) of an operation
/// with this ownership rule.
pub(crate) fn render(
    principal: &Principal,
    ownership: Ownership,
    body: &Bytes,
    views: &Views,
) -> Result<Bytes, GatewayError> {
    let View::Projects(view) = &views.view else {
        return Ok(body.clone());
    };
    let secrets = principal.has(Scope::ProjectsSecrets);
    if principal.is_admin() && secrets {
        return Ok(body.clone());
    }
    let filtered = matches!(ownership, Ownership::FilterProjects | Ownership::ResultProject) && !principal.is_admin();
    let key = ViewKey { tenant: principal.tenant.uid, filtered, secrets };
    let rendered = views.view_for(key, || {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::{HeaderMap, StatusCode};
    use serde_json::{Value, json};

    use super::*;
    use crate::answer::Answer;
    use crate::auth::{Principal, Tenant};
    use crate::operations::Operation;
    use crate::policy::ScopeSet;

    /// An answer as the cache keeps it: the answer, and egress's split of it.
    struct Entry {
        answer: Answer,
        views: Views,
    }

    fn entry(operation: Operation, body: Value) -> Entry {
        let answer = Answer { status: StatusCode::CREATED, headers: HeaderMap::new(), body: body.to_string().into() };
        let views = Views::new(operation, &answer).unwrap();
        Entry { answer, views }
    }

    fn render(principal: &Principal, ownership: Ownership, entry: &Entry) -> Result<Bytes, GatewayError> {
        super::render(principal, ownership, &entry.answer.body, &entry.views)
    }

    fn principal(tenant: &Arc<Tenant>, scopes: &[Scope]) -> Principal {
        Principal {
            tenant: tenant.clone(),
            subject: "s".into(),
            scopes: scopes.iter().copied().collect::<ScopeSet>(),
            expires_at: 0,
            jwks_kid: None,
        }
    }

    fn list() -> Entry {
        let project = |id: &str, name: &str| json!({"id": id, "name": name, "vendor_key": format!("k-{id}"), "sign_key": "secret", "extra": {"n": 1}});
        entry(
            Operation::ListProjects,
            json!({"projects": [project("a", "acme-a"), project("g", "globex-g")], "total": 2}),
        )
    }

    fn body(bytes: Bytes) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_list_is_cut_down_to_the_tenant_and_redacted_without_the_scope() {
        let (acme, list) = (Arc::new(Tenant::for_tests(0, "acme", 1)), list());
        let plain = render(&principal(&acme, &[]), Ownership::FilterProjects, &list).unwrap();
        assert_eq!(
            body(plain),
            json!({"projects": [{"id": "a", "name": "acme-a", "vendor_key": "k-a", "sign_key": null, "extra": {"n": 1}}], "total": 2})
        );
        let secrets = render(&principal(&acme, &[Scope::ProjectsSecrets]), Ownership::FilterProjects, &list).unwrap();
        assert_eq!(body(secrets)["projects"][0]["sign_key"], "secret");
        let admin = render(&principal(&acme, &[Scope::Admin]), Ownership::FilterProjects, &list).unwrap();
        let admin = body(admin);
        assert_eq!(admin["projects"].as_array().unwrap().len(), 2, "admin sees every project");
        assert!(admin["projects"].as_array().unwrap().iter().all(|p| p["sign_key"].is_null()), "redacted all the same");
        let everything =
            render(&principal(&acme, &[Scope::Admin, Scope::ProjectsSecrets]), Ownership::FilterProjects, &list);
        assert_eq!(everything.unwrap(), list.answer.body, "admin with secrets: the bytes as they came");
    }

    #[test]
    fn a_lookup_of_anothers_project_is_not_found_and_views_are_kept() {
        let acme = Arc::new(Tenant::for_tests(0, "acme", 1));
        let got = entry(
            Operation::GetProject,
            json!({"project": {"id": "g", "name": "globex-g", "vendor_key": "k", "sign_key": "s"}}),
        );
        let refused = render(&principal(&acme, &[]), Ownership::ResultProject, &got);
        assert!(matches!(refused, Err(GatewayError::NotFound(_))));
        let list = list();
        let first = render(&principal(&acme, &[]), Ownership::FilterProjects, &list).unwrap();
        let again = render(&principal(&acme, &[]), Ownership::FilterProjects, &list).unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr(), "the tenant's view is rendered once per entry, then kept");
    }

    #[test]
    fn a_write_answer_is_redacted_whatever_its_shape_and_others_pass() {
        let acme = Arc::new(Tenant::for_tests(0, "acme", 1));
        for project in [
            json!({"id": "a", "name": "acme-a", "vendor_key": "k", "sign_key": "s"}),
            json!([{"id": "a", "name": "acme-a", "vendor_key": "k", "sign_key": "s"}]),
        ] {
            let written = entry(Operation::ResetSignKey, json!({"project": project}));
            let seen = body(render(&principal(&acme, &[]), Ownership::ProjectId, &written).unwrap());
            let seen = if seen["project"].is_array() { seen["project"][0].clone() } else { seen["project"].clone() };
            assert_eq!(seen["sign_key"], Value::Null);
        }
        let success = entry(Operation::ResetSignKey, json!({"success": true}));
        assert_eq!(render(&principal(&acme, &[]), Ownership::ProjectId, &success).unwrap(), success.answer.body);
        let channels = entry(Operation::ListChannels, json!({"weird": [1]}));
        assert_eq!(render(&principal(&acme, &[]), Ownership::AppId, &channels).unwrap(), channels.answer.body);
    }
}
