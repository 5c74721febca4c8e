//! Derives the gateway's OpenAPI document from `openapi/agora-console.yaml` at build time, so the
//! served `/openapi.json` can never drift from the spec the client is generated from:
//! OpenAPI 3.0.3 → 3.1 (`nullable` becomes a `"null"` type, as utoipa's 3.1 output expects), the
//! paths moved under `/dev` (but those at Agora's domain root), Basic auth replaced by bearer tokens, and the gateway's own error
//! answers (problem+json) added beside Agora's.

use std::path::Path;

use serde_json::{Map, Value, json};

const SPEC: &str = "../openapi/agora-console.yaml";

fn main() {
    println!("cargo:rerun-if-changed={SPEC}");
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(SPEC).expect("read openapi/agora-console.yaml");
    let spec: Value = serde_yaml_ng::from_str(&text).expect("the Console spec is YAML");
    let document = gateway_document(spec);
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("console-openapi.json");
    std::fs::write(out, serde_json::to_string(&document).expect("JSON")).expect("write the derived document");
}

fn gateway_document(mut spec: Value) -> Value {
    to_3_1(&mut spec);
    let console_description = spec["info"]["description"].as_str().unwrap_or_default().to_string();
    spec["openapi"] = json!("3.1.0");
    spec["info"] = json!({
        "title": "agora-gateway",
        "version": env!("CARGO_PKG_VERSION"),
        "description": format!(
            "agora-gateway serves Agora's Console RESTful API under `/dev`, with the same methods, \
             parameters and bodies, to internal services holding a tenant's bearer token (JWT). \
             It checks the token and the tenant's projects, answers reads from a shared cache \
             (`X-Cache`, `Age`), and spends the account's 10 requests per second fairly, queueing \
             rather than failing (429 with `Retry-After` when the wait would be too long).\n\n\
             The gateway's own errors are `application/problem+json` (RFC 9457); Agora's answers \
             and errors pass through as Agora gave them (status, body, `Content-Type`), whatever \
             their shape.\n\n---\n\n{console_description}"
        ),
    });
    spec["servers"] = json!([{ "url": "/", "description": "this gateway" }]);
    spec["security"] = json!([{ "bearerAuth": [] }]);
    spec["components"]["securitySchemes"] = json!({
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A tenant's token: `agora-gateway token --tenant ID`, or the demo's printed tokens."
        }
    });
    spec["components"]["schemas"]["Problem"] = problem_schema();
    let responses = spec["components"]["responses"].as_object_mut().expect("components.responses");
    add_gateway_responses(responses);

    let paths = spec["paths"].as_object().expect("paths").clone();
    let mut moved = Map::new();
    for (path, mut item) in paths {
        let item_map = item.as_object_mut().expect("path item");
        // Served by the gateway itself: the path item's `servers` (Agora's domain root) go.
        item_map.remove("servers");
        let mut root = false;
        for (_, operation) in item_map.iter_mut() {
            root |= operation["x-gateway"]["base"] == "root";
            gateway_operation(operation);
        }
        // Agora's paths under `/dev` stay there; one at the domain's root (`x-gateway.base: root`)
        // stays at the root.
        moved.insert(if root { path } else { format!("/dev{path}") }, item);
    }
    spec["paths"] = Value::Object(moved);
    spec
}

/// `nullable: true` → `type: [T, "null"]`, recursively.
fn to_3_1(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(kind)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([kind, "null"]));
            }
            map.values_mut().for_each(to_3_1);
        }
        Value::Array(items) => items.iter_mut().for_each(to_3_1),
        _ => {}
    }
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error of the gateway itself (RFC 9457).",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string", "description": "urn:agora-gateway:problem:<kind>" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string", "description": "What was wrong, naming the field where there is one." },
            "request_id": { "type": "string", "description": "The request's X-Request-Id." }
        },
        "example": {
            "type": "urn:agora-gateway:problem:bad-request",
            "title": "Bad request",
            "status": 400,
            "detail": "page_size must be between 1 and 500",
            "request_id": "7f3c2a1e9b4d5c6a"
        }
    })
}

