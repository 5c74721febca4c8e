//! The sandbox's HTTP surface: the Console operations under `/dev` (behind the rate limit,
//! injected faults and Basic auth, in that order) and the test hooks under `/__sandbox/`.
//! Answers are shaped by the flavor (`answer.rs`): the live service's, or the document's.

// Handlers and their input helpers answer a `Response` either way (the flavor words the refusal);
// boxing the error side would only add an allocation to a simulator's error path.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use agora_console_client::rules::DEFAULT_PAGE_SIZE;
use agora_console_client::types;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Flavor;
use crate::answer::{EdgeError, Shaper};
use crate::notify::{Delivery, Notifier, NotifyFaults};
use crate::traffic::{Admission, Faults, Traffic};
use crate::world::{ApiError, ApiResult, ChannelMembers, Mode, World, missing_channel};

pub(crate) struct SandboxState {
    shaper: Shaper,
    /// `Basic base64(customer_id:customer_secret)`, the only accepted `Authorization`.
    expected_authorization: String,
    world: Mutex<World>,
    traffic: Mutex<Traffic>,
    /// Agora's Notifications service, when the sandbox sends notices (`notify.rs`).
    notifier: Option<Notifier>,
    /// What `GET /v2/ncs/ip` answers: where the notices come from (this machine, unless a test
    /// says otherwise through `POST /__sandbox/ncs-ips`).
    ncs_ips: Mutex<Vec<String>>,
    /// The domains it serves as, each up or down (`domains.rs`).
    domains: Arc<crate::domains::Switches>,
}

impl SandboxState {
    pub(crate) fn new(
        customer_id: &str,
        customer_secret: &str,
        flavor: Flavor,
        world: World,
        traffic: Traffic,
        notifier: Option<Notifier>,
        domains: Arc<crate::domains::Switches>,
    ) -> Self {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{customer_id}:{customer_secret}"));
        Self {
            shaper: Shaper::new(flavor),
            expected_authorization: format!("Basic {credentials}"),
            world: Mutex::new(world),
            traffic: Mutex::new(traffic),
            notifier,
            ncs_ips: Mutex::new(vec!["127.0.0.1".into()]),
            domains,
        }
    }

