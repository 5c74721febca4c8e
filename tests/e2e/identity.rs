//! Tenants as a platform runs them: keys from an identity provider's JWKS (a local one, over real
//! HTTP), and the configuration reloaded without a restart (SIGHUP and `POST /admin/reload` on
//! real gateway processes, under load).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// A local identity provider: its JWKS (changed by the test), how often it was fetched, and
/// whether it is down.
#[derive(Clone)]
struct Idp {
    base: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn jwks(State(idp): State<Idp>) -> Response {
    if idp.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    idp.fetches.fetch_add(1, Ordering::SeqCst);
    let keys = idp.keys.lock().unwrap().clone();
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=1"));
    (headers, axum::Json(json!({ "keys": keys }))).into_response()
}

async fn discovery(State(idp): State<Idp>) -> axum::Json<Value> {
    axum::Json(json!({ "issuer": idp.base, "jwks_uri": format!("{}/jwks", idp.base) }))
}

impl Idp {
    async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let idp = Idp {
            base: format!("http://{}", listener.local_addr().unwrap()),
            keys: Arc::new(Mutex::new(keys)),
            fetches: Arc::default(),
            down: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/jwks", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(idp.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        idp
    }

    fn url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A test RSA key's public JWK, published under `kid`.
fn jwk(fixture: &str, kid: &str) -> Value {
    let mut jwk: Value = serde_json::from_str(&std::fs::read_to_string(key_file(fixture)).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}

/// An acme token signed with a test RSA private key, naming `kid`.
fn rs_token(private_pem: &str, kid: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(key_file(private_pem)).unwrap()).unwrap();
    sign(Algorithm::RS256, Some(kid), &claims("acme", TENANT_SCOPES), &key)
}

/// The acme tenant reading its keys from `idp` too, with these `[jwks]` timings.
fn with_idp(idp: &Idp, jwks: &str) -> Options {
    Options {
        // A local identity provider speaks plain http: allowed for this tenant only, explicitly.
        acme_extra: format!("jwks_url = \"{}\"\nalgorithms = [\"RS256\"]\nallow_insecure_jwks = true\n", idp.url()),
        sections: format!("\n[jwks]\n{jwks}\n"),
        ..Options::default()
    }
}

async fn list_status(stack: &Stack, token: &str) -> u16 {
    call(stack, Method::GET, "/dev/v1/projects", Some(token), None).await.0
}

/// Polls until `status_of` answers `expected`; answers how long that took (panics after `within`).
async fn until_status(within: Duration, expected: u16, mut status_of: impl AsyncFnMut() -> u16) -> Duration {
    let started = Instant::now();
    loop {
        let status = status_of().await;
        if status == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "still {status}, not {expected}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn keys_published_later_are_picked_up_at_once_and_removed_ones_stop_after_the_refresh() {
    let idp = Idp::start(vec![jwk("acme-rsa-2.jwk.json", "idp-1")]).await;
    let timings = "unknown_kid_cooldown = \"1s\"\nrefresh_min = \"10s\"\nrefresh_max = \"10s\"";
    let stack = Stack::start(with_idp(&idp, timings)).await;
    let first = rs_token("acme-rsa-2.pem", "idp-1");
    assert_eq!(list_status(&stack, &first).await, PROJECTS_OK, "a key of the JWKS at start");
    assert_eq!(list_status(&stack, &token("acme", TENANT_SCOPES)).await, PROJECTS_OK, "the inline keys too");

    // The identity provider rotates: a second key appears.
    idp.publish(vec![jwk("acme-rsa-2.jwk.json", "idp-1"), jwk("acme-rsa.jwk.json", "idp-2")]);
    let second = rs_token("acme-rsa.pem", "idp-2");
    let took = until_status(Duration::from_secs(5), PROJECTS_OK, async || list_status(&stack, &second).await).await;
    assert!(took < Duration::from_millis(1500), "picked up within the cooldown (1 s): {took:?}");

    // ... and the first one goes: refused after the next fetch (here one a token with an unknown
    // kid makes, past the cooldown; the refresh floor is 10 s).
    idp.publish(vec![jwk("acme-rsa.jwk.json", "idp-2")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let unknown = rs_token("acme-rsa.pem", "idp-3");
    assert_eq!(list_status(&stack, &unknown).await, 401);
    let took = until_status(Duration::from_secs(6), 401, async || list_status(&stack, &first).await).await;
    eprintln!("identity: a new key accepted at once; a removed key refused {took:?} after the next fetch");
    assert!(took < Duration::from_secs(2), "refused after the next fetch: {took:?}");
    assert_eq!(list_status(&stack, &second).await, PROJECTS_OK);
}

#[tokio::test]
async fn with_the_identity_provider_down_the_last_good_keys_keep_working() {
    let idp = Idp::start(vec![jwk("acme-rsa-2.jwk.json", "idp-1")]).await;
    let timings = "unknown_kid_cooldown = \"1s\"\nrefresh_min = \"10s\"\nrefresh_max = \"10s\"";
    let stack = Stack::start(Options { admin_listener: true, ..with_idp(&idp, timings) }).await;
    let token = rs_token("acme-rsa-2.pem", "idp-1");
    assert_eq!(list_status(&stack, &token).await, PROJECTS_OK);
    idp.down.store(true, Ordering::SeqCst);
    // A fetch while it is down (an unknown kid makes one, past the cooldown).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(list_status(&stack, &rs_token("acme-rsa.pem", "idp-9")).await, 401);
    // A fresh verification of the same key (not a remembered one): a token not seen before.
    let fresh = sign(
        Algorithm::RS256,
        Some("idp-1"),
        &json!({"iss": "https://auth.acme.test", "aud": "agora-gateway", "sub": "other-service",
                "exp": chrono::Utc::now().timestamp() + 600, "scope": "projects:read"}),
        &EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa-2.pem")).unwrap()).unwrap(),
    );
    assert_eq!(list_status(&stack, &fresh).await, PROJECTS_OK, "the last good set stays");
    let ready = http().get(format!("{}/readyz", stack.gateway.admin_url())).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready while a good set exists");
    let metrics = http().get(format!("{}/metrics", stack.gateway.admin_url())).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let failures = metric_value(&metrics, "agora_gateway_jwks_fetch_failures_total{tenant=\"acme\"}");
    assert!(failures >= 1, "the failures are counted: {failures}");
}

#[tokio::test]
async fn random_unknown_kids_cost_at_most_one_fetch_per_cooldown() {
    let idp = Idp::start(vec![jwk("acme-rsa-2.jwk.json", "idp-1")]).await;
    let timings = "unknown_kid_cooldown = \"1s\"\nrefresh_min = \"1h\"\nrefresh_max = \"1h\"";
    let stack = Stack::start(with_idp(&idp, timings)).await;
    let at_start = idp.fetches();
    assert_eq!(at_start, 1, "fetched once at start");
    // Past the cooldown of the first fetch: an unknown kid may make one more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The kid is looked up before any signature is checked: HS256 forgeries are as good as any
    // (and cheap to make, all before the first request goes out).
    let key = EncodingKey::from_secret(b"an attacker's guess");
    let forged: Vec<String> = (0..1000u64)
        .map(|n| {
            let kid = format!("random-{n}-{:x}", fastrand_like(n));
            sign(Algorithm::HS256, Some(&kid), &claims("acme", TENANT_SCOPES), &key)
        })
        .collect();
    let started = Instant::now();
    let client = http();
    let mut requests = Vec::new();
    for forged in forged {
        let (url, client) = (stack.url("/dev/v1/projects"), client.clone());
        requests.push(tokio::spawn(async move { client.get(url).bearer_auth(forged).send().await.unwrap().status() }));
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), 401);
    }
    let fetched = idp.fetches() - at_start;
    let allowed = 1 + started.elapsed().as_secs() as usize;
    eprintln!("identity: 1000 unknown kids in {:?}: {fetched} JWKS fetch(es)", started.elapsed());
    assert!((1..=allowed).contains(&fetched), "{fetched} fetches for 1000 unknown kids (1 to {allowed})");
}

/// A cheap mix of `n`, so that the kids differ in more than a counter.
fn fastrand_like(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

#[tokio::test]
async fn the_jwks_can_be_found_through_the_issuers_openid_configuration() {
    let idp = Idp::start(vec![jwk("acme-rsa-2.jwk.json", "idp-1")]).await;
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 10).await;
    let toml = format!(
        r#"
[upstream]
base_url = "{}"
customer_id = "{CUSTOMER_ID}"
customer_secret = "{CUSTOMER_SECRET}"

[[tenants]]
id = "discovered"
issuer = "{}"
audience = "agora-gateway"
scopes = ["projects:read"]
project_name_prefix = "acme-"
issuer_discovery = true
allow_insecure_jwks = true
algorithms = ["RS256"]
"#,
        sandbox.base_url(),
        idp.base
    );
    let config = agora_gateway::Config::parse(&toml, &fixtures()).unwrap();
    let gateway = GatewayThread::start(config).await;
    let claims = json!({"iss": idp.base, "aud": "agora-gateway", "sub": "svc", "scope": "projects:read",
                        "exp": chrono::Utc::now().timestamp() + 600});
    let key = EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa-2.pem")).unwrap()).unwrap();
    let token = sign(Algorithm::RS256, Some("idp-1"), &claims, &key);
    let (status, _, body) = call_at(&gateway.base_url(), Method::GET, "/dev/v1/projects", Some(&token), None).await;
    assert_eq!(status, PROJECTS_OK, "{body}");
}

#[tokio::test]
async fn check_config_reports_the_keys_of_each_jwks() {
    let idp = Idp::start(vec![
        jwk("acme-rsa-2.jwk.json", "idp-1"),
        json!({"kty": "oct", "kid": "shared-secret", "k": "c2VjcmV0"}),
        json!({"kty": "RSA", "kid": "for-encryption", "use": "enc", "n": "AQAB", "e": "AQAB"}),
    ])
    .await;
    let toml = gateway_toml("http://127.0.0.1:9/dev", "initech-project", &with_idp(&idp, ""));
    let dir = temp_dir("jwks-check");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    // Run asynchronously: the identity provider answers on this test's runtime.
    let check = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway-under-test"))
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
    };
    let output = check().await.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("tenant acme: JWKS") && printed.contains("idp-1 (RS256)"), "{printed}");
    assert!(printed.contains("shared-secret: a symmetric key"), "{printed}");
    assert!(printed.contains("for-encryption: an encryption key"), "{printed}");
    idp.down.store(true, Ordering::SeqCst);
    let output = check().await.unwrap();
    assert!(!output.status.success(), "an unreachable JWKS is reported");
    assert!(String::from_utf8_lossy(&output.stdout).contains("could not be fetched"));
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- reload ----

/// A gateway process on a config file of its own, and the file.
struct Reloadable {
    gateway: GatewayProcess,
    config: PathBuf,
    dir: PathBuf,
    sandbox: agora_sandbox::Sandbox,
    projects: DemoProjects,
}

impl Reloadable {
    async fn start(name: &str, options: &Options) -> Self {
        let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 10).await;
        let projects =
            DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
        let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, options);
        let dir = temp_dir(name);
        let gateway = GatewayProcess::start(&toml, &dir, name, Output::Discard).await;
        Reloadable { gateway, config: dir.join(format!("{name}.toml")), dir, sandbox, projects }
    }

