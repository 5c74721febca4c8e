//! A front of the response cache on each serving thread: the entries the thread read lately, so
//! that a hit hashes no key and touches none of moka's shared structures (its buckets, its read
//! log, its clock).
//!
//! It answers exactly what the cache would: each entry is stamped with the cache's version read
//! before the entry was looked up there, and every change to the cache — a fill stored, an
//! invalidation (here or from another replica), a purge, a loss of trust — bumps the version once
//! it is done, so an entry remembered before a change is never answered after it. Freshness is
//! decided on every read, as for the cache's own entries. One read in [`USES`] still goes to the
//! cache, so that its sense of which entries are used stays true (it evicts the least used).

use std::cell::RefCell;
use std::sync::Arc;

use super::Entry;
use crate::recent::Recent;

/// Entries remembered per thread (the hot keys of a deployment are few: project lists, a few
/// channels).
const SLOTS: usize = 8;

/// Reads a remembered entry answers before one goes to the cache again.
const USES: u32 = 256;

struct Remembered {
    /// The cache it came from ([`super::Inner`]'s id).
    cache: u64,
    key: Box<str>,
    entry: Arc<Entry>,
    /// The cache's version when it was looked up there.
    version: u64,
    /// Reads it may still answer.
    uses: u32,
}

thread_local! {
    static FRONT: RefCell<Recent<Remembered, SLOTS>> = RefCell::default();
}

/// The entry of `key` this thread remembers from `cache`, if nothing changed there since
/// (`version` is the cache's now).
pub(super) fn recall(cache: u64, key: &str, version: u64) -> Option<Arc<Entry>> {
    // (A thread whose locals are gone, as it ends, remembers nothing.)
    FRONT
        .try_with(|front| {
            let mut front = front.borrow_mut();
            let found = front.find_mut(|slot| slot.cache == cache && *slot.key == *key)?;
            if found.version != version || found.uses == 0 {
                return None;
            }
            found.uses -= 1;
            Some(found.entry.clone())
        })
        .ok()
        .flatten()
}

/// Remembers `entry`, found under `key` in `cache` at `version` (read before the lookup).
pub(super) fn remember(cache: u64, key: &str, version: u64, entry: &Arc<Entry>) {
    let _ = FRONT.try_with(|front| {
        let remembered = Remembered { cache, key: key.into(), entry: entry.clone(), version, uses: USES };
        front.borrow_mut().put(remembered, |slot| slot.cache == cache && *slot.key == *key);
    });
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode};

    use super::*;
    use crate::answer::Answer;
    use crate::operations::Operation;

    fn entry() -> Arc<Entry> {
        let answer = Answer { status: StatusCode::OK, headers: HeaderMap::new(), body: r#"{"rules":[]}"#.into() };
        Arc::new(Entry::new(Operation::ListKickingRules, answer).unwrap())
    }

    #[test]
    fn an_entry_is_recalled_only_at_its_version_from_its_cache_and_not_forever() {
        let first = entry();
        remember(1, "k", 7, &first);
        assert!(Arc::ptr_eq(&recall(1, "k", 7).unwrap(), &first));
        assert!(recall(1, "k", 8).is_none(), "the cache changed since");
        assert!(recall(2, "k", 7).is_none(), "another cache");
        assert!(recall(1, "other", 7).is_none());
        // Remembered again: replaces the slot.
        let second = entry();
        remember(1, "k", 8, &second);
        assert!(Arc::ptr_eq(&recall(1, "k", 8).unwrap(), &second));
        for _ in 1..USES {
            assert!(recall(1, "k", 8).is_some());
        }
        assert!(recall(1, "k", 8).is_none(), "after USES reads, one goes to the cache");
        // New keys take the slots in turn: the oldest goes.
        for k in 0..SLOTS {
            remember(3, &k.to_string(), 0, &first);
        }
        assert!(recall(3, "0", 0).is_some());
        remember(3, "new", 0, &first);
        assert!(recall(3, "new", 0).is_some());
        assert_eq!((0..SLOTS).filter(|k| recall(3, &k.to_string(), 0).is_some()).count(), SLOTS - 1);
    }
}
