//! Shared set-up: a sandbox (and a gateway in front of it) on ephemeral ports, and the clients that call them.

use std::net::SocketAddr;

use agora_console_client::{Client, ClientOptions, types};
use agora_sandbox::{Faults, Sandbox, SandboxConfig, Seed, Stats};

pub const CUSTOMER_ID: &str = "e2e-customer";
pub const CUSTOMER_SECRET: &str = "e2e-customer-secret";

pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A sandbox with the given seed and rate limit (0: unlimited, for tests that are not about it).
pub async fn start_sandbox(seed: Seed, rate_limit: u32) -> Sandbox {
    let config = SandboxConfig {
        seed,
        rate_limit,
        ..SandboxConfig::new(CUSTOMER_ID, CUSTOMER_SECRET)
    };
    Sandbox::start(config, any_port())
        .await
        .expect("the sandbox starts")
}

/// The generated client, as the gateway uses it: Basic auth with the account's credentials.
pub fn console_client(sandbox: &Sandbox) -> Client {
    Client::with_basic_auth(
        &sandbox.base_url(),
        CUSTOMER_ID,
        CUSTOMER_SECRET,
        &ClientOptions::default(),
    )
    .unwrap()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn sandbox_stats(sandbox: &Sandbox) -> Stats {
    http()
        .get(format!("{}/__sandbox/stats", sandbox.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn set_faults(sandbox: &Sandbox, faults: Faults) {
    let response = http()
        .post(format!("{}/__sandbox/faults", sandbox.root_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "faults accepted: {}",
        response.status()
    );
}

pub async fn reset_sandbox(sandbox: &Sandbox) {
    let response = http()
        .post(format!("{}/__sandbox/reset", sandbox.root_url()))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

/// Users join a channel (the sandbox's stand-in for clients joining through the SDK).
pub async fn join_channel(sandbox: &Sandbox, body: serde_json::Value) {
    let response = http()
        .post(format!("{}/__sandbox/channels", sandbox.root_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "join: {}",
        response.text().await.unwrap()
    );
}

/// The status and `error_msg` of an error answer of the generated client.
pub fn error_of<T: std::fmt::Debug>(
    result: Result<T, agora_console_client::Error<types::ErrorMsg>>,
) -> (u16, String) {
    match result {
        Err(agora_console_client::Error::ErrorResponse(response)) => {
            (response.status().as_u16(), response.into_inner().error_msg)
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
}