    /// Sends the channel events of the last change (if the sandbox notifies), and answers what
    /// became of them.
    async fn notify(&self) -> Delivery {
        let events = self.world().take_events();
        match &self.notifier {
            Some(notifier) => notifier.send(events).await,
            None => Delivery::default(),
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn traffic(&self) -> MutexGuard<'_, Traffic> {
        self.traffic.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn flavor(&self) -> Flavor {
        self.shaper.flavor
    }
}

type AppState = State<Arc<SandboxState>>;
type Answer = Result<Response, Response>;

pub(crate) fn router(state: Arc<SandboxState>) -> Router {
    let no_method = state.clone();
    let method_fallback = move |route: MethodRouter<Arc<SandboxState>>| {
        let state = no_method.clone();
        route.fallback(move || {
            let state = state.clone();
            async move { state.shaper.edge_error(EdgeError::NoMethod) }
        })
    };
    let no_route = state.clone();
    let console = Router::new()
        .route("/v1/project", method_fallback(post(create_project).get(get_project).delete(delete_project)))
        .route("/v1/projects", method_fallback(get(list_projects)))
        .route("/v1/project_status", method_fallback(post(set_project_status)))
        .route("/v1/recording_config", method_fallback(post(set_recording_config)))
        .route("/v1/signkey", method_fallback(post(enable_sign_key)))
        .route("/v1/reset_signkey", method_fallback(post(reset_sign_key)))
        .route("/v1/usage", method_fallback(get(get_usage)))
        .route("/v3/usage", method_fallback(get(get_usage_v3)))
        .route(
            "/v1/kicking-rule",
            method_fallback(
                post(create_kicking_rule).get(list_kicking_rules).put(update_kicking_rule).delete(delete_kicking_rule),
            ),
        )
        .route("/v1/channel/user/property/{appid}/{uid}/{cname}", method_fallback(get(get_user_property)))
        .route("/v1/channel/user/{appid}/{cname}", method_fallback(get(list_channel_users)))
        .route("/v1/channel/user/{appid}/{cname}/hosts_only", method_fallback(get(list_channel_hosts)))
        .route("/v1/channel/{appid}", method_fallback(get(list_channels)))
        .fallback(move || {
            let state = no_route.clone();
            async move { state.shaper.edge_error(EdgeError::NoRoute) }
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), gatekeeper));
    // At the domain's root, not under `/dev`.
    let notifications = Router::new()
        .route("/ncs/ip", method_fallback(get(get_ncs_ips)))
        .route_layer(middleware::from_fn_with_state(state.clone(), gatekeeper));
    let hooks = Router::new()
        .route("/stats", get(stats))
        .route("/arrivals", get(arrivals))
        .route("/traceparents", get(traceparents))
        .route("/faults", post(set_faults))
        .route("/reset", post(reset))
        .route("/channels", post(join_channel))
        .route("/channels/leave", post(leave_channel))
        .route("/channels/role", post(change_role))
        .route("/notify", post(set_notify_faults).get(notify_report))
        .route("/ncs-ips", post(set_ncs_ips))
        .route("/domains", get(domains))
        .route("/domains/{index}", post(set_domain));
    Router::new()
        .nest("/dev", console)
        .nest("/v2", notifications)
        .nest("/__sandbox", hooks)
        .with_state(state)
        .layer(middleware::map_request(stamp_arrival))
}

/// When a request arrived, and its whole URI: stamped before routing (which strips the prefix of a
/// nested router), as the first thing the sandbox does with it.
#[derive(Clone)]
struct Arrived(Instant, http::Uri);

async fn stamp_arrival(mut request: Request) -> Request {
    let uri = request.uri().clone();
    request.extensions_mut().insert(Arrived(Instant::now(), uri));
    request
}

/// Which of the sandbox's domains a request came through (`Sandbox::serve_domains`).
#[derive(Clone, Copy)]
pub(crate) struct Domain(pub(crate) usize);

/// The operationId of a request, by its method and its whole path.
fn operation_of(method: &http::Method, path: &str) -> Option<&'static str> {
    const OPERATIONS: [(&str, &str, &str); 19] = [
        ("GET", "/dev/v1/project", "get_project"),
        ("POST", "/dev/v1/project", "create_project"),
        ("DELETE", "/dev/v1/project", "delete_project"),
        ("GET", "/dev/v1/projects", "list_projects"),
        ("POST", "/dev/v1/project_status", "set_project_status"),
        ("POST", "/dev/v1/recording_config", "set_recording_config"),
        ("POST", "/dev/v1/signkey", "enable_sign_key"),
        ("POST", "/dev/v1/reset_signkey", "reset_sign_key"),
        ("GET", "/dev/v1/usage", "get_usage"),
        ("GET", "/dev/v3/usage", "get_usage_v3"),
        ("GET", "/dev/v1/kicking-rule", "list_kicking_rules"),
        ("PUT", "/dev/v1/kicking-rule", "update_kicking_rule"),
        ("POST", "/dev/v1/kicking-rule", "create_kicking_rule"),
        ("DELETE", "/dev/v1/kicking-rule", "delete_kicking_rule"),
        ("GET", "/dev/v1/channel/user/property/{appid}/{uid}/{cname}", "get_user_property"),
        ("GET", "/dev/v1/channel/user/{appid}/{cname}", "list_channel_users"),
        ("GET", "/dev/v1/channel/user/{appid}/{cname}/hosts_only", "list_channel_hosts"),
        ("GET", "/dev/v1/channel/{appid}", "list_channels"),
        ("GET", "/v2/ncs/ip", "get_ncs_ips"),
    ];
    // A `{parameter}` of the route stands for any one segment.
    let matches = |route: &str| {
        let (mut route, mut path) = (route.split('/'), path.split('/'));
        loop {
            match (route.next(), path.next()) {
                (None, None) => return true,
                (Some(expected), Some(segment)) if expected == segment => {}
                (Some(expected), Some(segment)) if expected.starts_with('{') && !segment.is_empty() => {}
                _ => return false,
            }
        }
    };
    let found = OPERATIONS.iter().find(|(verb, route, _)| method.as_str() == *verb && matches(route));
    found.map(|(_, _, operation)| *operation)
}