fn problem(description: &str, headers: Option<Value>) -> Value {
    let mut response = json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    });
    if let Some(headers) = headers {
        response["headers"] = headers;
    }
    response
}

fn add_gateway_responses(responses: &mut Map<String, Value>) {
    let retry_after = json!({ "Retry-After": { "description": "Seconds to wait before retrying.", "schema": { "type": "integer" } } });
    // Agora's answers that the gateway may also give itself: both media types.
    for (name, gateway_case) in [
        ("BadRequest", "or the gateway refused the input before spending any budget"),
        (
            "NotFound",
            "or, from the gateway, the project or app is not one of the tenant's (indistinguishable from missing)",
        ),
        ("TooManyRequests", "or, from the gateway, no upstream slot is free within max_wait (with Retry-After)"),
        ("InternalError", "or an internal error of the gateway"),
    ] {
        let response = responses.get_mut(name).expect("the Console spec defines it");
        let description = response["description"].as_str().unwrap_or_default().to_string();
        response["description"] = json!(format!("{description} — {gateway_case}"));
        response["content"]["application/problem+json"] =
            json!({ "schema": { "$ref": "#/components/schemas/Problem" } });
        if name == "TooManyRequests" {
            response["headers"] = retry_after.clone();
        }
    }
    let challenge = json!({ "WWW-Authenticate": { "description": "Bearer error=\"invalid_token\" or \"insufficient_scope\"", "schema": { "type": "string" } } });
    responses.insert(
        "Unauthorized".into(),
        problem("Missing or invalid bearer token (from the gateway).", Some(challenge.clone())),
    );
    responses.insert(
        "Forbidden".into(),
        problem("The token lacks the operation's scope, or the tenant may not do this.", Some(challenge)),
    );
    responses.insert("PayloadTooLarge".into(), problem("The request body is larger than the gateway accepts.", None));
    responses.insert(
        "BadGateway".into(),
        problem("The upstream could not be reached, or answered something that is not the Console API.", None),
    );
    responses.insert("GatewayTimeout".into(), problem("The upstream did not answer in time.", None));
}

fn gateway_operation(operation: &mut Value) {
    let responses = operation["responses"].as_object_mut().expect("responses");
    for (status, name) in
        [("401", "Unauthorized"), ("403", "Forbidden"), ("502", "BadGateway"), ("504", "GatewayTimeout")]
    {
        responses.insert(status.into(), json!({ "$ref": format!("#/components/responses/{name}") }));
    }
    if operation.get("requestBody").is_some() {
        operation["responses"]["413"] = json!({ "$ref": "#/components/responses/PayloadTooLarge" });
    }
    // Cached operations (their `x-gateway.cache`) say how the cache answered.
    let cached = operation["x-gateway"]["cache"].is_string();
    if let Some(policy) = operation.as_object_mut().and_then(|o| o.remove("x-gateway")) {
        operation["description"] = json!(format!(
            "{}\n\n**Gateway policy:** scope `{}`{}.",
            operation["description"].as_str().unwrap_or_default(),
            policy["scope"].as_str().unwrap_or_default(),
            policy["cache"].as_str().map(|class| format!(", cached ({class} class)")).unwrap_or_default()
        ));
    }
    if cached {
        let ok = operation["responses"]["2XX"].as_object_mut().expect("a 2XX");
        ok.insert(
            "headers".into(),
            json!({
                "X-Cache": { "description": "HIT, MISS, STALE or BYPASS", "schema": { "type": "string", "enum": ["HIT", "MISS", "STALE", "BYPASS"] } },
                "Age": { "description": "Seconds since the answer was fetched from Agora", "schema": { "type": "integer" } }
            }),
        );
        let parameters = operation.as_object_mut().unwrap().entry("parameters").or_insert_with(|| json!([]));
        parameters.as_array_mut().unwrap().push(json!({
            "name": "Cache-Control",
            "in": "header",
            "required": false,
            "description": "`no-cache` refreshes the answer from Agora (spends upstream budget).",
            "schema": { "type": "string" }
        }));
    }
}
