//! The embedded sandbox — the Console API simulator in-process, for `upstream.base_url =
//! "sandbox"` and the demo — in builds with the `demo` feature (the default). A build without it
//! (`--no-default-features`) carries no sandbox, and refuses `"sandbox"` in its config.

/// A running embedded sandbox, kept alive with the gateway.
#[cfg(feature = "demo")]
pub(crate) type EmbeddedSandbox = agora_sandbox::Sandbox;

/// No sandbox in this build.
#[cfg(not(feature = "demo"))]
pub(crate) struct EmbeddedSandbox;

/// Whether this build carries the sandbox.
pub(crate) const AVAILABLE: bool = cfg!(feature = "demo");

/// Starts the embedded sandbox with these credentials; answers it and its base URL.
#[cfg(feature = "demo")]
pub(crate) async fn start(customer_id: &str, customer_secret: &str) -> anyhow::Result<(EmbeddedSandbox, String)> {
    use agora_sandbox::{Sandbox, SandboxConfig, Seed};
    let config = SandboxConfig { seed: Seed::Demo, ..SandboxConfig::new(customer_id, customer_secret) };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().expect("an address")).await?;
    let base_url = sandbox.base_url();
    tracing::info!(%base_url, "embedded sandbox started (the Console API simulator)");
    Ok((sandbox, base_url))
}

#[cfg(not(feature = "demo"))]
pub(crate) async fn start(_customer_id: &str, _customer_secret: &str) -> anyhow::Result<(EmbeddedSandbox, String)> {
    anyhow::bail!("upstream.base_url: this build has no embedded sandbox (it was built without the `demo` feature)")
}
