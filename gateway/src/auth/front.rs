//! A front of the verified-token cache on each serving thread: the last tokens the thread saw,
//! each with a copy of its principal of the thread's own. A request whose token is there is
//! authenticated without hashing the token or touching the shared cache, and the reference counts
//! it takes are the thread's (no cache line crosses cores on the hit path).
//!
//! It remembers no more than the shared cache does: an entry holds only as long as the shared
//! cache would keep the token (its `exp`, at most `server.token_cache_ttl`), only for the
//! authenticator that verified it (a reload starts afresh), and a JWKS key's verification only
//! while the key is in its set. Tokens are compared in constant time (`same_bytes`).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Principal;
use crate::recent::Recent;

/// Tokens remembered per thread (a deployment's services each reuse one token for minutes).
const SLOTS: usize = 8;

struct Remembered {
    /// The authenticator that verified it ([`super::Authenticator::id`]).
    authenticator: u64,
    token: Box<[u8]>,
    /// The thread's own copy of the principal.
    principal: Arc<Principal>,
    until: Instant,
}

thread_local! {
    static FRONT: RefCell<Recent<Remembered, SLOTS>> = RefCell::default();
}

/// The principal of `token`, if this thread verified it (or met it) lately for `authenticator`.
pub(super) fn recall(authenticator: u64, token: &[u8], now: Instant) -> Option<Arc<Principal>> {
    FRONT.with_borrow(|front| {
        let found = front.find(|slot| {
            slot.authenticator == authenticator && slot.token.len() == token.len() && same_bytes(&slot.token, token)
        })?;
        let principal = &found.principal;
        // A JWKS key's verification holds while the key is in the set.
        let key_gone = match (&principal.jwks_kid, &principal.tenant.jwks) {
            (Some(kid), Some(jwks)) => !jwks.has(kid),
            _ => false,
        };
        (now < found.until && !key_gone).then(|| principal.clone())
    })
}

/// Whether two byte strings of the same length are equal, in a time that does not depend on where
/// they differ: every word is compared, eight bytes at a time (a byte-at-a-time constant-time
/// comparison would cost more than the hash it saves).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let word = |chunk: &[u8]| u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a_words.remainder().iter().zip(b_words.remainder()).fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    let differs = a_words.zip(b_words).fold(tail, |acc, (x, y)| acc | (word(x) ^ word(y)));
    std::hint::black_box(differs) == 0
}

/// Remembers `token`'s principal on this thread for `ttl` from `now` (at most).
pub(super) fn remember(authenticator: u64, token: &[u8], principal: &Principal, ttl: Duration, now: Instant) {
    let Some(until) = now.checked_add(ttl) else { return };
    FRONT.with_borrow_mut(|front| {
        front.push(Remembered { authenticator, token: token.into(), principal: Arc::new(principal.clone()), until });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tenant;
    use crate::policy::ScopeSet;

    fn principal(subject: &str) -> Principal {
        let tenant = Arc::new(Tenant::for_tests(0, "acme", 1));
        Principal { tenant, subject: subject.into(), scopes: ScopeSet::default(), expires_at: u64::MAX, jwks_kid: None }
    }

    #[test]
    fn a_token_is_recalled_for_its_authenticator_until_its_time_and_only_byte_for_byte() {
        let now = Instant::now();
        let (token, twin) = (b"header.payload.signature-A".as_slice(), b"header.payload.signature-B".as_slice());
        remember(7, token, &principal("svc"), Duration::from_secs(60), now);
        let recalled = recall(7, token, now + Duration::from_secs(59)).expect("remembered");
        assert_eq!(recalled.subject, "svc");
        assert!(recall(7, twin, now).is_none(), "another token of the same length");
        assert!(same_bytes(b"0123456789abc", b"0123456789abc") && !same_bytes(b"0123456789abc", b"0123456789abd"));
        assert!(!same_bytes(b"x123456789abc", b"0123456789abc"), "a difference in the first word");
        assert!(recall(8, token, now).is_none(), "another authenticator (a reload)");
        assert!(recall(7, token, now + Duration::from_secs(60)).is_none(), "past its time");
        // Each recall hands out the thread's own copy, not the shared principal.
        let shared = Arc::new(principal("svc"));
        remember(9, token, &shared, Duration::from_secs(60), now);
        assert!(!Arc::ptr_eq(&recall(9, token, now).unwrap(), &shared));
        assert_eq!(Arc::strong_count(&shared), 1);
        // Eight slots: the ninth token pushes the oldest out.
        for n in 0..SLOTS {
            remember(10, format!("token-{n}").as_bytes(), &principal("svc"), Duration::from_secs(60), now);
        }
        assert!(recall(10, b"token-0", now).is_some());
        remember(10, b"token-8", &principal("svc"), Duration::from_secs(60), now);
        assert!(recall(10, b"token-0", now).is_none() && recall(10, b"token-8", now).is_some());
    }
}
