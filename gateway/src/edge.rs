//! The edge of the pipeline: the request id (the client's if short and printable, else made
//! here), a debug span and log line per request (only when debug logging is on) — or, for a traced
//! request, its server span and a log span carrying its `trace_id` (`telemetry/`) — the request
//! deadline, caught panics, the finishing of problem documents (request id added, logged), and the
//! request metrics — one service, so the hot path pays for one layer and no per-route clones.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::{GatewayError, ProblemReport};
use crate::memo;
use crate::metrics::{ANONYMOUS, Metrics};
use crate::operations::Operation;
use crate::server::Peer;
use crate::state::Gateway;
use crate::telemetry::{self, ServerTrace};

/// Where the handler leaves the labels of the request's metrics — its operation, then its tenant
/// once authenticated — for the edge to read after the response; and the request's deadline.
#[derive(Clone, Default)]
pub(crate) struct RequestSlot(Arc<Labels>);

#[derive(Default)]
struct Labels {
    operation: OnceLock<&'static str>,
    tenant: OnceLock<&'static str>,
    deadline: Option<Instant>,
    traced: bool,
}

impl RequestSlot {
    fn new(deadline: Instant, traced: bool) -> Self {
        Self(Arc::new(Labels { deadline: Some(deadline), traced, ..Labels::default() }))
    }

    /// The request is traced (`telemetry/`): the steps below make their spans.
    pub(crate) fn traced(&self) -> bool {
        self.0.traced
    }

    /// When the edge gives up on the request: handlers pass it down, so that no request queues for
    /// an upstream slot it could not use before then.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    pub(crate) fn set_operation(&self, operation: &'static str) {
        let _ = self.0.operation.set(operation);
    }

    pub(crate) fn set_tenant(&self, tenant: &'static str) {
        let _ = self.0.tenant.set(tenant);
    }

    fn tenant(&self) -> &'static str {
        self.0.tenant.get().copied().unwrap_or(ANONYMOUS)
    }

    /// The operation the route named; `unknown` for other paths under `/dev`, `None` outside it.
    fn operation(&self, path: &str) -> Option<&'static str> {
        match self.0.operation.get() {
            Some(operation) => Some(operation),
            None => path.starts_with("/dev/").then_some("unknown"),
        }
    }
}

#[derive(Clone)]
pub(crate) struct EdgeLayer {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) timeout: Duration,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, edge: self.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    edge: EdgeLayer,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The ready service answers this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let traced = telemetry::is_wanted(request.uri().path(), request.headers());
        self.edge.answer(request, traced, None, move |request| inner.call(request))
    }
}

impl EdgeLayer {
    /// The edge around `inner`'s answer to `request`: what [`Edge`] does for the service it wraps,
    /// and the app's Console routes (`app.rs`) for the handler they call directly. `traced`: the
    /// request is (`telemetry::is_wanted`, asked once per request). `memo`: the answer may be
    /// remembered whole (`memo.rs`), if the first poll makes it.
    pub(crate) fn answer<F>(
        &self,
        mut request: Request,
        traced: bool,
        memo: Option<memo::Arm>,
        inner: impl FnOnce(Request) -> F + Send + 'static,
    ) -> BoxFuture<'static, Result<Response, Infallible>>
    where
        F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let slot = RequestSlot::new(deadline, traced);
        request.extensions_mut().insert(slot.clone());
        let request_id = request_id(request.headers_mut());
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let trace = traced.then(|| {
            let peer = request.extensions().get::<Peer>().map(|peer| peer.0);
            ServerTrace::start(&method, &uri, request.headers(), peer, &request_id)
        });
        let span = match &trace {
            Some(trace) => trace.log.clone(),
            None => tracing::debug_span!("request", %method, path = uri.path(), request_id = request_id.to_str().ok()),
        };
        let server_span = trace.as_ref().map(|trace| trace.span.clone());
        let metrics = self.metrics.clone();
        let timeout = self.timeout;
        let answer = async move {
            // A panic anywhere below (in `call` or in its future) becomes a 500 problem.
            let mut response = match std::panic::catch_unwind(AssertUnwindSafe(|| inner(request))) {
                Ok(future) => {
                    let mut future = std::pin::pin!(AssertUnwindSafe(future).catch_unwind());
                    // Most answers (cache hits) are ready at once: no timer for them.
                    if memo.is_some() {
                        memo::arm();
                    }
                    let first = futures::poll!(future.as_mut());
                    if let Some(arm) = memo {
                        memo::keep(
                            arm,
                            match &first {
                                Poll::Ready(Ok(Ok(response))) => Some(response),
                                _ => None,
                            },
                        );
                    }
                    let answered = match first {
                        Poll::Ready(answered) => Ok(answered),
                        Poll::Pending => tokio::time::timeout_at(deadline, future).await,
                    };
                    match answered {
                        Ok(Ok(Ok(response))) => response,
                        Ok(Err(_panic)) => GatewayError::Internal("a handler panicked".into()).into_response(),
                        Err(_elapsed) => GatewayError::RequestTimeout(timeout).into_response(),
                    }
                }
                Err(_panic) => GatewayError::Internal("a handler panicked".into()).into_response(),
            };
            finish_problem(&mut response, &request_id, &method, &uri);
            let elapsed = started.elapsed();
            let operation = slot.operation(uri.path());
            if let Some(operation) = operation {
                metrics.record_request(slot.tenant(), operation, response.status().as_u16(), elapsed.as_secs_f64());
            }
            if let Some(trace) = &trace {
                trace.finish(&mut response, operation, slot.tenant());
            }
            tracing::debug!(status = response.status().as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
            response.headers_mut().insert(X_REQUEST_ID, request_id);
            Ok(response)
        };
        match server_span {
            Some(server_span) => Box::pin(answer.instrument(span).instrument(server_span)),
            // Debug logging off: no span to enter at every poll.
            None if span.is_disabled() => Box::pin(answer),
            None => Box::pin(answer.instrument(span)),
        }
    }

