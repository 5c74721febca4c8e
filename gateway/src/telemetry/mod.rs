//! Tracing with OpenTelemetry (`[telemetry]`): a server span per request named `{method} {route}`,
//! children for authentication, the wait for a budget slot, the cache fill, each upstream attempt
//! and egress; the caller's `traceparent` continued, sent on to Agora and back on the answer; spans
//! exported over OTLP/HTTP by the SDK's batch thread (`export.rs`).
//!
//! Spans are `tracing` spans of target `otel`, seen only by the OpenTelemetry layer; the log sees a
//! lean span per traced request carrying `trace_id`. A request is traced when spans are exported
//! (probes aside), or when its caller sent a `traceparent`; any other request makes no span at all.

mod export;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::{LogFormat, TelemetryConfig};
use crate::operations::OPERATIONS;

pub(crate) use export::spans_counters;

/// The target of the spans the OpenTelemetry layer sees (and the log does not).
pub(crate) const TARGET: &str = "otel";

/// Spans are exported: requests (probes aside) are traced, `sample_ratio` of them.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// `sample_ratio`, as the bits of an `f64`.
static SAMPLE_RATIO: AtomicU64 = AtomicU64::new(0);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Installs the log (`format`, filtered by `RUST_LOG`) and the tracer. Call it once, outside any
/// async runtime: the exporter's HTTP client blocks, on the SDK's own batch thread.
pub(crate) fn install(format: LogFormat, config: &TelemetryConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // The audit trail's log sink is not a log level's to silence: `RUST_LOG=warn` keeps it.
    let mut filter = filter.add_directive("audit=info".parse()?);
    // The spans of traces are not log lines.
    filter = filter.add_directive(format!("{TARGET}=off").parse()?);
    let log = match format {
        LogFormat::Json => fmt::layer().json().boxed(),
        // Colours only on a terminal: not in files and log collectors.
        LogFormat::Text => fmt::layer().with_ansi(std::io::stdout().is_terminal()).boxed(),
    };
    let provider = provider(config)?;
    let tracer = provider.tracer("agora-gateway");
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO));
    // A second install (tests, the demo after serve) keeps the first.
    if tracing_subscriber::registry().with(log.with_filter(filter)).with(otel).try_init().is_ok() {
        SAMPLE_RATIO.store(config.sample_ratio.to_bits(), Ordering::Relaxed);
        EXPORTING.store(config.exports(), Ordering::Relaxed);
        let _ = PROVIDER.set(provider);
    }
    Ok(())
}

/// Without an endpoint, a tracer that follows a caller's sampled trace (for propagation) and
/// exports nothing; with one, the batch exporter. New traces are sampled at the edge
/// ([`is_wanted`]): a request left out makes no span at all, so the tracer records every root.
fn provider(config: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    Ok(match config.traces_url() {
        None => builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff))).build(),
        Some(url) => {
            let processor = export::processor(&url)?;
            builder
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
                .with_span_processor(processor)
                .build()
        }
    })
}

/// Sends what spans are still queued (for at most a few seconds) and stops the exporter. Outside
/// the async runtime.
pub(crate) fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown_with_timeout(std::time::Duration::from_secs(3));
    }
}

