//! A tenant's keys from its identity provider's JWKS (`tenants[].jwks_url`, or `jwks_uri` of the
//! issuer's OpenID configuration with `issuer_discovery`).
//!
//! - Fetched at start, then again before the answer's `Cache-Control: max-age` runs out (bounded by
//!   `jwks.refresh_min` and `jwks.refresh_max`), in the background.
//! - A token naming a `kid` the set lacks makes one fetch at most per `jwks.unknown_kid_cooldown`
//!   (concurrent ones wait for it): a rotation is picked up at once, and random `kid`s cannot make
//!   the gateway hammer the identity provider.
//! - When the identity provider does not answer, the last good set stays (counted in
//!   `agora_gateway_jwks_fetch_failures_total`, logged).
//! - Each key is pinned to one algorithm (`keys::from_jwks_entry`); encryption and symmetric keys
//!   are refused. A set with no usable key does not replace the last good one. The fetch has its
//!   own client and timeout, follows no redirect, reads at most 1 MiB as it streams in, and never
//!   carries the account's credentials; a discovery document must name the tenant's own issuer
//!   and an `https` `jwks_uri` (`http` only with `allow_insecure_jwks`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, Validation};
use tokio::time::Instant;

use super::keys::{VerifyingKey, from_jwks_entry};
use crate::config::{JwksConfig, TenantConfig};
use crate::metrics::{Metrics, TenantLabels};

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the key set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Url(String),
    /// `jwks_uri` of `{issuer}/.well-known/openid-configuration`; whether `http` may be followed.
    Discovery {
        issuer: String,
        allow_insecure: bool,
    },
}

impl Source {
    pub(crate) fn of(tenant: &TenantConfig) -> Option<Self> {
        match (&tenant.jwks_url, tenant.issuer_discovery) {
            (Some(url), _) => Some(Source::Url(url.clone())),
            (None, true) => {
                Some(Source::Discovery { issuer: tenant.issuer.clone(), allow_insecure: tenant.allow_insecure_jwks })
            }
            (None, false) => None,
        }
    }
}

/// A key of the set, with the validation of its algorithm.
pub(crate) type Keyed = (VerifyingKey, Validation);

/// What one fetch found.
pub(crate) struct Fetched {
    pub(crate) keys: Vec<VerifyingKey>,
    /// Entries that were skipped, and why (`kid: why`).
    pub(crate) skipped: Vec<String>,
    /// The answer's `Cache-Control: max-age`.
    pub(crate) max_age: Option<Duration>,
}

/// Fetching key sets: one HTTP client for every tenant, with the `jwks.*` timings.
pub(crate) struct Fetcher {
    client: reqwest::Client,
    pub(crate) settings: JwksConfig,
}

impl Fetcher {
    pub(crate) fn new(settings: &JwksConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .no_proxy()
            // A redirect could lead anywhere, `https` to `http` included: a 3xx is a failure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("agora-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("building the JWKS client: {error}"))?;
        Ok(Self { client, settings: settings.clone() })
    }