/// Rate limit (the account's, or its operation's group's), then faults, then Basic auth: Agora
/// counts every request it receives. A request that passes them all reached its operation.
async fn gatekeeper(State(state): AppState, request: Request, next: Next) -> Response {
    let arrived = request.extensions().get::<Arrived>().map_or_else(Instant::now, |arrived| arrived.0);
    let domain = request.extensions().get::<Domain>().map_or(0, |domain| domain.0);
    // Inside `nest("/dev")` the path has lost its prefix; faults name the whole path.
    let path = match request.extensions().get::<Arrived>() {
        Some(arrived) => arrived.1.path().to_string(),
        None => request.uri().path().to_string(),
    };
    let operation = operation_of(request.method(), &path);
    let traceparent = request.headers().get("traceparent").and_then(|value| value.to_str().ok());
    let admission = {
        let mut traffic = state.traffic();
        if let Some(traceparent) = traceparent {
            traffic.note_trace(&path, traceparent);
        }
        traffic.arrive(arrived, &path, operation, domain)
    };
    let (delay, fail_with) = match admission {
        Admission::Throttled => return state.shaper.edge_error(EdgeError::RateLimited),
        Admission::Admitted { delay, fail_with } => (delay, fail_with),
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = fail_with {
        return state.shaper.fault(&fault);
    }
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    match authorization {
        Some(value) if value.as_bytes() == state.expected_authorization.as_bytes() => {}
        Some(_) => {
            state.traffic().count_unauthorized();
            return state.shaper.edge_error(EdgeError::WrongCredentials);
        }
        None => {
            state.traffic().count_unauthorized();
            return state.shaper.edge_error(EdgeError::NoCredentials);
        }
    }
    if let Some(operation) = operation {
        state.traffic().count_operation(operation);
    }
    let mut response = next.run(request).await;
    let (limit, used) = state.traffic().limit_of(operation);
    state.shaper.rate_limit_headers(response.headers_mut(), limit, used);
    response
}

// ---- input helpers ----

fn bad_request(state: &SandboxState, message: impl Into<String>) -> Response {
    state.shaper.error(ApiError::bad_request(message))
}

fn parse_json<T: DeserializeOwned>(state: &SandboxState, body: &[u8]) -> Result<T, Response> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| bad_request(state, format!("the body is not valid JSON: {error}")))?;
    from_value(state, value)
}

fn from_value<T: DeserializeOwned>(state: &SandboxState, value: Value) -> Result<T, Response> {
    serde_json::from_value(value).map_err(|error| bad_request(state, format!("invalid body: {error}")))
}

struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(state: &SandboxState, raw: Option<String>) -> Result<Self, Response> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|error| bad_request(state, format!("invalid query string: {error}")))?;
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

/// A world error as the flavor writes it.
fn fail(state: &SandboxState) -> impl Fn(ApiError) -> Response + '_ {
    |error| state.shaper.error(error)
}

// ---- projects ----

async fn create_project(State(state): AppState, body: Bytes) -> Answer {
    let request: types::CreateProjectRequest = parse_json(&state, &body)?;
    let enable = request.enable_sign_key;
    let project = state.world().create_project(&request.name, enable, Utc::now()).map_err(fail(&state))?;
    Ok(state.shaper.created_project(&project))
}

async fn list_projects(State(state): AppState) -> Response {
    let projects = state.world().list_projects();
    state.shaper.project_list(&projects)
}

async fn get_project(State(state): AppState, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(&state, query)?;
    let project = state.world().get_project(query.optional("id"), query.optional("name")).map_err(fail(&state))?;
    Ok(state.shaper.project(&project, false))
}

async fn set_project_status(State(state): AppState, body: Bytes) -> Answer {
    let request: types::SetProjectStatusRequest = parse_json(&state, &body)?;
    let project = state.world().set_project_status(&request.id, *request.status == 1).map_err(fail(&state))?;
    Ok(state.shaper.project(&project, true))
}

