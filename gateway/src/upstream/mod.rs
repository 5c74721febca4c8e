//! Step 7 of the pipeline: one typed request ([`UpstreamCall`]) sent to the Console API through
//! the generated client, with Basic auth, our own reqwest client and its timeouts. Agora's error
//! answers pass through with their status and body; an unreachable upstream becomes 502, a slow
//! one 504.

mod call;

use std::time::{Duration, Instant};

use agora_console_client::{Client, ClientOptions, Error as ClientError, ResponseValue, types};
use axum::http::StatusCode;
use bytes::Bytes;

use crate::error::{GatewayError, UpstreamStatus};
use crate::metrics::{Metrics, OperationLabels, UpstreamLabels};

pub use call::{UpstreamCall, kicking_rules_key};

/// A successful answer, in the generated types.
#[derive(Debug, Clone)]
pub enum Answer {
    Projects(types::ProjectList),
    Project(types::ProjectResponse),
    Success(types::SuccessResponse),
    UsageV1(types::UsageV1Response),
    UsageV3(types::UsageV3Response),
    RuleCreated(types::KickingRuleCreated),
    Rules(types::KickingRuleList),
    RuleUpdated(types::KickingRuleUpdated),
    RuleDeleted(types::KickingRuleDeleted),
    UserProperty(types::UserPropertyResponse),
    ChannelUsers(types::ChannelUsersResponse),
    Channels(types::ChannelListResponse),
}

impl Answer {
    /// The answer as JSON, as Agora sent it (modulo key order).
    pub fn to_json(&self) -> Bytes {
        let bytes = match self {
            Answer::Projects(v) => serde_json::to_vec(v),
            Answer::Project(v) => serde_json::to_vec(v),
            Answer::Success(v) => serde_json::to_vec(v),
            Answer::UsageV1(v) => serde_json::to_vec(v),
            Answer::UsageV3(v) => serde_json::to_vec(v),
            Answer::RuleCreated(v) => serde_json::to_vec(v),
            Answer::Rules(v) => serde_json::to_vec(v),
            Answer::RuleUpdated(v) => serde_json::to_vec(v),
            Answer::RuleDeleted(v) => serde_json::to_vec(v),
            Answer::UserProperty(v) => serde_json::to_vec(v),
            Answer::ChannelUsers(v) => serde_json::to_vec(v),
            Answer::Channels(v) => serde_json::to_vec(v),
        };
        Bytes::from(bytes.expect("the generated types serialize"))
    }
}

/// The Console API, through the generated client.
pub struct Upstream {
    client: Client,
    timeout: Duration,
    metrics: std::sync::Arc<Metrics>,
}

impl Upstream {
    pub fn new(
        base_url: &str,
        customer_id: &str,
        customer_secret: &str,
        timeout: Duration,
        connect_timeout: Duration,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, String> {
        let options = ClientOptions {
            timeout,
            connect_timeout,
            user_agent: concat!("agora-gateway/", env!("CARGO_PKG_VERSION")).into(),
            ..ClientOptions::default()
        };
        let client =
            Client::with_basic_auth(base_url, customer_id, customer_secret, &options).map_err(|e| e.to_string())?;
        Ok(Self { client, timeout, metrics })
    }

    /// Timeout of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends the call; times and counts it.
    pub async fn execute(&self, call: &UpstreamCall) -> Result<Answer, GatewayError> {
        let operation = call.operation().id();
        let started = Instant::now();
        let result = self.send(call).await;
        let status = match &result {
            Ok(_) => 200,
            Err(GatewayError::Upstream(upstream)) => upstream.status.as_u16(),
            Err(_) => 0,
        };
        self.metrics.upstream_requests.get_or_create(&UpstreamLabels { operation, status }).inc();
        self.metrics
            .upstream_duration
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            tracing::debug!(operation, %error, "upstream call failed");
        }
        result
    }

