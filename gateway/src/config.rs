//! The gateway's configuration: one TOML file, parsed and validated once at start. Every error names
//! the field it is about. Secret values are written `env:NAME` or `file:PATH` (relative to the config
//! file) and resolved at load; a resolved secret never appears in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer};

use crate::policy::Scope;

/// A configuration that cannot be used, with the field it is about.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `tenants[0].keys[1].alg`.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how the gateway listens.
    #[serde(default)]
    pub server: ServerConfig,
    /// Agora's Console API (or the embedded sandbox) and the account's credentials.
    pub upstream: UpstreamConfig,
    /// The one upstream budget, shared by every tenant and replica.
    #[serde(default)]
    pub throttle: ThrottleConfig,
    /// The shared response cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The internal services that may call the gateway, one entry per tenant.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Longest a request may take in the gateway, queueing included; default `throttle.max_wait` + `upstream.timeout` + 1 s.
    #[serde(deserialize_with = "human::optional_duration")]
    pub request_timeout: Option<Duration>,
    /// Largest request body accepted (Console API bodies are tiny).
    pub max_body: ByteSize,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish.
    #[serde(deserialize_with = "human::duration")]
    pub shutdown_grace: Duration,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// How long a verified token is remembered (by its SHA-256), capped by its own `exp`.
    #[serde(deserialize_with = "human::duration")]
    pub token_cache_ttl: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            request_timeout: None,
            max_body: ByteSize::kib(64),
            shutdown_grace: Duration::from_secs(10),
            log_format: LogFormat::Text,
            token_cache_ttl: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `upstream.base_url` value that runs the embedded sandbox in-process.
pub const EMBEDDED_SANDBOX: &str = "sandbox";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the Console API (`https://api.agora.io/dev`), or `sandbox` for the embedded simulator.
    pub base_url: String,
    /// Customer ID (Basic user name); optional with `sandbox`, which then makes one up.
    #[serde(default)]
    pub customer_id: Option<Secret>,
    /// Customer secret (Basic password); optional with `sandbox`, which then makes one up.
    #[serde(default)]
    pub customer_secret: Option<Secret>,
    /// Timeout of one upstream call (connect, send, receive).
    #[serde(default = "defaults::upstream_timeout", deserialize_with = "human::duration")]
    pub timeout: Duration,
    /// Timeout of connecting to the upstream.
    #[serde(default = "defaults::connect_timeout", deserialize_with = "human::duration")]
    pub connect_timeout: Duration,
}

impl UpstreamConfig {
    pub fn is_embedded_sandbox(&self) -> bool {
        self.base_url == EMBEDDED_SANDBOX
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Upstream calls per second for the whole deployment (Agora allows 10 per account).
    pub rate: u32,
    /// Slots that may be taken at once after idle time. Above 1, the spacing grows so that no
    /// one-second window ever holds more than `rate` calls.
    pub burst: u32,
    /// Longest a request may queue for a slot; a request that would wait longer gets 429 at once.
    #[serde(deserialize_with = "human::duration")]
    pub max_wait: Duration,
    /// Extra spacing between slots, as a fraction of the interval, so that late timers never crowd
    /// more than `rate` calls into one second at Agora.
    pub safety_margin: f64,
    /// Redis shared by the replicas (`redis://host:6379/`): every replica takes its slots there.
    pub redis_url: Option<Secret>,
    /// Replicas assumed while Redis is unreachable and no heartbeat was seen (each then spends `rate / replicas`).
    pub replicas: Option<u32>,
    /// Prefix of the gateway's Redis keys; the customer ID is appended, one budget per account.
    pub redis_key_prefix: String,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            rate: 10,
            burst: 1,
            max_wait: Duration::from_secs(5),
            safety_margin: 0.02,
            redis_url: None,
            replicas: None,
            redis_key_prefix: "agora-gateway".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long project reads (list, get) stay fresh.
    #[serde(deserialize_with = "human::duration")]
    pub project_ttl: Duration,
    /// How long channel reads and kicking-rule lists stay fresh.
    #[serde(deserialize_with = "human::duration")]
    pub channel_ttl: Duration,
    /// How long usage reads stay fresh.
    #[serde(deserialize_with = "human::duration")]
    pub usage_ttl: Duration,
    /// How long past its freshness an entry may still be served (`X-Cache: STALE`) when the upstream fails.
    #[serde(deserialize_with = "human::duration")]
    pub stale_for: Duration,
    /// Bound of the cache's memory, counted in bytes of the entries.
    pub max_bytes: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            project_ttl: Duration::from_secs(60),
            channel_ttl: Duration::from_secs(5),
            usage_ttl: Duration::from_secs(300),
            stale_for: Duration::from_secs(300),
            max_bytes: ByteSize::mib(64),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant ID, as it appears in logs and metrics.
    pub id: String,
    /// The `iss` of this tenant's tokens; unique across tenants.
    pub issuer: String,
    /// The `aud` this tenant's tokens must carry.
    pub audience: String,
    /// Scopes this tenant may hold; a token's `scope` is cut down to these.
    pub scopes: Vec<Scope>,
    /// The tenant owns every project whose name starts with this, and may create projects so named.
    #[serde(default)]
    pub project_name_prefix: Option<String>,
    /// Further projects the tenant owns, by project ID.
    #[serde(default)]
    pub project_ids: Vec<String>,
    /// Share of the upstream budget under contention, relative to the other tenants.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Keys that verify this tenant's tokens, chosen by the token's `kid`; several at once for rotation.
    pub keys: Vec<KeyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key ID, matched against the token header's `kid`.
    pub kid: String,
    /// The one algorithm this key verifies (HS256/384/512, RS256/384/512, PS256, ES256/384, EdDSA).
    pub alg: String,
    /// Shared secret of an HS* key.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// PEM public key of an RS*/PS*/ES*/EdDSA key.
    #[serde(default)]
    pub public_key: Option<Secret>,
    /// JWK (JSON) public key, instead of `public_key`.
    #[serde(default)]
    pub jwk: Option<Secret>,
}

mod defaults {
    use std::time::Duration;

