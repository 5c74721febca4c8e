//! Step 3 of the pipeline: the Console routes under `/dev` (and the few at Agora's domain root, at
//! the same path here), built from the operation table that `cargo xtask regen` generates from the
//! spec (each path with and without a trailing slash, as Agora documents both). One generic handler per input shape — with or without a body — labels
//! the request's metrics with its operation, authenticates (step 2), reads the inputs into a
//! [`Call`] (`input.rs`, `checks.rs`: a bad one is a 400 naming the field, before any budget is
//! spent) and hands it to the pipeline (`pipeline.rs`).

mod checks;
mod input;
mod notices;
mod table;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use futures::future::BoxFuture;
use tracing::Instrument;

use crate::audit::{AuditScope, target_of};
use crate::call::Call;
use crate::error::GatewayError;
use crate::operations::{OPERATIONS, Operation};
use crate::pipeline;
use crate::state::Gateway;
use crate::telemetry;
pub(crate) use input::{Inbound, PathValues, asks_refresh, read_body};
pub(crate) use table::{Found, Table};

/// Where Agora's Notifications service delivers notices (`notices.rs`).
pub(crate) fn notification_routes() -> Router<Arc<Gateway>> {
    Router::new().route("/agora/ncs/{appid}", axum::routing::post(notices::intake).fallback(method_not_allowed))
}

/// The Console routes, under `/dev`, from the operation table.
pub(crate) fn console_routes() -> Router<Arc<Gateway>> {
    // (path, at the domain's root rather than under `/dev`, its methods)
    let mut paths: Vec<(&'static str, bool, MethodRouter<Arc<Gateway>>)> = Vec::new();
    for spec in &OPERATIONS {
        let operation = spec.operation;
        let filter = MethodFilter::try_from(spec.method.clone()).expect("the spec's methods are HTTP methods");
        let route: MethodRouter<Arc<Gateway>> = if spec.body.is_some() {
            on(filter, move |state, inbound, path, query, body| with_body(operation, state, inbound, path, query, body))
        } else {
            on(filter, move |state, inbound, path, query| without_body(operation, state, inbound, path, query))
        };
        match paths.iter_mut().find(|(path, _, _)| *path == spec.path) {
            Some((_, _, existing)) => *existing = std::mem::take(existing).merge(route),
            None => paths.push((spec.path, spec.root, route)),
        }
    }
    let mut router = Router::new();
    for (path, root, route) in paths {
        let route = route.fallback(method_not_allowed);
        let path = if root { path.to_string() } else { format!("/dev{path}") };
        router = router.route(&path, route.clone()).route(&format!("{path}/"), route);
    }
    router
}

pub(crate) async fn method_not_allowed(request: Request) -> GatewayError {
    GatewayError::MethodNotAllowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
}

/// A request the table found (`table.rs`), answered as its route in [`console_routes`] would.
/// Boxed, as axum boxes a handler's future: the edge moves it a few times before polling it.
pub(crate) fn direct(gateway: Arc<Gateway>, found: Found, request: Request) -> BoxFuture<'static, Response> {
    let (parts, body) = request.into_parts();
    let inbound = Inbound::of(&parts);
    let query = parts.uri.query().map(str::to_string);
    let body = found.body.then_some(body);
    Box::pin(handle(found.operation, gateway, inbound, Ok(PathValues(found.values)), query, body))
}

/// A read (or any operation without a body).
async fn without_body(
    operation: Operation,
    State(gateway): State<Arc<Gateway>>,
    inbound: Inbound,
    path: Result<PathValues, GatewayError>,
    RawQuery(query): RawQuery,
) -> Response {
    handle(operation, gateway, inbound, path, query, None).await
}

/// A write: its body is read only once the caller is authenticated.
async fn with_body(
    operation: Operation,
    State(gateway): State<Arc<Gateway>>,
    inbound: Inbound,
    path: Result<PathValues, GatewayError>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    handle(operation, gateway, inbound, path, query, Some(body)).await
}

