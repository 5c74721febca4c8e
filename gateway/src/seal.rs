//! What the gateways of an account put in Redis is sealed with a key only they hold (derived from
//! its customer secret): a shared cache entry's body is encrypted and, with its key, status and
//! headers, authenticated (ChaCha20-Poly1305); an invalidation message is authenticated; a
//! notice relayed to the other replicas (`notify/relay.rs`) is encrypted and authenticated. So
//! Redis never holds App certificates or channel members in clear, and an entry or message that
//! something else wrote there — a forged project list would be an authorization bypass — fails
//! its seal and is ignored (and counted: `agora_gateway_cache_shared_rejected_total`).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};

const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

pub(crate) struct Seal {
    cipher: ChaCha20Poly1305,
}

impl Seal {
    /// The account's seal: a key derived from its customer secret.
    pub(crate) fn of_account(customer_secret: &str) -> Self {
        let key = Sha256::new()
            .chain_update(b"agora-gateway shared cache seal v1\n")
            .chain_update(customer_secret.as_bytes())
            .finalize();
        Self { cipher: ChaCha20Poly1305::new(&key) }
    }

    /// `plaintext` encrypted and, with `context`, authenticated: nonce, ciphertext, tag. `None`
    /// only if the operating system gives no random numbers (then nothing is shared).
    pub(crate) fn seal(&self, context: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).ok()?;
        let sealed = self.cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: context }).ok()?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The plaintext, if `sealed` was sealed by this account's key for `context`.
    pub(crate) fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        self.cipher.decrypt(&Nonce::from(nonce), Payload { msg: body, aad: context }).ok()
    }

    /// A message's seal, as hex: `context` authenticated, nothing encrypted.
    pub(crate) fn tag(&self, context: &[u8]) -> Option<String> {
        Some(self.seal(context, b"")?.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Whether `tag` (hex) is this account's seal of `context`.
    pub(crate) fn verify(&self, context: &[u8], tag: &str) -> bool {
        let bytes: Option<Vec<u8>> = (0..tag.len())
            .step_by(2)
            .map(|at| tag.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
            .collect();
        bytes.is_some_and(|bytes| self.open(context, &bytes).is_some_and(|plain| plain.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_accounts_key_opens_and_only_for_its_context() {
        let (seal, other) = (Seal::of_account("secret"), Seal::of_account("another secret"));
        let sealed = seal.seal(b"entry list_projects", b"{\"sign_key\":\"5a3b\"}").unwrap();
        assert!(!sealed.windows(4).any(|window| window == b"5a3b"), "never in clear");
        assert_eq!(seal.open(b"entry list_projects", &sealed).unwrap(), b"{\"sign_key\":\"5a3b\"}");
        assert!(seal.open(b"entry get_project", &sealed).is_none(), "moved under another key");
        assert!(other.open(b"entry list_projects", &sealed).is_none(), "another account's");
        let mut forged = sealed;
        forged[NONCE_BYTES] ^= 1;
        assert!(seal.open(b"entry list_projects", &forged).is_none(), "altered");
        assert!(seal.open(b"entry list_projects", b"{\"projects\":[]}").is_none(), "written in clear");
        let tag = seal.tag(b"message").unwrap();
        assert!(seal.verify(b"message", &tag));
        assert!(!seal.verify(b"another message", &tag));
        assert!(!other.verify(b"message", &tag));
        assert!(!seal.verify(b"message", "zz"));
    }
}
