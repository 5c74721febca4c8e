//! Step 3 of the pipeline: the 17 Console routes under `/dev` (each with and without a trailing
//! slash, as Agora documents both), and their inputs parsed into typed values and validated.
//! A bad input is a 400 naming the field, before any upstream budget is spent. Handlers stay thin:
//! what happens next is `Gateway::serve` in `app.rs`.

use std::num::NonZeroU32;
use std::sync::Arc;

use agora_console_client::rules;
use agora_console_client::types;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use bytes::Bytes;
use chrono::NaiveDate;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::app::Gateway;
use crate::auth::Authenticated;
use crate::edge::RequestDeadline;
use crate::error::GatewayError;
use crate::upstream::UpstreamCall;

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

// ---- input ----

/// Application states that bound request bodies.
pub trait HasBodyLimit {
    /// Largest body accepted, in bytes.
    fn body_limit(&self) -> usize;
}

/// The request body, bounded by `server.max_body` (413 beyond it).
pub struct Body(pub Bytes);

impl<S: HasBodyLimit + Send + Sync> FromRequest<S> for Body {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = state.body_limit();
        let too_large = GatewayError::PayloadTooLarge { limit: limit as u64 };
        let declared =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large);
        }
        match Limited::new(request.into_body(), limit).collect().await {
            Ok(collected) => Ok(Body(collected.to_bytes())),
            Err(error) if error.is::<LengthLimitError>() => Err(too_large),
            Err(error) => Err(GatewayError::bad_request(format!("the request body could not be read: {error}"))),
        }
    }
}

/// How the client wants its request handled: `refresh` when it sent `Cache-Control: no-cache` (or
/// `Pragma: no-cache`); `deadline`, the edge's, by when it must be answered.
#[derive(Clone, Copy)]
pub struct Directives {
    pub refresh: bool,
    pub deadline: Option<tokio::time::Instant>,
}

impl<S: Send + Sync> FromRequestParts<S> for Directives {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let says_no_cache = |name| {
            parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.split(',').any(|directive| directive.trim().eq_ignore_ascii_case("no-cache")))
        };
        let refresh = says_no_cache(header::CACHE_CONTROL) || says_no_cache(header::PRAGMA);
        let deadline = parts.extensions.get::<RequestDeadline>().map(|deadline| deadline.0);
        Ok(Directives { refresh, deadline })
    }
}

/// Path parameters, with a problem document when they cannot be read.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(PathParams(params)),
            Err(rejection) => Err(GatewayError::bad_request(format!("invalid path: {}", rejection.body_text()))),
        }
    }
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let value = parse_json(body)?;
    from_json(value)
}

fn parse_json(body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|error| GatewayError::bad_request(format!("the body is not valid JSON: {error}")))
}

fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            GatewayError::bad_request(format!("invalid body: {}", error.inner()))
        } else {
            GatewayError::bad_request(format!("invalid body field {path}: {}", error.inner()))
        }
    })
}

fn parse_query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, GatewayError> {
    let raw = raw.unwrap_or_default();
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            GatewayError::bad_request(format!("invalid query: {}", error.inner()))
        } else {
            GatewayError::bad_request(format!("invalid query parameter {path}: {}", error.inner()))
        }
    })
}

fn not_blank(field: &str, value: &str) -> Result<(), GatewayError> {
    if value.trim().is_empty() { Err(GatewayError::bad_request(format!("{field} must not be empty"))) } else { Ok(()) }
}

fn date(field: &str, value: &str) -> Result<NaiveDate, GatewayError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| GatewayError::bad_request(format!("{field} must be a date as YYYY-MM-DD, not {value:?}")))
}

fn date_range(from: &str, to: &str) -> Result<(NaiveDate, NaiveDate), GatewayError> {
    let (from, to) = (date("from_date", from)?, date("to_date", to)?);
    rules::check_usage_range(from, to).map_err(GatewayError::bad_request)?;
    Ok((from, to))
}

// ---- projects ----

async fn create_project(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::CreateProjectRequest = parse_body(&body)?;
    not_blank("name", &body.name)?;
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

/// The status body, read by hand for a clearer message than the generated enum's.
#[derive(Deserialize)]
struct StatusBody {
    id: String,
    status: i64,
}

async fn set_project_status(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let StatusBody { id, status } = parse_body(&body)?;
    not_blank("id", &id)?;
    let status = types::ProjectStatus::try_from(status)
        .map_err(|_| GatewayError::bad_request(format!("status must be 0 (disable) or 1 (enable), not {status}")))?;
    Ok(gw.serve(p, UpstreamCall::SetProjectStatus(types::SetProjectStatusRequest { id, status }), directives).await)
}

async fn delete_project(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::ProjectIdRequest = parse_body(&body)?;
    not_blank("id", &body.id)?;
    Ok(gw.serve(p, UpstreamCall::DeleteProject(body), directives).await)
}

async fn set_recording_config(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::SetRecordingConfigRequest = parse_body(&body)?;
    not_blank("id", &body.id)?;
    not_blank("recording_server", &body.recording_server)?;
    Ok(gw.serve(p, UpstreamCall::SetRecordingConfig(body), directives).await)
}

async fn enable_sign_key(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::EnableSignKeyRequest = parse_body(&body)?;
    not_blank("id", &body.id)?;
    Ok(gw.serve(p, UpstreamCall::EnableSignKey(body), directives).await)
}

async fn reset_sign_key(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::ProjectIdRequest = parse_body(&body)?;
    not_blank("id", &body.id)?;
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
    not_blank("project_id", &query.project_id)?;
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
    not_blank("appid", &body.appid)?;
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
    not_blank("appid", &appid)?;
    Ok(gw.serve(p, UpstreamCall::ListKickingRules { appid }, directives).await)
}

async fn update_kicking_rule(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::UpdateKickingRuleRequest = parse_body(&body)?;
    not_blank("appid", &body.appid)?;
    Ok(gw.serve(p, UpstreamCall::UpdateKickingRule(body), directives).await)
}

async fn delete_kicking_rule(
    State(gw): Gw,
    Authenticated(p): Authenticated,
    directives: Directives,
    Body(body): Body,
) -> Answer {
    let body: types::DeleteKickingRuleRequest = parse_body(&body)?;
    not_blank("appid", &body.appid)?;
    Ok(gw.serve(p, UpstreamCall::DeleteKickingRule(body), directives).await)
}

// ---- channels ----

fn uid(text: &str) -> Result<u32, GatewayError> {
    match text.parse::<u32>() {
        Ok(0) => Err(GatewayError::bad_request("uid must not be 0")),
        Ok(uid) => Ok(uid),
        Err(_) => Err(GatewayError::bad_request(format!("uid must be an unsigned 32-bit integer, not {text:?}"))),
    }
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
    let page_size = NonZeroU32::new(page_size).ok_or_else(|| GatewayError::bad_request("page_size must not be 0"))?;
    let call = UpstreamCall::ListChannels { appid, page_no: query.page_no.unwrap_or(0), page_size };
    Ok(gw.serve(p, call, directives).await)
}
