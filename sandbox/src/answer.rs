//! How the sandbox words its answers, by flavor. `Document`: as the Chinese document shows them
//! (200s, `{"project": [ ... ]}`, `{"error_msg"}` everywhere). `Agora`: as the live service is
//! observed to answer — 201 for project operations, `project` as an object from writes,
//! `company_id` on projects and `recording_server: null`, Kong's `{"message"}` errors at the edge
//! (credentials, unknown routes and methods, the rate limit with `Retry-After` and `RateLimit-*`,
//! malformed App IDs), an `X-Request-ID` header on every answer and a `request_id` in channel
//! answers, `uid` and `platform` in user state, and `in_channel: false` alone for an absent user.

use agora_console_client::types;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Flavor;
use crate::routes::json_content_type;
use crate::traffic::FaultAnswer;
use crate::world::{ApiError, CreatedRule, UserState};

/// The account's company ID in live-flavored project answers.
const COMPANY_ID: i64 = 376_541;

/// Errors the live service's edge (Kong) answers itself, before the Console API sees the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeError {
    NoCredentials,
    WrongCredentials,
    NoRoute,
    NoMethod,
    RateLimited,
    InvalidAppId,
}

pub(crate) struct Shaper {
    pub flavor: Flavor,
}

fn request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

impl Shaper {
    pub(crate) fn new(flavor: Flavor) -> Self {
        Self { flavor }
    }

    fn live(&self) -> bool {
        self.flavor == Flavor::Agora
    }

    /// A JSON answer; live, with an `X-Request-ID` (also written into the body when `in_body`).
    fn respond(&self, status: StatusCode, mut body: Value, in_body: bool) -> Response {
        let id = self.live().then(request_id);
        if let (Some(id), true, Some(object)) = (&id, in_body, body.as_object_mut()) {
            object.insert("request_id".into(), Value::String(id.clone()));
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (status, Bytes::from(bytes)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, json_content_type());
        if let Some(id) = id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            response.headers_mut().insert(HeaderName::from_static("x-request-id"), id);
        }
        response
    }

    fn value<T: Serialize>(body: &T) -> Value {
        serde_json::to_value(body).unwrap_or(Value::Null)
    }

    /// 200, both flavors (usage and kicking rules).
    pub(crate) fn ok<T: Serialize>(&self, body: &T) -> Response {
        self.respond(StatusCode::OK, Self::value(body), false)
    }

    /// Agora's English reference gives 201 for the project operations; the document 200.
    fn project_status(&self) -> StatusCode {
        if self.live() { StatusCode::CREATED } else { StatusCode::OK }
    }

    /// A project as the flavor writes it (live: `company_id`, and `null` for no recording server).
    fn project_value(&self, project: &types::Project) -> Value {
        let mut value = Self::value(project);
        if self.live()
            && let Some(object) = value.as_object_mut()
        {
            object.insert("company_id".into(), json!(COMPANY_ID));
            if project.recording_server.as_deref().is_none_or(str::is_empty) {
                object.insert("recording_server".into(), Value::Null);
            }
        }
        value
    }

    pub(crate) fn project_list(&self, projects: &[types::Project]) -> Response {
        let projects: Vec<Value> = projects.iter().map(|project| self.project_value(project)).collect();
        self.respond(self.project_status(), json!({ "projects": projects }), false)
    }

    /// `{"project": ...}`: live, an object from writes (`write`), a one-element array otherwise
    /// and in the document.
    pub(crate) fn project(&self, project: &types::Project, write: bool) -> Response {
        let value = self.project_value(project);
        let body = if self.live() && write { json!({ "project": value }) } else { json!({ "project": [value] }) };
        self.respond(self.project_status(), body, false)
    }

    /// A new project: live, an object without `recording_server` (as a captured create answer).
    pub(crate) fn created_project(&self, project: &types::Project) -> Response {
        if !self.live() {
            return self.project(project, true);
        }
        let mut value = self.project_value(project);
        if let Some(object) = value.as_object_mut() {
            object.remove("recording_server");
        }
        self.respond(StatusCode::CREATED, json!({ "project": value }), false)
    }