    async fn send(&self, call: &UpstreamCall) -> Result<Answer, GatewayError> {
        let c = &self.client;
        match call.clone() {
            UpstreamCall::CreateProject(body) => {
                answer(c.create_project().body(body).send().await, Answer::Project, self).await
            }
            UpstreamCall::ListProjects => answer(c.list_projects().send().await, Answer::Projects, self).await,
            UpstreamCall::GetProject { id, name } => {
                let mut request = c.get_project();
                if let Some(id) = id {
                    request = request.id(id);
                }
                if let Some(name) = name {
                    request = request.name(name);
                }
                answer(request.send().await, Answer::Project, self).await
            }
            UpstreamCall::SetProjectStatus(body) => {
                answer(c.set_project_status().body(body).send().await, Answer::Project, self).await
            }
            UpstreamCall::DeleteProject(body) => {
                answer(c.delete_project().body(body).send().await, Answer::Success, self).await
            }
            UpstreamCall::SetRecordingConfig(body) => {
                answer(c.set_recording_config().body(body).send().await, Answer::Success, self).await
            }
            UpstreamCall::EnableSignKey(body) => {
                answer(c.enable_sign_key().body(body).send().await, Answer::Success, self).await
            }
            UpstreamCall::ResetSignKey(body) => {
                answer(c.reset_sign_key().body(body).send().await, Answer::Success, self).await
            }
            UpstreamCall::GetUsage { from, to, projects } => {
                let mut request = c.get_usage().from_date(from).to_date(to);
                if !projects.is_empty() {
                    request = request.projects(projects.join(","));
                }
                answer(request.send().await, Answer::UsageV1, self).await
            }
            UpstreamCall::GetUsageV3 { from, to, project_id, business } => {
                let request = c.get_usage_v3().from_date(from).to_date(to).project_id(project_id).business(business);
                answer(request.send().await, Answer::UsageV3, self).await
            }
            UpstreamCall::CreateKickingRule(body) => {
                answer(c.create_kicking_rule().body(body).send().await, Answer::RuleCreated, self).await
            }
            UpstreamCall::ListKickingRules { appid } => {
                answer(c.list_kicking_rules().appid(appid).send().await, Answer::Rules, self).await
            }
            UpstreamCall::UpdateKickingRule(body) => {
                answer(c.update_kicking_rule().body(body).send().await, Answer::RuleUpdated, self).await
            }
            UpstreamCall::DeleteKickingRule(body) => {
                answer(c.delete_kicking_rule().body(body).send().await, Answer::RuleDeleted, self).await
            }
            UpstreamCall::GetUserProperty { appid, uid, cname } => {
                let request = c.get_user_property().appid(appid).uid(uid).cname(cname);
                answer(request.send().await, Answer::UserProperty, self).await
            }
            UpstreamCall::ListChannelUsers { appid, cname } => {
                answer(c.list_channel_users().appid(appid).cname(cname).send().await, Answer::ChannelUsers, self).await
            }
            UpstreamCall::ListChannels { appid, page_no, page_size } => {
                let request = c.list_channels().appid(appid).page_no(page_no).page_size(page_size);
                answer(request.send().await, Answer::Channels, self).await
            }
        }
    }
}

async fn answer<T>(
    result: Result<ResponseValue<T>, ClientError<types::ErrorMsg>>,
    wrap: fn(T) -> Answer,
    upstream: &Upstream,
) -> Result<Answer, GatewayError> {
    match result {
        Ok(value) => Ok(wrap(value.into_inner())),
        Err(error) => Err(upstream.failure(error).await),
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

impl Upstream {
    /// Maps the generated client's errors onto the gateway's.
    async fn failure(&self, error: ClientError<types::ErrorMsg>) -> GatewayError {
        match error {
            ClientError::ErrorResponse(response) => {
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let retry_after = retry_after(response.headers());
                let body = Bytes::from(serde_json::to_vec(&response.into_inner()).unwrap_or_default());
                GatewayError::Upstream(UpstreamStatus { status, body, retry_after })
            }
            ClientError::UnexpectedResponse(response) => {
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let retry_after = retry_after(response.headers());
                if status.is_success() {
                    return GatewayError::BadGateway(format!(
                        "the upstream answered {status}, which the Console API does not"
                    ));
                }
                match response.bytes().await {
                    Ok(body) => GatewayError::Upstream(UpstreamStatus { status, body, retry_after }),
                    Err(error) => self.transport(&error),
                }
            }
            ClientError::CommunicationError(error)
            | ClientError::ResponseBodyError(error)
            | ClientError::InvalidUpgrade(error) => self.transport(&error),
            ClientError::InvalidResponsePayload(_, error) => {
                GatewayError::BadGateway(format!("the upstream's answer does not match the Console API: {error}"))
            }
            ClientError::InvalidRequest(message) => {
                GatewayError::Internal(format!("the generated client refused the request: {message}"))
            }
            ClientError::Custom(message) => GatewayError::BadGateway(message),
        }
    }

    fn transport(&self, error: &reqwest::Error) -> GatewayError {
        if error.is_timeout() {
            GatewayError::GatewayTimeout(self.timeout)
        } else if error.is_connect() {
            GatewayError::BadGateway("cannot connect to the upstream".into())
        } else {
            GatewayError::BadGateway(format!("the connection to the upstream failed: {}", without_url(error)))
        }
    }
}

/// reqwest's message without the URL (which holds no secret, but is noise for the client).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "the upstream");
    }
    text
}