async fn delete_project(State(state): AppState, body: Bytes) -> Answer {
    let request: types::ProjectIdRequest = parse_json(&state, &body)?;
    state.world().delete_project(&request.id).map_err(fail(&state))?;
    Ok(state.shaper.project_success())
}

/// The recording-server and App-certificate writes: `{"success": true}` in the document, the
/// project live.
fn project_write(state: &SandboxState, id: &str) -> Response {
    match state.flavor() {
        Flavor::Document => state.shaper.project_success(),
        Flavor::Agora => match state.world().get_project(Some(id), None) {
            Ok(project) => state.shaper.project(&project, true),
            Err(error) => state.shaper.error(error),
        },
    }
}

async fn set_recording_config(State(state): AppState, body: Bytes) -> Answer {
    let request: types::SetRecordingConfigRequest = parse_json(&state, &body)?;
    state.world().set_recording_config(&request.id, &request.recording_server).map_err(fail(&state))?;
    Ok(project_write(&state, &request.id))
}

async fn enable_sign_key(State(state): AppState, body: Bytes) -> Answer {
    let request: types::EnableSignKeyRequest = parse_json(&state, &body)?;
    state.world().enable_sign_key(&request.id, request.enable).map_err(fail(&state))?;
    Ok(project_write(&state, &request.id))
}

async fn reset_sign_key(State(state): AppState, body: Bytes) -> Answer {
    let request: types::ProjectIdRequest = parse_json(&state, &body)?;
    state.world().reset_sign_key(&request.id).map_err(fail(&state))?;
    Ok(project_write(&state, &request.id))
}

// ---- usage ----

async fn get_usage(State(state): AppState, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(&state, query)?;
    let (from, to) = (query.date("from_date").map_err(fail(&state))?, query.date("to_date").map_err(fail(&state))?);
    let projects: Option<Vec<String>> = query
        .optional("projects")
        .filter(|list| !list.is_empty())
        .map(|list| list.split(',').map(|id| id.trim().to_string()).collect());
    let usage = state.world().usage_v1(from, to, projects.as_deref(), today()).map_err(fail(&state))?;
    Ok(state.shaper.ok(&usage))
}

async fn get_usage_v3(State(state): AppState, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(&state, query)?;
    let (from, to) = (query.date("from_date").map_err(fail(&state))?, query.date("to_date").map_err(fail(&state))?);
    let project_id = query.required("project_id").map_err(fail(&state))?;
    let business = match query.optional("business") {
        None => types::UsageBusiness::Default,
        Some(text) => text.parse().map_err(|_| {
            bad_request(
                &state,
                format!(
                    "business must be one of default, transcodeDuration, recording, cloudRecording, miniapp, not {text:?}"
                ),
            )
        })?,
    };
    let usage = state.world().usage_v3(from, to, project_id, business, today()).map_err(fail(&state))?;
    Ok(state.shaper.ok(&usage))
}

// ---- kicking rules ----

async fn create_kicking_rule(State(state): AppState, body: Bytes) -> Answer {
    let mut value: Value = parse_json(&state, &body)?;
    agora_console_client::rules::drop_empty_uid_and_ip(&mut value);
    let request: types::CreateKickingRuleRequest = from_value(&state, value)?;
    let created = state.world().create_rule(&request, Utc::now()).map_err(fail(&state))?;
    // The users it kicked leave their channels: Agora notifies that on its own time.
    if let Some(notifier) = &state.notifier {
        notifier.send_later(state.world().take_events());
    }
    Ok(state.shaper.rule_created(created))
}

async fn list_kicking_rules(State(state): AppState, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(&state, query)?;
    let appid = query.required("appid").map_err(fail(&state))?;
    let rules = state.world().list_rules(appid, Utc::now()).map_err(fail(&state))?;
    Ok(state.shaper.ok(&types::KickingRuleList { status: Some("success".into()), rules, extra: Default::default() }))
}

