//! The gateway as a drop-in for the Console API: every operation of the spec routed (with and
//! without a trailing slash) and decoded by the generated client, bad input refused before any
//! budget is spent, upstream failures mapped, the docs served offline, the demo command.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_console_client::{Client, ClientOptions, types};
use agora_sandbox::{Faults, Flavor};
use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// State the walk creates and uses.
struct Walk {
    project: types::Project,
    /// A demo project, with usage history.
    old_project: String,
    spare: types::Project,
    rule_ids: Vec<i64>,
}

fn days() -> (chrono::NaiveDate, chrono::NaiveDate) {
    let today = Utc::now().date_naive();
    (today - chrono::Duration::days(7), today - chrono::Duration::days(1))
}

/// Calls one operation through the generated client (which decodes the answer).
async fn through_client(id: &str, client: &Client, walk: &mut Walk, app: &str) {
    let (from, to) = days();
    let project = walk.project.id.clone();
    // The recording-server and certificate writes answer `{"success": true}` (document) or the
    // project (live).
    let written = |answer: types::ProjectWriteResponse| {
        answer.success == Some(true) || answer.project.is_some_and(|p| p.projects()[0].id == project)
    };
    match id {
        "create_project" => {
            let body: types::CreateProjectRequest = typed(json!({"name": "walk-client", "enable_sign_key": true}));
            let created = client.create_project().body(body).send().await.unwrap().into_inner();
            assert_eq!(created.project.projects()[0].name, "walk-client");
        }
        "list_projects" => assert!(!client.list_projects().send().await.unwrap().into_inner().projects.is_empty()),
        "get_project" => {
            let got = client.get_project().id(&project).send().await.unwrap().into_inner();
            assert_eq!(got.project.projects()[0].id, project);
        }
        "set_project_status" => {
            let body: types::SetProjectStatusRequest = typed(json!({"id": project, "status": 1}));
            let answer = client.set_project_status().body(body).send().await.unwrap().into_inner();
            assert_eq!(answer.project.projects()[0].status, Some(1));
        }
        "delete_project" => {
            let body: types::ProjectIdRequest = typed(json!({"id": walk.spare.id}));
            assert!(client.delete_project().body(body).send().await.unwrap().into_inner().success);
        }
        "set_recording_config" => {
            let body: types::SetRecordingConfigRequest =
                typed(json!({"id": project, "recording_server": "10.0.0.1:8080"}));
            assert!(written(client.set_recording_config().body(body).send().await.unwrap().into_inner()));
        }
        "enable_sign_key" => {
            let body: types::EnableSignKeyRequest = typed(json!({"id": project, "enable": true}));
            assert!(written(client.enable_sign_key().body(body).send().await.unwrap().into_inner()));
        }
        "reset_sign_key" => {
            let body: types::ProjectIdRequest = typed(json!({"id": project}));
            assert!(written(client.reset_sign_key().body(body).send().await.unwrap().into_inner()));
        }
        "get_usage" => {
            let usage = client.get_usage().from_date(from).to_date(to).send().await.unwrap().into_inner();
            assert!(!usage.usages.is_empty());
        }
        "get_usage_v3" => {
            let usage =
                client.get_usage_v3().from_date(from).to_date(to).project_id(&walk.old_project).send().await.unwrap();
            assert_eq!(usage.into_inner().usages.len(), 7);
        }
        "create_kicking_rule" => {
            let body: types::CreateKickingRuleRequest = typed(json!({
                "appid": app, "cname": "walk", "uid": 77, "time": 60, "privileges": ["join_channel"]
            }));
            let created = client.create_kicking_rule().body(body).send().await.unwrap().into_inner();
            walk.rule_ids.push(created.id);
        }
        "list_kicking_rules" => {
            let rules = client.list_kicking_rules().appid(app).send().await.unwrap().into_inner();
            assert_eq!(rules.status.as_deref(), Some("success"));
        }
        "update_kicking_rule" => {
            let body: types::UpdateKickingRuleRequest =
                typed(json!({"appid": app, "id": walk.rule_ids[0], "time": 30}));
            assert_eq!(
                client.update_kicking_rule().body(body).send().await.unwrap().into_inner().result.id,
                walk.rule_ids[0]
            );
        }
        "delete_kicking_rule" => {
            let body: types::DeleteKickingRuleRequest = typed(json!({"appid": app, "id": walk.rule_ids[0]}));
            assert_eq!(client.delete_kicking_rule().body(body).send().await.unwrap().into_inner().id, walk.rule_ids[0]);
        }
        "get_user_property" => {
            let property = client.get_user_property().appid(app).uid(1001u32).cname("lobby").send().await.unwrap();
            assert!(property.into_inner().data.in_channel);
        }
        "list_channel_users" => {
            let users = client.list_channel_users().appid(app).cname("lobby").send().await.unwrap().into_inner();
            assert!(users.data.channel_exist);
        }
        "list_channels" => {
            let page = client.list_channels().appid(app).page_size(2u32).send().await.unwrap().into_inner();
            assert_eq!(page.data.channels.len(), 2);
        }
        "get_ncs_ips" => {
            let addresses = client.get_ncs_ips().send().await.unwrap().into_inner();
            assert!(!addresses.data.service.hosts.is_empty(), "Agora's NCS servers have addresses");
        }
        "list_channel_hosts" => {
            let hosts = client.list_channel_hosts().appid(app).cname("town-hall").send().await.unwrap().into_inner();
            assert_eq!((hosts.data.mode, hosts.data.broadcasters), (Some(2), vec![2001]));
            assert!(hosts.data.audience.is_empty(), "hosts only");
        }
        other => panic!("the walk does not know the operation {other}: add it"),
    }
}

