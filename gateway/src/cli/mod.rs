//! The `agora-gateway` command line: the demo (no arguments), `serve`, `check-config`, `token`,
//! `openapi`. A library function, so the end-to-end tests can build the same binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod serve;

use crate::audit::escaped;
use crate::auth::mint::{MintRequest, mint};
use crate::config::{Config, LogFormat};
use crate::docs;
use serve::{run_demo, run_serve};

/// Where the demo listens unless told otherwise.
const DEMO_LISTEN: &str = "127.0.0.1:8080";
use clap::{Parser, Subcommand};

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
            init_logging(config.server.log_format, &config.telemetry)?;
            // Per core, the main listener has threads of its own: the shared runtime keeps the
            // background work and the side listeners, on one thread.
            let shared_workers = match config.server.runtime {
                crate::config::RuntimeKind::PerCore => Some(1),
                crate::config::RuntimeKind::Shared => config.server.worker_threads,
            };
            let served = runtime(shared_workers).and_then(|rt| rt.block_on(run_serve(config, path)));
            crate::telemetry::shutdown();
            served
        }),
        Command::Demo { listen } => init_logging(LogFormat::Text, &Default::default())
            .and_then(|()| runtime(None))
            .and_then(|rt| rt.block_on(run_demo(listen))),
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

/// The log and the tracer (`telemetry/`), before the runtime starts: the span exporter's HTTP
/// client blocks, on a thread of its own.
fn init_logging(format: LogFormat, telemetry: &crate::config::TelemetryConfig) -> anyhow::Result<()> {
    crate::telemetry::install(format, telemetry)
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
        config.upstream.domains().join(", "),
        config.tenants.len(),
        config.throttle.rate,
        config.server.listen
    );
    for group in &config.throttle.groups {
        println!("  budget group {}: {} req/s {budget}, for {}", group.name, group.rate, group.operations.join(", "));
    }
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
            escaped(event.tenant.as_deref().unwrap_or("-")),
            escaped(event.subject.as_deref().unwrap_or("-")),
            escaped(&event.operation),
            event.target_text(),
            event.status,
            event.outcome.as_str(),
            escaped(event.reason.as_deref().unwrap_or("")),
            escaped(event.request_id.as_deref().unwrap_or("")),
            escaped(event.upstream_request_id.as_deref().unwrap_or("")),
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
