//! The gateway's own endpoints: `/healthz`, `/readyz`, `/metrics`, `POST /admin/cache/purge`.
//!
//! What they show is for operators: on the main listener `/metrics` needs a token with the
//! `admin` scope and `/readyz` says only ready or not; the optional admin listener
//! (`server.admin_listen`, for probes and scrapers) serves both in full without a token, and
//! `/metrics` is then served there only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::AuditScope;
use crate::auth::{Authenticated, Principal};
use crate::error::GatewayError;
use crate::policy::{CacheClass, Scope};
use crate::readiness;
use crate::routes::{method_not_allowed, read_body};
use crate::state::Gateway;

/// The endpoints on the main listener; `/metrics` only when there is no admin listener.
pub(crate) fn routes(admin_listener: bool) -> Router<Arc<Gateway>> {
    let routes = Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route("/admin/cache/purge", post(purge_cache).fallback(method_not_allowed))
        .route("/admin/reload", post(reload).fallback(method_not_allowed));
    if admin_listener { routes } else { routes.route("/metrics", get(metrics).fallback(method_not_allowed)) }
}

/// The admin listener's endpoints: no token, reasons shown.
pub(crate) fn admin_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(admin_readyz).fallback(method_not_allowed))
        .route("/metrics", get(admin_metrics).fallback(method_not_allowed))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "gateway", security(()), responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready`; `degraded` while serving without a shared dependency (Redis, a tenant's keys,
    /// Agora accepting the credentials or reachable); `starting`, `draining` or `unavailable`
    /// when not ready.
    status: &'static str,
    /// Why (on the admin listener only; the logs and `agora_gateway_degraded` say it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Ready: this process can serve. Not ready (503) only while it starts, while it drains after
/// SIGTERM, or when it could serve nothing at all; a shared dependency's failure is a degraded
/// state (200). Why is on the admin listener and in the logs.
#[utoipa::path(
    get, path = "/readyz", tag = "gateway", security(()),
    responses(
        (status = 200, description = "Ready, perhaps degraded (Redis unreachable, a tenant without keys, Agora refusing the credentials or unreachable)", body = Readiness),
        (status = 503, description = "Starting (no share of the shared budget yet), draining after SIGTERM, or unable to serve anything", body = Readiness)
    )
)]
pub(crate) async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    readiness(&gateway, false)
}

async fn admin_readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    readiness(&gateway, true)
}

fn readiness(gateway: &Gateway, with_reason: bool) -> Response {
    let assessment = readiness::assess(gateway);
    let reason = assessment.reasons().filter(|_| with_reason);
    match assessment.unready {
        None => {
            let status = if assessment.degraded.is_empty() { "ready" } else { "degraded" };
            Json(Readiness { status, reason }).into_response()
        }
        Some((status, _)) => {
            let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status, reason })).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// Prometheus metrics (text exposition format). Needs the `admin` scope; with
/// `server.admin_listen`, served on that address only (without a token).
#[utoipa::path(
    get, path = "/metrics", tag = "gateway",
    responses(
        (status = 200, description = "Prometheus text", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "The token lacks the admin scope")
    )
)]
pub(crate) async fn metrics(
    State(gateway): State<Arc<Gateway>>,
    Authenticated(principal): Authenticated,
) -> Result<Response, GatewayError> {
    if !principal.has(Scope::Admin) {
        return Err(GatewayError::InsufficientScope { scope: Scope::Admin });
    }
    Ok(exposition(&gateway).await)
}

async fn admin_metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    exposition(&gateway).await
}

async fn exposition(gateway: &Gateway) -> Response {
    gateway.cache.weighted_size().await;
    readiness::assess(gateway);
    let text = gateway.metrics.render();
    let mut response = Bytes::from(text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReloadAnswer {
    /// Tenants configured now.
    tenants: usize,
    /// Settings that changed in the file but apply only after a restart.
    restart_needed: Vec<String>,
}

/// Reads the config file again and applies what can change live (as SIGHUP does). Needs the
/// `admin` scope.
#[utoipa::path(
    post, path = "/admin/reload", tag = "gateway",
    responses(
        (status = 200, description = "Reloaded", body = ReloadAnswer),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "The token lacks the admin scope"),
        (status = 422, description = "The new configuration is not valid (nothing changed), or there is no config file")
    )
)]
pub(crate) async fn reload(
    State(gateway): State<Arc<Gateway>>,
    principal: Result<Authenticated, GatewayError>,
    headers: HeaderMap,
) -> Response {
    admin_action(&gateway, "reload", principal, &headers, async |principal: &Principal| {
        tracing::info!(tenant = principal.tenant.id, subject = principal.subject, "configuration reload asked for");
        let reloaded = gateway.reload().await.map_err(|error| GatewayError::Unprocessable(error.to_string()))?;
        let answer = ReloadAnswer {
            tenants: reloaded.tenants,
            restart_needed: reloaded.restart_needed.iter().map(ToString::to_string).collect(),
        };
        Ok((Json(answer), BTreeMap::new()))
    })
    .await
}

/// An admin action, with its one audit event however it ends: refused for a missing or invalid
/// token or without the `admin` scope, refused by the action itself (its error), or done
/// (`action` answers, and names what it was about for the event's `target`).
async fn admin_action<T: IntoResponse>(
    gateway: &Gateway,
    operation: &str,
    principal: Result<Authenticated, GatewayError>,
    headers: &HeaderMap,
    action: impl AsyncFnOnce(&Principal) -> Result<(T, BTreeMap<String, String>), GatewayError>,
) -> Response {
    let request_id = headers.get("x-request-id").and_then(|id| id.to_str().ok()).map(str::to_string);
    let mut audit = AuditScope::start(&gateway.audit, operation, request_id, true);
    let result = match principal {
        Err(error) => {
            audit.unauthenticated();
            return error.into_response();
        }
        Ok(Authenticated(principal)) => {
            audit.principal(&principal);
            if principal.has(Scope::Admin) {
                action(&principal).await
            } else {
                Err(GatewayError::InsufficientScope { scope: Scope::Admin })
            }
        }
    };
    let response = match result {
        Ok((answer, target)) => {
            audit.target(target);
            answer.into_response()
        }
        Err(error) => error.into_response(),
    };
    audit.finish(&response);
    response
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// `project`, `channel` or `usage`; every class when left out.
    #[serde(default)]
    class: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PurgeAnswer {
    /// The class purged, or `all`.
    purged: String,
}

/// Drops cached answers: all of them, or one class. Needs the `admin` scope.
#[utoipa::path(
    post, path = "/admin/cache/purge", tag = "gateway",
    request_body(content = PurgeRequest, description = "Optional; an empty body purges every class"),
    responses(
        (status = 200, description = "Purged", body = PurgeAnswer),
        (status = 400, description = "Unknown class"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "The token lacks the admin scope")
    )
)]
pub(crate) async fn purge_cache(
    State(gateway): State<Arc<Gateway>>,
    principal: Result<Authenticated, GatewayError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|length| length.to_str().ok()?.parse().ok());
    admin_action(&gateway, "purge_cache", principal, &headers, async |principal: &Principal| {
        // Read only once the caller is known to be an admin.
        let body = read_body(body, declared, gateway.max_body).await?;
        let request: PurgeRequest = if body.iter().all(u8::is_ascii_whitespace) {
            PurgeRequest::default()
        } else {
            serde_json::from_slice(&body)
                .map_err(|error| GatewayError::bad_request(format!("invalid body: {error}")))?
        };
        let class = match request.class.as_deref() {
            None => None,
            Some(name) => Some(CacheClass::parse(name).ok_or_else(|| {
                GatewayError::bad_request(format!("class must be project, channel or usage, not {name:?}"))
            })?),
        };
        gateway.cache.purge(class).await;
        let purged = class.map_or("all", CacheClass::as_str).to_string();
        tracing::info!(tenant = principal.tenant.id, subject = principal.subject, class = purged, "cache purged");
        let target = BTreeMap::from([("class".to_string(), purged.clone())]);
        Ok((Json(PurgeAnswer { purged }), target))
    })
    .await
}
