//! Step 7 of the pipeline: one validated request ([`Call`]) sent to the Console API through the
//! generated client (by the dispatch `cargo xtask regen` generates), with Basic auth, our own reqwest client and its timeouts. What comes
//! back is kept as it came ([`Answer`]: status, the headers callers need, body bytes), so the
//! gateway passes on exactly what Agora said, unknown fields and all; the generated types still
//! check it, and a 2xx that does not match the spec is logged. Agora's error answers pass through
//! whatever their shape, except that Agora refusing the gateway's own credentials (401/403) is a
//! 502 saying so. An unreachable upstream becomes 502, a slow one 504.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agora_console_client::{Client, ClientOptions, Error as ClientError, RawAnswer, capture_answer, types};
use tracing::Instrument;
use tracing::field::Empty;

mod domains;

use crate::answer::{AGORA_REQUEST_ID, Answer};
use crate::call::Call;
use crate::config::UpstreamConfig;
use crate::dispatch;
use crate::error::GatewayError;
use crate::metrics::{DomainLabels, Metrics, OperationLabels, UpstreamLabels};
use crate::operations::OperationSpec;
use crate::telemetry;
use domains::{Domain, domain_label, lock, origin_of, probe, root_of};

/// Largest upstream answer the gateway reads (a project list of 5,000 projects is about 1.5 MiB).
pub(crate) const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Whether a failed attempt may be made again on the next domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// No (an answer, or a failure another domain would not change).
    No,
    /// The request was not sent (no connection): any operation may go to the next domain.
    NotSent,
    /// It may have been sent (a timeout) or the domain failed (5xx): only a read may be tried again.
    IfIdempotent,
}

/// One attempt on one domain.
pub(crate) struct Attempt {
    pub(crate) result: Result<Answer, GatewayError>,
    pub(crate) retry: Retry,
    /// The domain it went to.
    pub(crate) domain: &'static str,
}

/// The Console API, through the generated client, on one or more domains.
pub(crate) struct Upstream {
    domains: Vec<Domain>,
    timeout: Duration,
    connect_timeout: Duration,
    max_retry_after: Duration,
    /// Asks an unreachable domain's origin whether it answers again (`domains.rs`).
    prober: reqwest::Client,
    /// No `upstream.proxy`: a domain can be probed by connecting to it. Through a proxy, a
    /// direct connect says nothing (and may never succeed), so a domain that could not be
    /// reached is tried again after [`SUSPECT_FOR`](domains::SUSPECT_FOR) instead.
    probe_directly: bool,
    metrics: std::sync::Arc<Metrics>,
    /// Why Agora last refused the gateway's own credentials, until it next accepts them.
    credentials_refused: Mutex<Option<String>>,
}

