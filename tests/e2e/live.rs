//! The gateway in front of answers shaped like the live Console API's, not only the document's:
//! any 2xx passes with its status, `project` objects and arrays are both cut down to the tenant,
//! fields the gateway does not know survive (also from the cache), Kong's `{"message"}` errors and
//! any other error body pass byte for byte, Agora refusing the gateway's own credentials is a 502
//! that says so, a 429 in any shape pauses the budget, and nothing Agora accepts is refused.

use std::time::{Duration, Instant};

use agora_sandbox::{Faults, Flavor};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// A fault that answers `status` and `body` once, for requests whose path starts with `path`.
fn answer_once(path: &str, status: u16, body: &str) -> Faults {
    Faults {
        fail_rate: 1.0,
        status: Some(status),
        body: Some(body.into()),
        path: Some(path.into()),
        times: Some(1),
        ..Default::default()
    }
}

/// Sends a request; answers status, headers and the body's exact bytes.
async fn exact(
    stack: &Stack,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = http().request(method, stack.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn unknown_fields_survive_top_level_and_nested_also_from_the_cache() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", "projects:read projects:write channels:read");
    let web = stack.projects.named("acme-web").clone();
    let other = stack.projects.named("globex-live").clone();
    let project = |p: &agora_console_client::types::Project| {
        json!({"id": p.id, "name": p.name, "vendor_key": p.vendor_key, "sign_key": "f".repeat(32),
               "region": {"zone": "cn-east", "tags": [1, 2.5, null]}, "company_id": 376541})
    };
    let list = json!({"projects": [project(&web), project(&other)], "total": 2, "next": null});
    set_faults(&stack.sandbox, answer_once("/dev/v1/projects", 201, &list.to_string())).await;

    let (status, headers, text) = exact(&stack, Method::GET, "/dev/v1/projects", &acme, None).await;
    assert_eq!((status, headers["x-cache"].to_str().unwrap()), (201, "MISS"));
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seen["total"], 2, "top-level fields kept");
    assert_eq!(seen["next"], Value::Null);
    let projects = seen["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 1, "cut down to acme's: {text}");
    assert_eq!(projects[0]["region"], json!({"zone": "cn-east", "tags": [1, 2.5, null]}), "nested fields kept");
    assert_eq!(projects[0]["sign_key"], Value::Null, "redacted without projects:secrets");
    assert!(text.find("\"projects\"").unwrap() < text.find("\"total\"").unwrap(), "fields stay in place: {text}");
    // The same from the cache.
    let (status, headers, again) = exact(&stack, Method::GET, "/dev/v1/projects", &acme, None).await;
    assert_eq!((status, headers["x-cache"].to_str().unwrap(), again), (201, "HIT", text));

    // A write's answer (a project object) and a get's (a one-element array), with fields of their own.
    let written = json!({"project": project(&web), "trace": {"step": 3}});
    set_faults(&stack.sandbox, answer_once("/dev/v1/project_status", 201, &written.to_string())).await;
    let body = json!({"id": web.id, "status": 1, "note": "kept on the way up too"});
    let (status, _, text) = exact(&stack, Method::POST, "/dev/v1/project_status", &acme, Some(body)).await;
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 201);
    assert_eq!(
        (seen["trace"]["step"].as_i64(), seen["project"]["region"]["zone"].as_str()),
        (Some(3), Some("cn-east"))
    );
    assert_eq!(seen["project"]["sign_key"], Value::Null);
    // (The write dropped the cached list: read it again, so only the get meets the fault; and
    // ask for a refresh, so the get is not answered from the list.)
    exact(&stack, Method::GET, "/dev/v1/projects", &acme, None).await;
    let got = json!({"project": [project(&web)], "extra": true});
    set_faults(&stack.sandbox, answer_once("/dev/v1/project", 201, &got.to_string())).await;
    let response = http()
        .get(stack.url(&format!("/dev/v1/project?id={}", web.id)))
        .bearer_auth(&acme)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((seen["extra"].as_bool(), seen["project"][0]["region"]["zone"].as_str()), (Some(true), Some("cn-east")));

    // Channel answers carry Agora's request_id; it survives the cache too.
    let users = format!("/dev/v1/channel/user/{}/lobby", web.vendor_key);
    let (status, headers, first) = exact(&stack, Method::GET, &users, &acme, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-agora-request-id"].len(), 32, "Agora's X-Request-ID, under its own name");
    assert!(headers["ratelimit-limit"].to_str().is_ok(), "RateLimit-* of a fresh answer");
    let seen: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(seen["request_id"].as_str(), headers["x-agora-request-id"].to_str().ok());
    let (_, headers, cached) = exact(&stack, Method::GET, &users, &acme, None).await;
    assert_eq!((headers["x-cache"].to_str().unwrap(), cached), ("HIT", first));
    assert!(headers.get("ratelimit-limit").is_none(), "a hit replays no rate-limit headers");
}

#[tokio::test]
async fn project_objects_and_arrays_are_both_redacted() {
    for flavor in [Flavor::Agora, Flavor::Document] {
        let stack = Stack::start(Options { flavor, ..Options::default() }).await;
        let acme = token("acme", "projects:read projects:write");
        let web = stack.projects.named("acme-web").clone();
        let body = json!({"id": web.id, "status": 1});
        let (status, _, text) = exact(&stack, Method::POST, "/dev/v1/project_status", &acme, Some(body)).await;
        let seen: Value = serde_json::from_str(&text).unwrap();
        let project = match flavor {
            Flavor::Agora => {
                assert_eq!(status, 201);
                assert!(seen["project"].is_object(), "{text}");
                assert_eq!(seen["project"]["company_id"], 376541, "live fields kept");
                &seen["project"]
            }
            Flavor::Document => {
                assert_eq!(status, 200);
                &seen["project"][0]
            }
        };
        assert_eq!((project["id"].as_str(), &project["sign_key"]), (Some(web.id.as_str()), &Value::Null), "{flavor:?}");
    }
}

#[tokio::test]
async fn any_error_passes_byte_for_byte_whatever_its_shape() {
    let stack = Stack::start(Options::default()).await;
    let admin = token("ops", ALL_SCOPES);
    let app = stack.app("acme-web");
    let cases = [
        (400, r#"{"message":"invalid appid"}"#),
        (404, r#"{"message":"no Route matched with those values"}"#),
        (409, r#"{"message": "conflict",  "code": 7}"#),
        (500, r#"{"error_msg":"Internal server error"}"#),
        (503, "<html><body>upstream unavailable</body></html>"),
    ];
    for (n, (status, body)) in cases.into_iter().enumerate() {
        set_faults(&stack.sandbox, answer_once("/dev/v1/channel", status, body)).await;
        // A distinct page each time, so no cached answer covers it.
        let path = format!("/dev/v1/channel/{app}?page_no={n}");
        let (seen, headers, text) = exact(&stack, Method::GET, &path, &admin, None).await;
        assert_eq!((seen, text.as_str()), (status, body), "passed through as it came");
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    }
    // Agora's own 400 for a malformed App ID, from the live edge.
    let (status, _, text) = exact(&stack, Method::GET, "/dev/v1/channel/user/not-an-app/lobby", &admin, None).await;
    assert_eq!((status, text.as_str()), (400, r#"{"message":"invalid appid"}"#));
}

#[tokio::test]
async fn agora_refusing_the_gateways_credentials_is_a_502_that_says_so() {
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    let options = Options { admin_listener: true, ..Options::default() };
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &options)
        .replace(&format!("customer_secret = \"{CUSTOMER_SECRET}\""), "customer_secret = \"not-the-secret\"");
    let config = agora_gateway::Config::parse(&toml, &fixtures()).unwrap();
    let gateway = GatewayThread::start(config).await;
    let acme = token("acme", TENANT_SCOPES);
    let response =
        http().get(format!("{}/dev/v1/projects", gateway.base_url())).bearer_auth(&acme).send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body: Value = response.json().await.unwrap();
    let detail = problem_detail(status, &headers, &body, 502);
    assert!(detail.contains("Agora refused the gateway's credentials"), "{detail}");
    assert!(detail.contains("Invalid authentication credentials"), "Agora's message: {detail}");
    assert!(!detail.contains("not-the-secret"), "never the secret");
    // Every replica shares Agora's refusal: degraded, not unready (a 503 would take the fleet out
    // while hits and the other answers can still be served).
    let ready = http().get(format!("{}/readyz", gateway.base_url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let text = ready.text().await.unwrap();
    assert!(text.contains("degraded") && !text.contains("credentials"), "why is for operators only: {text}");
    let ready = http().get(format!("{}/readyz", gateway.admin_url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(ready.text().await.unwrap().contains("credentials"), "the admin listener says why");
    let metrics = http().get(format!("{}/metrics", gateway.admin_url())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("agora_gateway_upstream_credentials_refused_total 1"), "{metrics}");
    assert!(metrics.contains("agora_gateway_degraded{cause=\"upstream_credentials\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_429_in_kongs_shape_pauses_the_budget_and_the_read_succeeds() {
    let _load = LOAD.lock().await;
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    reset_sandbox(&stack.sandbox).await;
    let mut faults = answer_once("/dev/v1/channel", 429, r#"{"message":"API rate limit exceeded"}"#);
    faults.headers = [("retry-after".to_string(), "1".to_string())].into();
    set_faults(&stack.sandbox, faults).await;
    let started = Instant::now();
    let path = format!("/dev/v1/channel/{}", stack.app("acme-web"));
    let (status, _, body) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!(status, 200, "retried after the pause: {body}");
    assert!(started.elapsed() >= Duration::from_secs(1), "paused for Retry-After: {:?}", started.elapsed());
    let stats = stack.stats().await;
    assert_eq!(stats.by_operation.get("list_channels"), Some(&1), "one refused at the edge, one answered");
    assert_eq!(stats.requests, 2);
}

#[tokio::test]
async fn what_agora_accepts_is_not_refused() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let app = stack.app("acme-web");
    // A ban with no `time` (60 by default), a fraction of a minute, and the same for an update.
    let (status, _, created) =
        call(&stack, Method::POST, "/dev/v1/kicking-rule", Some(&acme), Some(json!({"appid": app, "cname": "c1"})))
            .await;
    assert_eq!(status, 200, "{created}");
    let body = json!({"appid": app, "uid": 7, "time": 0.5, "ip": "10.0.0.0/8"});
    let (status, _, half) = call(&stack, Method::POST, "/dev/v1/kicking-rule", Some(&acme), Some(body)).await;
    assert_eq!(status, 200, "{half}");
    let update = json!({"appid": app, "id": created["id"]});
    let (status, _, updated) = call(&stack, Method::PUT, "/dev/v1/kicking-rule", Some(&acme), Some(update)).await;
    assert_eq!(status, 200, "{updated}");
    // A kick-once rule: the live service answers id 0.
    let once = json!({"appid": app, "uid": 8, "time": 0});
    let (_, _, answer) = call(&stack, Method::POST, "/dev/v1/kicking-rule", Some(&acme), Some(once)).await;
    assert_eq!(answer, json!({"status": "success", "id": 0}));
    // A user who is not in the channel: `in_channel` alone, passed on.
    let path = format!("/dev/v1/channel/user/property/{app}/4242/lobby");
    let (status, _, absent) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!((status, &absent["data"]), (200, &json!({"in_channel": false})));
    // A 2xx of a shape the spec does not know, where nothing needs cutting down: passed on.
    set_faults(&stack.sandbox, answer_once("/dev/v1/channel", 202, r#"{"weird":true}"#)).await;
    let (status, _, text) = exact(&stack, Method::GET, &format!("/dev/v1/channel/{app}?page_no=9"), &acme, None).await;
    assert_eq!((status, text.as_str()), (202, r#"{"weird":true}"#));
}

#[tokio::test]
async fn a_project_list_that_cannot_be_cut_down_is_a_502_naming_what_it_lacks() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    set_faults(&stack.sandbox, answer_once("/dev/v1/projects", 201, r#"{"items":[]}"#)).await;
    let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let detail = problem_detail(status, &headers, &body, 502);
    assert!(detail.contains("has no `projects`"), "{detail}");
    let broken = json!({"projects": [{"id": "x", "name": "acme-x"}]});
    set_faults(&stack.sandbox, answer_once("/dev/v1/projects", 201, &broken.to_string())).await;
    let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let detail = problem_detail(status, &headers, &body, 502);
    assert!(detail.contains("projects[0] has no string `vendor_key`"), "{detail}");
}
