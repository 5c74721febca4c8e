//! The `agora-gateway` command line: the demo (no arguments), `serve`, `check-config`, `token`,
//! `openapi`. A library function, so the end-to-end tests can build the same binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::auth::mint::{MintRequest, mint};
use crate::config::{Config, LogFormat};
#[cfg(feature = "demo")]
use crate::demo;
use crate::{Gateway, docs, serve};

/// Where the demo listens unless told otherwise.
const DEMO_LISTEN: &str = "127.0.0.1:8080";
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

/// A gateway in front of Agora's Console RESTful API. With no command, runs the demo.
#[derive(Parser)]
#[command(name = "agora-gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a configuration file.
    Serve {
        /// The TOML configuration.
        #[arg(long, env = "AGORA_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file; on error, exit non-zero naming the field.
    CheckConfig {
        #[arg(long, env = "AGORA_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Do not fetch the tenants' JWKS (check the file only).
        #[arg(long)]
        offline: bool,
    },
    /// Mint a token for a tenant (HS* keys from the config; asymmetric keys need --key).
    Token {
        #[arg(long, env = "AGORA_GATEWAY_CONFIG")]
        config: PathBuf,
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// Space-separated scopes the token asks for (cut down to the tenant's), e.g.
        /// "projects:read channels:read". Required: a token carries only what was asked.
        #[arg(long)]
        scope: String,
        /// Lifetime, e.g. 15m, 1h, 1d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Private key (PEM) of an RS*/PS*/ES*/EdDSA key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Key to sign with, by kid (default: the tenant's first key).
        #[arg(long)]
        kid: Option<String>,
        /// The token's subject (who the caller is within the tenant).
        #[arg(long, default_value = "agora-gateway-cli")]
        sub: String,
    },
    /// Print the audit trail (`audit.sink = "file"`): who did what, and how it ended.
    Audit {
        #[arg(long, env = "AGORA_GATEWAY_CONFIG")]
        config: PathBuf,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        /// Only events of the last ..., e.g. 1h, 30m, 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Only this operation (an operationId, `purge_cache`, `reload`).
        #[arg(long)]
        operation: Option<String>,
    },
    /// Print the gateway's OpenAPI document (what /openapi.json serves).
    Openapi,
    /// Run the demo: the embedded sandbox, three demo tenants, and a token for each.
    Demo {
        #[arg(long, default_value = DEMO_LISTEN)]
        listen: SocketAddr,
    },
}