async fn handle(
    operation: Operation,
    gateway: Arc<Gateway>,
    inbound: Inbound,
    path: Result<PathValues, GatewayError>,
    query: Option<String>,
    body: Option<Body>,
) -> Response {
    inbound.slot.set_operation(operation.id());
    let write = operation.policy().cache.is_none();
    // One audit event for the request however it ends — answered, refused, or dropped by the
    // edge's deadline (then its outcome is unknown).
    let mut audit = gateway
        .audit
        .covers(operation)
        .then(|| AuditScope::start(&gateway.audit, operation.id(), inbound.request_id.clone(), write));
    let finish = |audit: Option<AuditScope>, response: Response| {
        if let Some(audit) = audit {
            audit.finish(&response);
        }
        response
    };
    // 2. auth
    let traced = inbound.directives.traced;
    let authenticated = {
        let authenticator = gateway.auth.load();
        let authenticate = authenticator.authenticate(inbound.authorization.as_ref());
        match traced {
            true => authenticate.instrument(tracing::info_span!(target: telemetry::TARGET, "authenticate")).await,
            false => authenticate.await,
        }
    };
    let principal = match authenticated {
        Ok(principal) => principal,
        Err(error) => {
            if let Some(audit) = audit {
                audit.unauthenticated();
            }
            return error.into_response();
        }
    };
    inbound.slot.set_tenant(principal.tenant.label);
    crate::memo::authenticated(&principal);
    if let Some(audit) = audit.as_mut() {
        audit.principal(&principal);
    }
    // 3. route + validate
    let call = async {
        let body = match body {
            Some(body) => Some(read_body(body, inbound.declared_length, gateway.max_body).await?),
            None => None,
        };
        input::build_call(operation, path?, query.as_deref(), body)
    };
    let call: Call = match call.await {
        Ok(call) => call,
        Err(error) => return finish(audit, error.into_response()),
    };
    if let Some(audit) = audit.as_mut() {
        audit.target(target_of(&call));
    }
    // 4-8
    if !write {
        let response = pipeline::serve(&gateway, principal, call, inbound.directives, None).await;
        return finish(audit, response);
    }
    // A write runs in a task of its own: once sent, its answer, its invalidations (here and on
    // every replica) and its audit event come to their end even if the caller goes away. Until it
    // is sent, a caller that goes away (this handler dropped: a disconnect, the edge's deadline)
    // calls it off.
    let (present, caller) = tokio::sync::watch::channel(());
    let write = async move {
        let response = pipeline::serve(&gateway, principal, call, inbound.directives, Some(caller)).await;
        finish(audit, response)
    };
    // Its spans under the request's, its log lines with the request's.
    let task = match traced {
        true => {
            let own = tracing::info_span!(target: telemetry::TARGET, "write task");
            tokio::spawn(write.instrument(tracing::Span::current()).instrument(own))
        }
        false => tokio::spawn(write),
    };
    let response = match task.await {
        Ok(response) => response,
        Err(error) => GatewayError::Internal(format!("a write's task failed: {error}")).into_response(),
    };
    drop(present);
    response
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use tower::Service;

    use super::*;
    use crate::config::Config;

    async fn gateway() -> Arc<Gateway> {
        let config = r#"
            [upstream]
            base_url = "sandbox"
            [[tenants]]
            id = "acme"
            issuer = "https://auth.acme.test"
            audience = "agora-gateway"
            scopes = ["projects:read"]
            keys = [{ kid = "k", alg = "HS256", secret = "0123456789abcdef0123456789abcdef" }]
        "#;
        Gateway::new(&Config::parse(config, std::path::Path::new(".")).unwrap(), None).await.unwrap()
    }

    /// Every row of the table is routed, with and without a trailing slash, and labelled with its
    /// operation; other methods are 405, other paths 404 (`unknown`).
    #[tokio::test]
    async fn every_operation_of_the_table_is_routed_and_labelled() {
        let gateway = gateway().await;
        let mut router = crate::app::App::main(gateway.clone());
        for spec in &OPERATIONS {
            let path = spec.path.replace("{appid}", "app").replace("{uid}", "7").replace("{cname}", "c");
            let path = if spec.root { path } else { format!("/dev{path}") };
            for path in [path.clone(), format!("{path}/")] {
                let request = Request::builder().method(spec.method.clone()).uri(&path).body(Body::empty()).unwrap();
                let response = router.call(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{} {path}", spec.method);
            }
        }
        // Left to the router by the table (`table.rs`), answered as before.
        let head = Request::builder().method("HEAD").uri("/dev/v1/projects").body(Body::empty()).unwrap();
        assert_eq!(router.call(head).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let undecodable = Request::builder().uri("/dev/v1/channel/user/app/%FF").body(Body::empty()).unwrap();
        assert_eq!(router.call(undecodable).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let patch = Request::builder().method("PATCH").uri("/dev/v1/projects").body(Body::empty()).unwrap();
        assert_eq!(router.call(patch).await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
        let nowhere = Request::builder().uri("/dev/v1/nowhere").body(Body::empty()).unwrap();
        assert_eq!(router.call(nowhere).await.unwrap().status(), StatusCode::NOT_FOUND);
        let metrics = gateway.metrics.render();
        for spec in &OPERATIONS {
            let times = match spec.operation {
                Operation::ListProjects | Operation::ListChannelUsers => 3,
                _ => 2,
            };
            let line = format!("operation=\"{}\",status=\"401\"}} {times}", spec.id);
            assert!(metrics.contains(&line), "missing {line}");
        }
        assert!(metrics.contains("operation=\"unknown\",status=\"404\"} 1"));
    }
}
