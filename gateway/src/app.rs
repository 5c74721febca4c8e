//! Where the pipeline is put together, in order.
//!
//! 1. the edge (`edge.rs`: request id, debug span, deadline, caught panics, problem documents,
//!    metrics) — see [`router`];
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

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;

use crate::edge::EdgeLayer;
use crate::error::GatewayError;
use crate::state::Gateway;
use crate::{docs, ops, routes};

async fn not_found(request: Request) -> GatewayError {
    GatewayError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// The admin listener's surface (`server.admin_listen`): health, readiness and metrics, no token.
pub(crate) fn admin_router(gateway: Arc<Gateway>) -> Router {
    ops::admin_routes()
        .fallback(not_found)
        .with_state(gateway.clone())
        .layer(EdgeLayer { metrics: gateway.metrics.clone(), timeout: gateway.request_timeout })
}

/// The listener for Agora's notices (`server.notifications_listen`): the intake alone, so that the
/// address Agora's servers reach serves nothing else.
pub(crate) fn notifications_router(gateway: Arc<Gateway>) -> Router {
    routes::notification_routes()
        .fallback(not_found)
        .with_state(gateway.clone())
        .layer(EdgeLayer { metrics: gateway.metrics.clone(), timeout: gateway.request_timeout })
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
        .layer(EdgeLayer { metrics: gateway.metrics.clone(), timeout: gateway.request_timeout })
}
