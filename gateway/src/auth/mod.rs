//! Step 2 of the pipeline: a bearer JWT becomes a [`Principal`] (tenant, subject, effective scopes),
//! or the request ends with 401. The token's `iss` picks the tenant, its `kid` the key, and the key
//! pins the algorithm: a token's `alg` never chooses it. Verified tokens are remembered briefly by
//! their SHA-256, so the hot path verifies a signature once per token, not once per request; each
//! serving thread also keeps the last few in front of that cache (`front.rs`).
//! Tokens are never logged; errors say what was wrong without echoing them.

mod front;
pub(crate) mod jwks;
pub(crate) mod keys;
pub(crate) mod mint;
mod tenant;
mod token;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};

use crate::config::{Config, TenantConfig};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use jwks::{Fetcher, Jwks, Source};
pub(crate) use tenant::{Principal, Tenant};
use tenant::{label_of, next_tenant_uid};
use token::unix_now;
pub(crate) use token::validation;

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECONDS: u64 = 30;

type TokenHash = [u8; 32];

/// Verifies bearer tokens against the configured tenants.
pub(crate) struct Authenticator {
    /// Which authenticator this is (each reload makes a new one): what each thread's front
    /// remembers holds for this one only.
    id: u64,
    tenants: Vec<Arc<Tenant>>,
    by_issuer: HashMap<String, Arc<Tenant>>,
    verified: moka::sync::Cache<TokenHash, Arc<Principal>>,
    cache_ttl: Duration,
    /// `server.max_token_lifetime`.
    max_lifetime: Option<Duration>,
    /// The next throttle lane a new tenant gets (lanes are never reused; the first lane after the
    /// first tenants' is the budget's lane of shared fills).
    next_lane: usize,
    fetcher: Arc<Fetcher>,
    metrics: Arc<Metrics>,
}

/// How a reload changes the tenants' throttle lanes.
#[derive(Debug, Default)]
pub(crate) struct LaneChanges {
    /// Every tenant's lane and weight (kept and new ones).
    pub(crate) lanes: Vec<(usize, u32)>,
    /// Lanes of tenants that are gone.
    pub(crate) removed: Vec<usize>,
}

/// Remembers each verified token until its `exp` or the cache TTL, whichever is sooner.
struct UntilExpiry {
    ttl: Duration,
}

impl moka::Expiry<TokenHash, Arc<Principal>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenHash,
        principal: &Arc<Principal>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        let left = principal.expires_at.saturating_sub(unix_now());
        Some(self.ttl.min(Duration::from_secs(left)))
    }
}

