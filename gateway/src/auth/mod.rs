//! Step 2 of the pipeline: a bearer JWT becomes a [`Principal`] (tenant, subject, effective scopes),
//! or the request ends with 401. The token's `iss` picks the tenant, its `kid` the key, and the key
//! pins the algorithm: a token's `alg` never chooses it. Verified tokens are remembered briefly by
//! their SHA-256, so the hot path verifies a signature once per token, not once per request.
//! Tokens are never logged; errors say what was wrong without echoing them.

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
use crate::policy::{Scope, ScopeSet};
use keys::VerifyingKey;

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECONDS: u64 = 30;

/// Source of [`Tenant::uid`].
static NEXT_TENANT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_tenant_uid() -> u64 {
    NEXT_TENANT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
    keys: HashMap<String, (VerifyingKey, Validation)>,
}

impl Tenant {
    /// The tenant of a validated config (its keys were parsed then; an unparsed one verifies nothing).
    fn from_config(index: usize, config: &TenantConfig) -> Self {
        let mut keys = HashMap::new();
        for key in config.keys.iter().filter_map(|key| key.parsed.clone()) {
            let validation = validation(key.alg, &config.issuer, &config.audience);
            keys.insert(key.kid.clone(), (key, validation));
        }
        Self {
            id: config.id.clone(),
            uid: next_tenant_uid(),
            label: Box::leak(config.id.clone().into_boxed_str()),
            index,
            issuer: config.issuer.clone(),
            scopes: config.scopes.iter().copied().collect(),
            project_name_prefix: config.project_name_prefix.clone(),
            project_ids: config.project_ids.iter().cloned().collect(),
            weight: config.weight,
            keys,
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
        }
    }

    /// Whether a project (by ID and name) belongs to this tenant.
    pub(crate) fn owns(&self, project_id: &str, project_name: &str) -> bool {
        self.project_ids.contains(project_id)
            || self.project_name_prefix.as_deref().is_some_and(|prefix| project_name.starts_with(prefix))
    }
}

/// Validation of one key: its algorithm only, the four required claims, `nbf`, 30 s leeway.
fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
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
    pub(crate) fn new(config: &Config) -> Self {
        let tenants: Vec<Arc<Tenant>> = config
            .tenants
            .iter()
            .enumerate()
            .map(|(index, tenant)| Arc::new(Tenant::from_config(index, tenant)))
            .collect();
        let by_issuer = tenants.iter().map(|t| (t.issuer.clone(), t.clone())).collect();
        let cache_ttl = config.server.token_cache_ttl;
        let verified =
            moka::sync::Cache::builder().max_capacity(100_000).expire_after(UntilExpiry { ttl: cache_ttl }).build();
        Self { tenants, by_issuer, verified, cache_ttl, max_lifetime: config.server.max_token_lifetime }
    }

    pub(crate) fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    /// The principal of an `Authorization` header, or a 401 saying what was wrong.
    pub(crate) fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Arc<Principal>, GatewayError> {
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
            return Ok(principal);
        }
        let principal = Arc::new(self.verify(token).map_err(GatewayError::Unauthorized)?);
        if self.cache_ttl > Duration::ZERO {
            self.verified.insert(hash, principal.clone());
        }
        Ok(principal)
    }

    fn verify(&self, token: &str) -> Result<Principal, String> {
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
        let (key, validation) = match &header.kid {
            Some(kid) => tenant.keys.get(kid).ok_or("the token's kid names no key of its tenant")?,
            None if tenant.keys.len() == 1 => tenant.keys.values().next().expect("one key"),
            None => return Err("the token has no kid, and its tenant has several keys".into()),
        };
        // Says which algorithm the token used, never which one the key takes: a caller without a
        // valid token learns nothing about the tenant's keys.
        if alg != format!("{:?}", key.alg) {
            return Err(format!("the token is signed with {alg}, which its key does not accept"));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.key, validation).map_err(|error| describe(error.kind()))?;
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
pub(crate) trait HasAuthenticator {
    fn authenticator(&self) -> &Authenticator;
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: HasAuthenticator + Send + Sync,
{
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = state.authenticator();
        let principal = authenticator.authenticate(parts.headers.get(header::AUTHORIZATION))?;
        if let Some(slot) = parts.extensions.get::<crate::edge::RequestSlot>() {
            slot.set_tenant(principal.tenant.label);
        }
        Ok(Authenticated(principal))
    }
}

#[cfg(test)]
mod tests;
