//! Configuration reloaded without a restart (SIGHUP, or `POST /admin/reload` with the `admin`
//! scope): the config file is read and validated again, and what can change live is applied —
//! tenants (ids, issuers, audiences, keys, JWKS, scopes, weights, prefixes, project ids), cache
//! TTLs and `stale_for`, the throttle's rate, burst, margin and `max_wait`, token settings. In-flight
//! requests, the cache and the queue survive; a token is verified again against the new keys (no
//! verification is remembered across a reload), so removed keys and tenants stop working at once,
//! and a removed tenant's queued requests end with a 401. An invalid file changes nothing (the
//! error names the field; `agora_gateway_config_reloads_total{result="failed"}` counts it). What
//! cannot change live (listen addresses, limits, upstream, Redis) keeps its old value, and the log
//! says a restart is needed.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::metrics::ResultLabels;
use crate::state::Gateway;

/// What a reload did.
#[derive(Debug, Serialize)]
pub(crate) struct Reloaded {
    /// Tenants configured now.
    pub(crate) tenants: usize,
    /// Settings that changed in the file but apply only after a restart.
    pub(crate) restart_needed: Vec<&'static str>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("this gateway was not started from a config file: there is nothing to reload")]
    NoFile,
    #[error("the new configuration is not valid, nothing changed: {0}")]
    Invalid(String),
}

impl Gateway {
    /// Reads the config file again and applies what can change live.
    pub(crate) async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut applied = self.applied.lock().await;
        let result = self.apply(&mut applied).await;
        let (outcome, level_error) = match &result {
            Ok(_) => ("applied", None),
            Err(error) => ("failed", Some(error.to_string())),
        };
        self.metrics.config_reloads.get_or_create(&ResultLabels { result: outcome }).inc();
        match (&result, level_error) {
            (Ok(reloaded), _) => tracing::info!(
                tenants = reloaded.tenants,
                restart_needed = ?reloaded.restart_needed,
                "configuration reloaded"
            ),
            (Err(_), Some(error)) => tracing::error!(%error, "configuration reload failed: nothing changed"),
            (Err(_), None) => {}
        }
        result
    }

    async fn apply(&self, applied: &mut Config) -> Result<Reloaded, ReloadError> {
        let path = self.config_path.as_deref().ok_or(ReloadError::NoFile)?;
        let mut new = Config::load(path).map_err(|error| ReloadError::Invalid(error.to_string()))?;
        let restart_needed = keep_what_needs_a_restart(applied, &mut new);
        for setting in &restart_needed {
            tracing::warn!(setting, "changed in the config file: restart the gateway to apply it");
        }
        let (auth, lanes) = self.auth.load().reloaded(&new).map_err(ReloadError::Invalid)?;
        // New identity providers' keys first, so their tenants' tokens work the moment they are in.
        auth.fetch_new_key_sets().await;
        self.throttle.reconfigure(&new.throttle, &lanes);
        self.cache.set_timings(&new.cache);
        self.auth.store(Arc::new(auth));
        let reloaded = Reloaded { tenants: new.tenants.len(), restart_needed };
        *applied = new;
        Ok(reloaded)
    }
}