    /// The answer `memo.rs` remembers for `request`, if one holds, with the edge's part: the
    /// request id, and the request's metrics. Nothing else of the edge applies: the memo answers
    /// only untraced requests, with debug logging off, and a remembered answer is no problem.
    pub(crate) fn remembered<B>(
        &self,
        gateway: &Gateway,
        operation: Operation,
        request: &Request<B>,
    ) -> Option<Response> {
        let started = Instant::now();
        let (mut response, tenant) = memo::answer(gateway, operation, request, started)?;
        let request_id = usable_request_id(request.headers()).unwrap_or_else(made_request_id);
        let elapsed = started.elapsed();
        self.metrics.record_request(tenant, operation.id(), response.status().as_u16(), elapsed.as_secs_f64());
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        Some(response)
    }
}

/// Whether the edge logs each request (its debug span and line): debug logging is on somewhere.
pub(crate) fn logs_requests() -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing::level_filters::LevelFilter::DEBUG
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 64;

/// The request's id: the client's `X-Request-Id` if it sent one that is short and printable ASCII
/// (it goes into logs and problem documents), else 16 random hex digits made here — written
/// back into the request's headers either way.
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = usable_request_id(headers) {
        return id;
    }
    let made = made_request_id();
    headers.insert(X_REQUEST_ID, made.clone());
    made
}

/// The client's `X-Request-Id`, if it sent one that is short and printable ASCII.
fn usable_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let usable = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID && bytes.iter().all(u8::is_ascii_graphic)
    };
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    match (sent.next(), sent.next()) {
        (Some(id), None) if usable(id) => Some(id.clone()),
        _ => None,
    }
}

/// 16 random hex digits.
fn made_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u64(..);
    let mut digits = [0u8; 16];
    for (k, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((random >> (60 - 4 * k)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}

/// Adds the request id to the gateway's own problem answers, and logs them.
fn finish_problem(response: &mut Response, request_id: &HeaderValue, method: &Method, uri: &Uri) {
    let Some(ProblemReport { mut problem, log_detail }) = response.extensions_mut().remove::<ProblemReport>() else {
        return;
    };
    let request_id = request_id.to_str().ok().map(str::to_string);
    let path = uri.path();
    if problem.status >= 500 {
        tracing::error!(%method, path, status = problem.status, detail = problem.detail, cause = log_detail, request_id, "request failed");
    } else {
        tracing::debug!(%method, path, status = problem.status, detail = problem.detail, request_id, "request refused");
    }
    problem.request_id = request_id;
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(problem.to_body());
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panic_below_becomes_a_500_problem_with_the_request_id() {
        let panicking = tower::service_fn(|_request: Request| async move {
            if true {
                panic!("a bug");
            }
            Ok::<Response, Infallible>(Response::new(Body::empty()))
        });
        let edge = EdgeLayer { metrics: Arc::new(Metrics::new()), timeout: Duration::from_secs(1) }.layer(panicking);
        let request =
            Request::builder().uri("/dev/v1/projects").header("x-request-id", "r-1").body(Body::empty()).unwrap();
        let response = edge.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 10_000).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((problem["detail"].as_str(), problem["request_id"].as_str()), (Some("internal error"), Some("r-1")));
    }

    #[tokio::test]
    async fn a_request_past_the_deadline_is_a_504_problem() {
        let slow = tower::service_fn(|_request: Request| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<Response, Infallible>(Response::new(Body::empty()))
        });
        let edge = EdgeLayer { metrics: Arc::new(Metrics::new()), timeout: Duration::from_millis(50) }.layer(slow);
        let request = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
        let response = edge.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 504);
    }

    #[test]
    fn request_ids_are_kept_only_when_short_and_printable() {
        let id = |sent: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for value in sent {
                headers.append(X_REQUEST_ID, HeaderValue::from_bytes(value).unwrap());
            }
            let chosen = request_id(&mut headers);
            assert_eq!(headers.get_all(X_REQUEST_ID).iter().next(), Some(&chosen), "written back");
            chosen.to_str().unwrap().to_string()
        };
        assert_eq!(id(&[b"trace-me-42"]), "trace-me-42");
        let long = [b'x'; 65];
        for sent in [&[&long[..]][..], &[b"has space"], &[b"tab\there"], &[b"a", b"b"], &[]] {
            let made = id(sent);
            assert!(made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        }
        assert_ne!(made_request_id(), made_request_id());
    }

    #[test]
    fn metrics_take_the_operation_the_route_named() {
        let slot = RequestSlot::default();
        assert_eq!(slot.operation("/dev/v1/nothing"), Some("unknown"));
        assert_eq!(slot.operation("/healthz"), None);
        slot.set_operation("list_projects");
        slot.set_tenant("acme");
        assert_eq!((slot.operation("/dev/v1/projects/"), slot.tenant()), (Some("list_projects"), "acme"));
    }
}