async fn update_kicking_rule(State(state): AppState, body: Bytes) -> Answer {
    let request: types::UpdateKickingRuleRequest = parse_json(&state, &body)?;
    let result = state
        .world()
        .update_rule(&request.appid, request.id, request.time.as_ref(), Utc::now())
        .map_err(fail(&state))?;
    Ok(state.shaper.ok(&types::KickingRuleUpdated {
        status: Some("success".into()),
        result,
        extra: Default::default(),
    }))
}

async fn delete_kicking_rule(State(state): AppState, body: Bytes) -> Answer {
    let request: types::DeleteKickingRuleRequest = parse_json(&state, &body)?;
    let id = state.world().delete_rule(&request.appid, request.id, Utc::now()).map_err(fail(&state))?;
    Ok(state.shaper.ok(&types::KickingRuleDeleted { status: Some("success".into()), id, extra: Default::default() }))
}

// ---- channels ----

fn parse_uid(state: &SandboxState, text: &str) -> Result<u32, Response> {
    text.parse::<u32>().map_err(|_| bad_request(state, format!("uid must be an unsigned 32-bit integer, not {text:?}")))
}

/// The live service checks an App ID's form first ("invalid appid"), and answers an unknown one
/// as a channel nobody is in; the document's sandbox answers 404 for an unknown one.
enum AppCheck {
    Known,
    Unknown,
}

fn check_app(state: &SandboxState, appid: &str) -> Result<AppCheck, Response> {
    if state.world().has_app(appid) {
        return Ok(AppCheck::Known);
    }
    match state.flavor() {
        Flavor::Document => Err(state.shaper.error(ApiError::project_not_found())),
        Flavor::Agora if appid.len() == 32 && appid.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(AppCheck::Unknown),
        Flavor::Agora => Err(state.shaper.edge_error(EdgeError::InvalidAppId)),
    }
}

async fn get_user_property(
    State(state): AppState,
    Path((appid, uid, cname)): Path<(String, String, String)>,
) -> Answer {
    let uid = parse_uid(&state, &uid)?;
    let user = match check_app(&state, &appid)? {
        AppCheck::Known => state.world().user_state(&appid, uid, &cname).map_err(fail(&state))?,
        AppCheck::Unknown => None,
    };
    Ok(state.shaper.user_state(user))
}

async fn list_channel_users(State(state): AppState, Path((appid, cname)): Path<(String, String)>) -> Answer {
    let users = match check_app(&state, &appid)? {
        AppCheck::Known => state.world().channel_users(&appid, &cname).map_err(fail(&state))?,
        AppCheck::Unknown => missing_channel(),
    };
    Ok(state.shaper.channel_answer(&types::ChannelUsersResponse {
        success: true,
        data: users,
        request_id: None,
        extra: Default::default(),
    }))
}

/// The hosts of a channel (Agora's English reference, "Query host list"): a live channel's
/// broadcasters; a communication channel answers its mode alone.
async fn list_channel_hosts(State(state): AppState, Path((appid, cname)): Path<(String, String)>) -> Answer {
    let users = match check_app(&state, &appid)? {
        AppCheck::Known => state.world().channel_users(&appid, &cname).map_err(fail(&state))?,
        AppCheck::Unknown => missing_channel(),
    };
    let hosts = types::ChannelUsers { total: None, users: vec![], audience: vec![], audience_total: None, ..users };
    Ok(state.shaper.channel_answer(&types::ChannelUsersResponse {
        success: true,
        data: hosts,
        request_id: None,
        extra: Default::default(),
    }))
}

async fn list_channels(State(state): AppState, Path(appid): Path<String>, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(&state, query)?;
    let page_no = query.number("page_no", 0).map_err(fail(&state))?;
    let page_size = query.number("page_size", DEFAULT_PAGE_SIZE).map_err(fail(&state))?;
    let data = match check_app(&state, &appid)? {
        AppCheck::Known => state.world().list_channels(&appid, page_no, page_size).map_err(fail(&state))?,
        AppCheck::Unknown => types::ChannelPage { channels: vec![], total_size: Some(0), extra: Default::default() },
    };
    Ok(state.shaper.channel_answer(&types::ChannelListResponse {
        success: true,
        data,
        request_id: None,
        extra: Default::default(),
    }))
}

