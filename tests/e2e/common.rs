//! Shared set-up: a sandbox and a gateway in front of it on ephemeral ports, the tenants and keys
//! of the test configuration, tokens, and the clients that call them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agora_console_client::{Client, ClientOptions, types};
use agora_gateway::Config;
use agora_sandbox::{Faults, Flavor, Sandbox, SandboxConfig, Seed, Stats};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub(crate) const CUSTOMER_ID: &str = "e2e-customer";
pub(crate) const CUSTOMER_SECRET: &str = "e2e-customer-secret";

pub(crate) const ACME_SECRET: &str = "acme-e2e-hs256-secret-0123456789abcdef";
pub(crate) const GLOBEX_SECRET: &str = "globex-e2e-hs256-secret-0123456789abcdef";
pub(crate) const OPS_SECRET: &str = "ops-e2e-hs256-secret-0123456789abcdef0";

/// Every scope but `admin`.
pub(crate) const TENANT_SCOPES: &str =
    "projects:read projects:write projects:secrets usage:read kicking:read kicking:write channels:read";
pub(crate) const ALL_SCOPES: &str =
    "projects:read projects:write projects:secrets usage:read kicking:read kicking:write channels:read admin";

/// The status of project operations from the live service (and the default sandbox), which the
/// gateway passes on: Agora's English reference gives 201 for them (the document 200).
pub(crate) const PROJECTS_OK: u16 = 201;

/// Load-heavy tests take this, so they never run at the same time as each other.
pub(crate) static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An address for a server of a test, on a port no other server of this run had (see
/// [`free_port`]): a request left over from an earlier test cannot reach it.
pub(crate) fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub(crate) fn key_file(name: &str) -> PathBuf {
    fixtures().join("keys").join(name)
}

/// A sandbox with the given seed and rate limit (0: unlimited, for tests that are not about it),
/// answering as the live service does.
pub(crate) async fn start_sandbox(seed: Seed, rate_limit: u32) -> Sandbox {
    start_flavored_sandbox(seed, rate_limit, Flavor::Agora).await
}

pub(crate) async fn start_flavored_sandbox(seed: Seed, rate_limit: u32, flavor: Flavor) -> Sandbox {
    let config = SandboxConfig { seed, rate_limit, flavor, ..SandboxConfig::new(CUSTOMER_ID, CUSTOMER_SECRET) };
    Sandbox::start(config, any_port()).await.expect("the sandbox starts")
}

/// A value of a generated type, from JSON (the types keep unknown fields, so struct literals
/// would need an `extra` map).
pub(crate) fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the JSON fits the generated type")
}

/// The generated client, as the gateway uses it: Basic auth with the account's credentials.
pub(crate) fn console_client(sandbox: &Sandbox) -> Client {
    Client::with_basic_auth(&sandbox.base_url(), CUSTOMER_ID, CUSTOMER_SECRET, &ClientOptions::default()).unwrap()
}

/// A client for the tests' own calls, which are plain HTTP to 127.0.0.1: with no TLS roots, it
/// costs microseconds to build. (`Client::new()` loads the system's roots: about 30 ms of CPU in
/// a debug build on an Intel Xeon, and the tests build one per call — enough, at a few dozen
/// calls a second, to starve a test's own runtime, such as the balancer whose readiness probe
/// must keep up.)
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().tls_certs_only([]).build().expect("a client without TLS roots")
}

pub(crate) async fn sandbox_stats(sandbox: &Sandbox) -> Stats {
    http().get(format!("{}/__sandbox/stats", sandbox.root_url())).send().await.unwrap().json().await.unwrap()
}

pub(crate) async fn set_faults(sandbox: &Sandbox, faults: Faults) {
    let response = http().post(format!("{}/__sandbox/faults", sandbox.root_url())).json(&faults).send().await.unwrap();
    assert!(response.status().is_success(), "faults accepted: {}", response.status());
}

