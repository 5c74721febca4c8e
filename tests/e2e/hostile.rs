//! Hostile clients, round two: keys smuggled into write bodies by case, audit lines forged through
//! a token's `sub` or a body's fields, anonymous floods of the audit trail, and a log level that
//! would silence it.

use serde_json::{Value, json};

use crate::common::*;

async fn post(base: &str, path: &str, token: &str, body: String) -> (u16, Value) {
    let answer = http()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

/// The `[audit]` table of a file sink beside the config file.
const AUDIT_FILE: &str = "\n[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\n";

/// A sandbox and a gateway process in front of it (`options` on top of the defaults), in a
/// temporary directory of its own.
async fn gateway_in(
    dir: &str,
    name: &str,
    options: Options,
) -> (std::path::PathBuf, agora_sandbox::Sandbox, DemoProjects, GatewayProcess) {
    let dir = temp_dir(dir);
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &options);
    let gateway = GatewayProcess::start(&toml, &dir, name, Output::Discard).await;
    (dir, sandbox, projects, gateway)
}

#[tokio::test]
async fn a_key_that_is_a_field_but_for_case_is_refused_before_anything_is_sent() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let (own, others) = (stack.projects.named("acme-web").id.clone(), stack.projects.named("globex-live").id.clone());
    let (own_app, other_app) = (stack.app("acme-web"), stack.app("globex-live"));
    let base = stack.gateway.base_url();
    let writes = [
        ("/dev/v1/project_status", format!(r#"{{"id":"{own}","status":0,"ID":"{others}"}}"#), "\"ID\""),
        ("/dev/v1/project_status", format!(r#"{{"id":"{own}","status":0,"Id":"{others}"}}"#), "\"Id\""),
        (
            "/dev/v1/kicking-rule",
            format!(r#"{{"appid":"{own_app}","uid":7,"time":5,"APPID":"{other_app}"}}"#),
            "\"APPID\"",
        ),
        ("/dev/v1/project", r#"{"name":"acme-new","NAME":"globex-new"}"#.to_string(), "\"NAME\""),
        // Go folds `ſ` to `s` and the Kelvin sign to `k` as well.
        ("/dev/v1/project_status", format!("{{\"id\":\"{own}\",\"status\":0,\"ſtatus\":1}}"), "\"ſtatus\""),
        ("/dev/v1/project", "{\"name\":\"acme-new\",\"enable_sign_\u{212A}ey\":true}".to_string(), "but for case"),
    ];
    for (path, body, named) in writes {
        let (status, problem) = post(&base, path, &acme, body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named) && detail.contains("but for case"), "{body}: {detail}");
    }
    assert_eq!(stack.stats().await.requests, 0, "nothing reached Agora");
    // Unknown keys that are no field pass on, as they came.
    let (status, _) =
        post(&base, "/dev/v1/project_status", &acme, format!(r#"{{"id":"{own}","status":1,"note":"x"}}"#)).await;
    assert_eq!(status, PROJECTS_OK);
}

#[tokio::test]
async fn newlines_in_a_subject_or_a_body_forge_no_audit_line_in_the_log_or_the_table() {
    let _load = LOAD.lock().await;
    let dir = temp_dir("hostile-audit");
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    let initech = projects.named("initech-staging").id.clone();
    // The log sink, at RUST_LOG=warn (which must not silence it), and a file sink for the table.
    let toml = gateway_toml(&sandbox.base_url(), &initech, &Options::default());
    let logged = GatewayProcess::start(&toml, &dir, "log-sink", Output::CaptureWarn).await;
    let file_toml =
        gateway_toml(&sandbox.base_url(), &initech, &Options { sections: AUDIT_FILE.into(), ..Options::default() });
    let filed = GatewayProcess::start(&file_toml, &dir, "file-sink", Output::Discard).await;

    let forged = "2026-01-01T00:00:00.000Z globex admin delete_project [project=p] 200 ok";
    let mut claims = claims("acme", TENANT_SCOPES);
    claims["sub"] = json!(format!("svc\n{forged}"));
    let key = jsonwebtoken::EncodingKey::from_secret(ACME_SECRET.as_bytes());
    let subject = sign(jsonwebtoken::Algorithm::HS256, Some("acme-hs"), &claims, &key);
    let acme = token("acme", TENANT_SCOPES);
    let web = projects.named("acme-web").id.clone();
    let requests = [
        ("/dev/v1/project_status", json!({"id": web, "status": 1}).to_string(), &subject),
        ("/dev/v1/project_status", json!({"id": format!("p\n{forged}"), "status": 1}).to_string(), &acme),
        ("/dev/v1/project", json!({"name": format!("acme-x\r\n{forged}")}).to_string(), &acme),
        (
            "/dev/v1/kicking-rule",
            json!({"appid": projects.named("acme-web").vendor_key, "cname": format!("c\n{forged}"), "uid": 7, "time": 5})
                .to_string(),
            &acme,
        ),
    ];
    for gateway in [&logged, &filed] {
        for (path, body, token) in &requests {
            let (status, problem) = post(&gateway.base, path, token, body.clone()).await;
            assert!(status < 500, "{path}: {status} {problem}");
        }
    }
    let logs = logged.logs().await;
    let events: Vec<&str> = logs.lines().filter(|line| line.contains("audit")).collect();
    assert_eq!(events.len(), requests.len(), "one line per event, kept at RUST_LOG=warn: {events:#?}");
    assert!(!logs.lines().any(|line| line.starts_with("2026-01-01")), "a forged line: {logs}");
    assert!(events.iter().all(|line| !line.contains(forged) || line.contains(&format!("\\n{forged}"))), "{events:#?}");

    // The `audit` table: one row per event, the forged text inside its column.
    let file = dir.join("audit.jsonl");
    let written = async || std::fs::read_to_string(&file).unwrap_or_default().lines().count() >= requests.len();
    wait_for("the audit events", written).await;
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
        .args(["audit", "--config", dir.join("file-sink.toml").to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert_eq!(table.lines().count(), 2 + requests.len(), "header, rule and one row per event: {table}");
    assert!(!table.lines().any(|line| line.starts_with("2026-01-01")), "{table}");
    assert!(table.lines().skip(2).all(|row| row.matches(" | ").count() == 9), "ten columns a row: {table}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn ten_thousand_anonymous_writes_write_no_audit_line_and_one_counter() {
    let _load = LOAD.lock().await;
    let options = Options { sections: AUDIT_FILE.into(), ..Options::default() };
    let (dir, _sandbox, _, gateway) = gateway_in("hostile-anonymous", "anonymous", options).await;
    let client = http();
    let url = format!("{}/dev/v1/project_status", gateway.base);
    let mut sends = tokio::task::JoinSet::new();
    for worker in 0..50 {
        let (client, url) = (client.clone(), url.clone());
        sends.spawn(async move {
            for n in 0..200 {
                let token = if (worker + n) % 2 == 0 { "Bearer not-a-token" } else { "" };
                let answer = client.post(&url).header("authorization", token).body("{}").send().await.unwrap();
                assert_eq!(answer.status(), 401);
            }
        });
    }
    while let Some(done) = sends.join_next().await {
        done.unwrap();
    }
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    assert_eq!(audit.lines().count(), 0, "no audit line for anonymous refusals");
    let metrics = metrics_text(&gateway.base).await;
    assert!(metrics.contains("agora_gateway_audit_unauthenticated_total 10000"), "counted: {metrics}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_reload_that_changes_the_audit_says_it_needs_a_restart() {
    let (dir, _sandbox, _, gateway) = gateway_in("hostile-reload", "reloaded", Options::default()).await;
    let file = dir.join("reloaded.toml");
    let text = std::fs::read_to_string(&file).unwrap() + AUDIT_FILE;
    std::fs::write(&file, text).unwrap();
    let ops = token("ops", ALL_SCOPES);
    let answer = http().post(format!("{}/admin/reload", gateway.base)).bearer_auth(&ops).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert!(answer["restart_needed"].as_array().unwrap().iter().any(|setting| setting == "audit"), "{answer}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A client that asks for the Swagger UI's bundle, several times over one connection, through a
/// receive window of a few KiB — and never reads.
async fn non_reader(base: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let request = format!("GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nhost: {address}\r\n\r\n");
    stream.write_all(request.repeat(4).as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn clients_that_never_read_are_closed_and_a_new_client_is_served() {
    let _load = LOAD.lock().await;
    let server = "max_connections = 64\nwrite_timeout = \"2s\"\nheader_read_timeout = \"60s\"\n";
    let options = Options { server_extra: server, ..Options::default() };
    let (dir, _sandbox, _, gateway) = gateway_in("hostile-readers", "readers", options).await;
    let mut stalled = Vec::new();
    for _ in 0..80 {
        stalled.push(non_reader(&gateway.base).await);
    }
    // Every place is taken by a client that reads nothing; the write timeout frees them.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    let health = tokio::time::timeout(
        std::time::Duration::from_secs(2 + 2),
        reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}/healthz", gateway.base)).send(),
    )
    .await;
    let answered = asked.elapsed();
    assert!(health.is_ok_and(|health| health.is_ok_and(|health| health.status() == 200)), "no answer in {answered:?}");
    drop(stalled);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = Options { server_extra: "max_connections_per_ip = 2\n", ..Options::default() };
    let (dir, _sandbox, _, gateway) = gateway_in("hostile-per-ip", "per-ip", options).await;
    let address = gateway.base.trim_start_matches("http://").to_string();
    let health = format!("GET /healthz HTTP/1.1\r\nhost: {address}\r\n\r\n");
    let answer = async |stream: &mut tokio::net::TcpStream| {
        stream.write_all(health.as_bytes()).await.unwrap();
        let mut buffer = [0u8; 512];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer)).await;
        matches!(read, Ok(Ok(n)) if n > 0 && buffer.starts_with(b"HTTP/1.1 200"))
    };
    // From 127.0.0.2: the test's own client (127.0.0.1) keeps connections of its own.
    let connect = async || {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(address.parse().unwrap()).await.unwrap()
    };
    let mut first = connect().await;
    let mut second = connect().await;
    assert!(answer(&mut first).await && answer(&mut second).await, "two are served");
    let mut third = connect().await;
    assert!(!answer(&mut third).await, "a third from the same address is closed at once");
    let mut other = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert!(answer(&mut other).await, "another address is served all the same");
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut again = connect().await;
    assert!(answer(&mut again).await, "a place freed is a place again");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An identity provider that misbehaves on purpose: its `/jwks` answers whatever the test sets.
mod idp {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use futures::StreamExt as _;
    use serde_json::{Value, json};

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Mode {
        /// The keys set with [`Idp::publish`].
        Keys,
        /// A chunked answer of 50 MiB, with no length.
        Endless,
        /// A redirect to the keys, elsewhere.
        Redirect,
    }

    #[derive(Clone)]
    pub(crate) struct Idp {
        pub(crate) base: String,
        keys: Arc<Mutex<Value>>,
        mode: Arc<Mutex<Mode>>,
        /// Bytes of the endless answer the client has taken.
        pub(crate) streamed: Arc<AtomicUsize>,
    }

    async fn jwks(State(idp): State<Idp>) -> Response {
        let mode = *idp.mode.lock().unwrap();
        match mode {
            Mode::Keys => axum::Json(json!({"keys": idp.keys.lock().unwrap().clone()})).into_response(),
            Mode::Redirect => {
                (StatusCode::FOUND, [(header::LOCATION, format!("{}/elsewhere", idp.base))]).into_response()
            }
            Mode::Endless => {
                let streamed = idp.streamed;
                let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
                // Paced (6.4 MB/s): what the kernel's socket buffers take in while the gateway
                // closes is then small beside the whole answer, however busy the machine — a
                // gateway that read it all would take 8 s and all 50 MiB.
                let chunks = futures::stream::iter(0..800).then(move |_| {
                    let (streamed, chunk) = (streamed.clone(), chunk.clone());
                    async move {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        streamed.fetch_add(chunk.len(), Ordering::SeqCst);
                        Ok::<_, std::io::Error>(chunk)
                    }
                });
                Body::from_stream(chunks).into_response()
            }
        }
    }

    async fn elsewhere(State(idp): State<Idp>) -> axum::Json<Value> {
        axum::Json(json!({"keys": idp.keys.lock().unwrap().clone()}))
    }

    impl Idp {
        pub(crate) async fn start(keys: Value) -> Self {
            let listener = tokio::net::TcpListener::bind(crate::common::any_port()).await.unwrap();
            let idp = Idp {
                base: format!("http://{}", listener.local_addr().unwrap()),
                keys: Arc::new(Mutex::new(keys)),
                mode: Arc::new(Mutex::new(Mode::Keys)),
                streamed: Arc::default(),
            };
            let app = axum::Router::new()
                .route("/jwks", get(jwks))
                .route("/elsewhere", get(elsewhere))
                .with_state(idp.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            idp
        }

        pub(crate) fn publish(&self, keys: Value) {
            *self.keys.lock().unwrap() = keys;
        }

        pub(crate) fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
    }
}

fn rsa_jwk(kid: &str) -> Value {
    let mut jwk: Value =
        serde_json::from_str(&std::fs::read_to_string(key_file("acme-rsa-2.jwk.json")).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

fn rsa_token(kid: &str, subject: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa-2.pem")).unwrap()).unwrap();
    let mut claims = claims("acme", TENANT_SCOPES);
    claims["sub"] = json!(subject);
    sign(jsonwebtoken::Algorithm::RS256, Some(kid), &claims, &key)
}

#[tokio::test]
async fn jwks_over_plain_http_is_refused_unless_allowed_for_a_local_identity_provider() {
    let dir = temp_dir("hostile-jwks-http");
    let path = dir.join("gateway.toml");
    let extra = "jwks_url = \"http://idp.internal/jwks\"\nalgorithms = [\"RS256\"]\n";
    let toml =
        gateway_toml("http://127.0.0.1:9/dev", "initech", &Options { acme_extra: extra.into(), ..Options::default() });
    std::fs::write(&path, &toml).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
        .args(["check-config", "--offline", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(!check.status.success(), "{said}");
    assert!(said.contains("tenants[0].jwks_url") && said.contains("https"), "{said}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_identity_provider_that_misbehaves_cannot_log_a_tenant_out_or_fill_the_memory() {
    let idp = idp::Idp::start(json!([rsa_jwk("idp-1")])).await;
    let extra = format!("jwks_url = \"{}/jwks\"\nalgorithms = [\"RS256\"]\nallow_insecure_jwks = true\n", idp.base);
    let sections = "\n[jwks]\nunknown_kid_cooldown = \"1s\"\nrefresh_min = \"1h\"\nrefresh_max = \"1h\"\n".to_string();
    let stack = Stack::start(Options { acme_extra: extra, sections, ..Options::default() }).await;
    let base = stack.gateway.base_url();
    let status = async |token: &str| {
        http().get(format!("{base}/dev/v1/projects")).bearer_auth(token).send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(&rsa_token("idp-1", "first")).await, PROJECTS_OK);
    // Each step: a token naming an unknown kid makes the gateway fetch again (past the cooldown);
    // then a fresh token of the old key must still verify.
    let mut n = 0;
    let mut after_a_fetch = async |what: &str| {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        n += 1;
        assert_eq!(status(&rsa_token(&format!("unknown-{n}"), "x")).await, 401);
        assert_eq!(status(&rsa_token("idp-1", &format!("after-{what}"))).await, PROJECTS_OK, "after {what}");
    };
    // A set with no usable key keeps the last good one.
    idp.publish(json!([]));
    after_a_fetch("an empty set").await;
    idp.publish(json!([{"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}]));
    after_a_fetch("a set of unusable keys").await;
    // A redirect is not followed.
    idp.publish(json!([]));
    idp.set(idp::Mode::Redirect);
    after_a_fetch("a redirect").await;
    // An endless chunked answer is cut off at 1 MiB as it streams in.
    idp.set(idp::Mode::Endless);
    after_a_fetch("a 50 MiB chunked answer").await;
    let streamed = idp.streamed.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("hostile: the identity provider streamed {streamed} bytes of its endless answer");
    assert!(streamed < 8 * 1024 * 1024, "the gateway took {streamed} bytes of the endless answer");
    let metrics = metrics_text(&base).await;
    let failures = metric_value(&metrics, "agora_gateway_jwks_fetch_failures_total{tenant=\"acme\"}");
    assert!(failures >= 4, "each refused set is counted: {failures}");
}

#[tokio::test]
async fn a_write_that_was_sent_and_whose_answer_cannot_be_passed_on_is_audited_as_maybe_done() {
    let options = Options { sections: AUDIT_FILE.into(), ..Options::default() };
    let (dir, sandbox, projects, gateway) = gateway_in("hostile-maybe-done", "maybe-done", options).await;
    // Agora answers 2xx, but with a project that is no project: the gateway cannot pass it on.
    let faults = agora_sandbox::Faults {
        fail_rate: 1.0,
        status: Some(201),
        body: Some("{\"project\": 5}".into()),
        path: Some("/dev/v1/project_status".into()),
        times: Some(1),
        ..agora_sandbox::Faults::default()
    };
    set_faults(&sandbox, faults).await;
    let acme = token("acme", TENANT_SCOPES);
    let body = json!({"id": projects.named("acme-web").id, "status": 0});
    let answer = http()
        .post(format!("{}/dev/v1/project_status", gateway.base))
        .bearer_auth(&acme)
        .header("x-request-id", "maybe-done")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    let file = dir.join("audit.jsonl");
    wait_for("the audit event", async || std::fs::read_to_string(&file).unwrap_or_default().contains("maybe-done"))
        .await;
    let audit = std::fs::read_to_string(&file).unwrap();
    let event: Value = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|event| event["request_id"] == "maybe-done")
        .expect("audited");
    assert_eq!(event["outcome"], "unknown", "sent: it may have been done, not failed: {event}");
    assert!(event["reason"].as_str().unwrap().contains("may have been done"), "{event}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_domain_that_accepts_connections_but_fails_tls_stays_out() {
    let dir = temp_dir("hostile-tls-domain");
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 0).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    // A "domain" that takes every TCP connection and answers no TLS: garbage, then goodbye.
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let broken = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"this is no TLS\r\n").await;
        }
    });
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &Options::default()).replace(
        &format!("base_url = \"{}\"", sandbox.base_url()),
        &format!("base_urls = [\"https://{broken}/dev\", \"{}\"]", sandbox.base_url()),
    );
    let gateway = GatewayProcess::start(&toml, &dir, "tls-domain", Output::Discard).await;
    let acme = token("acme", TENANT_SCOPES);
    let app = projects.named("acme-web").vendor_key.clone();
    // Reads for four seconds: the first fails over to the sandbox; the probe (every second)
    // must not bring the broken domain back, or each read after it would waste a slot there.
    let started = std::time::Instant::now();
    let mut page = 0;
    while started.elapsed() < std::time::Duration::from_secs(4) {
        let path = format!("/dev/v1/channel/{app}?page_no={page}");
        let answer = http().get(format!("{}{path}", gateway.base)).bearer_auth(&acme).send().await.unwrap();
        assert_eq!(answer.status(), 200, "served by the second domain");
        page += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let metrics = metrics_text(&gateway.base).await;
    let failovers = metric_value(&metrics, &format!("agora_gateway_upstream_failovers_total{{domain=\"{broken}\"}}"));
    assert_eq!(failovers, 1, "the broken domain failed once and stayed out: {metrics}");
    std::fs::remove_dir_all(dir).unwrap();
}
