//! Step 7 of the pipeline: one typed request ([`UpstreamCall`]) sent to the Console API through
//! the generated client, with Basic auth, our own reqwest client and its timeouts. What comes
//! back is kept as it came ([`Answer`]: status, the headers callers need, body bytes), so the
//! gateway passes on exactly what Agora said, unknown fields and all; the generated types still
//! check it, and a 2xx that does not match the spec is logged. Agora's error answers pass through
//! whatever their shape, except that Agora refusing the gateway's own credentials (401/403) is a
//! 502 saying so. An unreachable upstream becomes 502, a slow one 504.

mod call;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use agora_console_client::{Client, ClientOptions, Error as ClientError, RawAnswer, capture_answer, types};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use bytes::Bytes;

use crate::config::UpstreamConfig;
use crate::error::{GatewayError, UpstreamStatus};
use crate::metrics::{Metrics, OperationLabels, UpstreamLabels};

pub use call::{UpstreamCall, kicking_rules_key};

/// Largest upstream answer the gateway reads (a project list of 5,000 projects is about 1.5 MiB).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Agora's own request ID, passed on under this name: `X-Request-Id` is the gateway's.
pub const AGORA_REQUEST_ID: &str = "x-agora-request-id";

/// An answer of the Console API, as it came.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// `Content-Type` and the headers a caller needs (`Retry-After`, `RateLimit-*`, Agora's
    /// request ID as `X-Agora-Request-Id`).
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    fn from_raw(raw: RawAnswer) -> Self {
        Self { status: raw.status, headers: passed_on(&raw.headers), body: raw.body }
    }

    /// `Retry-After` in seconds, when given (HTTP dates are not used by Agora's edge).
    pub fn retry_after(&self) -> Option<Duration> {
        let seconds: u64 = self.headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds))
    }
}

/// The headers of an upstream answer that reach the caller.
fn passed_on(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        let text = name.as_str();
        if name == header::CONTENT_TYPE
            || name == header::RETRY_AFTER
            || text.starts_with("ratelimit-")
            || text.starts_with("x-ratelimit-")
        {
            kept.append(name.clone(), value.clone());
        } else if text == "x-request-id" {
            kept.insert(HeaderName::from_static(AGORA_REQUEST_ID), value.clone());
        }
    }
    kept
}

/// The Console API, through the generated client.
pub struct Upstream {
    client: Client,
    timeout: Duration,
    max_retry_after: Duration,
    metrics: std::sync::Arc<Metrics>,
    /// Why Agora last refused the gateway's own credentials, until it next accepts them.
    credentials_refused: Mutex<Option<String>>,
}