pub(crate) async fn reset_sandbox(sandbox: &Sandbox) {
    let response = http().post(format!("{}/__sandbox/reset", sandbox.root_url())).send().await.unwrap();
    assert!(response.status().is_success());
}

/// Users join a channel (the sandbox's stand-in for clients joining through the SDK).
pub(crate) async fn join_channel(sandbox: &Sandbox, body: Value) {
    let response = http().post(format!("{}/__sandbox/channels", sandbox.root_url())).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "join: {}", response.text().await.unwrap());
}

/// The status and message (`error_msg` or `message`) of an error answer of the generated client.
pub(crate) fn error_of<T: std::fmt::Debug>(
    result: Result<T, agora_console_client::Error<types::ErrorBody>>,
) -> (u16, String) {
    match result {
        Err(agora_console_client::Error::ErrorResponse(response)) => {
            let status = response.status().as_u16();
            let body = response.into_inner();
            (status, body.error_msg.or(body.message).unwrap_or_default())
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// What a test may change in the gateway's configuration.
#[derive(Clone)]
pub(crate) struct Options {
    pub project_ttl: &'static str,
    pub channel_ttl: &'static str,
    pub stale_for: &'static str,
    pub max_bytes: &'static str,
    pub max_wait: &'static str,
    pub upstream_timeout: &'static str,
    pub max_body: &'static str,
    /// `server.request_timeout`, when not the default.
    pub request_timeout: Option<&'static str>,
    pub redis_url: Option<String>,
    /// How the sandbox answers.
    pub flavor: Flavor,
    /// The acme tenant's keys, as TOML inline tables (rotation tests change them).
    pub acme_keys: Vec<String>,
    pub acme_weight: u32,
    /// Serve `/healthz`, `/readyz` and `/metrics` on an admin listener too (`server.admin_listen`).
    pub admin_listener: bool,
    /// Further `[server]` settings, as TOML lines.
    pub server_extra: &'static str,
    /// Further `[upstream]` settings, as TOML lines.
    pub upstream_extra: &'static str,
    /// Further `[cache]` settings, as TOML lines.
    pub cache_extra: &'static str,
    /// Further settings of the acme tenant, as TOML lines (a `jwks_url`, ...).
    pub acme_extra: String,
    /// Further tables at the end of the file (`[jwks]`, more `[[tenants]]`).
    pub sections: String,
}

pub(crate) fn acme_hs_key() -> String {
    format!("{{ kid = \"acme-hs\", alg = \"HS256\", secret = \"{ACME_SECRET}\" }}")
}

pub(crate) fn acme_rsa_key() -> String {
    format!(
        "{{ kid = \"acme-rsa\", alg = \"RS256\", public_key = \"file:{}\" }}",
        key_file("acme-rsa.pub.pem").display()
    )
}

impl Default for Options {
    fn default() -> Self {
        Self {
            project_ttl: "60s",
            channel_ttl: "5s",
            stale_for: "5m",
            max_bytes: "64MiB",
            max_wait: "5s",
            upstream_timeout: "3s",
            max_body: "64KiB",
            request_timeout: None,
            redis_url: None,
            flavor: Flavor::Agora,
            acme_keys: vec![acme_hs_key(), acme_rsa_key()],
            acme_weight: 1,
            admin_listener: false,
            server_extra: "",
            upstream_extra: "",
            cache_extra: "",
            acme_extra: String::new(),
            sections: String::new(),
        }
    }
}

/// The gateway's options with the audit going to `file`.
pub(crate) fn audited(file: &Path) -> Options {
    Options { sections: format!("\n[audit]\nsink = \"file\"\npath = \"{}\"\n", file.display()), ..Options::default() }
}

/// The test configuration: four tenants in front of `upstream`.
pub(crate) fn gateway_toml(upstream: &str, initech_project: &str, options: &Options) -> String {
    let redis = options.redis_url.as_ref().map(|url| format!("redis_url = \"{url}\"\n")).unwrap_or_default();
    let request_timeout =
        options.request_timeout.map(|timeout| format!("request_timeout = \"{timeout}\"\n")).unwrap_or_default();
    let admin = if options.admin_listener { format!("admin_listen = \"{}\"\n", any_port()) } else { String::new() };
    let (server_extra, upstream_extra) = (options.server_extra, options.upstream_extra);
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = "{max_body}"
{request_timeout}{admin}{server_extra}
[upstream]
base_url = "{upstream}"
customer_id = "{CUSTOMER_ID}"
customer_secret = "{CUSTOMER_SECRET}"
timeout = "{upstream_timeout}"
{upstream_extra}

[throttle]
rate = 10
max_wait = "{max_wait}"
{redis}
[cache]
project_ttl = "{project_ttl}"
channel_ttl = "{channel_ttl}"
stale_for = "{stale_for}"
max_bytes = "{max_bytes}"
{cache_extra}

[[tenants]]
id = "acme"
issuer = "https://auth.acme.test"
audience = "agora-gateway"
scopes = ["projects:read", "projects:write", "projects:secrets", "usage:read", "kicking:read", "kicking:write", "channels:read"]
project_name_prefix = "acme-"
weight = {acme_weight}
keys = [{acme_keys}]
{acme_extra}

[[tenants]]
id = "globex"
issuer = "https://auth.globex.test"
audience = "agora-gateway"
scopes = ["projects:read", "projects:write", "usage:read", "kicking:read", "kicking:write", "channels:read"]
project_name_prefix = "globex-"
keys = [
  {{ kid = "globex-hs", alg = "HS256", secret = "{GLOBEX_SECRET}" }},
  {{ kid = "globex-ec", alg = "ES256", public_key = "file:{globex_ec}" }},
]

[[tenants]]
id = "initech"
issuer = "https://auth.initech.test"
audience = "agora-gateway"
scopes = ["projects:read", "usage:read", "channels:read"]
project_ids = ["{initech_project}"]
keys = [{{ kid = "initech-ed", alg = "EdDSA", public_key = "file:{initech_ed}" }}]

[[tenants]]
id = "ops"
issuer = "https://auth.ops.test"
audience = "agora-gateway"
scopes = ["projects:read", "projects:write", "projects:secrets", "usage:read", "kicking:read", "kicking:write", "channels:read", "admin"]
keys = [{{ kid = "ops-hs", alg = "HS256", secret = "{OPS_SECRET}" }}]
{sections}
"#,
        sections = options.sections,
        cache_extra = options.cache_extra,
        max_body = options.max_body,
        upstream_timeout = options.upstream_timeout,
        max_wait = options.max_wait,
        project_ttl = options.project_ttl,
        channel_ttl = options.channel_ttl,
        stale_for = options.stale_for,
        max_bytes = options.max_bytes,
        acme_weight = options.acme_weight,
        acme_keys = options.acme_keys.join(", "),
        acme_extra = options.acme_extra,
        globex_ec = key_file("globex-ec.pub.pem").display(),
        initech_ed = key_file("initech-ed25519.pub.pem").display(),
    )
}

/// The demo account's projects, by name.
pub(crate) struct DemoProjects(pub Vec<types::Project>);

impl DemoProjects {
    pub(crate) fn named(&self, name: &str) -> &types::Project {
        self.0.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no demo project {name}"))
    }
}

/// A gateway serving on a thread and runtime of its own (two workers, as on a small machine), so
/// that what the test itself does on its runtime — load generation, starting processes — cannot
/// hold up the gateway's upstream calls. Dropping it stops it.
pub(crate) struct GatewayThread {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GatewayThread {
    pub(crate) async fn start(config: Config) -> Self {
        let (ready, started) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("gateway-under-test".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
                    let running = agora_gateway::start(&config, listener).await.expect("the gateway starts");
                    let _ = ready.send((running.addr, running.admin_addr));
                    let _ = stopped.await;
                    running.stop(Duration::from_secs(2)).await;
                });
            })
            .unwrap();
        let (addr, admin_addr) = started.await.expect("the gateway thread started");
        GatewayThread { addr, admin_addr, stop: Some(stop) }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin listener's base URL (`Options.admin_listener`).
    pub(crate) fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr.expect("the gateway has an admin listener"))
    }
}