/// The same operation as raw HTTP on the path with a trailing slash (reads ask for a refresh, so
/// that they reach the sandbox too).
async fn with_trailing_slash(id: &str, method: &str, path: &str, stack: &Stack, token: &str, walk: &Walk, app: &str) {
    let (from, to) = days();
    let project = &walk.project.id;
    let concrete = path.replace("{appid}", app).replace("{uid}", "1001").replace("{cname}", "lobby");
    let query = match id {
        "get_project" => format!("?id={project}"),
        "get_usage" => format!("?from_date={from}&to_date={to}"),
        "get_usage_v3" => format!("?from_date={from}&to_date={to}&project_id={}", walk.old_project),
        "list_kicking_rules" => format!("?appid={app}"),
        _ => String::new(),
    };
    let body = match id {
        "create_project" => Some(json!({"name": "walk-raw"})),
        "set_project_status" => Some(json!({"id": project, "status": 1})),
        "delete_project" => Some(json!({"id": walk.project.id})),
        "set_recording_config" => Some(json!({"id": project, "recording_server": "10.0.0.2:8080"})),
        "enable_sign_key" => Some(json!({"id": project, "enable": true})),
        "reset_sign_key" => Some(json!({"id": project})),
        "create_kicking_rule" => Some(json!({"appid": app, "uid": 78, "time": 5})),
        "update_kicking_rule" => Some(json!({"appid": app, "id": walk.rule_ids[1], "time": 10})),
        "delete_kicking_rule" => Some(json!({"appid": app, "id": walk.rule_ids[1]})),
        _ => None,
    };
    let url = stack.url(&format!("{concrete}/{query}"));
    let mut request = http().request(Method::from_bytes(method.as_bytes()).unwrap(), url).bearer_auth(token);
    if method == "GET" {
        request = request.header("cache-control", "no-cache");
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{method} {concrete}/ answered {status}: {text}");
}

#[tokio::test]
async fn every_operation_of_the_spec_is_routed_with_and_without_a_trailing_slash_live_answers() {
    walk_every_operation(Flavor::Agora).await;
}

#[tokio::test]
async fn every_operation_of_the_spec_is_routed_with_and_without_a_trailing_slash_document_answers() {
    walk_every_operation(Flavor::Document).await;
}

/// Every operation of the spec, through the generated client and as raw HTTP with a trailing
/// slash, against a sandbox of `flavor`: each reaches the sandbox, each answer decodes.
async fn walk_every_operation(flavor: Flavor) {
    let stack = Stack::start(Options { flavor, ..Options::default() }).await;
    let admin_token = token("ops", ALL_SCOPES);
    let admin = stack.client(&admin_token);
    let app = stack.app("acme-web");
    let create = |name: &str| -> types::CreateProjectRequest { typed(json!({"name": name})) };
    let first = |answer: types::ProjectResponse| answer.project.projects()[0].clone();
    let project = first(admin.create_project().body(create("walk-main")).send().await.unwrap().into_inner());
    let spare = first(admin.create_project().body(create("walk-spare")).send().await.unwrap().into_inner());
    let old_project = stack.projects.named("acme-web").id.clone();
    let mut walk = Walk { project, old_project, spare, rule_ids: vec![] };

    // Create before update before delete; the project itself is deleted last.
    let order = |id: &str| match id {
        "create_kicking_rule" => 0,
        "delete_kicking_rule" => 2,
        "delete_project" => 3,
        _ => 1,
    };
    let mut operations = spec_operations();
    operations.sort_by_key(|(_, _, id)| order(id));
    assert!(operations.len() >= 19, "the 17 documented operations, the hosts-only list, the NCS addresses");
    // An operation at Agora's domain root is called with the client pointed at the gateway's root.
    let admin_at_root = Client::with_bearer_token(&stack.url(""), &admin_token, &ClientOptions::default()).unwrap();
    for (method, path, id) in operations {
        let before = stack.stats().await.by_operation.get(&id).copied().unwrap_or(0);
        let client = if path.starts_with("/dev/") { &admin } else { &admin_at_root };
        through_client(&id, client, &mut walk, &app).await;
        if id == "create_kicking_rule" {
            // A second rule for the raw call's update and delete.
            through_client(&id, &admin, &mut walk, &app).await;
        }
        with_trailing_slash(&id, &method, &path, &stack, &admin_token, &walk, &app).await;
        let after = stack.stats().await.by_operation.get(&id).copied().unwrap_or(0);
        let expected = if id == "create_kicking_rule" { 3 } else { 2 };
        // get_project may be answered from the cached project list instead of reaching the sandbox.
        let reached = after - before;
        assert!(
            reached == expected || (id == "get_project" && reached >= 1),
            "{id}: {reached} of {expected} reached the sandbox"
        );
    }
    let stats = stack.stats().await;
    assert_eq!(stats.throttled, 0, "the gateway never made the sandbox say 429");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_spends_no_budget() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let app = stack.app("acme-web");
    let huge = json!({ "name": "acme-x".repeat(20_000) });
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (Method::GET, format!("/dev/v1/channel/{app}?page_size=501"), None, 400, "page_size"),
        (Method::GET, format!("/dev/v1/channel/{app}?page_size=many"), None, 400, "page_size"),
        (Method::GET, format!("/dev/v1/channel/{app}?page_no=-1"), None, 400, "page_no"),
        (Method::GET, format!("/dev/v1/channel/user/property/{app}/someone/lobby"), None, 400, "uid"),
        (Method::POST, "/dev/v1/kicking-rule".into(), Some(json!({"appid": app, "uid": 0})), 400, "uid"),
        (Method::POST, "/dev/v1/kicking-rule".into(), Some(json!({"appid": app, "cname": ""})), 400, "cname"),
        (Method::POST, "/dev/v1/kicking-rule".into(), Some(json!({"appid": app, "ip": "0"})), 400, "ip"),
        (Method::PUT, "/dev/v1/kicking-rule".into(), Some(json!({"appid": app, "id": "seven", "time": 5})), 400, "id"),
        (Method::DELETE, "/dev/v1/kicking-rule".into(), Some(json!({"id": 5})), 400, "appid"),
        (Method::POST, "/dev/v1/project_status".into(), Some(json!({"id": 5, "status": 1})), 400, "id"),
        (Method::POST, "/dev/v1/project_status".into(), Some(json!({"id": "x", "status": 2})), 400, "status"),
        (Method::POST, "/dev/v1/project".into(), Some(json!({"enable_sign_key": true})), 400, "name"),
        (
            Method::POST,
            "/dev/v1/project".into(),
            Some(json!({"name": "acme-x", "enable_sign_key": "yes"})),
            400,
            "enable_sign_key",
        ),
        (Method::POST, "/dev/v1/project".into(), Some(Value::String("{not json".into())), 400, "JSON"),
        (Method::POST, "/dev/v1/project".into(), Some(huge), 413, "larger"),
        (Method::DELETE, "/dev/v1/project".into(), None, 400, "body"),
        (Method::GET, "/dev/v1/project".into(), None, 400, "id or name"),
        (Method::GET, "/dev/v1/usage?from_date=2026-13-01&to_date=2026-01-01".into(), None, 400, "from_date"),
        (Method::GET, "/dev/v1/usage?to_date=2026-01-01".into(), None, 400, "from_date"),
        (Method::GET, "/dev/v1/usage?from_date=2024-01-01&to_date=2026-01-01".into(), None, 400, "one year"),
        (Method::GET, "/dev/v1/usage?from_date=2026-02-01&to_date=2026-01-01".into(), None, 400, "after"),
        (
            Method::GET,
            "/dev/v3/usage?from_date=2026-01-01&to_date=2026-01-02&project_id=p&business=video".into(),
            None,
            400,
            "business",
        ),
        (Method::GET, "/dev/v3/usage?from_date=2026-01-01&to_date=2026-01-02".into(), None, 400, "project_id"),
        (Method::PATCH, "/dev/v1/project".into(), None, 405, "PATCH"),
        (Method::GET, "/dev/v1/nothing-here".into(), None, 404, "no route"),
    ];
    for (method, path, body, expected, mentions) in cases {
        let mut request = http().request(method.clone(), stack.url(&path)).bearer_auth(&acme);
        match body {
            Some(Value::String(raw)) => request = request.header("content-type", "application/json").body(raw),
            Some(json) => request = request.json(&json),
            None => {}
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body: Value = response.json().await.unwrap();
        let detail = problem_detail(status, &headers, &body, expected);
        assert!(detail.contains(mentions), "{method} {path}: {detail:?} should mention {mentions:?}");
    }
    assert_eq!(stack.stats().await.requests, 0, "no bad input reached the upstream");
}

#[tokio::test]
async fn upstream_errors_pass_through_and_failures_become_502_and_504() {
    let stack = Stack::start(Options { upstream_timeout: "1s", ..Options::default() }).await;
    let admin = token("ops", ALL_SCOPES);

    // Agora's own 404 passes through, body and status.
    let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/project?id=missing", Some(&admin), None).await;
    assert_eq!((status, &body), (404, &json!({"error_msg": "project not exit"})));
    assert_eq!(headers["content-type"], "application/json; charset=utf-8", "Agora's Content-Type, as it came");

    // A slow upstream: 504.
    set_faults(&stack.sandbox, Faults { latency_ms: 2_500, ..Default::default() }).await;
    let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&admin), None).await;
    let detail = problem_detail(status, &headers, &body, 504);
    assert!(detail.contains("did not answer"), "{detail}");
    set_faults(&stack.sandbox, Faults::default()).await;

    // A stopped upstream: 502.
    let Stack { sandbox, gateway, .. } = stack;
    sandbox.stop().await;
    let response =
        http().get(format!("{}/dev/v1/channel/abc", gateway.base_url())).bearer_auth(&admin).send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body: Value = response.json().await.unwrap();
    let detail = problem_detail(status, &headers, &body, 502);
    assert!(detail.contains("cannot connect"), "{detail}");
}