    async fn get_json(&self, url: &str) -> Result<(serde_json::Value, Option<Duration>), String> {
        let response = self.client.get(url).send().await.map_err(|error| format!("{url}: {error}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age);
        let too_large = || format!("{url}: the answer is larger than {MAX_JWKS_BYTES} bytes");
        if response.content_length().is_some_and(|length| length > MAX_JWKS_BYTES as u64) {
            return Err(too_large());
        }
        // Read as it streams in, so a chunked answer without a length is cut off at the cap too.
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| format!("{url}: {error}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let json = serde_json::from_slice(&body).map_err(|error| format!("{url}: not JSON ({error})"))?;
        Ok((json, max_age))
    }

    /// The key set at `source`, its usable keys pinned to `allowed` algorithms.
    pub(crate) async fn fetch(&self, source: &Source, allowed: &[Algorithm]) -> Result<Fetched, String> {
        let url = match source {
            Source::Url(url) => url.clone(),
            Source::Discovery { issuer, allow_insecure } => {
                let well_known = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let (document, _) = self.get_json(&well_known).await?;
                // OpenID Connect Discovery: the document's issuer is the one asked about.
                if document["issuer"].as_str() != Some(issuer.as_str()) {
                    return Err(format!("{well_known} names another issuer than {issuer}"));
                }
                let uri = document["jwks_uri"].as_str().ok_or_else(|| format!("{well_known} names no jwks_uri"))?;
                crate::config::check_key_url(uri, *allow_insecure)
                    .map_err(|why| format!("{well_known}: its jwks_uri {why}"))?;
                uri.to_string()
            }
        };
        let (document, max_age) = self.get_json(&url).await?;
        let entries = document["keys"].as_array().ok_or_else(|| format!("{url}: no \"keys\" array"))?;
        let (mut keys, mut skipped) = (Vec::new(), Vec::new());
        for entry in entries {
            let kid = entry["kid"].as_str().unwrap_or("(no kid)").to_string();
            let key = serde_json::from_value::<Jwk>(entry.clone())
                .map_err(|error| format!("not a JWK ({error})"))
                .and_then(|jwk| from_jwks_entry(&jwk, allowed));
            match key {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("{kid}: {why}")),
            }
        }
        // A key without `kid` is usable only as the set's one key (tokens without `kid`).
        if keys.len() > 1 && keys.iter().any(|key| key.kid.is_empty()) {
            keys.retain(|key| !key.kid.is_empty());
            skipped.push("(no kid): the set has several keys, so each needs a kid".into());
        }
        Ok(Fetched { keys, skipped, max_age })
    }
}

/// `max-age` of a `Cache-Control` value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.trim().eq_ignore_ascii_case("max-age").then(|| value.trim().trim_matches('"').parse().ok())?
        })
        .map(Duration::from_secs)
}

/// When to fetch again after a fetch that said `max_age`: before it runs out (at 90%), within the
/// configured bounds.
fn refresh_in(max_age: Option<Duration>, settings: &JwksConfig) -> Duration {
    let age = max_age.unwrap_or(settings.refresh_max);
    (age.mul_f64(0.9)).clamp(settings.refresh_min, settings.refresh_max)
}

/// One tenant's JWKS keys, kept fresh.
pub(crate) struct Jwks {
    pub(crate) source: Source,
    tenant: &'static str,
    issuer: String,
    audience: String,
    allowed: Vec<Algorithm>,
    keys: RwLock<Arc<HashMap<String, Keyed>>>,
    /// A fetch has ever succeeded.
    good: AtomicBool,
    /// The first fetch has been made (or is under way).
    started: AtomicBool,
    /// When a fetch was last tried (successful or not): the cooldown counts from it.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    fetcher: Arc<Fetcher>,
    metrics: Arc<Metrics>,
}