impl Drop for GatewayThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A sandbox (the demo account, Agora's 10 req/s) and a gateway in front of it.
pub(crate) struct Stack {
    pub sandbox: Sandbox,
    pub gateway: GatewayThread,
    pub projects: DemoProjects,
}

impl Stack {
    pub(crate) async fn start(options: Options) -> Stack {
        let sandbox = start_flavored_sandbox(Seed::Demo, 10, options.flavor).await;
        let projects =
            DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
        let initech = projects.named("initech-staging").id.clone();
        let config = Config::parse(&gateway_toml(&sandbox.base_url(), &initech, &options), &fixtures())
            .unwrap_or_else(|error| panic!("the test config is valid: {error}"));
        let gateway = GatewayThread::start(config).await;
        reset_sandbox(&sandbox).await;
        Stack { sandbox, gateway, projects }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.base_url())
    }

    /// The generated client pointed at the gateway, with a bearer token.
    pub(crate) fn client(&self, token: &str) -> Client {
        Client::with_bearer_token(&self.url("/dev"), token, &ClientOptions::default()).unwrap()
    }

    pub(crate) async fn stats(&self) -> Stats {
        sandbox_stats(&self.sandbox).await
    }

    pub(crate) fn app(&self, name: &str) -> String {
        self.projects.named(name).vendor_key.clone()
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The standard claims of a tenant's token, valid for an hour.
pub(crate) fn claims(tenant: &str, scope: &str) -> Value {
    json!({
        "iss": format!("https://auth.{tenant}.test"),
        "aud": "agora-gateway",
        "sub": format!("{tenant}-service"),
        "iat": now(),
        "exp": now() + 3600,
        "scope": scope,
    })
}

pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A valid HS256 token of a tenant (acme, globex, ops) with these scopes.
pub(crate) fn token(tenant: &str, scope: &str) -> String {
    let (kid, secret) = match tenant {
        "acme" => ("acme-hs", ACME_SECRET),
        "globex" => ("globex-hs", GLOBEX_SECRET),
        "ops" => ("ops-hs", OPS_SECRET),
        other => panic!("no HS256 key for {other}"),
    };
    sign(Algorithm::HS256, Some(kid), &claims(tenant, scope), &EncodingKey::from_secret(secret.as_bytes()))
}

/// A valid token of initech, signed with its Ed25519 key.
pub(crate) fn initech_token(scope: &str) -> String {
    let pem = std::fs::read(key_file("initech-ed25519.pem")).unwrap();
    sign(Algorithm::EdDSA, Some("initech-ed"), &claims("initech", scope), &EncodingKey::from_ed_pem(&pem).unwrap())
}

/// The most crowded second of the arrivals a sandbox logged (`/__sandbox/arrivals` at `root`): each
/// arrival's time from the first of that second, and its operation — what a failed budget
/// assertion shows, so that a second with one call too many says how close its calls came.
pub(crate) async fn crowded_second(root: &str) -> String {
    let answer: Value = http().get(format!("{root}/__sandbox/arrivals")).send().await.unwrap().json().await.unwrap();
    let times = answer["unix_us"].as_array().cloned().unwrap_or_default();
    let operations = answer["operations"].as_array().cloned().unwrap_or_default();
    let mut arrivals: Vec<(u64, String)> = times
        .iter()
        .zip(operations.iter().chain(std::iter::repeat(&Value::Null)))
        .map(|(at, operation)| (at.as_u64().unwrap_or(0), operation.as_str().unwrap_or("-").to_string()))
        .collect();
    arrivals.sort_unstable();
    let within = |k: usize| arrivals[k..].iter().take_while(|(at, _)| at - arrivals[k].0 < 1_000_000).count();
    let Some(first) = (0..arrivals.len()).max_by_key(|&k| within(k)) else { return "no arrivals".into() };
    let second: Vec<String> = arrivals[first..first + within(first)]
        .iter()
        .map(|(at, operation)| format!("+{:.1} ms {operation}", (at - arrivals[first].0) as f64 / 1000.0))
        .collect();
    format!("{} arrivals within one second: {}", second.len(), second.join(", "))
}

/// The value of one series (its name and labels as `/metrics` writes them) in a Prometheus
/// text; 0 when the series is not there.
pub(crate) fn metric_value(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

/// The gateway's `/metrics` at `base`, read with an admin token.
pub(crate) async fn metrics_text(base: &str) -> String {
    let response = http().get(format!("{base}/metrics")).bearer_auth(token("ops", ALL_SCOPES)).send().await.unwrap();
    assert_eq!(response.status(), 200, "/metrics with an admin token");
    response.text().await.unwrap()
}

/// Sends a request to the gateway with a token; answers status, headers and body.
pub(crate) async fn call(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    call_at(&stack.gateway.base_url(), method, path, token, body).await
}

/// [`call`] to the gateway at `base` (one replica of several).
pub(crate) async fn call_at(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = http().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// Asserts an answer is one of the gateway's problem documents, and answers its detail.
pub(crate) fn problem_detail(status: u16, headers: &reqwest::header::HeaderMap, body: &Value, expected: u16) -> String {
    assert_eq!(status, expected, "body: {body}");
    assert_eq!(headers["content-type"], "application/problem+json", "body: {body}");
    assert_eq!(body["status"], expected);
    assert!(body["type"].as_str().unwrap().starts_with("urn:agora-gateway:problem:"));
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()), "problems carry the request id");
    body["detail"].as_str().unwrap().to_string()
}

/// Operations of the spec: (method, the path the gateway serves it at, operationId) — under
/// `/dev`, or at the root for those at Agora's domain root (`x-gateway.base: root`).
pub(crate) fn spec_operations() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/agora-console.yaml"))
        .unwrap();
    let spec: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        // A path item's `servers` are not an operation.
        for (method, operation) in item.as_object().unwrap().iter().filter(|(key, _)| *key != "servers") {
            let root = operation["x-gateway"]["base"] == "root";
            operations.push((
                method.to_uppercase(),
                if root { path.clone() } else { format!("/dev{path}") },
                operation["operationId"].as_str().unwrap().to_string(),
            ));
        }
    }
    operations
}

