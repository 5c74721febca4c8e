//! The signature of a notice: `Agora-Signature-V2`, hex HMAC-SHA256 of the raw body keyed with the
//! project's NCS secret — or, when a notice has no V2, `Agora-Signature`, hex HMAC-SHA1. Compared in
//! constant time (`Mac::verify_slice`).

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};

/// Why a notice's signature is refused (never echoing what was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Missing,
    NotHex,
    Wrong,
}

impl Refused {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refused::Missing => "the notice has no Agora-Signature-V2 or Agora-Signature header",
            Refused::NotHex => "the notice's signature is not a hex digest",
            Refused::Wrong => "the notice's signature does not match its body and this project's NCS secret",
        }
    }
}

/// Checks a notice's body against its signature headers.
pub(crate) fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
    let header = |name: &str| headers.get(name).map(|value| value.as_bytes());
    if let Some(v2) = header("agora-signature-v2") {
        return check::<Hmac<sha2::Sha256>>(secret, v2, body);
    }
    match header("agora-signature") {
        Some(v1) => check::<Hmac<sha1::Sha1>>(secret, v1, body),
        None => Err(Refused::Missing),
    }
}

fn check<M: Mac + hmac::digest::KeyInit>(secret: &[u8], hex_digest: &[u8], body: &[u8]) -> Result<(), Refused> {
    let expected = hex::decode(hex_digest.trim_ascii()).map_err(|_| Refused::NotHex)?;
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret).map_err(|_| Refused::Wrong)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| Refused::Wrong)
}