/// Spans are exported (`telemetry.otlp_endpoint`).
pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether a request is traced: its caller sent a `traceparent` (whose sampling decision the
/// tracer follows), or spans are exported, it is not a probe (health, readiness, metrics: a trace
/// per scrape says nothing), and it is among the `sample_ratio` of requests sampled.
pub(crate) fn is_wanted(path: &str, headers: &HeaderMap) -> bool {
    if headers.contains_key(TRACEPARENT) {
        return true;
    }
    if !exporting() || matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return false;
    }
    let ratio = f64::from_bits(SAMPLE_RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || fastrand::f64() < ratio
}

/// A child span of the request's, or none when the request is not traced.
pub(crate) fn child(traced: bool, make: impl FnOnce() -> Span) -> Span {
    if traced { make() } else { Span::none() }
}

/// Where a request waits for a budget slot (its lane, its place in the lane, how many wait on this
/// replica), on the span of the wait when the request is traced. `position` 0: moved to the lane.
pub(crate) fn record_wait(lane: &'static str, position: usize, depth: usize) {
    let span = Span::current();
    if span.is_none() {
        return;
    }
    span.record("gateway.lane", lane);
    if position > 0 {
        span.record("gateway.queue.position", position);
        span.record("gateway.queue.depth", depth);
    }
}

/// The OpenTelemetry identity of `span` (to link other spans to it), if it is traced.
pub(crate) fn span_context(span: &Span) -> Option<SpanContext> {
    if span.is_none() {
        return None;
    }
    Some(span.context().span().span_context().clone()).filter(SpanContext::is_valid)
}

/// `span` links to the span `to` (a coalesced wait to the fill it waited for).
pub(crate) fn link(span: &Span, to: &SpanContext) {
    span.add_link(to.clone());
}

/// The `traceparent` (and `tracestate`) of `span`, for a request it makes.
pub(crate) fn propagation(span: &Span) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if !span.is_none() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(&mut headers));
    }
    // No `tracestate` when the trace has none.
    if headers.get("tracestate").is_some_and(HeaderValue::is_empty) {
        headers.remove("tracestate");
    }
    headers
}

/// The spans of one traced request: the server span, and the log's span carrying its `trace_id`.
pub(crate) struct ServerTrace {
    pub(crate) span: Span,
    pub(crate) log: Span,
    method: Method,
    /// The route of a path outside the Console operations, if it has one.
    route: Option<&'static str>,
}

impl ServerTrace {
    /// The server span, continuing the caller's trace if it sent one.
    pub(crate) fn start(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        request_id: &HeaderValue,
    ) -> Self {
        let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or_default();
        let server_address = host.rsplit_once(':').map_or(host, |(name, _port)| name);
        let span = tracing::info_span!(
            target: TARGET,
            "request",
            otel.name = method.as_str(),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            http.route = Empty,
            url.path = uri.path(),
            url.scheme = "http",
            server.address = server_address,
            client.address = peer.map(|peer| peer.ip().to_string()),
            http.response.status_code = Empty,
            gateway.tenant = Empty,
            gateway.operation = Empty,
            gateway.cache = Empty,
            gateway.request_id = request_id.to_str().ok(),
        );
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
        let trace_id = span_context(&span).map(|context| context.trace_id().to_string());
        // An error-level span, so that the log lines of every level inside the request carry it.
        let log = tracing::error_span!(
            "request",
            %method,
            path = uri.path(),
            request_id = request_id.to_str().ok(),
            trace_id = trace_id.as_deref().map(tracing::field::display),
        );
        let route = GATEWAY_ROUTES.iter().copied().find(|route| *route == uri.path());
        Self { span, log, method: method.clone(), route }
    }

    /// What the request came to, on its span; its `traceparent` on the answer.
    pub(crate) fn finish(&self, response: &mut Response, operation: Option<&str>, tenant: &str) {
        let span = &self.span;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        if let Some(route) = operation.and_then(route_of).or_else(|| self.route.map(str::to_string)) {
            // (The span has started: renamed on the OpenTelemetry side.)
            span.context().span().update_name(format!("{} {route}", self.method));
            span.record("http.route", route.as_str());
        }
        if let Some(operation) = operation {
            span.record("gateway.operation", operation);
        }
        span.record("gateway.tenant", tenant);
        if let Some(cache) = response.headers().get("x-cache").and_then(|value| value.to_str().ok()) {
            span.record("gateway.cache", cache);
        }
        let headers = response.headers_mut();
        for (name, value) in &propagation(span) {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The gateway's own routes (their paths have no parameters).
const GATEWAY_ROUTES: [&str; 7] =
    ["/admin/cache/purge", "/admin/reload", "/openapi.json", "/docs", "/healthz", "/readyz", "/metrics"];

/// The route template of an operation as the gateway serves it (`/dev/v1/projects`,
/// `/v2/ncs/ip`, `/agora/ncs/{appid}`).
fn route_of(operation: &str) -> Option<String> {
    if operation == "ncs_notice" {
        return Some("/agora/ncs/{appid}".into());
    }
    let spec = OPERATIONS.iter().find(|spec| spec.id == operation)?;
    Some(if spec.root { spec.path.to_string() } else { format!("/dev{}", spec.path) })
}