    pub fn upstream_timeout() -> Duration {
        Duration::from_secs(10)
    }

    pub fn connect_timeout() -> Duration {
        Duration::from_secs(3)
    }

    pub fn weight() -> u32 {
        1
    }
}

/// A secret value: written `env:NAME`, `file:PATH` or literally, resolved at load.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct Secret {
    reference: String,
    value: Option<String>,
}

impl From<String> for Secret {
    fn from(reference: String) -> Self {
        Self { reference, value: None }
    }
}

impl Secret {
    /// A secret given by value (the demo, tests).
    pub fn literal(value: impl Into<String>) -> Self {
        let value = value.into();
        Self { reference: "<literal>".into(), value: Some(value) }
    }

    /// The resolved value (empty if never resolved, which `Config::load` rules out).
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or_default()
    }

    fn resolve(&mut self, base_dir: &Path, field: &str) -> Result<(), ConfigError> {
        if self.value.is_some() {
            return Ok(());
        }
        let value = if let Some(name) = self.reference.strip_prefix("env:") {
            std::env::var(name)
                .map_err(|_| ConfigError::new(field, format!("environment variable {name} is not set")))?
        } else if let Some(path) = self.reference.strip_prefix("file:") {
            let path = base_dir.join(path);
            std::fs::read_to_string(&path)
                .map_err(|error| ConfigError::new(field, format!("reading {}: {error}", path.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_string()
        } else {
            std::mem::replace(&mut self.reference, "<literal>".into())
        };
        if value.is_empty() {
            return Err(ConfigError::new(field, "the value is empty"));
        }
        self.value = Some(value);
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.reference)
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

    /// Parses TOML text; `file:` paths are relative to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|error| ConfigError::new("config", error.to_string()))?;
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let field = error.path().to_string();
            ConfigError::new(
                if field == "." { "config".to_string() } else { field },
                error.into_inner().message().to_string(),
            )
        })?;
        config.resolve_secrets(base_dir)?;
        config.validate()?;
        Ok(config)
    }

    fn resolve_secrets(&mut self, base_dir: &Path) -> Result<(), ConfigError> {
        let upstream = &mut self.upstream;
        for (field, secret) in [
            ("upstream.customer_id", &mut upstream.customer_id),
            ("upstream.customer_secret", &mut upstream.customer_secret),
        ] {
            if let Some(secret) = secret {
                secret.resolve(base_dir, field)?;
            }
        }
        if let Some(url) = &mut self.throttle.redis_url {
            url.resolve(base_dir, "throttle.redis_url")?;
        }
        for (t, tenant) in self.tenants.iter_mut().enumerate() {
            for (k, key) in tenant.keys.iter_mut().enumerate() {
                for (name, secret) in
                    [("secret", &mut key.secret), ("public_key", &mut key.public_key), ("jwk", &mut key.jwk)]
                {
                    if let Some(secret) = secret {
                        secret.resolve(base_dir, &format!("tenants[{t}].keys[{k}].{name}"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks what the types cannot: ranges, uniqueness, and key material matching its algorithm.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let upstream = &self.upstream;
        if !upstream.is_embedded_sandbox() {
            let url = reqwest::Url::parse(&upstream.base_url).map_err(|error| {
                ConfigError::new("upstream.base_url", format!("not a URL ({error}); use an https URL or \"sandbox\""))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::new("upstream.base_url", "must be an http(s) URL or \"sandbox\""));
            }
            if upstream.customer_id.is_none() {
                return Err(ConfigError::new("upstream.customer_id", "is required unless base_url is \"sandbox\""));
            }
            if upstream.customer_secret.is_none() {
                return Err(ConfigError::new("upstream.customer_secret", "is required unless base_url is \"sandbox\""));
            }
        }
        if upstream.timeout.is_zero() {
            return Err(ConfigError::new("upstream.timeout", "must be more than 0"));
        }
        if let Some(timeout) = self.server.request_timeout
            && timeout <= upstream.timeout
        {
            return Err(ConfigError::new(
                "server.request_timeout",
                format!(
                    "must be longer than upstream.timeout ({:?}): it covers the queue and the call",
                    upstream.timeout
                ),
            ));
        }

        let throttle = &self.throttle;
        if throttle.rate == 0 {
            return Err(ConfigError::new("throttle.rate", "must be at least 1"));
        }
        if throttle.burst == 0 || throttle.burst > throttle.rate {
            return Err(ConfigError::new(
                "throttle.burst",
                format!("must be between 1 and throttle.rate ({})", throttle.rate),
            ));
        }
        if throttle.max_wait.is_zero() {
            return Err(ConfigError::new("throttle.max_wait", "must be more than 0"));
        }
        if !(0.0..=0.5).contains(&throttle.safety_margin) {
            return Err(ConfigError::new("throttle.safety_margin", "must be between 0.0 and 0.5"));
        }
        if throttle.replicas == Some(0) {
            return Err(ConfigError::new("throttle.replicas", "must be at least 1"));
        }
        if let Some(url) = &throttle.redis_url
            && !url.expose().starts_with("redis://")
            && !url.expose().starts_with("rediss://")
        {
            return Err(ConfigError::new("throttle.redis_url", "must start with redis:// or rediss://"));
        }
        if throttle.redis_key_prefix.is_empty() {
            return Err(ConfigError::new("throttle.redis_key_prefix", "must not be empty"));
        }

        let cache = &self.cache;
        for (field, ttl) in [
            ("cache.project_ttl", cache.project_ttl),
            ("cache.channel_ttl", cache.channel_ttl),
            ("cache.usage_ttl", cache.usage_ttl),
        ] {
            if ttl > Duration::from_secs(86_400) {
                return Err(ConfigError::new(field, "must be at most 24h"));
            }
        }
        if cache.max_bytes.as_u64() < 64 * 1024 {
            return Err(ConfigError::new("cache.max_bytes", "must be at least 64KiB"));
        }
        if self.server.max_body.as_u64() == 0 {
            return Err(ConfigError::new("server.max_body", "must be more than 0"));
        }

        if self.tenants.is_empty() {
            return Err(ConfigError::new("tenants", "at least one tenant is needed: nobody could call the gateway"));
        }
        for (t, tenant) in self.tenants.iter().enumerate() {
            let field = |name: &str| format!("tenants[{t}].{name}");
            for (name, value) in [("id", &tenant.id), ("issuer", &tenant.issuer), ("audience", &tenant.audience)] {
                if value.trim().is_empty() {
                    return Err(ConfigError::new(field(name), "must not be empty"));
                }
            }
            if let Some(other) = self.tenants[..t].iter().position(|o| o.id == tenant.id) {
                return Err(ConfigError::new(
                    field("id"),
                    format!("{:?} is also the id of tenants[{other}]", tenant.id),
                ));
            }
            if let Some(other) = self.tenants[..t].iter().position(|o| o.issuer == tenant.issuer) {
                return Err(ConfigError::new(
                    field("issuer"),
                    format!("{:?} is also the issuer of tenants[{other}]: the issuer picks the tenant", tenant.issuer),
                ));
            }
            if tenant.weight == 0 || tenant.weight > 1000 {
                return Err(ConfigError::new(field("weight"), "must be between 1 and 1000"));
            }
            if tenant.project_name_prefix.as_deref() == Some("") {
                return Err(ConfigError::new(field("project_name_prefix"), "must not be empty (leave it out instead)"));
            }
            if tenant.keys.is_empty() {
                return Err(ConfigError::new(field("keys"), "at least one key is needed"));
            }
            for (k, key) in tenant.keys.iter().enumerate() {
                if tenant.keys[..k].iter().any(|other| other.kid == key.kid) {
                    return Err(ConfigError::new(
                        field(&format!("keys[{k}].kid")),
                        format!("{:?} appears twice", key.kid),
                    ));
                }
                crate::auth::keys::VerifyingKey::from_config(key)
                    .map_err(|message| ConfigError::new(field(&format!("keys[{k}]")), message))?;
            }
        }
        Ok(())
    }

    /// The request timeout, defaulting to room for the longest queue wait plus one upstream call.
    pub fn request_timeout(&self) -> Duration {
        self.server.request_timeout.unwrap_or(self.throttle.max_wait + self.upstream.timeout + Duration::from_secs(1))
    }
}

/// Durations in human form (`500ms`, `5s`, `1h 30m`).
mod human {
    use super::*;

    pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|error| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"5s\" or \"250ms\": {error}"))
        })
    }

    pub fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        duration(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [upstream]
        base_url = "sandbox"

        [[tenants]]
        id = "acme"
        issuer = "https://auth.acme.example"
        audience = "agora-gateway"
        scopes = ["projects:read"]
        project_name_prefix = "acme-"
        keys = [{ kid = "k1", alg = "HS256", secret = "0123456789abcdef0123456789abcdef" }]
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("."))
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.throttle.rate, 10);
        assert_eq!(config.throttle.burst, 1);
        assert_eq!(config.throttle.max_wait, Duration::from_secs(5));
        assert_eq!(config.cache.project_ttl, Duration::from_secs(60));
        assert_eq!(config.cache.max_bytes, ByteSize::mib(64));
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.request_timeout(), Duration::from_secs(16));
        assert_eq!(config.tenants[0].weight, 1);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (MINIMAL.replace("alg = \"HS256\"", "alg = \"XS256\""), "tenants[0].keys[0]"),
            (MINIMAL.replace("scopes = [\"projects:read\"]", "scopes = [\"projects:raed\"]"), "tenants[0].scopes[0]"),
            (format!("{MINIMAL}\n[throttle]\nrate = 0\n"), "throttle.rate"),
            (format!("{MINIMAL}\n[throttle]\nmax_wait = \"soon\"\n"), "throttle.max_wait"),
            (format!("{MINIMAL}\n[cache]\nmax_bytes = \"lots\"\n"), "cache.max_bytes"),
            (format!("{MINIMAL}\n[cache]\nproject_tll = \"5s\"\n"), "cache"),
            (MINIMAL.replace("\"sandbox\"", "\"https://api.agora.io/dev\""), "upstream.customer_id"),
            (MINIMAL.replace("0123456789abcdef0123456789abcdef", "short"), "tenants[0].keys[0]"),
            (
                MINIMAL.replace(
                    "secret = \"0123456789abcdef0123456789abcdef\"",
                    "secret = \"env:AGORA_GATEWAY_TEST_UNSET\"",
                ),
                "tenants[0].keys[0].secret",
            ),
        ];
        for (text, field) in cases {
            let error = parse(&text).expect_err(field);
            assert!(error.field.starts_with(field), "expected an error about {field}, got {error}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_and_files_and_never_show_in_debug() {
        let dir = std::env::temp_dir().join(format!("agora-gateway-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hs.key"), "fedcba9876543210fedcba9876543210\n").unwrap();
        let text = MINIMAL.replace("\"0123456789abcdef0123456789abcdef\"", "\"file:hs.key\"");
        let config = Config::parse(&text, &dir).unwrap();
        let secret = config.tenants[0].keys[0].secret.as_ref().unwrap();
        assert_eq!(secret.expose(), "fedcba9876543210fedcba9876543210");
        assert!(!format!("{config:?}").contains("fedcba98"), "Debug shows the reference, not the value");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tenants_are_unique_by_id_and_issuer() {
        let twice = format!("{MINIMAL}{}", &MINIMAL[MINIMAL.find("[[tenants]]").unwrap()..]);
        assert_eq!(parse(&twice).unwrap_err().field, "tenants[1].id");
        let other_id =
            format!("{MINIMAL}{}", MINIMAL[MINIMAL.find("[[tenants]]").unwrap()..].replace("\"acme\"", "\"globex\""));
        assert_eq!(parse(&other_id).unwrap_err().field, "tenants[1].issuer");
    }
}