impl Jwks {
    pub(crate) fn new(
        source: Source,
        tenant: &TenantConfig,
        label: &'static str,
        allowed: Vec<Algorithm>,
        fetcher: Arc<Fetcher>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            source,
            tenant: label,
            issuer: tenant.issuer.clone(),
            audience: tenant.audience.clone(),
            allowed,
            keys: RwLock::default(),
            good: AtomicBool::new(false),
            started: AtomicBool::new(false),
            last_attempt: tokio::sync::Mutex::new(None),
            fetcher,
            metrics,
        }
    }

    /// Whether this set reads from the same place with the same rules as `other` (a reload may keep it).
    pub(crate) fn same_as(&self, source: &Source, tenant: &TenantConfig, allowed: &[Algorithm]) -> bool {
        self.source == *source
            && self.issuer == tenant.issuer
            && self.audience == tenant.audience
            && self.allowed == allowed
    }

    /// The key named `kid` (`""`: the set's one key without a kid).
    pub(crate) fn get(&self, kid: &str) -> Option<Keyed> {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(kid).cloned()
    }

    /// Whether the set holds `kid`.
    pub(crate) fn has(&self, kid: &str) -> bool {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(kid)
    }

    /// The set's only key, with its kid, if it has exactly one.
    pub(crate) fn only_key(&self) -> Option<(String, Keyed)> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let mut all = keys.iter();
        match (all.next(), all.next()) {
            (Some((kid, keyed)), None) => Some((kid.clone(), keyed.clone())),
            _ => None,
        }
    }

    /// How many keys the set has.
    pub(crate) fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether a fetch has ever succeeded.
    pub(crate) fn has_keys(&self) -> bool {
        self.good.load(Ordering::Acquire)
    }

    /// Whether the first fetch has been made.
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Fetches the set now and keeps it; on failure the last good set stays. Answers when to fetch
    /// again.
    async fn fetch_and_keep(&self) -> Duration {
        let settings = &self.fetcher.settings;
        match self.fetcher.fetch(&self.source, &self.allowed).await {
            // A set with no usable key would log every caller of the tenant out: the last good
            // set stays, as when the identity provider does not answer.
            Ok(fetched) if fetched.keys.is_empty() && self.has_keys() => {
                self.metrics.jwks_fetch_failures.get_or_create(&TenantLabels { tenant: self.tenant }).inc();
                tracing::warn!(
                    tenant = self.tenant,
                    skipped = ?fetched.skipped,
                    "the tenant's JWKS holds no usable key: keeping the last good set"
                );
                settings.unknown_kid_cooldown.min(settings.refresh_min)
            }
            Ok(fetched) => {
                for skipped in &fetched.skipped {
                    tracing::warn!(tenant = self.tenant, key = skipped, "a JWKS key is not used");
                }
                let keys: HashMap<String, Keyed> = fetched
                    .keys
                    .into_iter()
                    .map(|key| {
                        let validation = super::validation(key.alg, &self.issuer, &self.audience);
                        (key.kid.clone(), (key, validation))
                    })
                    .collect();
                self.metrics.jwks_keys.get_or_create(&TenantLabels { tenant: self.tenant }).set(keys.len() as i64);
                tracing::debug!(tenant = self.tenant, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
                self.good.store(true, Ordering::Release);
                refresh_in(fetched.max_age, settings)
            }
            Err(error) => {
                self.metrics.jwks_fetch_failures.get_or_create(&TenantLabels { tenant: self.tenant }).inc();
                tracing::warn!(tenant = self.tenant, %error, "could not fetch the tenant's JWKS: keeping the last good set");
                settings.unknown_kid_cooldown.min(settings.refresh_min)
            }
        }
    }

    /// The first fetch (at start, or for a tenant a reload adds).
    pub(crate) async fn initial_fetch(&self) -> Duration {
        self.started.store(true, Ordering::Release);
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_keep().await
    }

    /// A token named a `kid` the set lacks: fetch again unless the cooldown forbids it (or a fetch
    /// just happened while this one waited). Answers whether the set was fetched.
    pub(crate) async fn refetch_for_unknown_kid(&self) -> bool {
        let mut last = self.last_attempt.lock().await;
        let cooldown = self.fetcher.settings.unknown_kid_cooldown;
        if last.is_some_and(|at| at.elapsed() < cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_and_keep().await;
        true
    }

    /// Keeps the set fresh in the background, first after `first`, until the set is dropped.
    pub(crate) fn keep_fresh(self: &Arc<Self>, first: Duration) {
        tokio::spawn(refresher(Arc::downgrade(self), first));
    }
}

async fn refresher(jwks: Weak<Jwks>, first: Duration) {
    let mut wait = first;
    loop {
        tokio::time::sleep(wait).await;
        let Some(jwks) = jwks.upgrade() else { return };
        let mut last = jwks.last_attempt.lock().await;
        *last = Some(Instant::now());
        wait = jwks.fetch_and_keep().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_refreshes_stay_within_bounds() {
        assert_eq!(max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=\"30\", must-revalidate"), Some(Duration::from_secs(30)));
        let settings = JwksConfig::default();
        assert_eq!(refresh_in(Some(Duration::from_secs(600)), &settings), Duration::from_secs(540));
        assert_eq!(refresh_in(Some(Duration::from_secs(5)), &settings), settings.refresh_min);
        assert_eq!(refresh_in(None, &settings), settings.refresh_max.mul_f64(0.9));
        assert_eq!(refresh_in(Some(Duration::from_secs(86_400)), &settings), settings.refresh_max);
    }
}
