//! Step 2 of the pipeline: a bearer JWT becomes a [`Principal`] (tenant, subject, effective scopes),
//! or the request ends with 401. The token's `iss` picks the tenant, its `kid` the key, and the key
//! pins the algorithm: a token's `alg` never chooses it. Verified tokens are remembered briefly by
//! their SHA-256, so the hot path verifies a signature once per token, not once per request.
//! Tokens are never logged; errors say what was wrong without echoing them.

pub(crate) mod jwks;
pub(crate) mod keys;
pub(crate) mod mint;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, TenantConfig};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::policy::{Scope, ScopeSet};
use jwks::{Fetcher, Jwks, Keyed, Source};

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECONDS: u64 = 30;

/// Source of [`Tenant::uid`].
static NEXT_TENANT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_tenant_uid() -> u64 {
    NEXT_TENANT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A tenant id as a metrics label: leaked once per distinct id, however often it is reloaded.
fn label_of(id: &str) -> &'static str {
    static LABELS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut labels = LABELS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(label) = labels.iter().find(|label| **label == id) {
        return label;
    }
    let label: &'static str = Box::leak(id.to_string().into_boxed_str());
    labels.push(label);
    label
}

/// A tenant: an internal service (or group of them) with its keys, scopes and projects.
pub(crate) struct Tenant {
    pub(crate) id: String,
    /// Unique to this tenant object in this process (cached views of answers are kept by it).
    pub(crate) uid: u64,
    /// The id as a metrics label (tenants live as long as the process).
    pub(crate) label: &'static str,
    /// Position in the config; the throttle's index of the tenant.
    pub(crate) index: usize,
    pub(crate) issuer: String,
    pub(crate) scopes: ScopeSet,
    pub(crate) project_name_prefix: Option<String>,
    pub(crate) project_ids: HashSet<String>,
    pub(crate) weight: u32,
    keys: HashMap<String, Keyed>,
    /// Keys from the tenant's identity provider, kept fresh.
    pub(crate) jwks: Option<Arc<Jwks>>,
}

/// A key found for a token, and whether it came from the JWKS (by its kid).
struct FoundKey {
    keyed: Keyed,
    pub(crate) jwks_kid: Option<String>,
}

impl Tenant {
    /// The tenant of a validated config (its keys were parsed then; an unparsed one verifies
    /// nothing), in throttle lane `index`, with its JWKS set if it has one.
    fn from_config(index: usize, uid: u64, config: &TenantConfig, jwks: Option<Arc<Jwks>>) -> Self {
        let mut keys = HashMap::new();
        for key in config.keys.iter().filter_map(|key| key.parsed.clone()) {
            let validation = validation(key.alg, &config.issuer, &config.audience);
            keys.insert(key.kid.clone(), (key, validation));
        }
        Self {
            id: config.id.clone(),
            uid,
            label: label_of(&config.id),
            index,
            issuer: config.issuer.clone(),
            scopes: config.scopes.iter().copied().collect(),
            project_name_prefix: config.project_name_prefix.clone(),
            project_ids: config.project_ids.iter().cloned().collect(),
            weight: config.weight,
            keys,
            jwks,
        }
    }

    /// The key a token names (or, without a `kid`, the tenant's only key).
    fn find_key(&self, kid: Option<&str>) -> Option<FoundKey> {
        match kid {
            Some(kid) => match self.keys.get(kid) {
                Some(keyed) => Some(FoundKey { keyed: keyed.clone(), jwks_kid: None }),
                None => {
                    let keyed = self.jwks.as_ref()?.get(kid)?;
                    Some(FoundKey { keyed, jwks_kid: Some(kid.to_string()) })
                }
            },
            // No kid: the tenant's only key, if it has exactly one.
            None => {
                let from_jwks = self.jwks.as_ref().map_or(0, |jwks| jwks.len());
                match (self.keys.len(), from_jwks) {
                    (1, 0) => Some(FoundKey { keyed: self.keys.values().next()?.clone(), jwks_kid: None }),
                    (0, 1) => {
                        let (kid, keyed) = self.jwks.as_ref()?.only_key()?;
                        Some(FoundKey { keyed, jwks_kid: Some(kid) })
                    }
                    _ => None,
                }
            }
        }
    }

    /// A tenant with no keys, for tests of what follows authentication.
    #[cfg(test)]
    pub(crate) fn for_tests(index: usize, id: &str, weight: u32) -> Self {
        Self {
            id: id.to_string(),
            uid: next_tenant_uid(),
            label: Box::leak(id.to_string().into_boxed_str()),
            index,
            issuer: format!("https://{id}.example"),
            scopes: Scope::ALL.into_iter().collect(),
            project_name_prefix: Some(format!("{id}-")),
            project_ids: HashSet::new(),
            weight,
            keys: HashMap::new(),
            jwks: None,
        }
    }

    /// Whether a project (by ID and name) belongs to this tenant.
    pub(crate) fn owns(&self, project_id: &str, project_name: &str) -> bool {
        self.project_ids.contains(project_id)
            || self.project_name_prefix.as_deref().is_some_and(|prefix| project_name.starts_with(prefix))
    }
}

/// Validation of one key: its algorithm only, the four required claims, `nbf`, 30 s leeway.
pub(crate) fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation
}

/// Who is calling: the outcome of a verified token.
pub(crate) struct Principal {
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) subject: String,
    /// The token's `scope` cut down to the tenant's.
    pub(crate) scopes: ScopeSet,
    /// `exp`, in Unix seconds.
    pub(crate) expires_at: u64,
    /// The `kid` of the JWKS key that verified the token (its verification holds only while the
    /// key is in the set).
    pub(crate) jwks_kid: Option<String>,
}