impl Upstream {
    /// The API at `base_urls` (in order of preference). With more than one (and no proxy), a
    /// domain that could not be connected to is probed in the background until it can be again.
    pub(crate) fn new(
        base_urls: &[String],
        customer_id: &str,
        customer_secret: &str,
        config: &UpstreamConfig,
        metrics: std::sync::Arc<Metrics>,
    ) -> anyhow::Result<std::sync::Arc<Self>> {
        let options = ClientOptions {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            user_agent: concat!("agora-gateway/", env!("CARGO_PKG_VERSION")).into(),
            proxy: config.proxy.as_ref().map(|proxy| proxy.expose().to_string()),
            ..ClientOptions::default()
        };
        let mut domains = Vec::new();
        for base_url in base_urls {
            let client = Client::with_basic_auth(base_url, customer_id, customer_secret, &options)?;
            let root = root_of(base_url);
            let root_client = Client::with_basic_auth(&root, customer_id, customer_secret, &options)?;
            let label: &'static str = Box::leak(domain_label(base_url).into_boxed_str());
            metrics.upstream_domain_up.get_or_create(&DomainLabels { domain: label }).set(1);
            let origin = origin_of(base_url);
            let (down_until, unreachable) = (Mutex::new(None), AtomicBool::new(false));
            domains.push(Domain { client, root_client, label, origin, down_until, unreachable });
        }
        // The probe's own client: no credentials (so no budget), no redirect, no proxy.
        let prober = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.connect_timeout * 2)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agora-gateway/", env!("CARGO_PKG_VERSION"), " (probe)"))
            .build()?;
        let upstream = std::sync::Arc::new(Self {
            domains,
            prober,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            max_retry_after: config.max_retry_after,
            probe_directly: config.proxy.is_none(),
            metrics,
            credentials_refused: Mutex::new(None),
        });
        if upstream.domains.len() > 1 && upstream.probe_directly {
            tokio::spawn(probe(std::sync::Arc::downgrade(&upstream)));
        }
        Ok(upstream)
    }

    /// How many domains there are (the most attempts a request makes).
    pub(crate) fn domains(&self) -> usize {
        self.domains.len()
    }

    /// Timeout of one call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Longest pause of the budget after Agora's own 429.
    pub(crate) fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// `Some(why)` while Agora refuses the gateway's credentials (a degraded state: `/readyz`).
    pub(crate) fn credentials_refused(&self) -> Option<String> {
        lock(&self.credentials_refused).clone()
    }

    /// `Some(why)` while no domain can be connected to (a degraded state: `/readyz`).
    pub(crate) fn unreachable(&self) -> Option<String> {
        // (Through a proxy nothing probes: a domain counts as unreachable only until it is due
        // to be tried again.)
        let now = Instant::now();
        let all_unreachable = self.domains.len() > 1
            && self.domains.iter().all(|domain| domain.unreachable.load(Ordering::SeqCst) && !domain.is_usable(now));
        all_unreachable.then(|| "no upstream domain can be connected to".to_string())
    }

    fn set_credentials_refused(&self, refused: Option<String>) {
        *self.credentials_refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = refused;
    }

    /// Sends the call to one domain (the first usable); times and counts it. A 2xx answers `Ok`
    /// as it came; a failure says whether the next domain may take it. `traced`: the number of
    /// this attempt of a traced request, which makes its span and sends its `traceparent`.
    pub(crate) async fn execute(&self, call: &Call, traced: Option<u32>) -> Attempt {
        let index = self.pick();
        let operation = call.operation.id();
        let started = Instant::now();
        let domain = &self.domains[index];
        // Most operations live under `/dev`; a few at the domain's root (`x-gateway.base: root`).
        let spec = call.operation.spec();
        let client = if spec.root { &domain.root_client } else { &domain.client };
        let span = telemetry::child(traced.is_some(), || attempt_span(spec, domain.label, traced.unwrap_or(1)));
        let sent = capture_answer(MAX_ANSWER_BYTES, telemetry::propagation(&span), dispatch::dispatch(client, call));
        let (result, raw) = sent.instrument(span.clone()).await;
        #[cfg(all(feature = "fault-injection", debug_assertions))]
        inject_fault(raw.as_ref());
        let not_sent = matches!(&result, Err(ClientError::CommunicationError(error)) if error.is_connect());
        let outcome = self.outcome(operation, result, raw);
        let retry = match &outcome {
            Err(_) if not_sent => {
                self.mark_down(index, true, "cannot connect");
                Retry::NotSent
            }
            Err(GatewayError::GatewayTimeout(_)) => {
                self.mark_down(index, false, "timed out");
                Retry::IfIdempotent
            }
            Err(GatewayError::BadGateway(_)) => {
                self.mark_down(index, false, "the connection failed");
                Retry::IfIdempotent
            }
            Err(GatewayError::Upstream(upstream)) if upstream.status.is_server_error() => {
                self.mark_down(index, false, "answered 5xx");
                Retry::IfIdempotent
            }
            _ => {
                self.mark_up(index);
                Retry::No
            }
        };
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
            tracing::debug!(operation, domain = self.domains[index].label, %error, "upstream call failed");
        }
        if !span.is_none() {
            record_attempt(&span, status, &outcome, retry);
        }
        Attempt { result: outcome, retry, domain: self.domains[index].label }
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
        if raw.status.is_redirection() {
            // Not followed: the account's credentials would go wherever it points.
            return Err(GatewayError::BadGateway(format!(
                "the upstream answered a redirect ({}), which the gateway does not follow",
                raw.status
            )));
        }
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
        Err(GatewayError::Upstream(Box::new(Answer {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        })))
    }
}

/// The span of one attempt: `{method} {path template}`, a client span naming the domain.
fn attempt_span(spec: &OperationSpec, domain: &str, attempt: u32) -> tracing::Span {
    let path = if spec.root { spec.path.to_string() } else { format!("/dev{}", spec.path) };
    tracing::info_span!(
        target: telemetry::TARGET,
        "upstream",
        otel.name = format!("{} {path}", spec.method),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = spec.method.as_str(),
        url.template = path,
        server.address = domain,
        gateway.operation = spec.id,
        gateway.attempt = attempt,
        gateway.failover = attempt > 1,
        gateway.retry = Empty,
        http.response.status_code = Empty,
        agora.request_id = Empty,
        error.type = Empty,
    )
}

/// What came of an attempt, on its span: status (0: no answer), Agora's request ID, whether
/// another domain may take it.
fn record_attempt(span: &tracing::Span, status: u16, outcome: &Result<Answer, GatewayError>, retry: Retry) {
    if status != 0 {
        span.record("http.response.status_code", status);
    }
    let headers = match outcome {
        Ok(answer) => Some(&answer.headers),
        Err(GatewayError::Upstream(answer)) => Some(&answer.headers),
        Err(_) => None,
    };
    if let Some(id) = headers.and_then(|headers| headers.get(AGORA_REQUEST_ID)?.to_str().ok()) {
        span.record("agora.request_id", id);
    }
    if let Err(error) = outcome {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", if status != 0 { status.to_string() } else { error.slug().to_string() });
    }
    span.record("gateway.retry", format!("{retry:?}").as_str());
}

/// Tests only (see the `fault-injection` feature): panics on an answer with `x-fault-inject: panic`.
#[cfg(all(feature = "fault-injection", debug_assertions))]
fn inject_fault(raw: Option<&RawAnswer>) {
    if raw.and_then(|raw| raw.headers.get("x-fault-inject")).is_some_and(|value| value == "panic") {
        panic!("fault injected by the upstream's x-fault-inject header");
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

#[cfg(test)]
mod tests;