    /// Rewrites the config file with `edit`, then sends SIGHUP and waits until the reload is counted.
    async fn reload_with(&self, edit: impl FnOnce(String) -> String) {
        let before = reloads(&self.gateway.base).await;
        rewrite(&self.config, edit);
        let pid = self.gateway.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        let base = self.gateway.base.clone();
        wait_for("the reload", async || reloads(&base).await != before).await;
    }
}

impl Drop for Reloadable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rewrite(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changes the file");
    std::fs::write(path, edited).unwrap();
}

/// `(applied, failed)` reloads so far.
async fn reloads(base: &str) -> (u64, u64) {
    let metrics = metrics_text(base).await;
    let count =
        |result: &str| metric_value(&metrics, &format!("agora_gateway_config_reloads_total{{result=\"{result}\"}}"));
    (count("applied"), count("failed"))
}

const UMBRELLA_SECRET: &str = "umbrella-e2e-hs256-secret-0123456789abcdef";
const ACME_ROTATED_SECRET: &str = "acme-e2e-rotated-hs256-secret-0123456789ab";

fn umbrella_tenant() -> String {
    format!(
        r#"
[[tenants]]
id = "umbrella"
issuer = "https://auth.umbrella.test"
audience = "agora-gateway"
scopes = ["projects:read", "channels:read"]
project_name_prefix = "umbrella-"
keys = [{{ kid = "umbrella-hs", alg = "HS256", secret = "{UMBRELLA_SECRET}" }}]
"#
    )
}