#[tokio::test]
async fn the_openapi_document_lists_every_operation_and_the_docs_are_served_offline() {
    let stack = Stack::start(Options::default()).await;
    let document: Value = http().get(stack.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    assert!(document["components"]["securitySchemes"].get("basicAuth").is_none());
    let mut served = BTreeMap::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(id) = operation["operationId"].as_str() {
                served.insert(id.to_string(), (method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    for (method, path, id) in spec_operations() {
        let (served_method, served_path, operation) = served.get(&id).unwrap_or_else(|| panic!("{id} is not served"));
        assert_eq!((served_method, served_path), (&method, &path));
        for status in ["401", "403", "429", "502", "504"] {
            assert!(operation["responses"].get(status).is_some(), "{id} documents {status}");
        }
    }
    for own in ["/healthz", "/readyz", "/metrics", "/admin/cache/purge"] {
        assert!(document["paths"].get(own).is_some(), "{own} is documented");
    }
    // nullable became a "null" type (OpenAPI 3.1).
    assert_eq!(
        document["components"]["schemas"]["Project"]["properties"]["sign_key"]["type"],
        json!(["string", "null"])
    );

    let page = http().get(stack.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"] {
        let response = http().get(stack.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let text = response.text().await.unwrap();
        if asset.ends_with("initializer.js") {
            assert!(text.contains("/openapi.json"), "the UI loads the gateway's document");
        }
    }
}

#[tokio::test]
async fn health_readiness_request_ids_and_metrics() {
    let stack = Stack::start(Options::default()).await;
    assert_eq!(http().get(stack.url("/healthz")).send().await.unwrap().status(), 200);
    let ready: Value = http().get(stack.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    let response =
        http().get(stack.url("/dev/v1/projects")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42", "echoed");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-me-42");
    let response = http().get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 16, "made when missing");

    let acme = token("acme", TENANT_SCOPES);
    call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let metrics = metrics_text(&stack.gateway.base_url()).await;
    for line in [
        "agora_gateway_requests_total{tenant=\"acme\",operation=\"list_projects\",status=\"201\"} 1",
        "agora_gateway_requests_total{tenant=\"anonymous\",operation=\"list_projects\",status=\"401\"} 1",
        "agora_gateway_upstream_requests_total{operation=\"list_projects\",status=\"201\"} 1",
        "agora_gateway_cache_events_total{class=\"project\",result=\"miss\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(!metrics.contains(ACME_SECRET) && !metrics.contains(&acme), "no secrets in metrics");
}

#[tokio::test]
async fn the_demo_command_starts_and_the_readme_examples_work() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway binary starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token) = (None, None);
    let printed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.trim().strip_prefix("Swagger UI") {
                base = rest.split_whitespace().next().map(|url| url.trim_end_matches("/docs").to_string());
            }
            if line.trim().starts_with("eyJ") && token.is_none() {
                token = Some(line.trim().to_string());
            }
            if line.starts_with("Try:") {
                break;
            }
        }
    })
    .await;
    assert!(printed.is_ok(), "the demo printed its banner");
    let (base, token) = (base.expect("the Swagger UI address"), token.expect("a token"));
    let response = http().get(format!("{base}/dev/v1/projects")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), PROJECTS_OK);
    let list: types::ProjectList = response.json().await.unwrap();
    assert!(list.projects.iter().all(|p| p.name.starts_with("acme-")), "the first token is acme's");
    assert_eq!(list.projects.len(), 2);
    let (channels, rule) = readme_client_example(&base, &token).await.expect("the README's client example runs");
    assert!(channels > 0 && rule > 0, "{channels} channels, rule {rule}");
    // The demo's channels come alive, and their reads are answered from the sandbox's notices.
    let acme_web = list.projects.iter().find(|p| p.name == "acme-web").unwrap().vendor_key.clone();
    let lobby = format!("{base}/dev/v1/channel/user/{acme_web}/lobby");
    wait_for("the demo's channel reads answered from notices", async || {
        let response = http().get(&lobby).bearer_auth(&token).send().await.unwrap();
        response.status() == 200 && response.headers().get("x-cache").is_some_and(|value| value == "EVENTS")
    })
    .await;
    child.kill().await.unwrap();
}