/// The settings of `new` that cannot change live are set back to `old`'s; answers those that
/// differed.
fn keep_what_needs_a_restart(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (old_server, server) = (&old.server, &mut new.server);
    let server_fields = [
        ("server.listen", old_server.listen != server.listen),
        ("server.admin_listen", old_server.admin_listen != server.admin_listen),
        ("server.notifications_listen", old_server.notifications_listen != server.notifications_listen),
        ("server.request_timeout", old_server.request_timeout != server.request_timeout),
        ("server.max_body", old_server.max_body != server.max_body),
        ("server.shutdown_grace", old_server.shutdown_grace != server.shutdown_grace),
        ("server.shutdown_delay", old_server.shutdown_delay != server.shutdown_delay),
        ("server.log_format", old_server.log_format != server.log_format),
        ("server.header_read_timeout", old_server.header_read_timeout != server.header_read_timeout),
        ("server.max_header_bytes", old_server.max_header_bytes != server.max_header_bytes),
        ("server.max_connections", old_server.max_connections != server.max_connections),
        ("server.max_connections_per_ip", old_server.max_connections_per_ip != server.max_connections_per_ip),
        ("server.write_timeout", old_server.write_timeout != server.write_timeout),
        ("server.worker_threads", old_server.worker_threads != server.worker_threads),
        ("server.runtime", old_server.runtime != server.runtime),
    ];
    changed.extend(server_fields.iter().filter(|(_, differs)| *differs).map(|(name, _)| *name));
    // Token settings apply live; the rest of [server] does not.
    let (token_cache_ttl, max_token_lifetime) = (server.token_cache_ttl, server.max_token_lifetime);
    *server = old_server.clone();
    server.token_cache_ttl = token_cache_ttl;
    server.max_token_lifetime = max_token_lifetime;

    let (old_upstream, upstream) = (&old.upstream, &new.upstream);
    let secret = |value: &Option<crate::config::Secret>| value.as_ref().map(|s| s.expose().to_string());
    let upstream_differs = old_upstream.base_url != upstream.base_url
        || old_upstream.base_urls != upstream.base_urls
        || old_upstream.area != upstream.area
        || secret(&old_upstream.customer_id) != secret(&upstream.customer_id)
        || secret(&old_upstream.customer_secret) != secret(&upstream.customer_secret)
        || secret(&old_upstream.proxy) != secret(&upstream.proxy)
        || old_upstream.timeout != upstream.timeout
        || old_upstream.connect_timeout != upstream.connect_timeout
        || old_upstream.max_retry_after != upstream.max_retry_after;
    if upstream_differs {
        changed.push("upstream");
    }
    new.upstream = old.upstream.clone();

    let (old_throttle, throttle) = (&old.throttle, &mut new.throttle);
    let redis_differs = secret(&old_throttle.redis_url) != secret(&throttle.redis_url)
        || old_throttle.redis_key_prefix != throttle.redis_key_prefix
        || old_throttle.replicas != throttle.replicas;
    if redis_differs {
        changed.push("throttle.redis_url, redis_key_prefix, replicas");
        throttle.redis_url = old_throttle.redis_url.clone();
        throttle.redis_key_prefix = old_throttle.redis_key_prefix.clone();
        throttle.replicas = old_throttle.replicas;
    }
    // Each group is a budget with its own queue and keys, made at start; their rates may change.
    if !old_throttle.same_groups(throttle) {
        changed.push("throttle.groups (names, operations)");
        throttle.groups = old_throttle.groups.clone();
    }
    if old.cache.max_bytes != new.cache.max_bytes {
        changed.push("cache.max_bytes");
        new.cache.max_bytes = old.cache.max_bytes;
    }
    // The books and their reconcilers are made once, at start.
    let notifications = |config: &Config| -> Vec<(String, String, std::time::Duration, std::time::Duration, bool)> {
        let entries = config.notifications.iter();
        entries
            .map(|n| {
                (n.appid.clone(), n.secret.expose().to_string(), n.reconcile_every, n.silence_after, n.allow_agora_ips)
            })
            .collect()
    };
    if notifications(old) != notifications(new) {
        changed.push("notifications");
        new.notifications = old.notifications.clone();
    }
    // The tracer is made once, at start.
    if old.telemetry != new.telemetry {
        changed.push("telemetry");
        new.telemetry = old.telemetry.clone();
    }
    // The sink is opened once, at start.
    if old.audit != new.audit {
        changed.push("audit");
        new.audit = old.audit.clone();
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(groups: &str) -> Config {
        let text = format!(
            "[upstream]\nbase_url = \"sandbox\"\n{groups}\n[[tenants]]\nid = \"acme\"\nissuer = \"https://a.example\"\n\
             audience = \"g\"\nscopes = [\"projects:read\"]\nproject_name_prefix = \"acme-\"\n\
             keys = [{{ kid = \"k\", alg = \"HS256\", secret = \"0123456789abcdef0123456789abcdef\" }}]\n"
        );
        Config::parse(&text, std::path::Path::new(".")).unwrap()
    }

    #[test]
    fn a_group_s_rate_applies_live_and_its_operations_wait_for_a_restart() {
        let group = |operations: &str, rate: u32| {
            format!("[[throttle.groups]]\nname = \"channel-queries\"\noperations = [{operations}]\nrate = {rate}\n")
        };
        let old = config(&group("\"list_channels\"", 20));
        let mut faster = config(&group("\"list_channels\"", 30));
        assert!(keep_what_needs_a_restart(&old, &mut faster).is_empty());
        assert_eq!(faster.throttle.groups[0].rate, 30, "a new rate applies");
        let mut moved = config(&group("\"list_channels\", \"list_channel_users\"", 30));
        assert_eq!(keep_what_needs_a_restart(&old, &mut moved), ["throttle.groups (names, operations)"]);
        assert_eq!(moved.throttle.groups, old.throttle.groups, "the groups stay as they started");
        let mut none = config("");
        assert_eq!(keep_what_needs_a_restart(&old, &mut none), ["throttle.groups (names, operations)"]);
    }
}