fn hs_token(tenant: &str, kid: &str, secret: &str, scope: &str) -> String {
    sign(Algorithm::HS256, Some(kid), &claims(tenant, scope), &EncodingKey::from_secret(secret.as_bytes()))
}

#[tokio::test]
async fn a_reload_under_load_applies_tenants_keys_weights_and_rate_without_failing_a_request() {
    let _load = LOAD.lock().await;
    let gateway = Reloadable::start("reload", &Options::default()).await;
    let base = gateway.gateway.base.clone();
    let globex = token("globex", TENANT_SCOPES);
    let old_acme = token("acme", TENANT_SCOPES);
    let initech = initech_token("projects:read channels:read");
    // Warm the project list (what the reload must not refill).
    for token in [&globex, &old_acme, &initech] {
        let (status, _, _) = call_at(&base, Method::GET, "/dev/v1/projects", Some(token), None).await;
        assert_eq!(status, PROJECTS_OK);
    }

    // Load through the reload: cached reads and distinct uncached ones, by tenants that stay.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (n, token) in [globex.clone(), initech.clone()].into_iter().enumerate() {
        let (base, stop) = (base.clone(), stop.clone());
        let app =
            if n == 0 { gateway.projects.named("globex-live") } else { gateway.projects.named("initech-staging") };
        let pages = format!("/dev/v1/channel/{}", app.vendor_key);
        load.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut page = 0;
            while !stop.load(Ordering::SeqCst) {
                let hit = call_at(&base, Method::GET, "/dev/v1/projects", Some(&token), None).await;
                outcomes.push(hit.0);
                let miss = call_at(&base, Method::GET, &format!("{pages}?page_no={page}"), Some(&token), None).await;
                outcomes.push(miss.0);
                page += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lists_before = gateway_calls(&gateway.sandbox, "list_projects").await;

    // A new tenant, acme's HS key rotated, globex's weight changed, the rate halved.
    gateway
        .reload_with(|text| {
            let text = text
                .replace(ACME_SECRET, ACME_ROTATED_SECRET)
                .replace("rate = 10", "rate = 5")
                .replace("project_name_prefix = \"globex-\"", "project_name_prefix = \"globex-\"\nweight = 3");
            format!("{text}{}", umbrella_tenant())
        })
        .await;
    let umbrella = hs_token("umbrella", "umbrella-hs", UMBRELLA_SECRET, "projects:read");
    let (status, _, body) = call_at(&base, Method::GET, "/dev/v1/projects", Some(&umbrella), None).await;
    assert_eq!(status, PROJECTS_OK, "the new tenant works: {body}");
    assert_eq!(body["projects"], json!([]), "umbrella owns no project");
    let (status, _, _) = call_at(&base, Method::GET, "/dev/v1/projects", Some(&old_acme), None).await;
    assert_eq!(status, 401, "the rotated-out key is refused at once");
    let new_acme = hs_token("acme", "acme-hs", ACME_ROTATED_SECRET, TENANT_SCOPES);
    let (status, headers, _) = call_at(&base, Method::GET, "/dev/v1/projects", Some(&new_acme), None).await;
    assert_eq!((status, headers["x-cache"].to_str().unwrap()), (PROJECTS_OK, "HIT"), "the cache survived");
    assert_eq!(gateway_calls(&gateway.sandbox, "list_projects").await, lists_before, "no refill of the list");

    // The new rate holds at the upstream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reset_sandbox(&gateway.sandbox).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sandbox_stats(&gateway.sandbox).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.extend(task.await.unwrap());
    }
    eprintln!(
        "identity: reload under load: {} requests, statuses {:?}; after it the upstream saw at most {} in a second",
        outcomes.len(),
        count_statuses(&outcomes),
        after.max_in_1s
    );
    assert!(after.max_in_1s <= 5, "the halved rate holds: {} in one second", after.max_in_1s);
    assert!(after.requests >= 10, "the load went on: {} upstream calls in 3 s", after.requests);
    for status in &outcomes {
        assert!(matches!(status, 200 | 201 | 429), "a request failed: {status}");
    }
}

