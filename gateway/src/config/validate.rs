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
        if let Some(proxy) = &mut self.upstream.proxy {
            proxy.resolve(base_dir, "upstream.proxy")?;
        }
        for (i, entry) in self.notifications.iter_mut().enumerate() {
            entry.secret.resolve(base_dir, &format!("notifications[{i}].secret"))?;
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
        self.validate_durations()?;
        self.validate_upstream()?;
        self.validate_throttle()?;
        self.validate_cache_and_server()?;
        self.validate_tenants()?;
        super::notifications::validate(&self.notifications, self.server.notifications_listen.is_some())?;
        self.telemetry.validate()?;
        self.validate_ownership()
    }

    /// Every duration within a range that makes sense — so that no deadline computed from them
    /// can overflow either.
    fn validate_durations(&self) -> Result<(), ConfigError> {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        let (server, upstream, cache) = (&self.server, &self.upstream, &self.cache);
        let bounded = [
            ("server.request_timeout", server.request_timeout, HOUR),
            ("server.shutdown_grace", Some(server.shutdown_grace), HOUR),
            ("server.shutdown_delay", Some(server.shutdown_delay), HOUR),
            ("server.token_cache_ttl", Some(server.token_cache_ttl), HOUR),
            ("server.max_token_lifetime", server.max_token_lifetime, 3650 * DAY),
            ("server.header_read_timeout", Some(server.header_read_timeout), HOUR),
            ("server.write_timeout", Some(server.write_timeout), HOUR),
            ("upstream.timeout", Some(upstream.timeout), HOUR),
            ("upstream.connect_timeout", Some(upstream.connect_timeout), HOUR),
            ("upstream.max_retry_after", Some(upstream.max_retry_after), DAY),
            ("throttle.max_wait", Some(self.throttle.max_wait), HOUR),
            ("cache.project_ttl", Some(cache.project_ttl), DAY),
            ("cache.channel_ttl", Some(cache.channel_ttl), DAY),
            ("cache.usage_ttl", Some(cache.usage_ttl), DAY),
            ("cache.addresses_ttl", Some(cache.addresses_ttl), DAY),
            ("cache.stale_for", Some(cache.stale_for), 7 * DAY),
            ("jwks.unknown_kid_cooldown", Some(self.jwks.unknown_kid_cooldown), DAY),
            ("jwks.refresh_min", Some(self.jwks.refresh_min), DAY),
            ("jwks.refresh_max", Some(self.jwks.refresh_max), 7 * DAY),
            ("jwks.timeout", Some(self.jwks.timeout), HOUR),
        ];
        for (field, value, most) in bounded {
            if value.is_some_and(|value| value > Duration::from_secs(most)) {
                let most = humantime::format_duration(Duration::from_secs(most));
                return Err(ConfigError::new(field, format!("must be at most {most}")));
            }
        }
        if server.header_read_timeout.is_zero() {
            return Err(ConfigError::new("server.header_read_timeout", "must be more than 0"));
        }
        let jwks = &self.jwks;
        if jwks.timeout.is_zero() || jwks.refresh_min.is_zero() {
            return Err(ConfigError::new("jwks", "timeout and refresh_min must be more than 0"));
        }
        // Floors: a fetch per random `kid`, or a refresh loop, would hammer an identity provider.
        if jwks.unknown_kid_cooldown < Duration::from_secs(1) {
            return Err(ConfigError::new("jwks.unknown_kid_cooldown", "must be at least 1s"));
        }
        if jwks.refresh_min < Duration::from_secs(10) {
            return Err(ConfigError::new("jwks.refresh_min", "must be at least 10s"));
        }
        if jwks.refresh_min > jwks.refresh_max {
            return Err(ConfigError::new("jwks.refresh_min", "must not be longer than jwks.refresh_max"));
        }
        if server.max_token_lifetime.is_some_and(|lifetime| lifetime.is_zero()) {
            return Err(ConfigError::new("server.max_token_lifetime", "must be more than 0 (or \"off\")"));
        }
        Ok(())
    }

    /// No project may belong to two tenants: no name prefix may start another tenant's, and no
    /// project ID may be listed by two tenants (one tenant could read, write and squat the
    /// other's projects).
    fn validate_ownership(&self) -> Result<(), ConfigError> {
        for (t, tenant) in self.tenants.iter().enumerate() {
            for (o, other) in self.tenants.iter().enumerate().take(t) {
                if let (Some(mine), Some(theirs)) = (&tenant.project_name_prefix, &other.project_name_prefix)
                    && (mine.starts_with(theirs.as_str()) || theirs.starts_with(mine.as_str()))
                {
                    return Err(ConfigError::new(
                        format!("tenants[{t}].project_name_prefix"),
                        format!(
                            "{mine:?} (tenant {:?}) and {theirs:?} (tenant {:?}, tenants[{o}]) overlap: a project \
                             named with the longer one would belong to both",
                            tenant.id, other.id
                        ),
                    ));
                }
                if let Some(id) = tenant.project_ids.iter().find(|id| other.project_ids.contains(id)) {
                    return Err(ConfigError::new(
                        format!("tenants[{t}].project_ids"),
                        format!(
                            "project {id:?} is listed by tenant {:?} and by tenant {:?} (tenants[{o}]): a project \
                             belongs to one tenant",
                            tenant.id, other.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_upstream(&self) -> Result<(), ConfigError> {
        let upstream = &self.upstream;
        if upstream.is_embedded_sandbox() && !crate::embedded::AVAILABLE {
            return Err(ConfigError::new(
                "upstream.base_url",
                "\"sandbox\" needs the embedded sandbox, and this build has none (built without the `demo` feature)",
            ));
        }
        match (upstream.base_url.is_empty(), upstream.base_urls.is_empty()) {
            (true, true) if upstream.area.is_none() => {
                return Err(ConfigError::new("upstream.base_url", "is required (or base_urls, or area)"));
            }
            (false, false) => {
                return Err(ConfigError::new("upstream.base_urls", "either base_url or base_urls, not both"));
            }
            _ => {}
        }
        if !upstream.is_embedded_sandbox() {
            for (n, base_url) in upstream.domains().iter().enumerate() {
                let field = match (upstream.base_urls.is_empty(), upstream.base_url.is_empty()) {
                    (false, _) => format!("upstream.base_urls[{n}]"),
                    (true, false) => "upstream.base_url".to_string(),
                    (true, true) => "upstream.area".to_string(),
                };
                if base_url == crate::config::EMBEDDED_SANDBOX {
                    return Err(ConfigError::new(field, "\"sandbox\" is a base_url of its own, not one of base_urls"));
                }
                let url = reqwest::Url::parse(base_url).map_err(|error| {
                    ConfigError::new(field.clone(), format!("not a URL ({error}); use an https URL or \"sandbox\""))
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::new(field, "must be an http(s) URL or \"sandbox\""));
                }
            }
            if upstream.customer_id.is_none() {
                return Err(ConfigError::new("upstream.customer_id", "is required unless base_url is \"sandbox\""));
            }
            if upstream.customer_secret.is_none() {
                return Err(ConfigError::new("upstream.customer_secret", "is required unless base_url is \"sandbox\""));
            }
        }
        if let Some(proxy) = &upstream.proxy {
            let url = reqwest::Url::parse(proxy.expose())
                .map_err(|_| ConfigError::new("upstream.proxy", "not a URL; use http://host:port"))?;
            if !matches!(url.scheme(), "http" | "https" | "socks5") {
                return Err(ConfigError::new("upstream.proxy", "must be an http(s):// or socks5:// URL"));
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
        // Agora grants 10 per second; a typo of a few zeros would spend an account's budget many
        // times over (and turn the slot spacing to nothing).
        if !(1..=1000).contains(&throttle.rate) {
            return Err(ConfigError::new("throttle.rate", "must be between 1 and 1000 (Agora grants 10 per second)"));
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
        throttle.validate_groups()
    }

    fn validate_cache_and_server(&self) -> Result<(), ConfigError> {
        let cache = &self.cache;
        if cache.max_bytes.as_u64() < 64 * 1024 {
            return Err(ConfigError::new("cache.max_bytes", "must be at least 64KiB"));
        }
        match (self.audit.sink, &self.audit.path) {
            (super::AuditSink::File, None) => {
                return Err(ConfigError::new("audit.path", "is required with sink = \"file\""));
            }
            (super::AuditSink::Log, Some(_)) => {
                return Err(ConfigError::new("audit.path", "is for sink = \"file\" (the sink is \"log\")"));
            }
            _ => {}
        }
        let server = &self.server;
        if server.max_body.as_u64() == 0 {
            return Err(ConfigError::new("server.max_body", "must be more than 0"));
        }
        if !(1024..=1024 * 1024).contains(&server.max_header_bytes.as_u64()) {
            return Err(ConfigError::new("server.max_header_bytes", "must be between 1KiB and 1MiB"));
        }
        if server.worker_threads.is_some_and(|workers| !(1..=256).contains(&workers)) {
            return Err(ConfigError::new("server.worker_threads", "must be between 1 and 256"));
        }
        if !(0.0..=1.0).contains(&server.busy_threshold) {
            return Err(ConfigError::new(
                "server.busy_threshold",
                "must be between 0 and 1 (a share of a core's time)",
            ));
        }
        if !(0.0..=1024.0).contains(&server.idle_to_move) {
            return Err(ConfigError::new("server.idle_to_move", "must be between 0 and 1024 (cores of idle time)"));
        }
        if server.max_connections == 0 {
            return Err(ConfigError::new("server.max_connections", "must be at least 1"));
        }
        if server.max_connections_per_ip == Some(0) {
            return Err(ConfigError::new(
                "server.max_connections_per_ip",
                "must be at least 1 (leave it out for no cap)",
            ));
        }
        if server.write_timeout.is_zero() {
            return Err(ConfigError::new("server.write_timeout", "must be more than 0"));
        }
        if server.admin_listen == Some(server.listen) && server.listen.port() != 0 {
            return Err(ConfigError::new("server.admin_listen", "must differ from server.listen"));
        }
        if let Some(notifications) = server.notifications_listen
            && notifications.port() != 0
            && (notifications == server.listen || Some(notifications) == server.admin_listen)
        {
            return Err(ConfigError::new("server.notifications_listen", "must differ from listen and admin_listen"));
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
            if tenant.keys.is_empty() && !tenant.has_jwks() {
                return Err(ConfigError::new(field("keys"), "at least one key, or a jwks_url, is needed"));
            }
            if tenant.jwks_url.is_some() && tenant.issuer_discovery {
                return Err(ConfigError::new(
                    field("issuer_discovery"),
                    "either jwks_url or issuer_discovery, not both",
                ));
            }
            let insecure = tenant.allow_insecure_jwks;
            if let Some(url) = &tenant.jwks_url {
                check_key_url(url, insecure).map_err(|why| ConfigError::new(field("jwks_url"), why))?;
            }
            if tenant.issuer_discovery {
                check_key_url(&tenant.issuer, insecure).map_err(|why| {
                    ConfigError::new(field("issuer"), format!("issuer_discovery needs the issuer to be a URL: {why}"))
                })?;
            }
            for (a, alg) in tenant.algorithms.iter().enumerate() {
                match crate::auth::keys::parse_algorithm(alg) {
                    Ok(alg) if !crate::auth::keys::is_hmac(alg) => {}
                    Ok(_) => {
                        return Err(ConfigError::new(
                            field(&format!("algorithms[{a}]")),
                            "JWKS keys are public keys: HS* algorithms are not accepted from a JWKS",
                        ));
                    }
                    Err(error) => return Err(ConfigError::new(field(&format!("algorithms[{a}]")), error.to_string())),
                }
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

/// An http(s) URL, or why not.
/// A URL keys are fetched from: `https://`, or `http://` only with `allow_insecure_jwks` (anyone
/// on the path of a plain fetch could add keys and mint the tenant's tokens).
pub(crate) fn check_key_url(url: &str, allow_insecure: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("not a URL ({error})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure => Ok(()),
        "http" => Err("must be an https URL (keys fetched over plain http could be replaced on the way; \
                       allow_insecure_jwks = true for a local identity provider)"
            .into()),
        _ => Err("must be an https URL".into()),
    }
}
