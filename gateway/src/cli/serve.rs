//! Running the gateway until a signal: `serve` and the demo bind their listeners and serve; SIGTERM
//! or Ctrl-C lets in-flight requests finish, SIGHUP reloads the config, SIGUSR1 reopens the audit
//! file.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

use crate::config::{Config, ServerConfig};
#[cfg(feature = "demo")]
use crate::demo;
use crate::{Gateway, serve};

pub(super) async fn run_serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let gateway = Gateway::new(&config, Some(path)).await?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen {}: {e}", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, tenants = config.tenants.len(), "agora-gateway serving");
    let side = crate::SideListeners::bind(&config).await?;
    if let Some(admin) = &side.admin {
        tracing::info!(admin_listen = %admin.local_addr()?, "health, readiness and metrics served here too");
    }
    if let Some(notifications) = &side.notifications {
        tracing::info!(notifications_listen = %notifications.local_addr()?, "Agora's notices (NCS) taken here too");
    }
    serve_until_signal(gateway, listener, side, &config.server).await
}

#[cfg(not(feature = "demo"))]
pub(super) async fn run_demo(_listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no demo (it was built without the `demo` feature): use `agora-gateway serve --config FILE`"
    )
}

#[cfg(feature = "demo")]
pub(super) async fn run_demo(listen: SocketAddr) -> anyhow::Result<()> {
    let mut config = demo::config();
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen}: {e} (pass --listen to the demo command for another address)")
    })?;
    // Where the embedded sandbox sends its notices.
    config.server.listen = listener.local_addr()?;
    let gateway = Gateway::new(&config, None).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!();
    println!("agora-gateway demo: in front of the embedded Console API sandbox, with demo data");
    println!("  Swagger UI   {base}/docs   (Authorize with a token below)");
    println!("  Console API  {base}/dev    (drop-in for https://api.agora.io/dev)");
    println!("  Metrics      {base}/metrics   (with the ops token)");
    println!();
    println!("Tokens, valid for 12 hours:");
    let tokens = demo::tokens(&config);
    for ((tenant, token), tenant_config) in tokens.iter().zip(&config.tenants) {
        let scopes: Vec<&str> = tenant_config.scopes.iter().map(|s| s.as_str()).collect();
        println!("  {tenant} ({}):", scopes.join(" "));
        println!("    {token}");
    }
    println!();
    println!("Channel reads are answered from the sandbox's notifications (NCS): X-Cache: EVENTS.");
    println!();
    println!("Try:");
    println!("  curl -s -H \"Authorization: Bearer {}\" {base}/dev/v1/projects", tokens[0].1);
    println!();
    serve_until_signal(gateway, listener, crate::SideListeners::default(), &config.server).await
}

/// Serves until SIGTERM or Ctrl-C; then drains — `/readyz` 503 while everything is still served
/// for `shutdown_delay` — and lets in-flight requests finish for up to `shutdown_grace`.
async fn serve_until_signal(
    gateway: std::sync::Arc<Gateway>,
    listener: TcpListener,
    side: crate::SideListeners,
    server_config: &ServerConfig,
) -> anyhow::Result<()> {
    let (grace, delay) = (server_config.shutdown_grace, server_config.shutdown_delay);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    on_signals(&gateway);
    let mut server = tokio::spawn(serve(gateway.clone(), listener, side, async move {
        let _ = stopped.await;
    }));
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = &mut server => return Ok(()),
    }
    gateway.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    if !delay.is_zero() {
        tracing::info!(delay_ms = delay.as_millis() as u64, "draining: /readyz says 503, requests are still served");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = &mut server => return Ok(()),
        }
    }
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: finishing in-flight requests");
    let _ = stop.send(());
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    // No call of this process leaves any more: the shared budget need not hold its share back.
    gateway.throttle.leave().await;
    Ok(())
}

/// SIGHUP reloads the config file (`reload.rs`); SIGUSR1 reopens the audit file (after a
/// rotation).
fn on_signals(gateway: &std::sync::Arc<Gateway>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::SignalKind;
        let reloading = gateway.clone();
        on_signal(SignalKind::hangup(), "SIGHUP", move || {
            let gateway = reloading.clone();
            async move {
                tracing::info!("SIGHUP: reloading the configuration");
                // The outcome is logged and counted by the reload itself.
                let _ = gateway.reload().await;
            }
        });
        let reopening = gateway.clone();
        on_signal(SignalKind::user_defined1(), "SIGUSR1", move || {
            let gateway = reopening.clone();
            async move { gateway.audit.reopen() }
        });
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

/// Runs `action` on every `signal`, in the background.
#[cfg(unix)]
fn on_signal<F, Fut>(kind: tokio::signal::unix::SignalKind, name: &'static str, mut action: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let Ok(mut signals) = tokio::signal::unix::signal(kind) else {
            tracing::warn!(signal = name, "cannot listen for the signal");
            return;
        };
        while signals.recv().await.is_some() {
            action().await;
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
