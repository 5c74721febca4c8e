//! `/openapi.json` and `/docs` (Swagger UI, served from assets built into the binary: no network).
//! The document is the Console spec as the gateway serves it — derived from
//! `openapi/agora-console.yaml` at build time by `build.rs` — merged with the gateway's own
//! endpoints, which utoipa describes from their handlers in `ops.rs`.

use axum::Router;
use serde_json::Value;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::ops;

const CONSOLE: &str = include_str!(concat!(env!("OUT_DIR"), "/console-openapi.json"));

#[derive(OpenApi)]
#[openapi(
    paths(ops::healthz, ops::readyz, ops::metrics, ops::purge_cache, ops::reload),
    components(schemas(ops::Health, ops::Readiness, ops::PurgeRequest, ops::PurgeAnswer, ops::ReloadAnswer)),
    tags((name = "gateway", description = "The gateway's own endpoints: health, readiness, metrics, cache purge, reload."))
)]
struct GatewayEndpoints;

/// The merged document.
pub(crate) fn document() -> Value {
    let mut document: Value = serde_json::from_str(CONSOLE).expect("build.rs writes valid JSON");
    let own = serde_json::to_value(GatewayEndpoints::openapi()).expect("utoipa's document serializes");
    for (path, item) in own["paths"].as_object().into_iter().flatten() {
        document["paths"][path] = item.clone();
    }
    for (name, schema) in own["components"]["schemas"].as_object().into_iter().flatten() {
        document["components"]["schemas"][name] = schema.clone();
    }
    let tags = document["tags"].as_array_mut().expect("the Console spec has tags");
    tags.extend(own["tags"].as_array().into_iter().flatten().cloned());
    document
}

/// `/docs` and `/openapi.json`.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(document: Value) -> Router<S> {
    SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document).into()
}
