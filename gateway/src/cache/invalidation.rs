//! Invalidation: a write drops what it changed — here at once, and on every replica through the
//! cluster's shared tier — and bumps its class's generation, so a fill that started before it is
//! answered but not stored. A replica that may have missed invalidations distrusts its entries.

use std::sync::atomic::Ordering;

use super::cluster::Change;
use super::{Entry, Inner, ResponseCache};
use crate::call::Call;
use crate::operations::Operation;
use crate::policy::CacheClass;

impl ResponseCache {
    /// A project changed: drop the project list and every answer about that project, here and
    /// on every replica.
    pub(crate) async fn invalidate_project(&self, project_id: &str) {
        self.inner.invalidate_project_here(project_id);
        if let Some(cluster) = &self.inner.cluster {
            let list = Call::new(Operation::ListProjects).cache_key();
            let change = Change::Project { project: project_id.to_string() };
            cluster.publish(CacheClass::Project, change, &[list]).await;
        }
    }

    /// One answer changed (an app's kicking rules), here and on every replica.
    pub(crate) async fn invalidate_key(&self, key: &str, class: CacheClass) {
        self.inner.invalidate_key_here(key, class);
        if let Some(cluster) = &self.inner.cluster {
            let change = Change::Key { key: key.to_string(), class: class.as_str().to_string() };
            cluster.publish(class, change, &[key.to_string()]).await;
        }
    }

    /// Drops every entry, or every entry of one class, here and on every replica (whose shared
    /// copies of the class are void after it).
    pub(crate) async fn purge(&self, class: Option<CacheClass>) {
        self.inner.purge_here(class);
        if let Some(cluster) = &self.inner.cluster {
            let change = Change::Purge { class: class.map(|class| class.as_str().to_string()) };
            for voided in class.map_or(CacheClass::ALL.to_vec(), |class| vec![class]) {
                cluster.publish(voided, change.clone(), &[]).await;
            }
        }
    }
}

impl Inner {
    pub(super) fn bump(&self, class: CacheClass) {
        self.generations[class as usize].fetch_add(1, Ordering::SeqCst);
    }

    /// A change to the entries is done (`front.rs`).
    pub(super) fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn trusts(&self, entry: &Entry) -> bool {
        entry.trust == self.trust.load(Ordering::Acquire)
    }

    /// Invalidations may have been missed: nothing filled before now is fresh any more (it may
    /// still cover an upstream failure, as a stale answer), and fills under way are not stored.
    pub(super) fn distrust(&self) {
        self.trust.fetch_add(1, Ordering::AcqRel);
        for class in CacheClass::ALL {
            self.bump(class);
        }
        self.changed();
    }

    /// A project changed: this replica's list and answers about it.
    pub(super) fn invalidate_project_here(&self, project_id: &str) {
        self.bump(CacheClass::Project);
        let project_id = project_id.to_string();
        let list = Call::new(Operation::ListProjects).cache_key();
        let result = self.entries.invalidate_entries_if(move |key, entry| {
            entry.class == Some(CacheClass::Project) && (*key == list || entry.mentions_project(&project_id))
        });
        if let Err(error) = result {
            tracing::error!(%error, "could not invalidate project entries; purging the class");
            self.entries.invalidate_all();
        }
        self.changed();
    }

    /// An admin's purge: this replica's entries, of a class or all of them.
    pub(super) fn purge_here(&self, class: Option<CacheClass>) {
        match class {
            None => {
                for class in CacheClass::ALL {
                    self.bump(class);
                }
                self.entries.invalidate_all();
            }
            Some(class) => {
                self.bump(class);
                if self.entries.invalidate_entries_if(move |_, entry| entry.class == Some(class)).is_err() {
                    self.entries.invalidate_all();
                }
            }
        }
        self.changed();
    }

    /// One answer changed: this replica's copy.
    pub(super) fn invalidate_key_here(&self, key: &str, class: CacheClass) {
        self.bump(class);
        let key = key.to_string();
        let entries = self.entries.clone();
        // moka's future cache invalidates asynchronously; this one is already gone for readers
        // (the generation changed, and `invalidate_entries_if` takes it out of `get`).
        if entries.invalidate_entries_if(move |candidate, _| *candidate == key).is_err() {
            self.entries.invalidate_all();
        }
        self.changed();
    }
}