// ---- notifications ----

/// `GET /v2/ncs/ip`: the addresses Agora's NCS servers send from.
async fn get_ncs_ips(State(state): AppState) -> Response {
    let hosts: Vec<Value> = lock(&state.ncs_ips).iter().map(|ip| json!({ "primaryIP": ip })).collect();
    state.shaper.ok(&json!({ "data": { "service": { "hosts": hosts } } }))
}

// ---- test hooks ----

/// `POST /__sandbox/ncs-ips`: what `GET /v2/ncs/ip` answers, `{"ips": [...]}`.
async fn set_ncs_ips(State(state): AppState, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NcsIps {
        ips: Vec<String>,
    }
    match serde_json::from_slice::<NcsIps>(&body) {
        Ok(request) => {
            *lock(&state.ncs_ips) = request.ips;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => hook_error(format!("invalid body: {error}")),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn stats(State(state): AppState) -> axum::Json<crate::Stats> {
    axum::Json(state.traffic().stats())
}

/// `GET /__sandbox/domains`: each domain's address and whether it serves.
async fn domains(State(state): AppState) -> axum::Json<Value> {
    let addrs = state.domains.addrs().into_iter().zip(state.domains.states());
    let list: Vec<Value> = addrs
        .enumerate()
        .map(|(index, (addr, up))| json!({"index": index, "addr": addr.to_string(), "up": up}))
        .collect();
    axum::Json(json!({ "domains": list }))
}

/// `POST /__sandbox/domains/{index}` with `{"up": false}`: the domain closes its listener (its
/// connections are refused) until `{"up": true}` opens it again on its address. Answers once done.
async fn set_domain(State(state): AppState, Path(index): Path<usize>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Switch {
        up: bool,
    }
    let switch: Switch = match serde_json::from_slice(&body) {
        Ok(switch) => switch,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("expected {{\"up\": true|false}}: {error}")).into_response();
        }
    };
    // A domain that goes down closes the connection this answer would go on: answer first.
    let domains = state.domains.clone();
    match switch.up {
        true => match domains.set(index, true).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => (StatusCode::NOT_FOUND, error).into_response(),
        },
        false if index < domains.addrs().len() => {
            tokio::spawn(async move { domains.set(index, false).await });
            StatusCode::ACCEPTED.into_response()
        }
        false => (StatusCode::NOT_FOUND, format!("no domain {index}")).into_response(),
    }
}

/// `GET /__sandbox/arrivals`: when the last 100,000 `/dev` requests arrived, in µs since the Unix
/// epoch (merge several sandboxes' to check a budget across them), and the operationId each named
/// (`null` where the path named none), in the same order.
async fn arrivals(State(state): AppState) -> axum::Json<Value> {
    let (unix_us, operations): (Vec<u64>, Vec<Option<&str>>) = state.traffic().arrivals().into_iter().unzip();
    axum::Json(json!({ "unix_us": unix_us, "operations": operations }))
}

/// `GET /__sandbox/traceparents`: the `traceparent` of the last 1,000 requests that carried one,
/// `{"requests": [{"path": ..., "traceparent": ...}]}`, oldest first.
async fn traceparents(State(state): AppState) -> axum::Json<Value> {
    let traces = state.traffic().traces();
    let requests: Vec<Value> =
        traces.into_iter().map(|(path, traceparent)| json!({ "path": path, "traceparent": traceparent })).collect();
    axum::Json(json!({ "requests": requests }))
}

fn hook_error(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "error_msg": message.into() }))).into_response()
}

async fn set_faults(State(state): AppState, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(error) => return hook_error(format!("invalid faults: {error}")),
    };
    if let Err(message) = faults.validate() {
        return hook_error(message);
    }
    state.traffic().set_faults(faults);
    StatusCode::NO_CONTENT.into_response()
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