/// Runs the command line of `std::env::args()`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo { listen: DEMO_LISTEN.parse().expect("an address") }) {
        Command::CheckConfig { config, offline } => check_config(&config, offline),
        Command::Token { config, tenant, scope, ttl, key, kid, sub } => {
            token(&config, &tenant, &scope, ttl, key.as_deref(), kid.as_deref(), &sub)
        }
        Command::Audit { config, tenant, since, operation } => {
            audit(&config, tenant.as_deref(), since, operation.as_deref())
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&docs::document()).expect("JSON"));
            Ok(())
        }
        Command::Serve { config: path } => Config::load(&path).map_err(anyhow::Error::from).and_then(|config| {
            runtime(config.server.worker_threads).and_then(|rt| rt.block_on(run_serve(config, path)))
        }),
        Command::Demo { listen } => runtime(None).and_then(|rt| rt.block_on(run_demo(listen))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime: `worker_threads` workers, or one per CPU.
fn runtime(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = worker_threads {
        builder.worker_threads(workers);
    }
    Ok(builder.enable_all().build()?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn check_config(path: &std::path::Path, offline: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let budget = match &config.throttle.redis_url {
        Some(_) => "shared through Redis",
        None => "local to this process",
    };
    println!(
        "{}: OK — upstream {}, {} tenant(s), {} req/s {budget}, listening on {}",
        path.display(),
        config.upstream.base_url,
        config.tenants.len(),
        config.throttle.rate,
        config.server.listen
    );
    if offline { Ok(()) } else { check_key_sets(&config) }
}

/// Fetches each tenant's JWKS once and says which keys it found, or why it could not.
fn check_key_sets(config: &Config) -> anyhow::Result<()> {
    let tenants: Vec<_> = config.tenants.iter().filter(|tenant| tenant.has_jwks()).collect();
    if tenants.is_empty() {
        return Ok(());
    }
    let fetcher = crate::auth::jwks::Fetcher::new(&config.jwks).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut failed = Vec::new();
    for tenant in tenants {
        let source = crate::auth::jwks::Source::of(tenant).expect("a tenant with a JWKS");
        let allowed: Vec<_> =
            tenant.algorithms.iter().filter_map(|alg| crate::auth::keys::parse_algorithm(alg).ok()).collect();
        match runtime.block_on(fetcher.fetch(&source, &allowed)) {
            Ok(fetched) => {
                let keys: Vec<String> =
                    fetched.keys.iter().map(|key| format!("{} ({:?})", display_kid(&key.kid), key.alg)).collect();
                println!("tenant {}: JWKS {source:?}: {} key(s): {}", tenant.id, keys.len(), keys.join(", "));
                for skipped in &fetched.skipped {
                    println!("tenant {}: JWKS key not used: {skipped}", tenant.id);
                }
                if keys.is_empty() {
                    failed.push(tenant.id.clone());
                }
            }
            Err(error) => {
                println!("tenant {}: JWKS {source:?}: could not be fetched: {error}", tenant.id);
                failed.push(tenant.id.clone());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("no usable JWKS key for tenant(s) {}", failed.join(", "));
    }
    Ok(())
}

fn display_kid(kid: &str) -> &str {
    if kid.is_empty() { "(no kid)" } else { kid }
}

fn audit(
    path: &std::path::Path,
    tenant: Option<&str>,
    since: Option<Duration>,
    operation: Option<&str>,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let file = match (config.audit.sink, &config.audit.path) {
        (crate::config::AuditSink::File, Some(file)) => file.clone(),
        _ => anyhow::bail!("{}: the audit goes to the log (audit.sink = \"log\"); read it there", path.display()),
    };
    let since = since
        .map(|since| chrono::Duration::from_std(since).map(|since| chrono::Utc::now() - since))
        .transpose()
        .map_err(|_| anyhow::anyhow!("--since is too long"))?;
    let (events, unreadable) = crate::audit::read(&file, tenant, since, operation)?;
    println!(
        "time | tenant | subject | operation | target | status | outcome | reason | request id | Agora's request id"
    );
    println!("---|---|---|---|---|---|---|---|---|---");
    for event in &events {
        println!(
            "{} | {} | {} | {} | {} | {} | {} | {} | {} | {}",
            event.time_text(),
            event.tenant.as_deref().unwrap_or("-"),
            event.subject.as_deref().unwrap_or("-"),
            event.operation,
            event.target_text().replace('|', "\\|"),
            event.status,
            event.outcome.as_str(),
            event.reason.as_deref().unwrap_or("").replace('|', "\\|"),
            event.request_id.as_deref().unwrap_or(""),
            event.upstream_request_id.as_deref().unwrap_or(""),
        );
    }
    eprintln!(
        "{} event(s){}",
        events.len(),
        if unreadable > 0 { format!(", {unreadable} unreadable line(s) skipped") } else { String::new() }
    );
    Ok(())
}

fn token(
    path: &std::path::Path,
    tenant: &str,
    scope: &str,
    ttl: Duration,
    key: Option<&std::path::Path>,
    kid: Option<&str>,
    subject: &str,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let tenant = config
        .tenants
        .iter()
        .find(|t| t.id == tenant)
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant:?} in {}", path.display()))?;
    let private_key = key.map(std::fs::read).transpose().map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    if let Some(unknown) = scope.split_whitespace().find(|name| crate::policy::Scope::parse(name).is_none()) {
        anyhow::bail!(
            "--scope: {unknown:?} is not a scope (one of {})",
            crate::policy::Scope::ALL.map(crate::policy::Scope::as_str).join(", ")
        );
    }
    let request = MintRequest { tenant, kid, scope: Some(scope), subject, ttl, private_key: private_key.as_deref() };
    println!("{}", mint(&request).map_err(anyhow::Error::msg)?);
    Ok(())
}

async fn run_serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    init_logging(config.server.log_format);
    let gateway = Gateway::new(&config, Some(path)).await?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("server.listen {}: {e}", config.server.listen))?;
    tracing::info!(listen = %config.server.listen, tenants = config.tenants.len(), "agora-gateway serving");
    let admin = crate::bind_admin(&config).await?;
    if let Some(admin) = &admin {
        tracing::info!(admin_listen = %admin.local_addr()?, "health, readiness and metrics served here too");
    }
    serve_until_signal(gateway, listener, admin, config.server.shutdown_grace).await
}

#[cfg(not(feature = "demo"))]
async fn run_demo(_listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no demo (it was built without the `demo` feature): use `agora-gateway serve --config FILE`"
    )
}

#[cfg(feature = "demo")]
async fn run_demo(listen: SocketAddr) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    let config = demo::config();
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen}: {e} (pass --listen to the demo command for another address)")
    })?;
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
    println!("Try:");
    println!("  curl -s -H \"Authorization: Bearer {}\" {base}/dev/v1/projects", tokens[0].1);
    println!();
    serve_until_signal(gateway, listener, None, config.server.shutdown_grace).await
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish for up to `grace`.
async fn serve_until_signal(
    gateway: std::sync::Arc<Gateway>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    on_signals(&gateway);
    let mut server = tokio::spawn(serve(gateway, listener, admin, async move {
        let _ = stopped.await;
    }));
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = &mut server => return Ok(()),
    }
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: finishing in-flight requests");
    let _ = stop.send(());
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
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
