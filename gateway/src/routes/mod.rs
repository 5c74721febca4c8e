//! Step 3 of the pipeline: the 17 Console routes under `/dev` (each with and without a trailing
//! slash, as Agora documents both), and their inputs parsed into typed values and validated.
//! A bad input is a 400 naming the field, before any upstream budget is spent. Handlers stay thin:
//! what happens next is `Gateway::serve` in `app.rs`. Reading inputs is `input.rs`.

mod input;

use std::sync::Arc;

use agora_console_client::rules;
use agora_console_client::types;
use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;

use crate::app::Gateway;
use crate::auth::Authenticated;
use crate::error::GatewayError;
use crate::upstream::UpstreamCall;
pub use input::{Body, Directives, HasBodyLimit, PathParams};
use input::{date_range, from_json, parse_body, parse_json, parse_query};

type Gw = State<Arc<Gateway>>;
type Answer = Result<Response, GatewayError>;

/// The Console routes, under `/dev`.
pub fn console_routes() -> Router<Arc<Gateway>> {
    let routes: [(&str, MethodRouter<Arc<Gateway>>); 12] = [
        ("/v1/project", post(create_project).get(get_project).delete(delete_project)),
        ("/v1/projects", get(list_projects)),
        ("/v1/project_status", post(set_project_status)),
        ("/v1/recording_config", post(set_recording_config)),
        ("/v1/signkey", post(enable_sign_key)),
        ("/v1/reset_signkey", post(reset_sign_key)),
        ("/v1/usage", get(get_usage)),
        ("/v3/usage", get(get_usage_v3)),
        (
            "/v1/kicking-rule",
            post(create_kicking_rule).get(list_kicking_rules).put(update_kicking_rule).delete(delete_kicking_rule),
        ),
        ("/v1/channel/user/property/{appid}/{uid}/{cname}", get(get_user_property)),
        ("/v1/channel/user/{appid}/{cname}", get(list_channel_users)),
        ("/v1/channel/{appid}", get(list_channels)),
    ];
    let mut router = Router::new();
    for (path, method_router) in routes {
        let method_router = method_router.fallback(method_not_allowed);
        router =
            router.route(&format!("/dev{path}"), method_router.clone()).route(&format!("/dev{path}/"), method_router);
    }
    router
}

pub async fn method_not_allowed(request: Request) -> GatewayError {
    GatewayError::MethodNotAllowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

// ---- projects ----

async fn create_project(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::CreateProjectRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::CreateProject(body), directives).await)
}

async fn list_projects(State(gw): Gw, Authenticated(p): Authenticated, directives: Directives) -> Response {
    gw.serve(p, UpstreamCall::ListProjects, directives).await
}

#[derive(Deserialize)]
struct GetProjectQuery {
    id: Option<String>,
    name: Option<String>,
}

async fn get_project(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    RawQuery(query): RawQuery,
) -> Answer {
    let GetProjectQuery { id, name } = parse_query(query)?;
    let id = id.filter(|id| !id.is_empty());
    let name = name.filter(|name| !name.is_empty());
    if id.is_none() && name.is_none() {
        return Err(GatewayError::bad_request("id or name is required"));
    }
    Ok(gw.serve(p, UpstreamCall::GetProject { id, name }, directives).await)
}

async fn set_project_status(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let value = parse_json(&body)?;
    // Checked by hand for a clearer message than the generated enum's.
    if let Some(status) = value.get("status")
        && !matches!(status.as_i64(), Some(0 | 1))
    {
        return Err(GatewayError::bad_request(format!("status must be 0 (disable) or 1 (enable), not {status}")));
    }
    let body: types::SetProjectStatusRequest = from_json(value)?;
    Ok(gw.serve(p, UpstreamCall::SetProjectStatus(body), directives).await)
}

async fn delete_project(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::ProjectIdRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::DeleteProject(body), directives).await)
}

