//! The audit trail: one line per write and admin action, with who, what, on what and how it
//! ended; refused writes with why; never a token, a secret or an App certificate; rotation by
//! SIGUSR1 loses nothing; `agora-gateway audit` filters.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agora_sandbox::Faults;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn lines(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect()
}

/// The file's events once it holds at least `count` (its writer is a thread of its own: an event
/// lands a moment after the answer).
async fn at_least(file: &Path, count: usize) -> Vec<Value> {
    wait_for("the audit events", async || lines(file).len() >= count).await;
    lines(file)
}

/// Sends a request with its own request id; answers the status.
async fn send(base: &str, method: Method, path: &str, token: &str, body: Option<Value>, request_id: &str) -> u16 {
    let mut request =
        http().request(method, format!("{base}{path}")).bearer_auth(token).header("x-request-id", request_id);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status().as_u16()
}

/// The one audit line of `request_id` (fails if there is not exactly one).
fn the_line<'a>(events: &'a [Value], request_id: &str) -> &'a Value {
    let matching: Vec<&Value> = events.iter().filter(|event| event["request_id"] == request_id).collect();
    assert_eq!(matching.len(), 1, "{request_id}: {} audit lines: {matching:?}", matching.len());
    matching[0]
}

#[tokio::test]
async fn every_write_and_admin_action_is_one_audit_line_and_none_holds_a_secret() {
    let dir = temp_dir("audit");
    let file = dir.join("audit.jsonl");
    let stack = Stack::start(audited(&file)).await;
    let base = stack.gateway.base_url();
    let (acme, globex, ops) = (token("acme", TENANT_SCOPES), token("globex", TENANT_SCOPES), token("ops", ALL_SCOPES));
    let mobile = stack.projects.named("acme-mobile").id.clone();
    let web_app = stack.app("acme-web");
    let globex_project = stack.projects.named("globex-live").id.clone();

    // Every write operation, done.
    let (status, _, created) =
        call(&stack, Method::POST, "/dev/v1/project", Some(&acme), Some(json!({"name": "acme-audited"}))).await;
    assert_eq!(status, PROJECTS_OK);
    let created_id = match &created["project"] {
        Value::Array(projects) => projects[0]["id"].clone(),
        project => project["id"].clone(),
    };
    let created_id = created_id.as_str().unwrap().to_string();
    let writes: Vec<(&str, Method, &str, Value)> = vec![
        (
            "recording",
            Method::POST,
            "/dev/v1/recording_config",
            json!({"id": mobile, "recording_server": "10.0.0.9:80"}),
        ),
        ("status", Method::POST, "/dev/v1/project_status", json!({"id": mobile, "status": 0})),
        ("signkey", Method::POST, "/dev/v1/signkey", json!({"id": created_id, "enable": true})),
        ("reset", Method::POST, "/dev/v1/reset_signkey", json!({"id": created_id})),
        ("rule", Method::POST, "/dev/v1/kicking-rule", json!({"appid": web_app, "uid": 4242, "time": 5})),
    ];
    let mut expected: BTreeMap<String, (&str, u16)> = BTreeMap::new();
    for (name, method, path, body) in writes {
        let id = format!("audit-{name}");
        let status = send(&base, method, path, &acme, Some(body), &id).await;
        if !(200..300).contains(&status) {
            let (_, _, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
            panic!("{name}: {status}; acme's projects: {body}");
        }
        expected.insert(id, ("ok", status));
    }
    let (_, _, rules) =
        call(&stack, Method::GET, &format!("/dev/v1/kicking-rule?appid={web_app}"), Some(&acme), None).await;
    let rule = rules["rules"].as_array().unwrap().iter().find(|r| r["uid"] == 4242).unwrap()["id"].clone();
    for (name, method) in [("rule-update", Method::PUT), ("rule-delete", Method::DELETE)] {
        let body = json!({"appid": web_app, "id": rule, "time": 10});
        let id = format!("audit-{name}");
        let status = send(&base, method, "/dev/v1/kicking-rule", &acme, Some(body), &id).await;
        assert_eq!(status, 200, "{name}");
        expected.insert(id, ("ok", status));
    }
    let body = json!({"id": created_id});
    let status = send(&base, Method::DELETE, "/dev/v1/project", &acme, Some(body), "audit-delete").await;
    assert!((200..300).contains(&status), "delete: {status}");
    expected.insert("audit-delete".into(), ("ok", status));

    // Refused ones: 403, 404, 400, and Agora's 429.
    let refused = [
        ("audit-403", Method::POST, "/dev/v1/project", json!({"name": "acme-not-yours"}), &globex, 403),
        ("audit-404", Method::POST, "/dev/v1/project_status", json!({"id": globex_project, "status": 0}), &acme, 404),
        ("audit-400", Method::POST, "/dev/v1/project_status", json!({"status": 0}), &acme, 400),
    ];
    for (id, method, path, body, token, want) in refused {
        assert_eq!(send(&base, method, path, token, Some(body), id).await, want, "{id}");
        expected.insert(id.to_string(), ("refused", want));
    }
    let faults = Faults {
        fail_rate: 1.0,
        status: Some(429),
        body: Some(r#"{"message":"API rate limit exceeded"}"#.into()),
        path: Some("/dev/v1/project_status".into()),
        times: Some(1),
        ..Faults::default()
    };
    set_faults(&stack.sandbox, faults).await;
    let body = json!({"id": mobile, "status": 1});
    assert_eq!(send(&base, Method::POST, "/dev/v1/project_status", &acme, Some(body), "audit-429").await, 429);
    expected.insert("audit-429".into(), ("refused", 429));

    // Admin actions.
    assert_eq!(send(&base, Method::POST, "/admin/cache/purge", &ops, None, "audit-purge").await, 200);
    expected.insert("audit-purge".into(), ("ok", 200));
    assert_eq!(send(&base, Method::POST, "/admin/reload", &ops, None, "audit-reload").await, 422);
    expected.insert("audit-reload".into(), ("refused", 422));
    // Refused admin actions: a bad class, no admin scope, no token.
    let bad_class = Some(json!({"class": "everything"}));
    assert_eq!(send(&base, Method::POST, "/admin/cache/purge", &ops, bad_class, "audit-purge-400").await, 400);
    expected.insert("audit-purge-400".into(), ("refused", 400));
    assert_eq!(send(&base, Method::POST, "/admin/cache/purge", &acme, None, "audit-purge-403").await, 403);
    expected.insert("audit-purge-403".into(), ("refused", 403));
    let anonymous =
        http().post(format!("{base}/admin/reload")).header("x-request-id", "audit-reload-401").send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    // Reads are not audited by default.
    assert_eq!(send(&base, Method::GET, "/dev/v1/projects", &acme, None, "audit-read").await, PROJECTS_OK);

    let events = at_least(&file, expected.len()).await;
    for (id, (outcome, status)) in &expected {
        let event = the_line(&events, id);
        assert_eq!(
            (event["outcome"].as_str().unwrap(), event["status"].as_u64().unwrap()),
            (*outcome, u64::from(*status)),
            "{id}: {event}"
        );
        if *outcome == "refused" {
            assert!(event["reason"].as_str().is_some_and(|reason| !reason.is_empty()), "{id}: says why: {event}");
        }
    }
    assert!(events.iter().all(|event| event["request_id"] != "audit-read"), "a read is not audited");
    let status_event = the_line(&events, "audit-status");
    assert_eq!(status_event["tenant"], "acme");
    assert_eq!(status_event["subject"], "acme-service");
    assert_eq!(status_event["operation"], "set_project_status");
    assert_eq!(status_event["target"]["project"], mobile.as_str());
    assert!(status_event["upstream_request_id"].is_string(), "Agora's request id: {status_event}");
    let rule_event = the_line(&events, "audit-rule-delete");
    assert_eq!(
        (rule_event["target"]["app"].as_str(), rule_event["target"]["rule"].as_str()),
        (Some(web_app.as_str()), Some(rule.to_string().as_str()))
    );
    assert_eq!(the_line(&events, "audit-403")["tenant"], "globex");
    assert_eq!(the_line(&events, "audit-purge")["target"]["class"], "all");
    assert_eq!(the_line(&events, "audit-purge-403")["tenant"], "acme");
    // Anybody can send requests without a token: counted, not audited one by one.
    assert!(
        events.iter().all(|event| event["request_id"] != "audit-reload-401"),
        "an anonymous refusal is not audited"
    );
    let metrics = metrics_text(&base).await;
    assert!(metrics.contains("agora_gateway_audit_unauthenticated_total 1"), "{metrics}");

    // No token, secret or App certificate anywhere in the file.
    let text = std::fs::read_to_string(&file).unwrap();
    let admin_list = console_client(&stack.sandbox).list_projects().send().await.unwrap().into_inner();
    let mut secrets: Vec<String> =
        vec![acme, globex, ops, ACME_SECRET.into(), GLOBEX_SECRET.into(), OPS_SECRET.into(), CUSTOMER_SECRET.into()];
    secrets.extend(
        admin_list.projects.iter().filter_map(|project| project.sign_key.clone()).filter(|key| !key.is_empty()),
    );
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "the audit file holds a secret");
    }
    assert!(!text.contains("\"sign_key\""), "no App certificate field: {text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn rotation_by_sigusr1_loses_no_event_and_the_audit_command_filters() {
    let dir = temp_dir("audit-rotate");
    let file = dir.join("audit.jsonl");
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &audited(&file))
        .replace("rate = 10", "rate = 50");
    let gateway = GatewayProcess::start(&toml, &dir, "audited", Output::Discard).await;
    let (acme, globex) = (token("acme", TENANT_SCOPES), token("globex", TENANT_SCOPES));
    let (acme_project, globex_project) =
        (projects.named("acme-web").id.clone(), projects.named("globex-live").id.clone());

    // Writes in a steady stream; halfway, the file is moved away and SIGUSR1 sent.
    let writer = {
        let base = gateway.base.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..60 {
                let (token, project) = if n % 3 == 0 { (&globex, &globex_project) } else { (&acme, &acme_project) };
                let id = format!("rotate-{n}");
                let body = json!({"id": project, "recording_server": format!("10.0.0.{n}:80")});
                let status = send(&base, Method::POST, "/dev/v1/recording_config", token, Some(body), &id).await;
                assert_eq!(status, PROJECTS_OK);
                sent.push(id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = dir.join("audit.jsonl.1");
    std::fs::rename(&file, &rotated).unwrap();
    let pid = gateway.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    let sent = writer.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (before, after) = (lines(&rotated), lines(&file));
    assert!(!before.is_empty() && !after.is_empty(), "both files hold events: {} and {}", before.len(), after.len());
    let all: Vec<Value> = before.into_iter().chain(after).collect();
    for id in &sent {
        the_line(&all, id);
    }
    assert_eq!(all.len(), sent.len(), "one line per write, no more");

    // The audit command, on the current file: by tenant, by time, by operation.
    let config = dir.join("audited.toml");
    let audit = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
            .args(["audit", "--config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let rows = |table: &str| table.lines().skip(2).map(str::to_string).collect::<Vec<_>>();
    let mut old = all.last().unwrap().clone();
    old["time"] = json!((chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339());
    old["request_id"] = json!("from-two-days-ago");
    let mut appended = std::fs::read_to_string(&file).unwrap();
    appended.push_str(&format!("{old}\n"));
    std::fs::write(&file, appended).unwrap();
    let everything = rows(&audit(&[]));
    assert!(everything.iter().any(|row| row.contains("from-two-days-ago")));
    let recent = rows(&audit(&["--since", "1h"]));
    assert_eq!(recent.len(), everything.len() - 1, "--since leaves out the old event");
    let globex_rows = rows(&audit(&["--tenant", "globex"]));
    assert!(!globex_rows.is_empty() && globex_rows.iter().all(|row| row.contains("| globex |")), "{globex_rows:?}");
    assert!(rows(&audit(&["--operation", "create_project"])).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_sink_that_cannot_be_written_is_counted_and_never_fails_the_request() {
    // `/dev/full` opens, and every write to it fails (no space left on the device).
    let stack = Stack::start(audited(Path::new("/dev/full"))).await;
    let base = stack.gateway.base_url();
    let acme = token("acme", TENANT_SCOPES);
    let project = stack.projects.named("acme-mobile").id.clone();
    for n in 0..3 {
        let body = json!({"id": project, "recording_server": format!("10.0.3.{n}:80")});
        let status = send(&base, Method::POST, "/dev/v1/recording_config", &acme, Some(body), "sink-full").await;
        assert_eq!(status, PROJECTS_OK, "the write is done although its audit event could not be");
    }
    assert_eq!(sandbox_stats(&stack.sandbox).await.by_operation.get("set_recording_config"), Some(&3));
    let failures = "agora_gateway_audit_write_failures_total 3";
    wait_for("the failures counted", async || metrics_text(&base).await.contains(failures)).await;
}

#[tokio::test]
async fn the_log_sink_writes_one_line_per_event_with_its_request_ids_and_no_secret() {
    let dir = temp_dir("audit-log");
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    // The default sink: the log stream (here with debug logs on, as loud as it gets).
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &Options::default());
    let gateway = GatewayProcess::start(&toml, &dir, "log-sink", Output::CaptureDebug).await;
    let acme = token("acme", TENANT_SCOPES);
    let project = projects.named("acme-web").id.clone();
    let body = json!({"id": project});
    let status = send(&gateway.base, Method::POST, "/dev/v1/reset_signkey", &acme, Some(body), "log-sink-reset").await;
    assert_eq!(status, PROJECTS_OK);
    let body = json!({"id": project, "status": 0});
    let status =
        send(&gateway.base, Method::POST, "/dev/v1/project_status", &acme, Some(body), "log-sink-status").await;
    assert_eq!(status, PROJECTS_OK);
    let logs = gateway.logs().await;

    let audit_lines =
        |request_id: &str| logs.lines().filter(|line| line.contains(request_id) && line.contains(" acme ")).count();
    let reset: Vec<&str> =
        logs.lines().filter(|line| line.contains(&format!("reset_sign_key [project={project}]"))).collect();
    assert_eq!(reset.len(), 1, "one audit line for the reset: {reset:?}");
    assert!(reset[0].contains("log-sink-reset"), "it names the request id: {}", reset[0]);
    assert!(reset[0].contains("upstream_request_id"), "and Agora's: {}", reset[0]);
    assert_eq!((audit_lines("log-sink-reset"), audit_lines("log-sink-status")), (1, 1), "one line per event");
    let after = console_client(&sandbox).list_projects().send().await.unwrap().into_inner();
    let sign_key = after.projects.iter().find(|p| p.id == project).and_then(|p| p.sign_key.clone()).unwrap();
    for secret in [acme.as_str(), sign_key.as_str(), ACME_SECRET, CUSTOMER_SECRET] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