    pub(crate) fn project_success(&self) -> Response {
        self.respond(self.project_status(), json!({ "success": true }), false)
    }

    /// Live, a kick-once rule (`time` 0) answers id 0.
    pub(crate) fn rule_created(&self, created: CreatedRule) -> Response {
        let id = if self.live() && created.minutes == 0 { 0 } else { created.id };
        self.ok(&json!({ "status": "success", "id": id }))
    }

    /// A user's state: live with `uid` and `platform`, and `in_channel: false` alone when absent;
    /// the document's `join: 0, role: 0` then.
    pub(crate) fn user_state(&self, user: Option<UserState>) -> Response {
        let data = match (user, self.live()) {
            (Some(user), true) => json!({
                "join": user.joined, "in_channel": true, "role": user.role, "uid": user.uid, "platform": user.platform
            }),
            (Some(user), false) => json!({ "join": user.joined, "in_channel": true, "role": user.role }),
            (None, true) => json!({ "in_channel": false }),
            (None, false) => json!({ "join": 0, "in_channel": false, "role": 0 }),
        };
        self.respond(StatusCode::OK, json!({ "success": true, "data": data }), true)
    }

    /// A channel query's answer; live, with the request's ID in it.
    pub(crate) fn channel_answer<T: Serialize>(&self, body: &T) -> Response {
        self.respond(StatusCode::OK, Self::value(body), true)
    }

    /// An error of the Console API itself: `{"error_msg"}` in both flavors.
    pub(crate) fn error(&self, error: ApiError) -> Response {
        self.respond(error.status, json!({ "error_msg": error.message }), false)
    }

    pub(crate) fn edge_error(&self, error: EdgeError) -> Response {
        let (status, live, document) = match error {
            EdgeError::NoCredentials => {
                (StatusCode::UNAUTHORIZED, "Unauthorized", "Invalid authentication credentials")
            }
            EdgeError::WrongCredentials => {
                (StatusCode::UNAUTHORIZED, "Invalid authentication credentials", "Invalid authentication credentials")
            }
            EdgeError::NoRoute => (StatusCode::NOT_FOUND, "no Route matched with those values", "no such API"),
            EdgeError::NoMethod => (StatusCode::NOT_FOUND, "no Route matched with those values", "no such API"),
            EdgeError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded", "Too many requests"),
            EdgeError::InvalidAppId => (StatusCode::BAD_REQUEST, "invalid appid", "invalid appid"),
        };
        let (status, body) = match (self.live(), error) {
            (true, _) => (status, json!({ "message": live })),
            (false, EdgeError::NoMethod) => {
                (StatusCode::METHOD_NOT_ALLOWED, json!({ "error_msg": "method not allowed" }))
            }
            (false, _) => (status, json!({ "error_msg": document })),
        };
        let mut response = self.respond(status, body, false);
        let headers = response.headers_mut();
        match error {
            EdgeError::NoCredentials | EdgeError::WrongCredentials => {
                let realm = if self.live() { "Basic realm=\"kong\"" } else { "Basic realm=\"agora\"" };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(realm));
            }
            EdgeError::RateLimited if self.live() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }

    /// `RateLimit-*` on live answers, as Kong's rate limiting writes them.
    pub(crate) fn rate_limit_headers(&self, headers: &mut HeaderMap, limit: u32, used: u32) {
        if !self.live() || limit == 0 {
            return;
        }
        headers.insert(HeaderName::from_static("ratelimit-limit"), HeaderValue::from(limit));
        headers.insert(HeaderName::from_static("ratelimit-remaining"), HeaderValue::from(limit.saturating_sub(used)));
        headers.insert(HeaderName::from_static("ratelimit-reset"), HeaderValue::from(1));
    }

    /// An injected fault's answer: its status, its body byte for byte, its headers.
    pub(crate) fn fault(&self, fault: &FaultAnswer) -> Response {
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body =
            fault.body.clone().unwrap_or_else(|| json!({ "error_msg": "fault injected by the sandbox" }).to_string());
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, json_content_type());
        for (name, value) in &fault.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}