async fn set_recording_config(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::SetRecordingConfigRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::SetRecordingConfig(body), directives).await)
}

async fn enable_sign_key(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::EnableSignKeyRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::EnableSignKey(body), directives).await)
}

async fn reset_sign_key(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::ProjectIdRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::ResetSignKey(body), directives).await)
}

// ---- usage ----

#[derive(Deserialize)]
struct UsageQuery {
    from_date: String,
    to_date: String,
    projects: Option<String>,
}

async fn get_usage(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    RawQuery(query): RawQuery,
) -> Answer {
    let query: UsageQuery = parse_query(query)?;
    let (from, to) = date_range(&query.from_date, &query.to_date)?;
    let projects = query
        .projects
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    Ok(gw.serve(p, UpstreamCall::GetUsage { from, to, projects }, directives).await)
}

#[derive(Deserialize)]
struct UsageV3Query {
    from_date: String,
    to_date: String,
    project_id: String,
    #[serde(default)]
    business: Option<types::UsageBusiness>,
}

async fn get_usage_v3(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    RawQuery(query): RawQuery,
) -> Answer {
    let query: UsageV3Query = parse_query(query)?;
    let (from, to) = date_range(&query.from_date, &query.to_date)?;
    let business = query.business.unwrap_or(types::UsageBusiness::Default);
    let call = UpstreamCall::GetUsageV3 { from, to, project_id: query.project_id, business };
    Ok(gw.serve(p, call, directives).await)
}

// ---- kicking rules ----

async fn create_kicking_rule(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let mut value = parse_json(&body)?;
    rules::drop_empty_uid_and_ip(&mut value);
    let body: types::CreateKickingRuleRequest = from_json(value)?;
    rules::check_kicking_rule(&body).map_err(GatewayError::bad_request)?;
    Ok(gw.serve(p, UpstreamCall::CreateKickingRule(body), directives).await)
}

#[derive(Deserialize)]
struct AppIdQuery {
    appid: String,
}

async fn list_kicking_rules(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    RawQuery(query): RawQuery,
) -> Answer {
    let AppIdQuery { appid } = parse_query(query)?;
    Ok(gw.serve(p, UpstreamCall::ListKickingRules { appid }, directives).await)
}

async fn update_kicking_rule(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::UpdateKickingRuleRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::UpdateKickingRule(body), directives).await)
}

async fn delete_kicking_rule(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::DeleteKickingRuleRequest = parse_body(&body)?;
    Ok(gw.serve(p, UpstreamCall::DeleteKickingRule(body), directives).await)
}

// ---- channels ----

/// A user ID: Agora's are unsigned 32-bit integers (the spec's `uint32`).
fn uid(text: &str) -> Result<u32, GatewayError> {
    text.parse::<u32>()
        .map_err(|_| GatewayError::bad_request(format!("uid must be an unsigned 32-bit integer, not {text:?}")))
}

async fn get_user_property(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    PathParams((appid, user, cname)): PathParams<(String, String, String)>,
) -> Answer {
    let call = UpstreamCall::GetUserProperty { appid, uid: uid(&user)?, cname };
    Ok(gw.serve(p, call, directives).await)
}

async fn list_channel_users(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    PathParams((appid, cname)): PathParams<(String, String)>,
) -> Response {
    gw.serve(p, UpstreamCall::ListChannelUsers { appid, cname }, directives).await
}

#[derive(Deserialize)]
struct PageQuery {
    page_no: Option<u32>,
    page_size: Option<u32>,
}

async fn list_channels(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    PathParams(appid): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let query: PageQuery = parse_query(query)?;
    let page_size = query.page_size.unwrap_or(rules::DEFAULT_PAGE_SIZE);
    rules::check_page_size(page_size).map_err(GatewayError::bad_request)?;
    let call = UpstreamCall::ListChannels { appid, page_no: query.page_no.unwrap_or(0), page_size };
    Ok(gw.serve(p, call, directives).await)
}
