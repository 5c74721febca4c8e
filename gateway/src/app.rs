//! Where the pipeline is put together, in order.
//!
//! 1. the edge (`edge.rs`: request id, debug span, deadline, caught panics, problem documents,
//!    metrics) — see [`router`], and [`App`], which sends a Console request straight to its
//!    handler inside the same edge, or answers a repeated cache hit whole (`memo.rs`);
//! 2. **auth** — `auth/`, called by the route's handler;
//! 3. **route + validate** — `routes/`: routes from the operation table
//!    (`generated/operations.rs`), inputs into a `Call` (`call.rs`);
//! 4. **authorize** — scope, then ownership (`authorize.rs`);
//! 5. **cache** for reads (`cache/`), coalesced on a miss;
//! 6. **throttle** — an upstream slot (`throttle/`);
//! 7. **upstream** — the generated client, through the generated dispatch (`upstream/`);
//! 8. **egress** — the answer cut down to the tenant (`egress/`).
//!
//! Agora's notices (NCS) come in beside the Console routes (`routes/notices.rs`, `notify/`) and
//! feed the channel state that step 5 answers channel reads from.
//!
//! Steps 4 to 8 are `pipeline::serve` (steps 6 and 7, a slot and the call, in `fetch.rs`); the
//! state every step reads is `state.rs`. This file keeps only the routers: the handlers call down
//! into the pipeline, never back up here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{self, BoxFuture, Either, Ready};
use tower::Service;

use crate::edge::EdgeLayer;
use crate::error::GatewayError;
use crate::server::Peer;
use crate::state::Gateway;
use crate::{docs, memo, ops, routes, telemetry};

async fn not_found(request: Request) -> GatewayError {
    GatewayError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// What a listener serves: its router and, on the main listener, the Console routes matched
/// ahead of it (`routes/table.rs`) — a Console request goes straight to its handler, inside the
/// same edge, with none of the router's layers; anything else, through the router.
#[derive(Clone)]
pub(crate) struct App(Arc<Surface>);

// One reference count per request (hyper's service adapter clones the service for each).
#[derive(Clone)]
struct Surface {
    router: Router,
    console: Option<Console>,
    /// The connection's client, on a listener that tags requests with it.
    peer: Option<Peer>,
}

#[derive(Clone)]
struct Console {
    gateway: Arc<Gateway>,
    table: routes::Table,
    edge: EdgeLayer,
}

impl App {
    /// A surface served by its router alone.
    pub(crate) fn of(router: Router) -> Self {
        Self(Arc::new(Surface { router, console: None, peer: None }))
    }

    /// The main listener's surface: the whole of [`router`], the Console routes matched first.
    pub(crate) fn main(gateway: Arc<Gateway>) -> Self {
        let edge = edge(&gateway);
        let console = Console { gateway: gateway.clone(), table: routes::Table::new(), edge };
        Self(Arc::new(Surface { router: router(gateway), console: Some(console), peer: None }))
    }

    /// The same surface for one connection, its requests tagged with their client's address.
    pub(crate) fn with_peer(&self, peer: Peer) -> Self {
        Self(Arc::new(Surface { peer: Some(peer), ..Surface::clone(&self.0) }))
    }
}

impl<B> Service<Request<B>> for App
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Either<Ready<Result<Response, Infallible>>, BoxFuture<'static, Result<Response, Infallible>>>,
        RouteFuture<Infallible>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is a handler called directly.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let surface = &*self.0;
        // A Console route: is the request traced, and may the memo (`memo.rs`) take part?
        let found = surface.console.as_ref().and_then(|console| {
            let found = console.table.find(request.method(), request.uri().path())?;
            let traced = telemetry::is_wanted(request.uri().path(), request.headers());
            let memo = memo::wanted(&console.gateway, found.operation, request.headers(), traced);
            Some((console, found, traced, memo))
        });
        // A hit answered before, whole: no handler, and the request's body left unboxed.
        if let Some((console, found, _, true)) = &found
            && let Some(response) = console.edge.remembered(&console.gateway, found.operation, &request)
        {
            return Either::Left(Either::Left(future::ready(Ok(response))));
        }
        let mut request = request.map(Body::new);
        if let Some(peer) = surface.peer {
            request.extensions_mut().insert(peer);
        }
        if let Some((console, found, traced, memo)) = found {
            let gateway = &console.gateway;
            // The pipeline, with the memo armed to remember its answer.
            let arm = memo.then(|| memo::Arm::new(gateway, found.operation, &request));
            let gateway = gateway.clone();
            let answer = move |request| routes::direct(gateway, found, request).map(Ok);
            return Either::Left(Either::Right(console.edge.answer(request, traced, arm, answer)));
        }
        // The router's `call` takes it by `&mut`; a clone of it is one reference count.
        Either::Right(surface.router.clone().call(request))
    }
}

/// The edge of every listener of `gateway`: its metrics, its request timeout.
fn edge(gateway: &Gateway) -> EdgeLayer {
    EdgeLayer { metrics: gateway.metrics.clone(), timeout: gateway.request_timeout }
}

/// The admin listener's surface (`server.admin_listen`): health, readiness and metrics, no token.
pub(crate) fn admin_router(gateway: Arc<Gateway>) -> Router {
    ops::admin_routes().fallback(not_found).with_state(gateway.clone()).layer(edge(&gateway))
}

/// The listener for Agora's notices (`server.notifications_listen`): the intake alone, so that the
/// address Agora's servers reach serves nothing else.
pub(crate) fn notifications_router(gateway: Arc<Gateway>) -> Router {
    routes::notification_routes().fallback(not_found).with_state(gateway.clone()).layer(edge(&gateway))
}

/// The whole HTTP surface, with its layers (outermost first).
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .merge(routes::console_routes())
        .merge(routes::notification_routes())
        .merge(ops::routes(gateway.admin_listener))
        .merge(docs::router(docs::document()))
        .fallback(not_found)
        .with_state(gateway.clone())
        .layer(edge(&gateway))
}
