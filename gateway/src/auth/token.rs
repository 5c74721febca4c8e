//! Verifying one bearer token: its unverified header and issuer pick the tenant and the key, the
//! key pins the algorithm, then the signature and the claims are checked. What was wrong is said
//! in words for the client, never echoing the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::tenant::{FoundKey, Principal};
use super::{Authenticator, LEEWAY_SECONDS};
use crate::policy::{Scope, ScopeSet};

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

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Authenticator {
    pub(super) async fn verify(&self, token: &str) -> Result<Principal, String> {
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
pub(super) fn lives_too_long(exp: u64, iat: Option<u64>, now: u64, most: Duration) -> bool {
    let most = most.as_secs().saturating_add(LEEWAY_SECONDS);
    exp.saturating_sub(now) > most || iat.is_some_and(|iat| exp.saturating_sub(iat) > most)
}

/// What was wrong with a token, in words for the client.
pub(super) fn describe(kind: &ErrorKind) -> String {
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