async fn gateway_calls(sandbox: &agora_sandbox::Sandbox, operation: &str) -> u64 {
    sandbox_stats(sandbox).await.by_operation.get(operation).copied().unwrap_or(0)
}

fn count_statuses(statuses: &[u16]) -> Vec<(u16, usize)> {
    let mut counts: Vec<(u16, usize)> = Vec::new();
    for status in statuses {
        match counts.iter_mut().find(|(seen, _)| seen == status) {
            Some((_, count)) => *count += 1,
            None => counts.push((*status, 1)),
        }
    }
    counts.sort();
    counts
}

#[tokio::test]
async fn a_broken_file_changes_nothing_and_is_counted() {
    let gateway = Reloadable::start("reload-broken", &Options::default()).await;
    let base = gateway.gateway.base.clone();
    let acme = token("acme", TENANT_SCOPES);
    gateway.reload_with(|text| text.replace("rate = 10", "rate = 0")).await;
    assert_eq!(reloads(&base).await, (0, 1), "counted as failed");
    let (status, _, _) = call_at(&base, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(status, PROJECTS_OK, "the old configuration still serves");

    let admin = token("ops", ALL_SCOPES);
    let (status, headers, body) = call_at(&base, Method::POST, "/admin/reload", Some(&admin), None).await;
    assert!(problem_detail(status, &headers, &body, 422).contains("throttle.rate"), "names the field: {body}");
    let (status, _, _) = call_at(&base, Method::POST, "/admin/reload", Some(&acme), None).await;
    assert_eq!(status, 403, "reloading needs the admin scope");

    rewrite(&gateway.config, |text| text.replace("rate = 0", "rate = 10"));
    let (status, _, body) = call_at(&base, Method::POST, "/admin/reload", Some(&admin), None).await;
    assert_eq!((status, &body["tenants"]), (200, &json!(4)), "{body}");
    assert_eq!(reloads(&base).await, (1, 2));
}

#[tokio::test]
async fn a_removed_tenants_queued_requests_end_with_a_401_not_a_hang() {
    let _load = LOAD.lock().await;
    let gateway = Reloadable::start("reload-removed", &Options::default()).await;
    let base = gateway.gateway.base.clone();
    let globex = token("globex", TENANT_SCOPES);
    let (status, _, _) = call_at(&base, Method::GET, "/dev/v1/projects", Some(&globex), None).await;
    assert_eq!(status, PROJECTS_OK);
    // 40 distinct reads at once: at 10 per second, most of them wait in globex's lane.
    let pages = format!("/dev/v1/channel/{}", gateway.projects.named("globex-live").vendor_key);
    let mut queued = Vec::new();
    for page in 0..40 {
        let (url, token) = (format!("{base}{pages}?page_no={page}"), globex.clone());
        queued.push(tokio::spawn(async move {
            let response = http().get(url).bearer_auth(token).send().await.unwrap();
            (response.status().as_u16(), Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed_at = Instant::now();
    gateway
        .reload_with(|text| {
            let start = text.find("[[tenants]]\nid = \"globex\"").expect("the globex tenant");
            let end = start + text[start..].find("\n[[tenants]]").expect("a tenant after it");
            format!("{}{}", &text[..start], &text[end + 1..])
        })
        .await;
    let mut statuses = Vec::new();
    for request in queued {
        let (status, answered) = request.await.unwrap();
        statuses.push(status);
        assert!(
            answered - removed_at < Duration::from_secs(3),
            "a queued request hung until {:?}",
            answered - removed_at
        );
    }
    eprintln!("identity: globex removed with 40 reads in flight: {:?}", count_statuses(&statuses));
    assert!(statuses.contains(&401), "queued requests end with 401");
    for status in &statuses {
        assert!(matches!(status, 200 | 401 | 429), "unexpected {status}");
    }
    let (status, _, _) = call_at(&base, Method::GET, "/dev/v1/projects", Some(&globex), None).await;
    assert_eq!(status, 401, "the removed tenant's token is refused");
}