impl Authenticator {
    /// The tenants of a validated config, in throttle lanes 0, 1, ...; JWKS sets are created empty
    /// (see [`Authenticator::fetch_new_key_sets`]).
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let fetcher = Arc::new(Fetcher::new(&config.jwks)?);
        let tenants: Vec<Arc<Tenant>> = config
            .tenants
            .iter()
            .enumerate()
            .map(|(index, tenant)| {
                let jwks = new_jwks(tenant, &fetcher, &metrics);
                Arc::new(Tenant::from_config(index, next_tenant_uid(), tenant, jwks))
            })
            .collect();
        let next_lane = tenants.len() + 1;
        Ok(Self::assemble(config, tenants, next_lane, fetcher, metrics))
    }

    fn assemble(
        config: &Config,
        tenants: Vec<Arc<Tenant>>,
        next_lane: usize,
        fetcher: Arc<Fetcher>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let by_issuer = tenants.iter().map(|t| (t.issuer.clone(), t.clone())).collect();
        let cache_ttl = config.server.token_cache_ttl;
        let verified =
            moka::sync::Cache::builder().max_capacity(100_000).expire_after(UntilExpiry { ttl: cache_ttl }).build();
        static AUTHENTICATORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: AUTHENTICATORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tenants,
            by_issuer,
            verified,
            cache_ttl,
            max_lifetime: config.server.max_token_lifetime,
            next_lane,
            fetcher,
            metrics,
        }
    }

    /// The tenants of a reloaded config: a tenant that stays (by id) keeps its throttle lane, and
    /// its JWKS set if it reads from the same place; a new one gets a new lane. No verification of
    /// the old tenants is remembered: every token is verified again against the new keys.
    pub(crate) fn reloaded(&self, config: &Config) -> Result<(Self, LaneChanges), String> {
        let fetcher = match config.jwks == self.fetcher.settings {
            true => self.fetcher.clone(),
            false => Arc::new(Fetcher::new(&config.jwks)?),
        };
        let mut next_lane = self.next_lane;
        let mut changes = LaneChanges::default();
        let mut tenants = Vec::new();
        for tenant in &config.tenants {
            let old = self.tenants.iter().find(|old| old.id == tenant.id);
            let index = old.map_or_else(
                || {
                    next_lane += 1;
                    next_lane - 1
                },
                |old| old.index,
            );
            let kept = old.and_then(|old| old.jwks.clone()).filter(|jwks| {
                Source::of(tenant).is_some_and(|source| jwks.same_as(&source, tenant, &allowed_algorithms(tenant)))
            });
            let jwks = if fetcher.settings == self.fetcher.settings { kept } else { None };
            let jwks = jwks.or_else(|| new_jwks(tenant, &fetcher, &self.metrics));
            changes.lanes.push((index, tenant.weight));
            // Views of cached answers rendered for the tenant stay valid while it owns the same.
            let same_projects = old.is_some_and(|old| {
                old.project_name_prefix == tenant.project_name_prefix
                    && old.project_ids == tenant.project_ids.iter().cloned().collect::<HashSet<_>>()
            });
            let uid = match (old, same_projects) {
                (Some(old), true) => old.uid,
                _ => next_tenant_uid(),
            };
            tenants.push(Arc::new(Tenant::from_config(index, uid, tenant, jwks)));
        }
        changes.removed = self
            .tenants
            .iter()
            .filter(|old| !tenants.iter().any(|new| new.id == old.id))
            .map(|old| old.index)
            .collect();
        Ok((Self::assemble(config, tenants, next_lane, fetcher, self.metrics.clone()), changes))
    }

    /// Fetches the key sets that have never been fetched (at start; after a reload, the new
    /// ones), all at once, and keeps each fresh from then on.
    pub(crate) async fn fetch_new_key_sets(&self) {
        let fresh: Vec<Arc<Jwks>> =
            self.tenants.iter().filter_map(|tenant| tenant.jwks.clone()).filter(|jwks| !jwks.started()).collect();
        let fetches = fresh.iter().map(|jwks| async move { (jwks, jwks.initial_fetch().await) });
        for (jwks, refresh_in) in futures::future::join_all(fetches).await {
            jwks.keep_fresh(refresh_in);
        }
    }

    /// Tenants whose JWKS has never been fetched and who have no other key: they cannot be served.
    pub(crate) fn tenants_without_keys(&self) -> Vec<&str> {
        self.tenants
            .iter()
            .filter(|tenant| tenant.keys.is_empty() && tenant.jwks.as_ref().is_some_and(|jwks| !jwks.has_keys()))
            .map(|tenant| tenant.id.as_str())
            .collect()
    }

    pub(crate) fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    /// The principal of an `Authorization` header, or a 401 saying what was wrong.
    pub(crate) async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Arc<Principal>, GatewayError> {
        let token = bearer(authorization)?;
        // A token this thread met lately (`front.rs`): no hashing, no shared cache.
        if let Some(principal) = front::recall(self.id, token.as_bytes(), std::time::Instant::now()) {
            return Ok(principal);
        }
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.verified.get(&hash) {
            // A JWKS key's verification holds while the key is in the set.
            match (&principal.jwks_kid, &principal.tenant.jwks) {
                (Some(kid), Some(jwks)) if !jwks.has(kid) => self.verified.invalidate(&hash),
                _ => {
                    self.remember(token, &principal);
                    return Ok(principal);
                }
            }
        }
        let principal = Arc::new(self.verify(token).await.map_err(GatewayError::Unauthorized)?);
        if self.cache_ttl > Duration::ZERO {
            self.verified.insert(hash, principal.clone());
            self.remember(token, &principal);
        }
        Ok(principal)
    }

    /// The principal of the bearer token in `authorization`, if this thread's front holds it at
    /// `now` (no verification, no hashing): what [`Self::authenticate`] would answer first.
    pub(crate) fn recall(
        &self,
        authorization: Option<&HeaderValue>,
        now: std::time::Instant,
    ) -> Option<Arc<Principal>> {
        let token = bearer(authorization).ok()?;
        front::recall(self.id, token.as_bytes(), now)
    }

    /// This thread's front remembers `token` as long as the shared cache would.
    fn remember(&self, token: &str, principal: &Principal) {
        let left = Duration::from_secs(principal.expires_at.saturating_sub(unix_now()));
        let ttl = self.cache_ttl.min(left);
        front::remember(self.id, token.as_bytes(), principal, ttl, std::time::Instant::now());
    }
}

/// The token of an `Authorization: Bearer` header, or a 401 saying what was wrong.
fn bearer(authorization: Option<&HeaderValue>) -> Result<&str, GatewayError> {
    let unauthorized = |detail: &str| GatewayError::Unauthorized(detail.to_string());
    let value = authorization
        .ok_or_else(|| unauthorized("missing Authorization header: send `Authorization: Bearer <token>`"))?;
    let value = value.to_str().map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    let (scheme, token) =
        value.split_once(' ').ok_or_else(|| unauthorized("the Authorization scheme must be Bearer"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("the Authorization scheme must be Bearer"));
    }
    Ok(token.trim())
}

/// Extractor: the request's verified principal, or the 401 as rejection.
pub(crate) struct Authenticated(pub(crate) Arc<Principal>);

/// A tenant's JWKS set, if it has one (created empty).
fn new_jwks(tenant: &TenantConfig, fetcher: &Arc<Fetcher>, metrics: &Arc<Metrics>) -> Option<Arc<Jwks>> {
    let source = Source::of(tenant)?;
    let allowed = allowed_algorithms(tenant);
    Some(Arc::new(Jwks::new(source, tenant, label_of(&tenant.id), allowed, fetcher.clone(), metrics.clone())))
}

/// The tenant's `algorithms` (validated already).
fn allowed_algorithms(tenant: &TenantConfig) -> Vec<Algorithm> {
    tenant.algorithms.iter().filter_map(|alg| keys::parse_algorithm(alg).ok()).collect()
}

pub(crate) trait HasAuthenticator {
    /// The authenticator of the current configuration.
    fn authenticator(&self) -> Arc<Authenticator>;
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: HasAuthenticator + Send + Sync,
{
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = state.authenticator();
        let principal = authenticator.authenticate(parts.headers.get(header::AUTHORIZATION)).await?;
        if let Some(slot) = parts.extensions.get::<crate::edge::RequestSlot>() {
            slot.set_tenant(principal.tenant.label);
        }
        Ok(Authenticated(principal))
    }
}

#[cfg(test)]
mod tests;
