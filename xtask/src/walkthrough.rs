//! `cargo xtask adding-an-operation`: the README's "Adding an operation", walked through end to end
//! in a copy of the workspace. It adds a made-up read to the copy's spec — the spec entry with its
//! `x-gateway` policy — and its id to the spec tests' list (`generated/src/spec_tests.rs`, checked
//! exactly), runs `regen` there, runs the copy's spec tests and the gateway's table test, builds
//! that gateway (`--no-default-features`: no sandbox), and runs the new operation's end-to-end
//! test: proxied to a stand-in upstream on 127.0.0.1, served through the generated route and
//! dispatch, cached by its policy's class, and refused for another tenant's app. CI runs it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use crate::bench::procs::{Proc, free_port, wait_port};

/// The made-up operation: a spec entry as a contributor would write it.
const NEW_OPERATION: &str = r##"
  /v1/channel/{appid}/summary:
    get:
      operationId: get_channel_summary
      x-gateway:
        scope: channels:read
        cache: channel
        ownership: app-id
        owner-param: appid
        priority: normal
      tags: [channels]
      summary: A summary of an app's channels (made up by `cargo xtask adding-an-operation`)
      parameters:
        - name: appid
          in: path
          required: true
          schema: { type: string }
      responses:
        "2XX":
          description: The summary.
          content:
            application/json:
              schema: { $ref: "#/components/schemas/ChannelListResponse" }
        "400": { $ref: "#/components/responses/BadRequest" }
        "401": { $ref: "#/components/responses/Unauthorized" }
        "404": { $ref: "#/components/responses/NotFound" }
        "429": { $ref: "#/components/responses/TooManyRequests" }
        "500": { $ref: "#/components/responses/InternalError" }
        "4XX": { $ref: "#/components/responses/OtherError" }
        "5XX": { $ref: "#/components/responses/OtherError" }
"##;

const CUSTOMER: (&str, &str) = ("walkthrough-customer", "walkthrough-secret");
const TENANT_SECRET: &str = "walkthrough-tenant-hs256-secret-0123456789";
const OWN_APP: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER_APP: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub(crate) fn run(root: &Path) -> Result<()> {
    let copy = crate::target_dir(root).join("walkthrough/workspace");
    println!("1. copy the workspace to {}", copy.display());
    copy_workspace(root, &copy)?;

    // Cargo names a workspace's artifacts by package name and version, not by path: another
    // version keeps the copy's crates apart from this workspace's in the shared target dir.
    let manifest = copy.join("Cargo.toml");
    let workspace = std::fs::read_to_string(&manifest)?;
    let versioned = workspace.replacen("\nversion = \"", "\nversion = \"0.0.0-walkthrough+", 1);
    ensure!(versioned != workspace, "the workspace manifest has no version to change");
    std::fs::write(&manifest, versioned)?;

    println!("2. add the operation (spec entry + x-gateway) to the copy's spec");
    let spec_path = copy.join(crate::regen::SPEC_PATH);
    let spec = std::fs::read_to_string(&spec_path)?;
    let anchor = "\n  /v1/channel/{appid}:\n";
    ensure!(spec.contains(anchor), "the spec no longer has {anchor:?} to insert before");
    std::fs::write(&spec_path, spec.replacen(anchor, &format!("{NEW_OPERATION}{anchor}"), 1))?;

    println!("3. add its id to the spec tests' list ({SPEC_TESTS_PATH})");
    let tests_path = copy.join(SPEC_TESTS_PATH);
    let tests = std::fs::read_to_string(&tests_path)?;
    let (list_start, list_end) = operation_list(&tests)?;
    let listed = &tests[list_start..list_end];
    let count: usize = listed
        .split_once("; ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(count, _)| count.parse().ok())
        .context("the spec tests' OPERATION_IDS has no length to raise")?;
    let grown = listed.replacen(&format!("; {count}]"), &format!("; {}]", count + 1), 1).replacen(
        "\n];",
        "\n    \"get_channel_summary\",\n];",
        1,
    );
    std::fs::write(&tests_path, format!("{}{grown}{}", &tests[..list_start], &tests[list_end..]))?;

    println!("4. cargo xtask regen (in the copy)");
    crate::regen::run(&copy, false)?;
    let table = std::fs::read_to_string(copy.join(crate::regen::GATEWAY_TABLE_PATH))?;
    ensure!(table.contains("GetChannelSummary"), "regen did not put the operation in the gateway's table");

    // Sharing this workspace's target dir, so only the copy's own crates are compiled.
    let target = crate::target_dir(root);
    println!("5. the spec tests and the gateway's table test (in the copy)");
    for (package, filter) in [("agora-console-client", None), ("agora-gateway", Some("policy::tests"))] {
        let mut test = Command::new(env!("CARGO"));
        test.args(["test", "--quiet", "-p", package, "--no-default-features", "--manifest-path"])
            .arg(copy.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target);
        if package == "agora-gateway" {
            test.arg("--lib");
        }
        if let Some(filter) = filter {
            test.args(["--", filter]);
        }
        ensure!(test.status().context("running cargo test")?.success(), "the copy's {package} tests fail");
    }

    // Its binary lands on target/debug/agora-gateway, so it is copied aside at once.
    println!("6. build the copy's gateway (--no-default-features: no sandbox)");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "agora-gateway", "--no-default-features", "--manifest-path"])
        .arg(copy.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "the copy's gateway does not build");
    let binary = target.join("walkthrough/agora-gateway");
    std::fs::copy(target.join("debug/agora-gateway"), &binary)?;

    println!("7. the new operation's end-to-end test: proxied through the copy's gateway");
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(proxy(&binary, &copy))?;
    println!("adding an operation: the spec entry, regen, and the gateway serves it — done");
    Ok(())
}