async fn join_channel(State(state): AppState, body: Bytes) -> Response {
    let request: JoinChannel = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return hook_error(format!("invalid body: {error}")),
    };
    let members = ChannelMembers {
        users: request.users,
        broadcasters: request.broadcasters,
        audience: request.audience,
        extra_audience: request.extra_audience,
    };
    let mode = match request.mode {
        1 => Mode::Communication,
        2 => Mode::Live,
        other => return hook_error(format!("mode must be 1 or 2, not {other}")),
    };
    let joined = state.world().join_channel(&request.appid, &request.cname, mode, &members, Utc::now());
    match joined {
        Ok(()) => axum::Json(state.notify().await).into_response(),
        Err(error) => hook_error(error.message),
    }
}

/// `POST /__sandbox/channels/leave`: users leave a channel (which ends with its last user).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveChannel {
    appid: String,
    cname: String,
    uids: Vec<u32>,
}

async fn leave_channel(State(state): AppState, body: Bytes) -> Response {
    let request: LeaveChannel = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return hook_error(format!("invalid body: {error}")),
    };
    let left = state.world().leave_channel(&request.appid, &request.cname, &request.uids, Utc::now());
    match left {
        Ok(()) => axum::Json(state.notify().await).into_response(),
        Err(error) => hook_error(error.message),
    }
}

/// `POST /__sandbox/channels/role`: a user of a live channel becomes a broadcaster or audience.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRole {
    appid: String,
    cname: String,
    uid: u32,
    broadcaster: bool,
}

async fn change_role(State(state): AppState, body: Bytes) -> Response {
    let request: ChangeRole = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return hook_error(format!("invalid body: {error}")),
    };
    let changed = state.world().change_role(&request.appid, &request.cname, request.uid, request.broadcaster);
    match changed {
        Ok(()) => axum::Json(state.notify().await).into_response(),
        Err(error) => hook_error(error.message),
    }
}

/// `POST /__sandbox/notify`: faults of the notices' delivery.
async fn set_notify_faults(State(state): AppState, body: Bytes) -> Response {
    let faults: NotifyFaults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(error) => return hook_error(format!("invalid faults: {error}")),
    };
    if let Err(message) = faults.validate() {
        return hook_error(message);
    }
    match &state.notifier {
        Some(notifier) => {
            notifier.set_faults(faults);
            StatusCode::NO_CONTENT.into_response()
        }
        None => hook_error("the sandbox sends no notices (start it with a notify URL)"),
    }
}

/// `GET /__sandbox/notify`: the faults, and what was delivered, dropped, duplicated, reordered.
async fn notify_report(State(state): AppState) -> Response {
    match &state.notifier {
        Some(notifier) => axum::Json(notifier.report()).into_response(),
        None => hook_error("the sandbox sends no notices (start it with a notify URL)"),
    }
}

/// The demo's channels come alive: every `every`, a user joins a channel of the demo seed, or one
/// who joined that way leaves it — and Agora's notices say so. Ends with the sandbox.
pub(crate) async fn activity(state: std::sync::Weak<SandboxState>, every: std::time::Duration) {
    let mut rng = fastrand::Rng::new();
    let mut joined: Vec<(String, String, u32)> = Vec::new();
    loop {
        tokio::time::sleep(every).await;
        let Some(state) = state.upgrade() else { return };
        let changed = if joined.len() > 8 || (!joined.is_empty() && rng.bool()) {
            let (appid, cname, uid) = joined.swap_remove(rng.usize(..joined.len()));
            state.world().leave_channel(&appid, &cname, &[uid], Utc::now())
        } else {
            let Some((appid, cname, mode)) = state.world().random_channel(&mut rng) else { continue };
            let uid = rng.u32(90_000..100_000);
            let members = match mode {
                Mode::Communication => ChannelMembers { users: vec![uid], ..Default::default() },
                Mode::Live => ChannelMembers { audience: vec![uid], ..Default::default() },
            };
            joined.push((appid.clone(), cname.clone(), uid));
            state.world().join_channel(&appid, &cname, mode, &members, Utc::now())
        };
        if changed.is_ok() {
            state.notify().await;
        }
    }
}

/// `Content-Type` of every JSON answer.
pub(crate) fn json_content_type() -> HeaderValue {
    HeaderValue::from_static("application/json; charset=utf-8")
}
