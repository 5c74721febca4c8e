//! The sandbox's HTTP surface: the 17 Console operations under `/dev` (behind the rate limit,
//! injected faults and Basic auth, in that order) and the test hooks under `/__sandbox/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use agora_console_client::types;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::traffic::{Admission, Faults, Traffic};
use agora_console_client::rules::DEFAULT_PAGE_SIZE;

use crate::world::{ApiError, ApiResult, ChannelMembers, Mode, World};

pub struct SandboxState {
    /// `Basic base64(customer_id:customer_secret)`, the only accepted `Authorization`.
    expected_authorization: String,
    world: Mutex<World>,
    traffic: Mutex<Traffic>,
}

impl SandboxState {
    pub fn new(customer_id: &str, customer_secret: &str, world: World, traffic: Traffic) -> Self {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{customer_id}:{customer_secret}"));
        Self {
            expected_authorization: format!("Basic {credentials}"),
            world: Mutex::new(world),
            traffic: Mutex::new(traffic),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn traffic(&self) -> MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, operation: &str) {
        self.traffic().count_operation(operation);
    }
}

type AppState = State<Arc<SandboxState>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error_msg": self.message }))).into_response()
    }
}

pub fn router(state: Arc<SandboxState>) -> Router {
    let console = Router::new()
        .route("/v1/project", post(create_project).get(get_project).delete(delete_project))
        .route("/v1/projects", get(list_projects))
        .route("/v1/project_status", post(set_project_status))
        .route("/v1/recording_config", post(set_recording_config))
        .route("/v1/signkey", post(enable_sign_key))
        .route("/v1/reset_signkey", post(reset_sign_key))
        .route("/v1/usage", get(get_usage))
        .route("/v3/usage", get(get_usage_v3))
        .route(
            "/v1/kicking-rule",
            post(create_kicking_rule).get(list_kicking_rules).put(update_kicking_rule).delete(delete_kicking_rule),
        )
        .route("/v1/channel/user/property/{appid}/{uid}/{cname}", get(get_user_property))
        .route("/v1/channel/user/{appid}/{cname}", get(list_channel_users))
        .route("/v1/channel/{appid}", get(list_channels))
        .fallback(|| async { ApiError { status: StatusCode::NOT_FOUND, message: "no such API".into() } })
        .route_layer(middleware::from_fn_with_state(state.clone(), gatekeeper));
    let hooks = Router::new()
        .route("/stats", get(stats))
        .route("/faults", post(set_faults))
        .route("/reset", post(reset))
        .route("/channels", post(join_channel));
    Router::new()
        .nest("/dev", console)
        .nest("/__sandbox", hooks)
        .with_state(state)
        .layer(middleware::map_request(stamp_arrival))
}

/// When a request arrived: stamped before routing, as the first thing the sandbox does with it.
#[derive(Clone, Copy)]
struct Arrived(Instant);

async fn stamp_arrival(mut request: Request) -> Request {
    request.extensions_mut().insert(Arrived(Instant::now()));
    request
}

/// Rate limit, then faults, then Basic auth: Agora counts every request it receives.
async fn gatekeeper(State(state): AppState, request: Request, next: Next) -> Response {
    let arrived = request.extensions().get::<Arrived>().map_or_else(Instant::now, |arrived| arrived.0);
    let admission = state.traffic().arrive(arrived);
    let (delay, fail_with) = match admission {
        Admission::Throttled => {
            return (StatusCode::TOO_MANY_REQUESTS, Json(json!({ "error_msg": "Too many requests" }))).into_response();
        }
        Admission::Admitted { delay, fail_with } => (delay, fail_with),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fail_with {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, Json(json!({ "error_msg": "fault injected by the sandbox" }))).into_response();
    }
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == state.expected_authorization.as_bytes());
    if !authorized {
        state.traffic().count_unauthorized();
        let mut response =
            (StatusCode::UNAUTHORIZED, Json(json!({ "error_msg": "Invalid authentication credentials" })))
                .into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"agora\""));
        return response;
    }
    next.run(request).await
}

// ---- input helpers ----

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}")))?;
    from_value(value)
}

fn from_value<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_json::from_value(value).map_err(|error| ApiError::bad_request(format!("invalid body: {error}")))
}

struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(raw: Option<String>) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|error| ApiError::bad_request(format!("invalid query string: {error}")))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> ApiResult<&str> {
        self.optional(name).ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
    }

    fn date(&self, name: &str) -> ApiResult<NaiveDate> {
        let text = self.required(name)?;
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request(format!("{name} must be a date as YYYY-MM-DD, not {text:?}")))
    }

    fn number(&self, name: &str, default: u32) -> ApiResult<u32> {
        match self.optional(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer, not {text:?}"))),
        }
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

// ---- projects ----

async fn create_project(State(state): AppState, body: Bytes) -> ApiResult<Json<types::ProjectResponse>> {
    state.count("create_project");
    let request: types::CreateProjectRequest = parse_json(&body)?;
    let project = state.world().create_project(&request.name, request.enable_sign_key, Utc::now())?;
    Ok(Json(types::ProjectResponse { project: vec![project] }))
}

async fn list_projects(State(state): AppState) -> Json<types::ProjectList> {
    state.count("list_projects");
    Json(types::ProjectList { projects: state.world().list_projects() })
}

async fn get_project(State(state): AppState, RawQuery(query): RawQuery) -> ApiResult<Json<types::ProjectResponse>> {
    state.count("get_project");
    let query = Query::parse(query)?;
    let project = state.world().get_project(query.optional("id"), query.optional("name"))?;
    Ok(Json(types::ProjectResponse { project: vec![project] }))
}

async fn set_project_status(State(state): AppState, body: Bytes) -> ApiResult<Json<types::ProjectResponse>> {
    state.count("set_project_status");
    let request: types::SetProjectStatusRequest = parse_json(&body)?;
    let project = state.world().set_project_status(&request.id, *request.status == 1)?;
    Ok(Json(types::ProjectResponse { project: vec![project] }))
}

fn success() -> Json<types::SuccessResponse> {
    Json(types::SuccessResponse { success: true })
}

async fn delete_project(State(state): AppState, body: Bytes) -> ApiResult<Json<types::SuccessResponse>> {
    state.count("delete_project");
    let request: types::ProjectIdRequest = parse_json(&body)?;
    state.world().delete_project(&request.id)?;
    Ok(success())
}

async fn set_recording_config(State(state): AppState, body: Bytes) -> ApiResult<Json<types::SuccessResponse>> {
    state.count("set_recording_config");
    let request: types::SetRecordingConfigRequest = parse_json(&body)?;
    state.world().set_recording_config(&request.id, &request.recording_server)?;
    Ok(success())
}

async fn enable_sign_key(State(state): AppState, body: Bytes) -> ApiResult<Json<types::SuccessResponse>> {
    state.count("enable_sign_key");
    let request: types::EnableSignKeyRequest = parse_json(&body)?;
    state.world().enable_sign_key(&request.id, request.enable)?;
    Ok(success())
}

async fn reset_sign_key(State(state): AppState, body: Bytes) -> ApiResult<Json<types::SuccessResponse>> {
    state.count("reset_sign_key");
    let request: types::ProjectIdRequest = parse_json(&body)?;
    state.world().reset_sign_key(&request.id)?;
    Ok(success())
}

// ---- usage ----

async fn get_usage(State(state): AppState, RawQuery(query): RawQuery) -> ApiResult<Json<types::UsageV1Response>> {
    state.count("get_usage");
    let query = Query::parse(query)?;
    let (from, to) = (query.date("from_date")?, query.date("to_date")?);
    let projects: Option<Vec<String>> = query
        .optional("projects")
        .filter(|list| !list.is_empty())
        .map(|list| list.split(',').map(|id| id.trim().to_string()).collect());
    Ok(Json(state.world().usage_v1(from, to, projects.as_deref(), today())?))
}

async fn get_usage_v3(State(state): AppState, RawQuery(query): RawQuery) -> ApiResult<Json<types::UsageV3Response>> {
    state.count("get_usage_v3");
    let query = Query::parse(query)?;
    let (from, to) = (query.date("from_date")?, query.date("to_date")?);
    let project_id = query.required("project_id")?;
    let business = match query.optional("business") {
        None => types::UsageBusiness::Default,
        Some(text) => text.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "business must be one of default, transcodeDuration, recording, cloudRecording, miniapp, not {text:?}"
            ))
        })?,
    };
    Ok(Json(state.world().usage_v3(from, to, project_id, business, today())?))
}

// ---- kicking rules ----

async fn create_kicking_rule(State(state): AppState, body: Bytes) -> ApiResult<Json<types::KickingRuleCreated>> {
    state.count("create_kicking_rule");
    let mut value: Value = parse_json(&body)?;
    agora_console_client::rules::drop_empty_uid_and_ip(&mut value);
    let request: types::CreateKickingRuleRequest = from_value(value)?;
    let id = state.world().create_rule(&request, Utc::now())?;
    Ok(Json(types::KickingRuleCreated { status: "success".into(), id }))
}

