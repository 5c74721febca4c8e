//! The edge of the pipeline, inside request id and trace span: the request deadline, caught
//! panics, the finishing of problem documents (request id added, logged), and the request
//! metrics — one service, so the hot path pays for one layer and no per-route clones.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::error::{GatewayError, ProblemReport};
use crate::metrics::{ANONYMOUS, Metrics, OperationLabels, RequestLabels};

/// Where the handler leaves the labels of the request's metrics — its operation, then its tenant
/// once authenticated — for the edge to read after the response.
#[derive(Clone, Default)]
pub(crate) struct RequestSlot(Arc<Labels>);

#[derive(Default)]
struct Labels {
    operation: OnceLock<&'static str>,
    tenant: OnceLock<&'static str>,
}

impl RequestSlot {
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

/// When the edge gives up on the request: handlers pass it down, so that no request queues for an
/// upstream slot it could not use before then.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestDeadline(pub(crate) Instant);

#[derive(Clone)]
pub(crate) struct EdgeLayer {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) timeout: Duration,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, metrics: self.metrics.clone(), timeout: self.timeout }
    }
}

#[derive(Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    metrics: Arc<Metrics>,
    timeout: Duration,
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

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let slot = RequestSlot::default();
        request.extensions_mut().insert(slot.clone());
        request.extensions_mut().insert(RequestDeadline(started + self.timeout));
        let request_id = request.headers().get("x-request-id").cloned();
        let (method, uri) = (request.method().clone(), request.uri().clone());
        // The ready service answers this request; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (metrics, timeout) = (self.metrics.clone(), self.timeout);
        Box::pin(async move {
            // A panic anywhere below (in `call` or in its future) becomes a 500 problem.
            let answered = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request)))
                .map(|future| tokio::time::timeout(timeout, AssertUnwindSafe(future).catch_unwind()));
            let mut response = match answered {
                Ok(future) => match future.await {
                    Ok(Ok(Ok(response))) => response,
                    Ok(Err(_panic)) => GatewayError::Internal("a handler panicked".into()).into_response(),
                    Err(_elapsed) => GatewayError::RequestTimeout(timeout).into_response(),
                },
                Err(_panic) => GatewayError::Internal("a handler panicked".into()).into_response(),
            };
            finish_problem(&mut response, request_id, &method, &uri);
            if let Some(operation) = slot.operation(uri.path()) {
                let labels = RequestLabels { tenant: slot.tenant(), operation, status: response.status().as_u16() };
                metrics.requests.get_or_create(&labels).inc();
                let elapsed = started.elapsed().as_secs_f64();
                metrics.request_duration.get_or_create(&OperationLabels { operation }).observe(elapsed);
            }
            Ok(response)
        })
    }
}

/// Adds the request id to the gateway's own problem answers, and logs them.
fn finish_problem(response: &mut Response, request_id: Option<HeaderValue>, method: &Method, uri: &Uri) {
    let Some(ProblemReport { mut problem, log_detail }) = response.extensions_mut().remove::<ProblemReport>() else {
        return;
    };
    let request_id = request_id.and_then(|id| id.to_str().ok().map(str::to_string));
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
    fn metrics_take_the_operation_the_route_named() {
        let slot = RequestSlot::default();
        assert_eq!(slot.operation("/dev/v1/nothing"), Some("unknown"));
        assert_eq!(slot.operation("/healthz"), None);
        slot.set_operation("list_projects");
        slot.set_tenant("acme");
        assert_eq!((slot.operation("/dev/v1/projects/"), slot.tenant()), (Some("list_projects"), "acme"));
    }
}
