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
    /// Waits briefly for writes through other replicas to reach this one; answers whether any
    /// was pending (the list read before may not show them).
    fn catch_up(&self) -> impl Future<Output = bool> + Send;
    /// An app's kicking-rule list, from the cache unless `refresh`.
    fn kicking_rules(
        &self,
        appid: &str,
        refresh: bool,
    ) -> impl Future<Output = Result<Arc<Entry>, GatewayError>> + Send;
}

fn items(entry: &Entry) -> &[ProjectItem] {
    entry.projects()
}

/// Whether the caller owns a project matching `matches`, looking upstream once more if the
/// directory is old. Another tenant's project and a missing one take the same path (and the same
/// upstream call, if any): neither their answers nor their timing tell them apart.
async fn find_owned(
    directory: &impl Directory,
    principal: &Principal,
    matches: impl Fn(&ProjectItem) -> bool,
) -> Result<bool, GatewayError> {
    let owned = |entry: &Entry| items(entry).iter().any(|item| matches(item) && principal.owns(&item.id, &item.name));
    let entry = directory.projects(false).await?;
    if owned(&entry) {
        return Ok(true);
    }
    if entry.age() < DIRECTORY_RECHECK_AGE {
        // Young, unless another replica created the project a moment ago.
        if !directory.catch_up().await {
            return Ok(false);
        }
        return Ok(owned(&*directory.projects(false).await?));
    }
    let entry = directory.projects(true).await?;
    Ok(owned(&entry))
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
    // Deny by default: a rule that reads an input owns nothing without one.
    if input.is_empty() && matches!(policy.ownership, Ownership::ProjectId | Ownership::AppId | Ownership::AppRule) {
        return Err(GatewayError::not_found("not found"));
    }
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
        // No project's: the scope (`admin`) is the whole check, and it was made.
        Ownership::Account => Err(GatewayError::Forbidden("this is the account's own, for administrators".into())),
        // Decided before asking, so that another tenant's project and a missing one answer alike.
        Ownership::ResultProject => {
            let (id, name) = (call.get("id"), call.get("name"));
            let matches = |item: &ProjectItem| item.is_asked_for(id, name);
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
        Ownership::AppId | Ownership::AppRule => {
            if !find_owned(directory, principal, |item| item.vendor_key == input).await? {
                return Err(GatewayError::not_found(format!("app {input:?} not found")));
            }
            if policy.ownership == Ownership::AppRule {
                let rule = call.body.as_ref().and_then(|body| body.get("id")).map(ToString::to_string);
                if !has_rule(directory, &input, rule.as_deref().unwrap_or_default()).await? {
                    return Err(GatewayError::not_found(format!(
                        "kicking rule {} not found",
                        rule.unwrap_or_default()
                    )));
                }
            }
            Ok(Decision::Send(call))
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

/// Whether `rule` (an ID, as JSON writes it) is one of the app's kicking rules: from the cached
/// list, asked again once if it is not there (the rule may be new).
async fn has_rule(directory: &impl Directory, appid: &str, rule: &str) -> Result<bool, GatewayError> {
    let listed = |entry: &Entry| {
        let list: Option<serde_json::Value> = serde_json::from_slice(&entry.answer.body).ok();
        let rules = list.as_ref().and_then(|list| list.get("rules")?.as_array().cloned()).unwrap_or_default();
        rules.iter().any(|listed| listed.get("id").is_some_and(|id| *id.to_string() == *rule))
    };
    if rule.is_empty() {
        return Ok(false);
    }
    if listed(&*directory.kicking_rules(appid, false).await?) {
        return Ok(true);
    }
    Ok(listed(&*directory.kicking_rules(appid, true).await?))
}

/// A comma-separated list of IDs, trimmed, sorted, without repeats (one cache key for one set).
fn id_list(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_string).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};
    use serde_json::json;

    use super::*;
    use crate::answer::Answer;
    use crate::auth::Tenant;
    use crate::operations::Operation;
    use crate::policy::{Scope, ScopeSet};

    /// A project list as the directory, counting the refreshes it is asked for.
    struct List {
        entry: Mutex<Arc<Entry>>,
        refreshes: Mutex<u32>,
    }

    fn entry() -> Arc<Entry> {
        let project = |id: &str, name: &str, key: &str| json!({"id": id, "name": name, "vendor_key": key});
        let body = json!({"projects": [
            project("a1", "acme-web", "app-a1"), project("a2", "acme-mobile", "app-a2"),
            project("g1", "globex-live", "app-g1"), project("x1", "loose", "app-x1"),
        ]});
        let answer = Answer { status: StatusCode::OK, headers: HeaderMap::new(), body: body.to_string().into() };
        Arc::new(Entry::new(Operation::ListProjects, answer).unwrap())
    }

    impl List {
        fn new() -> Self {
            Self { entry: Mutex::new(entry()), refreshes: Mutex::new(0) }
        }

        fn refreshes(&self) -> u32 {
            *self.refreshes.lock().unwrap()
        }
    }

    impl Directory for List {
        async fn projects(&self, refresh: bool) -> Result<Arc<Entry>, GatewayError> {
            if refresh {
                *self.refreshes.lock().unwrap() += 1;
                *self.entry.lock().unwrap() = entry();
            }
            Ok(self.entry.lock().unwrap().clone())
        }

        async fn catch_up(&self) -> bool {
            false
        }

        async fn kicking_rules(&self, _appid: &str, _refresh: bool) -> Result<Arc<Entry>, GatewayError> {
            let rules = json!({"status": "success", "rules": [{"id": 1953, "appid": "f".repeat(32)}]});
            let answer = Answer { status: StatusCode::OK, headers: HeaderMap::new(), body: rules.to_string().into() };
            Ok(Arc::new(Entry::new(Operation::ListKickingRules, answer).unwrap()))
        }
    }

    fn principal(scopes: &[Scope]) -> Principal {
        let mut tenant = Tenant::for_tests(0, "acme", 1);
        tenant.project_ids.insert("x1".into());
        Principal {
            tenant: Arc::new(tenant),
            subject: "svc".into(),
            scopes: scopes.iter().copied().collect::<ScopeSet>(),
            expires_at: u64::MAX,
            jwks_kid: None,
        }
    }

    async fn decide(list: &List, principal: &Principal, call: Call) -> Result<Decision, GatewayError> {
        check_ownership(list, principal, call.operation.policy(), call).await
    }

    fn sent(decision: Result<Decision, GatewayError>) -> Call {
        match decision {
            Ok(Decision::Send(call)) => call,
            Ok(Decision::Answer(body)) => panic!("answered {body:?}"),
            Err(error) => panic!("refused: {error:?}"),
        }
    }

    fn status(decision: Result<Decision, GatewayError>) -> u16 {
        match decision {
            Err(error) => error.status().as_u16(),
            Ok(_) => 200,
        }
    }

    fn with_body(operation: Operation, body: serde_json::Value) -> Call {
        let mut call = Call::new(operation);
        call.body = Some(body);
        call
    }

    #[tokio::test(start_paused = true)]
    async fn apps_and_projects_are_the_tenants_by_prefix_or_id_and_others_look_missing() {
        let (list, acme) = (List::new(), principal(&[Scope::ChannelsRead]));
        let channels = |app: &str| Call::with(Operation::ListChannels, &[("appid", app)]);
        sent(decide(&list, &acme, channels("app-a1")).await);
        sent(decide(&list, &acme, channels("app-x1")).await);
        assert_eq!(status(decide(&list, &acme, channels("app-g1")).await), 404, "another tenant's app");
        assert_eq!(status(decide(&list, &acme, channels("no-such-app")).await), 404, "a missing app");
        assert_eq!(status(decide(&list, &acme, Call::new(Operation::ListChannels)).await), 404, "no app at all");

        let status_write = |id: &str| with_body(Operation::SetProjectStatus, json!({"id": id, "status": 1}));
        sent(decide(&list, &acme, status_write("a2")).await);
        assert_eq!(status(decide(&list, &acme, status_write("g1")).await), 404);
        let get = |params: &[(&'static str, &str)]| Call::with(Operation::GetProject, params);
        sent(decide(&list, &acme, get(&[("name", "acme-web")])).await);
        assert_eq!(status(decide(&list, &acme, get(&[("id", "a1"), ("name", "globex-live")])).await), 404);
        assert_eq!(list.refreshes(), 0, "a young directory is not asked again");
    }

    #[tokio::test(start_paused = true)]
    async fn foreign_and_missing_take_the_same_path_once_the_directory_is_old() {
        let (list, acme) = (List::new(), principal(&[Scope::ChannelsRead]));
        tokio::time::advance(DIRECTORY_RECHECK_AGE).await;
        let channels = |app: &str| Call::with(Operation::ListChannels, &[("appid", app)]);
        assert_eq!(status(decide(&list, &acme, channels("app-g1")).await), 404);
        assert_eq!(list.refreshes(), 1, "a foreign app is looked for again, as a missing one");
        tokio::time::advance(DIRECTORY_RECHECK_AGE).await;
        assert_eq!(status(decide(&list, &acme, channels("no-such-app")).await), 404);
        assert_eq!(list.refreshes(), 2);
        sent(decide(&list, &acme, channels("app-a1")).await);
        assert_eq!(list.refreshes(), 2, "an owned one needs no second look");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kicking_rule_is_changed_only_under_its_own_app() {
        let (list, acme) = (List::new(), principal(&[Scope::KickingWrite]));
        let update = |app: &str, id: serde_json::Value| {
            with_body(Operation::UpdateKickingRule, json!({"appid": app, "id": id, "time": 10}))
        };
        sent(decide(&list, &acme, update("app-a1", json!(1953))).await);
        assert_eq!(status(decide(&list, &acme, update("app-a1", json!(7))).await), 404, "not that app's rule");
        assert_eq!(status(decide(&list, &acme, update("app-g1", json!(1953))).await), 404, "not the tenant's app");
        let delete = with_body(Operation::DeleteKickingRule, json!({"appid": "app-a1", "id": 8}));
        assert_eq!(status(decide(&list, &acme, delete).await), 404);
        let no_id = with_body(Operation::DeleteKickingRule, json!({"appid": "app-a1"}));
        assert_eq!(status(decide(&list, &acme, no_id).await), 404, "no rule named is no rule owned");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_input_owns_nothing_even_when_the_upstream_lists_an_empty_id() {
        let (list, acme) = (List::new(), principal(&[Scope::ChannelsRead]));
        let project = json!({"id": "", "name": "acme-blank", "vendor_key": ""});
        let answer = Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: json!({"projects": [project]}).to_string().into(),
        };
        *list.entry.lock().unwrap() = Arc::new(Entry::new(Operation::ListProjects, answer).unwrap());
        let channels = Call::with(Operation::ListChannels, &[("appid", "")]);
        assert_eq!(status(decide(&list, &acme, channels).await), 404);
        let status_write = with_body(Operation::SetProjectStatus, json!({"id": "", "status": 1}));
        assert_eq!(status(decide(&list, &acme, status_write).await), 404);
    }

    #[tokio::test(start_paused = true)]
    async fn creating_takes_the_tenants_prefix() {
        let (list, acme) = (List::new(), principal(&[Scope::ProjectsWrite]));
        let create = |name: &str| with_body(Operation::CreateProject, json!({"name": name}));
        sent(decide(&list, &acme, create("acme-new")).await);
        assert_eq!(status(decide(&list, &acme, create("globex-new")).await), 403);
        let mut prefixless = principal(&[Scope::ProjectsWrite]);
        Arc::get_mut(&mut prefixless.tenant).unwrap().project_name_prefix = None;
        assert_eq!(status(decide(&list, &prefixless, create("acme-new")).await), 403);
    }

    #[tokio::test(start_paused = true)]
    async fn usage_is_cut_down_to_the_tenants_projects_and_never_widened() {
        let (list, acme) = (List::new(), principal(&[Scope::UsageRead]));
        let usage = |projects: Option<&str>| {
            let mut params = vec![("from_date", "2026-01-01"), ("to_date", "2026-01-02")];
            params.extend(projects.map(|p| ("projects", p)));
            Call::with(Operation::GetUsage, &params)
        };
        assert_eq!(sent(decide(&list, &acme, usage(None)).await).get("projects"), Some("a1,a2,x1"), "all of its own");
        let mixed = sent(decide(&list, &acme, usage(Some("g1, x1,a1,x1"))).await);
        assert_eq!(mixed.get("projects"), Some("a1,x1"), "others' dropped, sorted, once each");
        match decide(&list, &acme, usage(Some("g1"))).await {
            Ok(Decision::Answer(body)) => assert_eq!(body, Bytes::from_static(b"{\"usages\":[]}")),
            _ => panic!("only another tenant's project: answered empty, never all of the account's"),
        }
        let admin = principal(&[Scope::UsageRead, Scope::Admin]);
        assert_eq!(sent(decide(&list, &admin, usage(Some("g1,a1,g1"))).await).get("projects"), Some("a1,g1"));
    }
}