impl Principal {
    pub(crate) fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }

    /// Whether this caller may touch the project: admins every one, others their tenant's.
    pub(crate) fn owns(&self, project_id: &str, project_name: &str) -> bool {
        self.is_admin() || self.tenant.owns(project_id, project_name)
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
}

/// `scope` as RFC 8693 writes it (space-separated), or as a JSON array.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl ScopeClaim {
    fn scopes(&self) -> ScopeSet {
        match self {
            ScopeClaim::Text(text) => ScopeSet::from_claim(text),
            ScopeClaim::List(names) => names.iter().filter_map(|name| Scope::parse(name)).collect(),
        }
    }
}

#[derive(Deserialize)]
struct UnverifiedHeader {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<serde_json::Value>,
}

type TokenHash = [u8; 32];

/// Verifies bearer tokens against the configured tenants.
pub(crate) struct Authenticator {
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

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
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
        Self {
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
        let unauthorized = |detail: &str| GatewayError::Unauthorized(detail.to_string());
        let value = authorization
            .ok_or_else(|| unauthorized("missing Authorization header: send `Authorization: Bearer <token>`"))?;
        let value = value.to_str().map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let (scheme, token) =
            value.split_once(' ').ok_or_else(|| unauthorized("the Authorization scheme must be Bearer"))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized("the Authorization scheme must be Bearer"));
        }
        let token = token.trim();
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.verified.get(&hash) {
            // A JWKS key's verification holds while the key is in the set.
            match (&principal.jwks_kid, &principal.tenant.jwks) {
                (Some(kid), Some(jwks)) if jwks.get(kid).is_none() => self.verified.invalidate(&hash),
                _ => return Ok(principal),
            }
        }
        let principal = Arc::new(self.verify(token).await.map_err(GatewayError::Unauthorized)?);
        if self.cache_ttl > Duration::ZERO {
            self.verified.insert(hash, principal.clone());
        }
        Ok(principal)
    }

    async fn verify(&self, token: &str) -> Result<Principal, String> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err("the token is not a JWT (three base64url segments separated by dots)".into());
        };
        let header: UnverifiedHeader =
            decode_segment(header).ok_or("the token's header is not base64url-encoded JSON")?;
        let alg = header.alg.ok_or("the token's header has no alg")?;
        if alg.eq_ignore_ascii_case("none") {
            return Err("unsigned tokens (alg none) are never accepted".into());
        }
        let claims: UnverifiedIssuer =
            decode_segment(payload).ok_or("the token's payload is not base64url-encoded JSON")?;
        let issuer = match claims.iss {
            Some(serde_json::Value::String(issuer)) => issuer,
            Some(_) => return Err("the token's iss is not a string".into()),
            None => return Err("the token lacks the required claim iss".into()),
        };
        let tenant = self.by_issuer.get(&issuer).ok_or("the token's issuer is not a configured tenant")?;
        let kid = header.kid.as_deref();
        let mut found = tenant.find_key(kid);
        if found.is_none()
            && let Some(jwks) = &tenant.jwks
            && jwks.refetch_for_unknown_kid().await
        {
            found = tenant.find_key(kid);
        }
        let FoundKey { keyed: (key, validation), jwks_kid } = found.ok_or(match kid {
            Some(_) => "the token's kid names no key of its tenant",
            None => "the token has no kid, and its tenant has several keys",
        })?;
        // Says which algorithm the token used, never which one the key takes: a caller without a
        // valid token learns nothing about the tenant's keys.
        if alg != format!("{:?}", key.alg) {
            return Err(format!("the token is signed with {alg}, which its key does not accept"));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|error| describe(error.kind()))?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err("the token's sub is empty".into());
        }
        if let Some(most) = self.max_lifetime
            && lives_too_long(claims.exp, claims.iat, unix_now(), most)
        {
            return Err("the token lives longer than this gateway accepts (server.max_token_lifetime)".into());
        }
        let requested = claims.scope.as_ref().map(ScopeClaim::scopes).unwrap_or_default();
        Ok(Principal {
            tenant: tenant.clone(),
            subject: claims.sub,
            scopes: requested.intersection(tenant.scopes),
            expires_at: claims.exp,
            jwks_kid,
        })
    }
}

/// Whether a token expiring at `exp` (issued at `iat`, if it says) lives longer than `most`: from
/// its issue, and from now (a token without `iat` cannot claim a long life that started long ago).
fn lives_too_long(exp: u64, iat: Option<u64>, now: u64, most: Duration) -> bool {
    let most = most.as_secs().saturating_add(LEEWAY_SECONDS);
    exp.saturating_sub(now) > most || iat.is_some_and(|iat| exp.saturating_sub(iat) > most)
}

/// What was wrong with a token, in words for the client.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidAudience => "the token's aud is not the audience of its tenant".into(),
        ErrorKind::InvalidIssuer => "the token's iss does not match its tenant".into(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the token lacks the required claim {claim}")
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            format!("the token's claim {claim} has the wrong type")
        }
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not the one its key accepts".into(),
        ErrorKind::Json(_) => "the token's claims are not the expected JSON (sub and exp are required)".into(),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => "the token is malformed".into(),
        _ => "the token cannot be verified".into(),
    }
}

/// Extractor: the request's verified principal, or the 401 as rejection.
pub(crate) struct Authenticated(pub(crate) Arc<Principal>);

/// Application states that hold an [`Authenticator`].
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