/// A port for a server of a test ([`any_port`]), one it starts later (a gateway process,
/// redis-server, a restart on the same port), or one that nothing serves. Taken below the kernel's
/// ephemeral range: a port that a bind to port 0 gave and that was closed again could be given
/// next to another such bind, or to a client's connection, before the process meant for it bound
/// it (a test then spoke to another test's sandbox). Each port is handed out once per run,
/// starting at an offset of this process's own, and only while nothing listens on it.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let lowest_ephemeral = ephemeral.split_whitespace().next().and_then(|low| low.parse::<u32>().ok()).unwrap_or(32768);
    let (first, end) = (lowest_ephemeral.saturating_sub(10_000).max(1024), lowest_ephemeral);
    if end <= first {
        // No room below the ephemeral range: a port of it, as bind-to-0 gives.
        return std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    let size = end - first;
    let offset = std::process::id().wrapping_mul(7919) % size;
    loop {
        let handed = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        assert!(handed < size, "no port left below the ephemeral range");
        let port = u16::try_from(first + (offset + handed) % size).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A new directory of this test's own under the system's temporary directory.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agora-e2e-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits (up to 30 s) until `ready` says so.
pub(crate) async fn wait_for(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ready().await {
        assert!(started.elapsed() < Duration::from_secs(30), "{what} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a gateway process does with its logs.
pub(crate) enum Output {
    Discard,
    /// Warnings only (`RUST_LOG=warn`), kept for the test to read.
    CaptureWarn,
    /// Debug logs, kept for the test to read (`child.wait_with_output()`).
    CaptureDebug,
}

/// A real gateway process (`gateway-under-test serve`) on a free port.
pub(crate) struct GatewayProcess {
    pub base: String,
    pub child: tokio::process::Child,
}

/// A gateway process (named `name`: its config file and its own temp dir) in front of a demo
/// sandbox of its own (10 calls a second), with `options`; `env` and `open_files` as
/// [`GatewayProcess::spawn`] takes them.
pub(crate) async fn demo_gateway_process(
    name: &str,
    options: &Options,
    output: Output,
    env: &[(&str, &str)],
    open_files: Option<u32>,
) -> (GatewayProcess, Sandbox, PathBuf) {
    let sandbox = start_sandbox(Seed::Demo, 10).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, options);
    let dir = temp_dir(name);
    let gateway = GatewayProcess::spawn(&toml, &dir, name, output, env, open_files).await;
    (gateway, sandbox, dir)
}

impl GatewayProcess {
    /// Writes `toml` (its `listen` replaced by a free port) to a file `name`.toml in `dir`, starts the gateway
    /// on it and waits until it answers.
    pub(crate) async fn start(toml: &str, dir: &Path, name: &str, output: Output) -> Self {
        Self::spawn(toml, dir, name, output, &[], None).await
    }

    /// [`GatewayProcess::start`] with further environment variables, and optionally under an
    /// open-file limit (soft and hard, as `ulimit -n` sets it).
    pub(crate) async fn spawn(
        toml: &str,
        dir: &Path,
        name: &str,
        output: Output,
        env: &[(&str, &str)],
        open_files: Option<u32>,
    ) -> Self {
        Self::spawn_on(free_port(), toml, dir, name, output, env, open_files).await
    }

    /// [`GatewayProcess::spawn`] on `port` (a replica restarted where it served before).
    pub(crate) async fn spawn_on(
        port: u16,
        toml: &str,
        dir: &Path,
        name: &str,
        output: Output,
        env: &[(&str, &str)],
        open_files: Option<u32>,
    ) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\"")))
            .unwrap();
        let binary = env!("CARGO_BIN_EXE_gateway-under-test");
        let mut command = match open_files {
            None => tokio::process::Command::new(binary),
            Some(limit) => {
                let mut shell = tokio::process::Command::new("sh");
                shell.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\""), binary]);
                shell
            }
        };
        command.args(["serve", "--config", config.to_str().unwrap()]).envs(env.iter().copied()).kill_on_drop(true);
        match output {
            Output::Discard => command.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null()),
            Output::CaptureDebug => command.env("RUST_LOG", "debug").stdout(Stdio::piped()).stderr(Stdio::piped()),
            Output::CaptureWarn => command.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::piped()),
        };
        let mut child = command.spawn().expect("the gateway binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let health = format!("{base}/healthz");
        // Its own answer: another server on the port (answering 404 or 401) is not it, and a
        // process that could not listen has exited.
        wait_for(name, async || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited before it answered ({status}): is 127.0.0.1:{port} taken?");
            }
            http().get(&health).send().await.is_ok_and(|answer| answer.status() == 200)
        })
        .await;
        GatewayProcess { base, child }
    }

    /// Stops the gateway and answers what it logged (stdout, then stderr), for an `Output` that
    /// keeps its logs.
    pub(crate) async fn logs(self) -> String {
        let mut child = self.child;
        child.start_kill().unwrap();
        let output = child.wait_with_output().await.unwrap();
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    pub(crate) async fn ready(&self) -> u16 {
        http().get(format!("{}/readyz", self.base)).send().await.unwrap().status().as_u16()
    }
}