/// Where the spec tests list every operation id.
const SPEC_TESTS_PATH: &str = "generated/src/spec_tests.rs";

/// The byte range of the spec tests' `OPERATION_IDS` declaration, through its closing `];`.
fn operation_list(tests: &str) -> Result<(usize, usize)> {
    let start = tests.find("const OPERATION_IDS: [&str; ").context("the spec tests have no OPERATION_IDS")?;
    let end = tests[start..].find("\n];").context("OPERATION_IDS does not end")? + start + "\n];".len();
    Ok((start, end))
}

/// Copies the workspace's sources (not `target/`, not `.git/`).
fn copy_workspace(root: &Path, copy: &Path) -> Result<()> {
    if copy.exists() {
        std::fs::remove_dir_all(copy)?;
    }
    let status = Command::new("tar")
        .current_dir(root)
        .args(["--exclude=./target", "--exclude=./.git", "-cf", "-", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()?
        .wait_with_output()?;
    ensure!(status.status.success(), "tar could not read the workspace");
    std::fs::create_dir_all(copy)?;
    let mut untar =
        Command::new("tar").current_dir(copy).args(["-xf", "-"]).stdin(std::process::Stdio::piped()).spawn()?;
    std::io::Write::write_all(untar.stdin.as_mut().context("tar's stdin")?, &status.stdout)?;
    ensure!(untar.wait()?.success(), "tar could not write the copy");
    Ok(())
}

#[derive(Default)]
struct StandIn {
    summaries: AtomicU64,
}

fn authorized(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", CUSTOMER.0, CUSTOMER.1));
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Basic {expected}"))
}

/// An upstream for the made-up operation (the sandbox does not know it), and the project list the
/// gateway's ownership checks read.
fn stand_in(state: Arc<StandIn>) -> Router {
    let projects = |headers: HeaderMap| async move {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let project = |id: &str, name: &str, key: &str| json!({"id": id, "name": name, "vendor_key": key});
        axum::Json(json!({"projects": [project("p1", "walk-own", OWN_APP), project("p2", "other", OTHER_APP)]}))
            .into_response()
    };
    let summary = |State(state): State<Arc<StandIn>>, UrlPath(appid): UrlPath<String>, headers: HeaderMap| async move {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        state.summaries.fetch_add(1, Ordering::SeqCst);
        let body = json!({"success": true, "data": {"channels": [{"channel_name": appid, "user_count": 3}], "total_size": 1}, "made_up": true});
        (StatusCode::OK, axum::Json(body)).into_response()
    };
    Router::new()
        .route("/dev/v1/projects", get(projects))
        .route("/dev/v1/channel/{appid}/summary", get(summary))
        .with_state(state)
}

async fn proxy(binary: &Path, copy: &Path) -> Result<()> {
    let state = Arc::new(StandIn::default());
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(axum::serve(upstream, stand_in(state.clone())).into_future());

    let port = free_port()?;
    let mut admin_port = free_port()?;
    while admin_port == port {
        admin_port = free_port()?;
    }
    let config = copy.join("walkthrough.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
[upstream]
base_url = "http://{upstream_addr}/dev"
customer_id = "{}"
customer_secret = "{}"
[[tenants]]
id = "walk"
issuer = "https://auth.walk.test"
audience = "agora-gateway"
scopes = ["projects:read", "channels:read"]
project_name_prefix = "walk-"
keys = [{{ kid = "walk-hs", alg = "HS256", secret = "{TENANT_SECRET}" }}]
"#,
            CUSTOMER.0, CUSTOMER.1
        ),
    )?;
    let token = Command::new(binary)
        .args(["token", "--config"])
        .arg(&config)
        .args(["--tenant", "walk", "--scope", "channels:read"])
        .output()?;
    ensure!(token.status.success(), "minting a token failed: {}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8(token.stdout)?.trim().to_string();
    let logs = copy.join("logs");
    let config_arg = config.to_string_lossy().to_string();
    let mut gateway = Proc::spawn(&logs, "walkthrough-gateway", binary, &["serve", "--config", &config_arg], &[])?;
    wait_port(port, "the copy's gateway", &mut gateway).await?;

    let http = reqwest::Client::new();
    let get = |app: &str| {
        http.get(format!("http://127.0.0.1:{port}/dev/v1/channel/{app}/summary/")).bearer_auth(&token).send()
    };
    let first = get(OWN_APP).await?;
    let (status, cache) = (first.status(), header(&first, "x-cache"));
    let body: Value = first.json().await?;
    ensure!(status == 200 && cache == "MISS", "the new operation answered {status} ({cache}): {body}");
    ensure!(body["made_up"] == true && body["data"]["channels"][0]["channel_name"] == OWN_APP, "passed on: {body}");
    let second = get(OWN_APP).await?;
    ensure!(header(&second, "x-cache") == "HIT", "the second read is a cache hit (channel class)");
    let foreign = get(OTHER_APP).await?;
    ensure!(foreign.status() == 404, "another tenant's app is a 404, not {}", foreign.status());
    let calls = state.summaries.load(Ordering::SeqCst);
    ensure!(calls == 1, "the stand-in upstream saw {calls} summary calls, not 1");
    let metrics = http.get(format!("http://127.0.0.1:{admin_port}/metrics")).send().await?.text().await?;
    if !metrics.contains("operation=\"get_channel_summary\"") {
        bail!("the metrics do not name the new operation");
    }
    gateway.stop();
    println!("   MISS, then HIT, another tenant's app 404, 1 upstream call, metrics label get_channel_summary");
    Ok(())
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}
