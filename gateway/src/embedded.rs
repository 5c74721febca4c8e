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

/// Agora's Notifications service, played by the embedded sandbox: the projects' notices go to the
/// gateway at `listen`, signed with their `[[notifications]]` secrets; `activity`: every this
/// often somebody joins or leaves a demo channel (the demo only).
#[cfg_attr(not(feature = "demo"), allow(dead_code))]
pub(crate) struct Notify<'a> {
    pub(crate) listen: std::net::SocketAddr,
    pub(crate) secrets: Vec<(&'a str, &'a str)>,
    pub(crate) activity: Option<std::time::Duration>,
}

/// Starts the embedded sandbox with these credentials; answers it and its base URL.
#[cfg(feature = "demo")]
pub(crate) async fn start(
    customer_id: &str,
    customer_secret: &str,
    notify: Option<Notify<'_>>,
) -> anyhow::Result<(EmbeddedSandbox, String)> {
    use agora_sandbox::{NotifyConfig, Sandbox, SandboxConfig, Seed};
    let activity = notify.as_ref().and_then(|notify| notify.activity);
    let notify = notify.map(|notify| NotifyConfig {
        urls: vec![format!("http://{}/agora/ncs/{{appid}}", notify.listen)],
        secret: String::new(),
        app_secrets: notify.secrets.iter().map(|(appid, secret)| (appid.to_string(), secret.to_string())).collect(),
    });
    let config =
        SandboxConfig { seed: Seed::Demo, notify, activity, ..SandboxConfig::new(customer_id, customer_secret) };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().expect("an address")).await?;
    let base_url = sandbox.base_url();
    tracing::info!(%base_url, "embedded sandbox started (the Console API simulator)");
    Ok((sandbox, base_url))
}

#[cfg(not(feature = "demo"))]
pub(crate) async fn start(
    _customer_id: &str,
    _customer_secret: &str,
    _notify: Option<Notify<'_>>,
) -> anyhow::Result<(EmbeddedSandbox, String)> {
    anyhow::bail!("upstream.base_url: this build has no embedded sandbox (it was built without the `demo` feature)")
}
