//! The gateway's configuration: one TOML file, parsed and validated once at start. Every error names
//! the field it is about. Secret values are written `env:NAME` or `file:PATH` (relative to the config
//! file) and resolved at load (`secret.rs`); a resolved secret never appears in `Debug` output.
//! What the types cannot check is checked in `validate.rs`.

mod area;
mod audit;
mod human;
mod notifications;
mod secret;
mod telemetry;
mod tenants;
mod throttle;
mod validate;

pub(crate) use area::Area;
pub(crate) use audit::{AuditConfig, AuditSink};
pub(crate) use notifications::NotificationsConfig;
pub(crate) use secret::Secret;
pub(crate) use telemetry::TelemetryConfig;
pub(crate) use tenants::{JwksConfig, KeyConfig, TenantConfig};
#[cfg(test)]
pub(crate) use throttle::BudgetGroup;
pub(crate) use throttle::{DEFAULT_GROUP, MAX_GROUPS, ThrottleConfig};
pub(crate) use validate::check_key_url;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// A configuration that cannot be used, with the field it is about.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `tenants[0].keys[1].alg`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how the gateway listens.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Agora's Console API (or the embedded sandbox) and the account's credentials.
    pub(crate) upstream: UpstreamConfig,
    /// The one upstream budget, shared by every tenant and replica.
    #[serde(default)]
    pub(crate) throttle: ThrottleConfig,
    /// The shared response cache.
    #[serde(default)]
    pub(crate) cache: CacheConfig,
    /// How tenants' JWKS are fetched and kept fresh.
    #[serde(default)]
    pub(crate) jwks: JwksConfig,
    /// Where the audit trail of writes and admin actions goes.
    #[serde(default)]
    pub(crate) audit: AuditConfig,
    /// The internal services that may call the gateway, one entry per tenant.
    #[serde(default)]
    pub(crate) tenants: Vec<TenantConfig>,
    /// Projects whose channel state comes from Agora's notifications (NCS), one entry each.
    #[serde(default)]
    pub(crate) notifications: Vec<NotificationsConfig>,
    /// Tracing: OpenTelemetry spans, exported over OTLP/HTTP when an endpoint is given.
    #[serde(default)]
    pub(crate) telemetry: TelemetryConfig,
    /// The demo's configuration (not a setting: the demo command sets it).
    #[serde(skip)]
    pub(crate) demo: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Address to listen on.
    pub(crate) listen: SocketAddr,
    /// Longest a request may take in the gateway, queueing included; default `throttle.max_wait` + `upstream.timeout` + 1 s.
    #[serde(deserialize_with = "human::optional_duration")]
    pub(crate) request_timeout: Option<Duration>,
    /// Largest request body accepted (Console API bodies are tiny).
    pub(crate) max_body: ByteSize,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) shutdown_grace: Duration,
    /// On SIGTERM, how long `/readyz` answers 503 while every request (on open and new
    /// connections) is still served, before the listener closes: the time a load balancer takes
    /// to stop sending (Kubernetes: `5s`).
    #[serde(deserialize_with = "human::duration")]
    pub(crate) shutdown_delay: Duration,
    /// Log format: `text` or `json`.
    pub(crate) log_format: LogFormat,
    /// How long a verified token is remembered (by its SHA-256), capped by its own `exp`.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) token_cache_ttl: Duration,
    /// Longest a token may live: `exp` at most this far past `iat` and past now (`"off"`: no limit).
    #[serde(deserialize_with = "human::optional_duration_or_off")]
    pub(crate) max_token_lifetime: Option<Duration>,
    /// Time a client has to send a request's headers, counted from when the connection is ready
    /// for a request — so also how long an idle keep-alive connection stays open.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub(crate) max_header_bytes: ByteSize,
    /// Most client connections open at once, over both listeners; more wait in the listen backlog.
    /// Also kept below the process's open-file limit.
    pub(crate) max_connections: usize,
    /// Most connections open at once from one client address (none: no cap). Behind a load
    /// balancer every connection comes from its addresses: leave it out there.
    pub(crate) max_connections_per_ip: Option<usize>,
    /// A connection whose writes make no progress for this long (a client that does not read its
    /// answers) is closed, and its place freed.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) write_timeout: Duration,
    /// A second address serving `/healthz`, `/readyz` (with reasons) and `/metrics` without a
    /// token, for probes and scrapers; bind it where only they can reach it. Without it, `/metrics`
    /// needs a token with the `admin` scope and `/readyz` tells others only ready or not.
    pub(crate) admin_listen: Option<SocketAddr>,
    /// A third address, serving only Agora's notices (`POST /agora/ncs/{appid}`, on `listen` too).
    pub(crate) notifications_listen: Option<SocketAddr>,
    /// Worker threads of the runtime (`serve` only); one per CPU when left out.
    pub(crate) worker_threads: Option<usize>,
    /// How the main listener's connections are served: `per-core` (a single-threaded runtime on
    /// each worker thread, all accepting from the listener: a connection stays on its thread) or
    /// `shared` (one work-stealing runtime).
    pub(crate) runtime: RuntimeKind,
    /// `per-core`: the share of a core's time (over 20 ms) from which a serving thread counts as
    /// busy. New connections go to the first thread that is not; a busy thread hands connections,
    /// between two requests, to one at least 0.25 less busy.
    pub(crate) busy_threshold: f64,
    /// `per-core`: the idle time (in cores, over at least 200 ms) that the cores the process may
    /// run on must have had for a busy serving thread to hand connections over; 0: whatever it is.
    pub(crate) idle_to_move: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RuntimeKind {
    #[default]
    PerCore,
    Shared,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            request_timeout: None,
            max_body: ByteSize::kib(64),
            shutdown_grace: Duration::from_secs(10),
            shutdown_delay: Duration::ZERO,
            log_format: LogFormat::Text,
            token_cache_ttl: Duration::from_secs(60),
            max_token_lifetime: Some(Duration::from_secs(7 * 86_400)),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: ByteSize::kib(16),
            max_connections: 1024,
            max_connections_per_ip: None,
            write_timeout: Duration::from_secs(30),
            admin_listen: None,
            notifications_listen: None,
            worker_threads: None,
            runtime: RuntimeKind::PerCore,
            busy_threshold: 0.97,
            idle_to_move: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `upstream.base_url` value that runs the embedded sandbox in-process.
pub(crate) const EMBEDDED_SANDBOX: &str = "sandbox";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamConfig {
    /// Base URL of the Console API (`https://api.agora.io/dev`), or `sandbox` for the embedded simulator.
    #[serde(default)]
    pub(crate) base_url: String,
    /// Base URLs of the Console API on several domains, in order of preference (instead of
    /// `base_url`): calls go to the first that answers.
    #[serde(default)]
    pub(crate) base_urls: Vec<String>,
    /// Agora's failover ladder for a region (`area.rs`), when neither base URL setting is given.
    #[serde(default)]
    pub(crate) area: Option<Area>,
    /// Customer ID (Basic user name); optional with `sandbox`, which then makes one up.
    #[serde(default)]
    pub(crate) customer_id: Option<Secret>,
    /// Customer secret (Basic password); optional with `sandbox`, which then makes one up.
    #[serde(default)]
    pub(crate) customer_secret: Option<Secret>,
    /// Timeout of one upstream call (connect, send, receive).
    #[serde(default = "defaults::upstream_timeout", deserialize_with = "human::duration")]
    pub(crate) timeout: Duration,
    /// Timeout of connecting to the upstream.
    #[serde(default = "defaults::connect_timeout", deserialize_with = "human::duration")]
    pub(crate) connect_timeout: Duration,
    /// Longest the budget pauses when Agora answers 429 with a `Retry-After`; a longer one is cut to this.
    #[serde(default = "defaults::max_retry_after", deserialize_with = "human::duration")]
    pub(crate) max_retry_after: Duration,
    /// An HTTP(S) proxy for the upstream calls (`http://proxy:3128`). Without it the gateway
    /// connects directly, whatever `HTTP(S)_PROXY` say.
    #[serde(default)]
    pub(crate) proxy: Option<Secret>,
}

impl UpstreamConfig {
    pub(crate) fn is_embedded_sandbox(&self) -> bool {
        self.base_url == EMBEDDED_SANDBOX
    }

    /// The API's base URLs, in order of preference: `base_urls`, `base_url`, or the area's ladder.
    pub(crate) fn domains(&self) -> Vec<String> {
        match (self.base_urls.is_empty(), self.base_url.is_empty(), self.area) {
            (false, _, _) => self.base_urls.clone(),
            (true, true, Some(area)) => area.ladder(),
            _ => vec![self.base_url.clone()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheConfig {
    /// How long project reads (list, get) stay fresh.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) project_ttl: Duration,
    /// How long channel reads and kicking-rule lists stay fresh.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) channel_ttl: Duration,
    /// How long usage reads stay fresh.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) usage_ttl: Duration,
    /// How long Agora's own addresses (`get_ncs_ips`) stay fresh: Agora asks for them at least
    /// every 24 hours.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) addresses_ttl: Duration,
    /// How long past its freshness an entry may still be served (`X-Cache: STALE`) when the upstream fails.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) stale_for: Duration,
    /// Bound of the cache's memory, counted in bytes of the entries.
    pub(crate) max_bytes: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            project_ttl: Duration::from_secs(60),
            channel_ttl: Duration::from_secs(5),
            usage_ttl: Duration::from_secs(300),
            addresses_ttl: Duration::from_secs(24 * 3600),
            stale_for: Duration::from_secs(300),
            max_bytes: ByteSize::mib(64),
        }
    }
}

mod defaults {
    use std::time::Duration;

    pub(crate) fn upstream_timeout() -> Duration {
        Duration::from_secs(10)
    }

    pub(crate) fn connect_timeout() -> Duration {
        Duration::from_secs(3)
    }

    pub(crate) fn max_retry_after() -> Duration {
        Duration::from_secs(60)
    }

    pub(crate) fn weight() -> u32 {
        1
    }
}

impl Config {
    /// Reads, parses, resolves and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::new("config", format!("reading {}: {error}", path.display())))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &base_dir)
    }

    /// Parses TOML text; `file:` paths are relative to `base_dir`. Errors name the field or the
    /// line, never the value written there (it may be a secret).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|error| {
            let at = error.span().map(|span| line_and_column(text, span.start)).unwrap_or_default();
            ConfigError::new("config", format!("{at}{}", redact(error.message())))
        })?;
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let field = error.path().to_string();
            ConfigError::new(
                if field == "." { "config".to_string() } else { field },
                redact(error.into_inner().message()),
            )
        })?;
        config.resolve_secrets(base_dir)?;
        if let Some(path) = &mut config.audit.path {
            *path = base_dir.join(&*path);
        }
        config.validate()?;
        Ok(config)
    }

    /// The request timeout, defaulting to room for the longest queue wait plus one upstream call.
    pub(crate) fn request_timeout(&self) -> Duration {
        let default =
            self.throttle.max_wait.saturating_add(self.upstream.timeout).saturating_add(Duration::from_secs(1));
        self.server.request_timeout.unwrap_or(default)
    }
}

/// `line L, column C: ` of a byte offset in `text`.
fn line_and_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
    format!("line {line}, column {column}: ")
}

/// A parser's message without the value it quotes: `invalid type: string "s3cret", expected ...`
/// becomes `invalid type: a string, expected ...`; anything else quoted becomes `"…"`.
fn redact(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected")
        {
            let kind = found.split([' ', '`', '"']).next().unwrap_or("value");
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    let mut redacted = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                redacted.push_str("\"…");
            } else {
                redacted.push('"');
            }
            quoted = !quoted;
        } else if !quoted {
            redacted.push(c);
        }
    }
    redacted
}

#[cfg(test)]
mod tests;
