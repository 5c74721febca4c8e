//! Token keys: the verifying keys of the config (PEM or JWK, each pinned to one algorithm), parsed
//! once when the config is validated, and the signing keys `agora-gateway token` uses to mint.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::config::KeyConfig;

/// Shortest accepted HMAC secret: RFC 7518 asks for at least the hash's size, 256 bits for HS256.
pub(crate) const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The algorithms a tenant key may pin.
pub(crate) const SUPPORTED: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a configured key cannot be used; `field` names the key's field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("alg {0:?} is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA")]
    UnknownAlgorithm(String),
    #[error("an {0:?} key takes `secret`, not `public_key` or `jwk`")]
    SecretOnly(Algorithm),
    #[error("an {0:?} key needs a shared secret")]
    NoSecret(Algorithm),
    #[error("must be at least {MIN_HMAC_SECRET_BYTES} bytes")]
    ShortSecret,
    #[error("an {0:?} key takes `public_key` or `jwk`, not `secret`")]
    PublicOnly(Algorithm),
    #[error("an {0:?} key needs exactly one of `public_key` (PEM) and `jwk`")]
    PemOrJwk(Algorithm),
    #[error("not a PEM public key for {alg:?}: {reason}")]
    BadPem { alg: Algorithm, reason: String },
    #[error("not a usable JWK: {0}")]
    BadJwk(String),
    #[error("the JWK says alg {declared}, the config {configured:?}")]
    JwkAlgorithm { declared: String, configured: Algorithm },
    #[error("the key is not a key of the {family:?} family that alg {alg:?} needs")]
    WrongFamily { alg: Algorithm, family: jsonwebtoken::AlgorithmFamily },
}

impl KeyError {
    /// The key's field the error is about.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            KeyError::UnknownAlgorithm(_) => "alg",
            KeyError::NoSecret(_) | KeyError::ShortSecret | KeyError::PublicOnly(_) => "secret",
            KeyError::SecretOnly(_) | KeyError::PemOrJwk(_) | KeyError::WrongFamily { .. } => "alg",
            KeyError::BadPem { .. } => "public_key",
            KeyError::BadJwk(_) | KeyError::JwkAlgorithm { .. } => "jwk",
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MintError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("tenant {tenant:?} has no key {kid:?}")]
    NoSuchKey { tenant: String, kid: String },
    #[error("tenant {0:?} has no keys")]
    NoKeys(String),
    #[error("the key has no secret")]
    NoSecret,
    #[error("an {0:?} key signs with its private key: pass --key PRIVATE.pem")]
    NeedsPrivateKey(Algorithm),
    #[error("--key is not a PEM private key for {alg:?}: {reason}")]
    BadPrivateKey { alg: Algorithm, reason: String },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("the clock is before 1970")]
    Clock,
}

pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    Algorithm::from_str(name)
        .ok()
        .filter(|alg| SUPPORTED.contains(alg))
        .ok_or_else(|| KeyError::UnknownAlgorithm(name.to_string()))
}

pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// A key that verifies one tenant's tokens, with the one algorithm it accepts.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub(crate) fn from_config(config: &KeyConfig) -> Result<Self, KeyError> {
        let alg = parse_algorithm(&config.alg)?;
        let key = if is_hmac(alg) {
            if config.public_key.is_some() || config.jwk.is_some() {
                return Err(KeyError::SecretOnly(alg));
            }
            let secret = config.secret.as_ref().ok_or(KeyError::NoSecret(alg))?;
            if secret.expose().len() < MIN_HMAC_SECRET_BYTES {
                return Err(KeyError::ShortSecret);
            }
            DecodingKey::from_secret(secret.expose().as_bytes())
        } else {
            if config.secret.is_some() {
                return Err(KeyError::PublicOnly(alg));
            }
            match (&config.public_key, &config.jwk) {
                (Some(pem), None) => decoding_key_from_pem(alg, pem.expose().as_bytes())?,
                (None, Some(jwk)) => decoding_key_from_jwk(alg, jwk.expose())?,
                _ => return Err(KeyError::PemOrJwk(alg)),
            }
        };
        if key.family() != alg.family() {
            return Err(KeyError::WrongFamily { alg, family: alg.family() });
        }
        Ok(Self { kid: config.kid.clone(), alg, key })
    }
}

/// A key of a tenant's JWKS, pinned to one algorithm: the JWK's `alg`, or else the one of
/// `allowed` (the tenant's `algorithms`; any asymmetric one when empty) that fits its key type.
/// Encryption keys (`use: enc`) and symmetric keys are refused: a JWKS publishes public keys.
pub(crate) fn from_jwks_entry(jwk: &Jwk, allowed: &[Algorithm]) -> Result<VerifyingKey, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".into());
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return Err("a symmetric key (kty: oct)".into());
    }
    let allowed: Vec<Algorithm> = if allowed.is_empty() {
        SUPPORTED.iter().copied().filter(|alg| !is_hmac(*alg)).collect()
    } else {
        allowed.to_vec()
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|error| format!("not a usable key: {error}"))?;
    let alg = match &jwk.common.key_algorithm {
        Some(declared) => {
            let alg = parse_algorithm(&declared.to_string()).map_err(|error| error.to_string())?;
            if !allowed.contains(&alg) {
                return Err(format!("alg {alg:?} is not one of the tenant's algorithms"));
            }
            alg
        }
        None => {
            let fitting: Vec<Algorithm> = allowed.iter().copied().filter(|alg| alg.family() == key.family()).collect();
            match fitting[..] {
                [alg] => alg,
                [] => return Err("no alg, and none of the tenant's algorithms fits its key type".into()),
                _ => return Err("no alg, and several of the tenant's algorithms fit: name one in `algorithms`".into()),
            }
        }
    };
    if key.family() != alg.family() {
        return Err(format!("its key type does not fit alg {alg:?}"));
    }
    Ok(VerifyingKey { kid: jwk.common.key_id.clone().unwrap_or_default(), alg, key })
}

fn decoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, KeyError> {
    let result = match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    };
    result.map_err(|error| KeyError::BadPem { alg, reason: error.to_string() })
}

fn decoding_key_from_jwk(alg: Algorithm, json: &str) -> Result<DecodingKey, KeyError> {
    let jwk: Jwk = serde_json::from_str(json).map_err(|error| KeyError::BadJwk(error.to_string()))?;
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = declared.to_string();
        if declared != format!("{alg:?}") {
            return Err(KeyError::JwkAlgorithm { declared, configured: alg });
        }
    }
    DecodingKey::from_jwk(&jwk).map_err(|error| KeyError::BadJwk(error.to_string()))
}

/// The key that signs tokens for `agora-gateway token`: the config's secret for HS*, a private PEM otherwise.
pub(crate) fn signing_key(
    alg: Algorithm,
    secret: Option<&str>,
    private_pem: Option<&[u8]>,
) -> Result<EncodingKey, MintError> {
    if is_hmac(alg) {
        let secret = secret.ok_or(MintError::NoSecret)?;
        return Ok(EncodingKey::from_secret(secret.as_bytes()));
    }
    let pem = private_pem.ok_or(MintError::NeedsPrivateKey(alg))?;
    let result = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    };
    result.map_err(|error| MintError::BadPrivateKey { alg, reason: error.to_string() })
}
