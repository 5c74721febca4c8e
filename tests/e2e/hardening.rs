//! What a hostile client, a misconfiguration or a hostile upstream could do, one test per finding
//! of the security review: slow and idle connections, descriptor exhaustion, an unbounded
//! `Retry-After`, a panicking fill, overlapping tenants, dot segments, an existence oracle, open
//! operator endpoints, 401 details, token lifetimes and minting, secrets in config errors, request
//! ids, redirects and environment proxies, kicking rules of other apps.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agora_sandbox::Faults;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cluster::RedisServer;
use crate::common::*;

fn host_of(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Sends `head` (a request line and headers, without the final blank line) as written, on a
/// connection of its own; answers the status and the body.
async fn raw(base: &str, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(host_of(base)).await.unwrap();
    stream.write_all(format!("{head}\r\nHost: gateway\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// Waits until the server closes `stream` (EOF or reset); answers when, or `None` after `within`.
async fn closed_within(mut stream: TcpStream, within: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_within_the_header_timeout_while_healthz_answers() {
    let _load = LOAD.lock().await;
    let options = Options { server_extra: "header_read_timeout = \"2s\"\n", ..Options::default() };
    let (gateway, _sandbox, dir) = demo_gateway_process("slowloris", &options, Output::Discard, &[], None).await;
    let addr = host_of(&gateway.base);
    let opened = Instant::now();
    let mut sockets = Vec::new();
    for n in 0..600 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        match n % 3 {
            // Headers that never end.
            0 => stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ").await.unwrap(),
            // Nothing at all.
            1 => {}
            // One request, then an idle keep-alive connection.
            _ => {
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").await.unwrap();
                let mut head = [0u8; 12];
                stream.read_exact(&mut head).await.unwrap();
                assert_eq!(&head, b"HTTP/1.1 200");
            }
        }
        sockets.push(stream);
    }
    // Meanwhile the gateway answers.
    let started = Instant::now();
    let health = http().get(format!("{}/healthz", gateway.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health_took = started.elapsed();
    let closing: Vec<_> =
        sockets.into_iter().map(|s| tokio::spawn(closed_within(s, Duration::from_secs(15)))).collect();
    let mut latest = Duration::ZERO;
    for (n, closing) in closing.into_iter().enumerate() {
        let closed = closing.await.unwrap().unwrap_or_else(|| panic!("connection {n} still open after 15 s"));
        latest = latest.max(closed - opened);
    }
    eprintln!(
        "hardening: 600 slow/idle connections all closed {latest:?} after opening; /healthz took {health_took:?}"
    );
    assert!(latest < Duration::from_secs(8), "closed after {latest:?}, header_read_timeout is 2 s");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_low_open_file_limit_caps_connections_instead_of_starving_the_process() {
    let _load = LOAD.lock().await;
    let options = Options { server_extra: "header_read_timeout = \"2s\"\n", ..Options::default() };
    let (gateway, _sandbox, dir) = demo_gateway_process("descriptors", &options, Output::Discard, &[], Some(256)).await;
    let addr = host_of(&gateway.base);
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The connection cap (below 256 descriptors) holds the rest in the backlog: /healthz gets its
    // turn as the idle ones time out, and the process never runs out of descriptors.
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(10), http().get(format!("{}/healthz", gateway.base)).send())
        .await
        .expect("/healthz answers within 10 s")
        .unwrap();
    assert_eq!(health.status(), 200);
    eprintln!(
        "hardening: under a 256-descriptor limit with 300 idle connections, /healthz answered in {:?}",
        started.elapsed()
    );
    drop(idle);
    let health = http().get(format!("{}/healthz", gateway.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A 429 from Agora with the largest `Retry-After` there is.
fn huge_retry_after(path: &str) -> Faults {
    Faults {
        fail_rate: 1.0,
        status: Some(429),
        body: Some(r#"{"message":"API rate limit exceeded"}"#.into()),
        headers: BTreeMap::from([("retry-after".to_string(), "18446744073709551615".to_string())]),
        path: Some(path.into()),
        times: Some(1),
        ..Faults::default()
    }
}

#[tokio::test]
async fn a_retry_after_of_u64_max_pauses_the_budget_no_longer_than_the_ceiling() {
    let _load = LOAD.lock().await;
    let stack = Stack::start(Options { upstream_extra: "max_retry_after = \"2s\"\n", ..Options::default() }).await;
    set_faults(&stack.sandbox, huge_retry_after("/dev/v1/projects")).await;
    let acme = token("acme", TENANT_SCOPES);
    let started = Instant::now();
    let (status, _, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let took = started.elapsed();
    assert_eq!(status, PROJECTS_OK, "the read is tried again after the pause: {body}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "paused {took:?}, the ceiling is 2 s");
    let (status, _, _) =
        call(&stack, Method::GET, &format!("/dev/v1/channel/{}", stack.app("acme-web")), Some(&acme), None).await;
    assert_eq!(status, 200, "the budget resumed");
}

#[tokio::test]
async fn a_retry_after_of_u64_max_pauses_the_shared_budget_no_longer_than_the_ceiling() {
    let _load = LOAD.lock().await;
    let Some(redis) = RedisServer::start().await else { return };
    let options =
        Options { redis_url: Some(redis.url()), upstream_extra: "max_retry_after = \"2s\"\n", ..Options::default() };
    let (gateway, sandbox, dir) = demo_gateway_process("retry-after-redis", &options, Output::Discard, &[], None).await;
    // Answering is not ready: with Redis it is once it holds a share of the budget (a busy machine
    // takes longer to get there than the first probe).
    wait_for("a share of the budget", async || gateway.ready().await == 200).await;
    set_faults(&sandbox, huge_retry_after("/dev/v1/projects")).await;
    let acme = token("acme", TENANT_SCOPES);
    let started = Instant::now();
    let (status, _, body) = call_at(&gateway.base, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let took = started.elapsed();
    assert_eq!(status, PROJECTS_OK, "the read is tried again after the pause: {body}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(5), "paused {took:?}, the ceiling is 2 s");
    // The pause in Redis expires with the ceiling (plus the key's margin), not in years.
    let ttl = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "PTTL", &format!("agora-gateway:{CUSTOMER_ID}:tat")])
        .output()
        .expect("redis-cli runs");
    let ttl: i64 = String::from_utf8_lossy(&ttl.stdout).trim().parse().unwrap();
    assert!(ttl <= 62_000, "the shared pause lives {ttl} ms");
    assert_eq!(gateway.ready().await, 200);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_panic_inside_a_cache_fill_leaves_the_key_usable() {
    let stack = Stack::start(Options::default()).await;
    let faults = Faults {
        fail_rate: 1.0,
        status: Some(200),
        body: Some(r#"{"projects":[]}"#.into()),
        headers: BTreeMap::from([("x-fault-inject".to_string(), "panic".to_string())]),
        path: Some("/dev/v1/projects".into()),
        times: Some(1),
        ..Faults::default()
    };
    set_faults(&stack.sandbox, faults).await;
    let acme = token("acme", TENANT_SCOPES);
    let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    problem_detail(status, &headers, &body, 500);
    // The same key (the project list, every ownership check's directory) works again at once.
    let (status, _, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(status, PROJECTS_OK, "{body}");
    let channels = format!("/dev/v1/channel/{}", stack.app("acme-web"));
    let (status, _, body) = call(&stack, Method::GET, &channels, Some(&acme), None).await;
    assert_eq!(status, 200, "{body}");
}

/// `agora-gateway check-config` on `toml`: exit success, and what it printed.
fn check_config(name: &str, toml: &str) -> (bool, String) {
    let dir = temp_dir(name);
    let config = dir.join("gateway.toml");
    std::fs::write(&config, toml).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

fn test_toml() -> String {
    gateway_toml("http://127.0.0.1:9/dev", "initech-project", &Options::default())
}

#[tokio::test]
async fn check_config_refuses_tenants_that_would_share_projects() {
    let (ok, _) = check_config("config-ok", &test_toml());
    assert!(ok, "the test config passes");
    let overlapping = test_toml().replace("project_name_prefix = \"globex-\"", "project_name_prefix = \"acm\"");
    let (ok, printed) = check_config("config-prefix", &overlapping);
    assert!(!ok);
    assert!(printed.contains("\"acme\"") && printed.contains("\"globex\"") && printed.contains("overlap"), "{printed}");
    let twice = test_toml().replace(
        "project_name_prefix = \"globex-\"",
        "project_name_prefix = \"globex-\"\nproject_ids = [\"initech-project\"]",
    );
    let (ok, printed) = check_config("config-ids", &twice);
    assert!(!ok);
    assert!(
        printed.contains("\"globex\"") && printed.contains("\"initech\"") && printed.contains("initech-project"),
        "{printed}"
    );
}

#[tokio::test]
async fn check_config_names_the_budget_groups_and_refuses_an_operation_in_two() {
    let group = |name: &str, operations: &str| {
        format!("\n[[throttle.groups]]\nname = \"{name}\"\noperations = [{operations}]\nrate = 20\n")
    };
    let channels = "\"list_channels\", \"list_channel_users\"";
    let (ok, printed) =
        check_config("config-groups", &format!("{}{}", test_toml(), group("channel-queries", channels)));
    assert!(ok, "{printed}");
    assert!(printed.contains("budget group channel-queries: 20 req/s"), "{printed}");
    assert!(printed.contains("list_channels, list_channel_users"), "{printed}");
    let twice = format!("{}{}{}", test_toml(), group("a", channels), group("b", "\"list_channel_users\""));
    let (ok, printed) = check_config("config-groups-twice", &twice);
    assert!(!ok);
    assert!(printed.contains("throttle.groups[1].operations") && printed.contains("already in group"), "{printed}");
}

#[tokio::test]
async fn config_errors_never_print_the_secret_written_there() {
    let secret = "s3cr3t-Customer-Value";
    let cases = [
        ("unterminated", test_toml().replace(&format!("\"{CUSTOMER_SECRET}\""), &format!("\"{secret}"))),
        ("bare word", test_toml().replace(&format!("\"{CUSTOMER_SECRET}\""), secret)),
        ("wrong type", test_toml().replace(&format!("\"{CUSTOMER_SECRET}\""), "982451653982451653")),
        (
            "inline table",
            test_toml().replace(&format!("\"{CUSTOMER_SECRET}\""), &format!("{{ value = \"{secret}\" }}")),
        ),
    ];
    for (case, toml) in cases {
        let (ok, printed) = check_config("config-secret", &toml);
        assert!(!ok, "{case}: refused");
        assert!(!printed.contains(secret) && !printed.contains("982451653"), "{case}: printed the secret: {printed}");
        assert!(printed.contains("line") || printed.contains("customer_secret"), "{case}: says where: {printed}");
    }
}

#[tokio::test]
async fn dot_segments_in_path_parameters_are_refused_before_any_upstream_call() {
    let stack = Stack::start(Options::default()).await;
    let admin = token("ops", ALL_SCOPES);
    let app = stack.app("acme-web");
    let base = stack.gateway.base_url();
    reset_sandbox(&stack.sandbox).await;
    for path in [
        format!("/dev/v1/channel/user/{app}/%2E%2E"),
        format!("/dev/v1/channel/user/{app}/%2e"),
        format!("/dev/v1/channel/user/{app}/.."),
        "/dev/v1/channel/user/%2E%2E/lobby".to_string(),
        "/dev/v1/channel/%2E%2E".to_string(),
        "/dev/v1/channel/.".to_string(),
        format!("/dev/v1/channel/user/property/{app}/7/%2E%2E"),
        format!("/dev/v1/channel/user/{app}/a%2Fb"),
        format!("/dev/v1/channel/user/{app}/%E4%B8%AD"),
    ] {
        let (status, body) = raw(&base, &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {admin}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("path parameter"), "{path}: names the parameter: {body}");
    }
    assert_eq!(stack.stats().await.requests, 0, "nothing reached the upstream");
    let (status, _) =
        raw(&base, &format!("GET /dev/v1/channel/user/{app}/a.b%20c HTTP/1.1\r\nAuthorization: Bearer {admin}")).await;
    assert_eq!(status, 200, "a channel name with dots and spaces is fine");
}

#[tokio::test]
async fn another_tenants_project_and_a_missing_one_look_the_same() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let globex = stack.projects.named("globex-live").id.clone();
    let before = stack.stats().await.requests;
    let (foreign_status, foreign_headers, foreign) =
        call(&stack, Method::GET, &format!("/dev/v1/project?id={globex}"), Some(&acme), None).await;
    let after_foreign = stack.stats().await.requests;
    let (missing_status, missing_headers, missing) =
        call(&stack, Method::GET, "/dev/v1/project?id=no-such-project-0000", Some(&acme), None).await;
    let after_missing = stack.stats().await.requests;
    assert_eq!((foreign_status, missing_status), (404, 404));
    assert_eq!(foreign_headers["content-type"], missing_headers["content-type"]);
    let keys = |body: &Value| body.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&foreign), keys(&missing), "same shape");
    assert_eq!(foreign["detail"], missing["detail"], "same words");
    assert_eq!((after_foreign - before, after_missing - after_foreign), (0, 0), "no upstream call for either");
}

#[tokio::test]
async fn operator_endpoints_need_the_admin_scope_or_the_admin_listener() {
    let stack = Stack::start(Options::default()).await;
    let metrics = stack.url("/metrics");
    assert_eq!(http().get(&metrics).send().await.unwrap().status(), 401, "no token");
    let acme = token("acme", TENANT_SCOPES);
    assert_eq!(http().get(&metrics).bearer_auth(&acme).send().await.unwrap().status(), 403, "not an admin");
    assert!(metrics_text(&stack.gateway.base_url()).await.contains("agora_gateway_throttle_queue_depth"));

    let stack = Stack::start(Options { admin_listener: true, ..Options::default() }).await;
    let admin = token("ops", ALL_SCOPES);
    let main = http().get(stack.url("/metrics")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(main.status(), 404, "only on the admin listener");
    let scraped = http().get(format!("{}/metrics", stack.gateway.admin_url())).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("agora_gateway_throttle_queue_depth"));
    let ready = http().get(format!("{}/readyz", stack.gateway.admin_url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let projects =
        http().get(format!("{}/dev/v1/projects", stack.gateway.admin_url())).bearer_auth(&admin).send().await;
    assert_eq!(projects.unwrap().status(), 404, "the admin listener serves no Console API");
}

#[tokio::test]
async fn a_refused_token_learns_nothing_about_the_tenants_keys() {
    let stack = Stack::start(Options::default()).await;
    let claims = json!({"iss": "https://auth.acme.test", "aud": "agora-gateway", "sub": "x",
                        "exp": chrono::Utc::now().timestamp() + 600});
    for (kid, alg) in [("no-such-kid", jsonwebtoken::Algorithm::HS256), ("acme-rsa", jsonwebtoken::Algorithm::HS384)] {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.into());
        let forged = jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(b"guess")).unwrap();
        let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&forged), None).await;
        let detail = problem_detail(status, &headers, &body, 401);
        for named in ["acme-hs", "acme-rsa", "RS256", "HS256"] {
            assert!(!detail.contains(named), "{kid}: {detail:?} names {named}");
        }
    }
}

#[tokio::test]
async fn tokens_live_no_longer_than_the_gateway_accepts_and_mint_only_what_is_asked() {
    let stack = Stack::start(Options::default()).await;
    let now = chrono::Utc::now().timestamp();
    let long = |claims: Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("acme-hs".into());
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(ACME_SECRET.as_bytes())).unwrap()
    };
    let base = json!({"iss": "https://auth.acme.test", "aud": "agora-gateway", "sub": "x", "scope": "projects:read"});
    let mut century = base.clone();
    century["exp"] = json!(now + 100 * 365 * 86_400);
    let mut huge = base.clone();
    huge["exp"] = json!(1u64 << 62);
    for token in [long(century), long(huge)] {
        let (status, headers, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&token), None).await;
        assert!(problem_detail(status, &headers, &body, 401).contains("max_token_lifetime"));
    }

    let dir = temp_dir("mint");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, test_toml()).unwrap();
    let mint = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
            .args(["token", "--config", config.to_str().unwrap(), "--tenant", "ops"])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(!mint(&[]).status.success(), "the scopes must be asked for");
    let minted = mint(&["--scope", "projects:read"]);
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).unwrap();
    let payload = token.trim().split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["scope"], "projects:read", "no admin, no secrets unless asked");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn request_ids_are_taken_only_when_short_and_printable() {
    let stack = Stack::start(Options::default()).await;
    let base = stack.gateway.base_url();
    let long = "x".repeat(200);
    for sent in [long.as_str(), "has space", "tab\there", "ünicode"] {
        let response = http().get(format!("{base}/healthz")).header("x-request-id", sent.as_bytes()).send().await;
        let response = response.unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, sent);
        assert_eq!(id.len(), 16, "made by the gateway instead of {sent:?}");
    }
    let response = http().get(format!("{base}/healthz")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

/// A listener that counts the connections it gets (a redirect target or a proxy).
async fn trap() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 500 Trap\r\nContent-Length: 0\r\n\r\n").await;
        }
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn the_upstream_client_follows_no_redirect_and_no_environment_proxy() {
    let (target, redirected) = trap().await;
    let (proxy, proxied) = trap().await;
    let env = [("HTTP_PROXY", proxy.as_str()), ("http_proxy", proxy.as_str()), ("ALL_PROXY", proxy.as_str())];
    let (gateway, sandbox, dir) =
        demo_gateway_process("redirects", &Options::default(), Output::Discard, &env, None).await;
    let acme = token("acme", TENANT_SCOPES);
    let (status, _, body) = call_at(&gateway.base, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(status, PROJECTS_OK, "straight to the upstream: {body}");
    let faults = Faults {
        fail_rate: 1.0,
        status: Some(302),
        body: Some(String::new()),
        headers: BTreeMap::from([("location".to_string(), format!("{target}/steal"))]),
        path: Some("/dev/v1/channel".into()),
        times: Some(1),
        ..Faults::default()
    };
    set_faults(&sandbox, faults).await;
    let admin = token("ops", ALL_SCOPES);
    let channels = format!(
        "/dev/v1/channel/{}",
        DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects)
            .named("acme-web")
            .vendor_key
    );
    let (status, headers, body) = call_at(&gateway.base, Method::GET, &channels, Some(&admin), None).await;
    assert!(problem_detail(status, &headers, &body, 502).contains("redirect"));
    assert_eq!(redirected.load(std::sync::atomic::Ordering::SeqCst), 0, "the redirect was not followed");
    assert_eq!(proxied.load(std::sync::atomic::Ordering::SeqCst), 0, "HTTP_PROXY was ignored");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_kicking_rule_of_another_app_is_not_touched() {
    let stack = Stack::start(Options::default()).await;
    let (acme, globex) = (token("acme", TENANT_SCOPES), token("globex", TENANT_SCOPES));
    let (acme_app, globex_app) = (stack.app("acme-web"), stack.app("globex-live"));
    let (status, _, rule) = call(
        &stack,
        Method::POST,
        "/dev/v1/kicking-rule",
        Some(&globex),
        Some(json!({"appid": globex_app, "uid": 7, "time": 60})),
    )
    .await;
    assert_eq!(status, 200, "{rule}");
    let before = stack.stats().await;
    for (method, body) in [
        (Method::PUT, json!({"appid": acme_app, "id": rule["id"], "time": 1})),
        (Method::DELETE, json!({"appid": acme_app, "id": rule["id"]})),
    ] {
        let (status, headers, body) = call(&stack, method, "/dev/v1/kicking-rule", Some(&acme), Some(body)).await;
        assert!(problem_detail(status, &headers, &body, 404).contains("kicking rule"));
    }
    let after = stack.stats().await;
    for write in ["update_kicking_rule", "delete_kicking_rule"] {
        assert_eq!(after.by_operation.get(write), before.by_operation.get(write), "no {write} was sent");
    }
    let (_, _, rules) =
        call(&stack, Method::GET, &format!("/dev/v1/kicking-rule?appid={globex_app}"), Some(&globex), None).await;
    assert!(rules["rules"].as_array().unwrap().iter().any(|r| r["id"] == rule["id"]), "globex's rule is still there");
}
