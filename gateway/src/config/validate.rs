//! What the configuration's types cannot check: secrets resolved, ranges, uniqueness, and key
//! material matching its algorithm. Every error names its field.

use std::path::Path;
use std::time::Duration;

use super::{Config, ConfigError};
use crate::auth::keys::VerifyingKey;

impl Config {
    pub(super) fn resolve_secrets(&mut self, base_dir: &Path) -> Result<(), ConfigError> {
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

    /// Checks what the types cannot — ranges, uniqueness, key material matching its algorithm —
    /// and parses the tenants' keys, once, for the authenticator.
    pub(crate) fn validate(&mut self) -> Result<(), ConfigError> {
        self.validate_upstream()?;
        self.validate_throttle()?;
        self.validate_cache_and_server()?;
        self.validate_tenants()
    }

    fn validate_upstream(&self) -> Result<(), ConfigError> {
        let upstream = &self.upstream;
        if upstream.is_embedded_sandbox() && !crate::embedded::AVAILABLE {
            return Err(ConfigError::new(
                "upstream.base_url",
                "\"sandbox\" needs the embedded sandbox, and this build has none (built without the `demo` feature)",
            ));
        }
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
        Ok(())
    }

    fn validate_throttle(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_cache_and_server(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Each tenant, and its keys: parsed here, kept in the config for the authenticator.
    fn validate_tenants(&mut self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(ConfigError::new("tenants", "at least one tenant is needed: nobody could call the gateway"));
        }
        for t in 0..self.tenants.len() {
            let (earlier, rest) = self.tenants.split_at_mut(t);
            let tenant = &mut rest[0];
            let field = |name: &str| format!("tenants[{t}].{name}");
            for (name, value) in [("id", &tenant.id), ("issuer", &tenant.issuer), ("audience", &tenant.audience)] {
                if value.trim().is_empty() {
                    return Err(ConfigError::new(field(name), "must not be empty"));
                }
            }
            if let Some(other) = earlier.iter().position(|o| o.id == tenant.id) {
                return Err(ConfigError::new(
                    field("id"),
                    format!("{:?} is also the id of tenants[{other}]", tenant.id),
                ));
            }
            if let Some(other) = earlier.iter().position(|o| o.issuer == tenant.issuer) {
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
            for k in 0..tenant.keys.len() {
                let (earlier_keys, rest) = tenant.keys.split_at_mut(k);
                let key = &mut rest[0];
                if earlier_keys.iter().any(|other| other.kid == key.kid) {
                    return Err(ConfigError::new(
                        field(&format!("keys[{k}].kid")),
                        format!("{:?} appears twice", key.kid),
                    ));
                }
                let parsed = VerifyingKey::from_config(key).map_err(|error| {
                    ConfigError::new(field(&format!("keys[{k}].{}", error.field())), error.to_string())
                })?;
                key.parsed = Some(parsed);
            }
        }
        Ok(())
    }
}
