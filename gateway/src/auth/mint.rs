//! Minting tokens for a tenant: `agora-gateway token`, the demo's ready-to-paste tokens, and tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Header, encode};
use serde::Serialize;

use crate::auth::keys::{MintError, parse_algorithm, signing_key};
use crate::config::TenantConfig;

/// What to put in a minted token.
pub(crate) struct MintRequest<'a> {
    pub(crate) tenant: &'a TenantConfig,
    /// Key to sign with, by `kid`; the tenant's first key if `None`.
    pub(crate) kid: Option<&'a str>,
    /// Space-separated scopes; the tenant's own scopes if `None`.
    pub(crate) scope: Option<&'a str>,
    pub(crate) subject: &'a str,
    pub(crate) ttl: Duration,
    /// Private PEM, for asymmetric keys.
    pub(crate) private_key: Option<&'a [u8]>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    scope: String,
}

pub(crate) fn mint(request: &MintRequest<'_>) -> Result<String, MintError> {
    let tenant = request.tenant;
    let key = match request.kid {
        Some(kid) => tenant
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .ok_or_else(|| MintError::NoSuchKey { tenant: tenant.id.clone(), kid: kid.to_string() })?,
        None => tenant.keys.first().ok_or_else(|| MintError::NoKeys(tenant.id.clone()))?,
    };
    let alg = parse_algorithm(&key.alg)?;
    let encoding_key = signing_key(alg, key.secret.as_ref().map(|s| s.expose()), request.private_key)?;
    let scope = match request.scope {
        Some(scope) => scope.to_string(),
        None => tenant.scopes.iter().map(|scope| scope.as_str()).collect::<Vec<_>>().join(" "),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| MintError::Clock)?.as_secs();
    let claims = MintedClaims {
        iss: &tenant.issuer,
        aud: &tenant.audience,
        sub: request.subject,
        iat: now,
        nbf: now,
        exp: now + request.ttl.as_secs().max(1),
        scope,
    };
    let mut header = Header::new(alg);
    header.kid = Some(key.kid.clone());
    encode(&header, &claims, &encoding_key).map_err(|error| MintError::Signing(error.to_string()))
}