/// The README's "With the generated client" example, as written there.
async fn readme_client_example(base: &str, token: &str) -> Result<(usize, i64), Box<dyn std::error::Error>> {
    use agora_console_client::{Client, ClientOptions};

    let gateway = Client::with_bearer_token(&format!("{base}/dev"), token, &ClientOptions::default())?;
    let projects = gateway.list_projects().send().await?.into_inner().projects;
    let page = gateway.list_channels().appid(&projects[0].vendor_key).page_size(100u32).send().await?.into_inner();
    let rule = gateway
        .create_kicking_rule()
        .body_map(|rule| {
            rule.appid(projects[0].vendor_key.clone())
                .cname(Some("lobby".to_string()))
                .uid(Some(4242u32))
                .time(Some(60.into()))
        })
        .send()
        .await?
        .into_inner();
    println!("{} channels; rule {}", page.data.channels.len(), rule.id);
    Ok((page.data.channels.len(), rule.id))
}

#[tokio::test]
async fn the_example_configuration_is_valid() {
    let dir = std::env::temp_dir().join(format!("agora-e2e-example-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/gateway.toml");
    std::fs::copy(&example, dir.join("gateway.toml")).unwrap();
    std::fs::copy(key_file("acme-rsa.pub.pem"), dir.join("keys/acme.pub.pem")).unwrap();
    std::fs::copy(key_file("initech-ed25519.pub.pem"), dir.join("keys/platform.pub.pem")).unwrap();
    // An ES256 JWK (the public half of the globex test key).
    let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "mod-ec",
        "x": "WJ8-KW4Qd04nAFK1YF0UhLkDNwe2nD2Ro7G_Pi5m3kQ", "y": "8xdAdrlwU5bklemQTE8vckWxRJx_aBRLe8aOW9VEtO8"});
    std::fs::write(dir.join("keys/moderation.jwk.json"), jwk.to_string()).unwrap();
    let check = |with_env: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"));
        // Offline: the example's identity provider is not reachable from here.
        command.args(["check-config", "--offline", "--config", dir.join("gateway.toml").to_str().unwrap()]);
        if with_env {
            command
                .env("AGORA_CUSTOMER_ID", "customer")
                .env("AGORA_CUSTOMER_SECRET", "secret")
                .env("AGORA_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/")
                .env("ACME_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        } else {
            command.env_remove("AGORA_CUSTOMER_ID");
        }
        command.output().unwrap()
    };
    let ok = check(true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));
    let missing = check(false);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("upstream.customer_id"), "the error names the field");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish() {
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects;
    let initech = projects.iter().find(|p| p.name == "initech-staging").unwrap().id.clone();
    let dir = temp_dir("shutdown");
    let toml = gateway_toml(&sandbox.base_url(), &initech, &Options::default());
    let GatewayProcess { base, mut child } = GatewayProcess::start(&toml, &dir, "shutdown", Output::Discard).await;
    set_faults(&sandbox, Faults { latency_ms: 1_000, ..Default::default() }).await;
    let in_flight = tokio::spawn({
        let url = format!("{base}/dev/v1/projects");
        async move { http().get(url).bearer_auth(token("ops", ALL_SCOPES)).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(in_flight.await.unwrap().unwrap(), PROJECTS_OK, "the request in flight was answered");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.expect("the process exits").unwrap();
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(http().get(format!("{base}/healthz")).send().await.is_err(), "no longer listening");
    std::fs::remove_dir_all(dir).unwrap();
}