impl Upstream {
    pub fn new(
        base_url: &str,
        customer_id: &str,
        customer_secret: &str,
        config: &UpstreamConfig,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, String> {
        let options = ClientOptions {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            user_agent: concat!("agora-gateway/", env!("CARGO_PKG_VERSION")).into(),
            ..ClientOptions::default()
        };
        let client =
            Client::with_basic_auth(base_url, customer_id, customer_secret, &options).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            timeout: config.timeout,
            max_retry_after: config.max_retry_after,
            metrics,
            credentials_refused: Mutex::new(None),
        })
    }

    /// Timeout of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Longest pause of the budget after Agora's own 429.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// `Some(why)` while Agora refuses the gateway's credentials (for `/readyz`).
    pub fn not_ready(&self) -> Option<String> {
        self.credentials_refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_credentials_refused(&self, refused: Option<String>) {
        *self.credentials_refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = refused;
    }

    /// Sends the call; times and counts it. A 2xx answers `Ok` as it came.
    pub async fn execute(&self, call: &UpstreamCall) -> Result<Answer, GatewayError> {
        let operation = call.operation().id();
        let started = Instant::now();
        let (result, raw) = capture_answer(MAX_ANSWER_BYTES, self.send(call)).await;
        let outcome = self.outcome(operation, result, raw);
        let status = match &outcome {
            Ok(answer) => answer.status.as_u16(),
            Err(GatewayError::Upstream(upstream)) => upstream.status.as_u16(),
            Err(GatewayError::UpstreamCredentials { status, .. }) => *status,
            Err(_) => 0,
        };
        self.metrics.upstream_requests.get_or_create(&UpstreamLabels { operation, status }).inc();
        self.metrics
            .upstream_duration
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &outcome {
            tracing::debug!(operation, %error, "upstream call failed");
        }
        outcome
    }

    /// What the call came to: the answer as it came, or the gateway's error.
    fn outcome(
        &self,
        operation: &'static str,
        result: Result<(), ClientError<types::ErrorBody>>,
        raw: Option<RawAnswer>,
    ) -> Result<Answer, GatewayError> {
        let raw = match (result, raw) {
            (_, Some(raw)) if raw.truncated => {
                return Err(GatewayError::BadGateway(format!(
                    "the upstream's answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            (Ok(()), Some(raw)) => raw,
            (Err(ClientError::InvalidResponsePayload(_, error)), Some(raw)) if raw.status.is_success() => {
                // Agora answered something the spec does not describe: passed on as it came;
                // where the gateway must edit it, egress says what it lacks.
                tracing::warn!(operation, %error, "the upstream's answer does not match the spec");
                raw
            }
            (Err(ClientError::InvalidRequest(message)), _) => {
                return Err(GatewayError::Internal(format!("the generated client refused the request: {message}")));
            }
            (Err(_), Some(raw)) => raw,
            (Err(error), None) => return Err(self.transport(&error)),
            (Ok(()), None) => return Err(GatewayError::Internal("the upstream's answer was not captured".into())),
        };
        let answer = Answer::from_raw(raw);
        if answer.status.is_success() {
            self.set_credentials_refused(None);
            return Ok(answer);
        }
        if matches!(answer.status.as_u16(), 401 | 403) {
            let said = agoras_message(&answer.body);
            let detail = format!("Agora refused the gateway's credentials ({}: {said})", answer.status);
            tracing::error!(
                operation,
                status = answer.status.as_u16(),
                said,
                "Agora refused the gateway's credentials: check upstream.customer_id and upstream.customer_secret"
            );
            self.metrics.upstream_credentials_refused.inc();
            self.set_credentials_refused(Some(detail.clone()));
            return Err(GatewayError::UpstreamCredentials { status: answer.status.as_u16(), detail });
        }
        self.set_credentials_refused(None);
        Err(GatewayError::Upstream(Box::new(UpstreamStatus {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        })))
    }

    /// One call through the generated client; the typed answer only tells whether it matched.
    async fn send(&self, call: &UpstreamCall) -> Result<(), ClientError<types::ErrorBody>> {
        let c = &self.client;
        match call.clone() {
            UpstreamCall::CreateProject(body) => c.create_project().body(body).send().await.map(drop),
            UpstreamCall::ListProjects => c.list_projects().send().await.map(drop),
            UpstreamCall::GetProject { id, name } => {
                let mut request = c.get_project();
                if let Some(id) = id {
                    request = request.id(id);
                }
                if let Some(name) = name {
                    request = request.name(name);
                }
                request.send().await.map(drop)
            }
            UpstreamCall::SetProjectStatus(body) => c.set_project_status().body(body).send().await.map(drop),
            UpstreamCall::DeleteProject(body) => c.delete_project().body(body).send().await.map(drop),
            UpstreamCall::SetRecordingConfig(body) => c.set_recording_config().body(body).send().await.map(drop),
            UpstreamCall::EnableSignKey(body) => c.enable_sign_key().body(body).send().await.map(drop),
            UpstreamCall::ResetSignKey(body) => c.reset_sign_key().body(body).send().await.map(drop),
            UpstreamCall::GetUsage { from, to, projects } => {
                let mut request = c.get_usage().from_date(from).to_date(to);
                if !projects.is_empty() {
                    request = request.projects(projects.join(","));
                }
                request.send().await.map(drop)
            }
            UpstreamCall::GetUsageV3 { from, to, project_id, business } => {
                let request = c.get_usage_v3().from_date(from).to_date(to).project_id(project_id).business(business);
                request.send().await.map(drop)
            }
            UpstreamCall::CreateKickingRule(body) => c.create_kicking_rule().body(body).send().await.map(drop),
            UpstreamCall::ListKickingRules { appid } => c.list_kicking_rules().appid(appid).send().await.map(drop),
            UpstreamCall::UpdateKickingRule(body) => c.update_kicking_rule().body(body).send().await.map(drop),
            UpstreamCall::DeleteKickingRule(body) => c.delete_kicking_rule().body(body).send().await.map(drop),
            UpstreamCall::GetUserProperty { appid, uid, cname } => {
                c.get_user_property().appid(appid).uid(uid).cname(cname).send().await.map(drop)
            }
            UpstreamCall::ListChannelUsers { appid, cname } => {
                c.list_channel_users().appid(appid).cname(cname).send().await.map(drop)
            }
            UpstreamCall::ListChannels { appid, page_no, page_size } => {
                let request = c.list_channels().appid(appid).page_no(page_no).page_size(page_size);
                request.send().await.map(drop)
            }
        }
    }
}

/// Agora's message in an error body (`message` or `error_msg`), for the gateway's own problem.
fn agoras_message(body: &[u8]) -> String {
    let parsed: Option<types::ErrorBody> = serde_json::from_slice(body).ok();
    match parsed.and_then(|error| error.message.or(error.error_msg)) {
        Some(message) => message.chars().take(200).collect(),
        None => "no message".into(),
    }
}

impl Upstream {
    fn transport(&self, error: &ClientError<types::ErrorBody>) -> GatewayError {
        match error {
            ClientError::CommunicationError(error)
            | ClientError::ResponseBodyError(error)
            | ClientError::InvalidUpgrade(error) => self.transport_error(error),
            other => GatewayError::BadGateway(format!("the upstream call failed: {other}")),
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> GatewayError {
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