async fn list_kicking_rules(
    State(state): AppState,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<types::KickingRuleList>> {
    state.count("list_kicking_rules");
    let query = Query::parse(query)?;
    let rules = state.world().list_rules(query.required("appid")?, Utc::now())?;
    Ok(Json(types::KickingRuleList { status: "success".into(), rules }))
}

async fn update_kicking_rule(State(state): AppState, body: Bytes) -> ApiResult<Json<types::KickingRuleUpdated>> {
    state.count("update_kicking_rule");
    let request: types::UpdateKickingRuleRequest = parse_json(&body)?;
    let result = state.world().update_rule(&request.appid, request.id, request.time, Utc::now())?;
    Ok(Json(types::KickingRuleUpdated { status: "success".into(), result }))
}

async fn delete_kicking_rule(State(state): AppState, body: Bytes) -> ApiResult<Json<types::KickingRuleDeleted>> {
    state.count("delete_kicking_rule");
    let request: types::DeleteKickingRuleRequest = parse_json(&body)?;
    let id = state.world().delete_rule(&request.appid, request.id, Utc::now())?;
    Ok(Json(types::KickingRuleDeleted { status: "success".into(), id }))
}

// ---- channels ----

fn parse_uid(text: &str) -> ApiResult<u32> {
    match text.parse::<u32>() {
        Ok(0) => Err(ApiError::bad_request("uid must not be 0")),
        Ok(uid) => Ok(uid),
        Err(_) => Err(ApiError::bad_request(format!("uid must be an unsigned 32-bit integer, not {text:?}"))),
    }
}

async fn get_user_property(
    State(state): AppState,
    Path((appid, uid, cname)): Path<(String, String, String)>,
) -> ApiResult<Json<types::UserPropertyResponse>> {
    state.count("get_user_property");
    let data = state.world().user_property(&appid, parse_uid(&uid)?, &cname)?;
    Ok(Json(types::UserPropertyResponse { success: true, data }))
}

async fn list_channel_users(
    State(state): AppState,
    Path((appid, cname)): Path<(String, String)>,
) -> ApiResult<Json<types::ChannelUsersResponse>> {
    state.count("list_channel_users");
    let data = state.world().channel_users(&appid, &cname)?;
    Ok(Json(types::ChannelUsersResponse { success: true, data }))
}

async fn list_channels(
    State(state): AppState,
    Path(appid): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<types::ChannelListResponse>> {
    state.count("list_channels");
    let query = Query::parse(query)?;
    let page_no = query.number("page_no", 0)?;
    let page_size = query.number("page_size", DEFAULT_PAGE_SIZE)?;
    let data = state.world().list_channels(&appid, page_no, page_size)?;
    Ok(Json(types::ChannelListResponse { success: true, data }))
}

// ---- test hooks ----

async fn stats(State(state): AppState) -> Json<crate::Stats> {
    Json(state.traffic().stats())
}

async fn set_faults(State(state): AppState, body: Bytes) -> ApiResult<StatusCode> {
    let faults: Faults = parse_json(&body)?;
    faults.validate().map_err(ApiError::bad_request)?;
    state.traffic().set_faults(faults);
    Ok(StatusCode::NO_CONTENT)
}

async fn reset(State(state): AppState) -> StatusCode {
    state.traffic().reset();
    StatusCode::NO_CONTENT
}

/// `POST /__sandbox/channels`: users join a channel, as they would through the SDK.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinChannel {
    appid: String,
    cname: String,
    /// 1 communication, 2 live.
    mode: u8,
    #[serde(default)]
    users: Vec<u32>,
    #[serde(default)]
    broadcasters: Vec<u32>,
    #[serde(default)]
    audience: Vec<u32>,
    /// Further audience members with made-up uids (for channels of more than 10,000).
    #[serde(default)]
    extra_audience: u32,
}

async fn join_channel(State(state): AppState, body: Bytes) -> ApiResult<StatusCode> {
    let request: JoinChannel = parse_json(&body)?;
    let members = ChannelMembers {
        users: request.users,
        broadcasters: request.broadcasters,
        audience: request.audience,
        extra_audience: request.extra_audience,
    };
    let mode = match request.mode {
        1 => Mode::Communication,
        2 => Mode::Live,
        other => {
            return Err(ApiError::bad_request(format!("mode must be 1 or 2, not {other}")));
        }
    };
    state.world().join_channel(&request.appid, &request.cname, mode, &members, Utc::now())?;
    Ok(StatusCode::NO_CONTENT)
}
