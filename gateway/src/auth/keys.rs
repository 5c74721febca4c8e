//! Token keys: the verifying keys of the config (PEM or JWK, each pinned to one algorithm) and the
//! signing keys `agora-gateway token` uses to mint.

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

pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(name).ok().filter(|alg| SUPPORTED.contains(alg)).ok_or_else(|| {
        format!("alg {name:?} is not one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA")
    })
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// A key that verifies one tenant's tokens, with the one algorithm it accepts.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl VerifyingKey {
    pub(crate) fn from_config(config: &KeyConfig) -> Result<Self, String> {
        let alg = parse_algorithm(&config.alg).map_err(|message| format!("alg: {message}"))?;
        let key = if is_hmac(alg) {
            if config.public_key.is_some() || config.jwk.is_some() {
                return Err(format!("an {alg:?} key takes `secret`, not `public_key` or `jwk`"));
            }
            let secret =
                config.secret.as_ref().ok_or_else(|| format!("secret: an {alg:?} key needs a shared secret"))?;
            if secret.expose().len() < MIN_HMAC_SECRET_BYTES {
                return Err(format!("secret: must be at least {MIN_HMAC_SECRET_BYTES} bytes"));
            }
            DecodingKey::from_secret(secret.expose().as_bytes())
        } else {
            if config.secret.is_some() {
                return Err(format!("an {alg:?} key takes `public_key` or `jwk`, not `secret`"));
            }
            match (&config.public_key, &config.jwk) {
                (Some(pem), None) => {
                    decoding_key_from_pem(alg, pem.expose().as_bytes()).map_err(|e| format!("public_key: {e}"))?
                }
                (None, Some(jwk)) => decoding_key_from_jwk(alg, jwk.expose()).map_err(|e| format!("jwk: {e}"))?,
                _ => {
                    return Err(format!("an {alg:?} key needs exactly one of `public_key` (PEM) and `jwk`"));
                }
            }
        };
        if key.family() != alg.family() {
            return Err(format!("the key is not a key of the {:?} family that alg {alg:?} needs", alg.family()));
        }
        Ok(Self { kid: config.kid.clone(), alg, key })
    }
}

fn decoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let result = match alg {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    };
    result.map_err(|error| format!("not a PEM public key for {alg:?}: {error}"))
}

fn decoding_key_from_jwk(alg: Algorithm, json: &str) -> Result<DecodingKey, String> {
    let jwk: Jwk = serde_json::from_str(json).map_err(|error| format!("not a JWK: {error}"))?;
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = declared.to_string();
        if declared != format!("{alg:?}") {
            return Err(format!("the JWK says alg {declared}, the config {alg:?}"));
        }
    }
    DecodingKey::from_jwk(&jwk).map_err(|error| format!("unusable JWK: {error}"))
}

/// The key that signs tokens for `agora-gateway token`: the config's secret for HS*, a private PEM otherwise.
pub(crate) fn signing_key(
    alg: Algorithm,
    secret: Option<&str>,
    private_pem: Option<&[u8]>,
) -> Result<EncodingKey, String> {
    if is_hmac(alg) {
        let secret = secret.ok_or("the key has no secret")?;
        return Ok(EncodingKey::from_secret(secret.as_bytes()));
    }
    let pem =
        private_pem.ok_or_else(|| format!("an {alg:?} key signs with its private key: pass --key PRIVATE.pem"))?;
    let result = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    };
    result.map_err(|error| format!("--key is not a PEM private key for {alg:?}: {error}"))
}
