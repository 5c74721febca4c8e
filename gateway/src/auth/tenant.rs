//! A tenant — an internal service, or a group of them, with its keys, scopes and projects — and a
//! [`Principal`]: who is calling, once a token of the tenant is verified.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::jwks::{Jwks, Keyed};
use super::token::validation;
use crate::config::TenantConfig;
use crate::policy::{Scope, ScopeSet};

/// Source of [`Tenant::uid`].
static NEXT_TENANT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(super) fn next_tenant_uid() -> u64 {
    NEXT_TENANT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A tenant id as a metrics label: leaked once per distinct id, however often it is reloaded.
pub(super) fn label_of(id: &str) -> &'static str {
    static LABELS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut labels = LABELS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(label) = labels.iter().find(|label| **label == id) {
        return label;
    }
    let label: &'static str = Box::leak(id.to_string().into_boxed_str());
    labels.push(label);
    label
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
    pub(super) keys: HashMap<String, Keyed>,
    /// Keys from the tenant's identity provider, kept fresh.
    pub(crate) jwks: Option<Arc<Jwks>>,
    /// Its `RateLimit` field of each budget (the default, then the groups') as last worked out, and
    /// when (`throttle::Throttle::rate_limit_fields`), each packed in one word.
    pub(crate) rate_limit: [crate::fields::RateLimitMemo; crate::config::MAX_GROUPS + 1],
}

/// A key found for a token, and whether it came from the JWKS (by its kid).
pub(super) struct FoundKey {
    pub(super) keyed: Keyed,
    pub(crate) jwks_kid: Option<String>,
}

impl Tenant {
    /// The tenant of a validated config (its keys were parsed then; an unparsed one verifies
    /// nothing), in throttle lane `index`, with its JWKS set if it has one.
    pub(super) fn from_config(index: usize, uid: u64, config: &TenantConfig, jwks: Option<Arc<Jwks>>) -> Self {
        let mut keys = HashMap::new();
        for key in config.keys.iter().filter_map(|key| key.parsed.clone()) {
            let validation = validation(key.alg, &config.issuer, &config.audience);
            keys.insert(key.kid.clone(), (key, validation));
        }
        Self {
            id: config.id.clone(),
            uid,
            label: label_of(&config.id),
            index,
            issuer: config.issuer.clone(),
            scopes: config.scopes.iter().copied().collect(),
            project_name_prefix: config.project_name_prefix.clone(),
            project_ids: config.project_ids.iter().cloned().collect(),
            weight: config.weight,
            keys,
            jwks,
            rate_limit: Default::default(),
        }
    }

    /// The key a token names (or, without a `kid`, the tenant's only key).
    pub(super) fn find_key(&self, kid: Option<&str>) -> Option<FoundKey> {
        match kid {
            Some(kid) => match self.keys.get(kid) {
                Some(keyed) => Some(FoundKey { keyed: keyed.clone(), jwks_kid: None }),
                None => {
                    let keyed = self.jwks.as_ref()?.get(kid)?;
                    Some(FoundKey { keyed, jwks_kid: Some(kid.to_string()) })
                }
            },
            // No kid: the tenant's only key, if it has exactly one.
            None => {
                let from_jwks = self.jwks.as_ref().map_or(0, |jwks| jwks.len());
                match (self.keys.len(), from_jwks) {
                    (1, 0) => Some(FoundKey { keyed: self.keys.values().next()?.clone(), jwks_kid: None }),
                    (0, 1) => {
                        let (kid, keyed) = self.jwks.as_ref()?.only_key()?;
                        Some(FoundKey { keyed, jwks_kid: Some(kid) })
                    }
                    _ => None,
                }
            }
        }
    }

    /// The gateway itself, for its own background polls: no keys, no scopes, no lane of its own
    /// (its polls take the shared lane).
    pub(crate) fn gateway_itself() -> Self {
        Self {
            id: "gateway".into(),
            uid: next_tenant_uid(),
            label: "gateway",
            index: usize::MAX,
            issuer: String::new(),
            scopes: ScopeSet::default(),
            project_name_prefix: None,
            project_ids: HashSet::new(),
            weight: 1,
            keys: HashMap::new(),
            jwks: None,
            rate_limit: Default::default(),
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
            jwks: None,
            rate_limit: Default::default(),
        }
    }

    /// Whether a project (by ID and name) belongs to this tenant.
    pub(crate) fn owns(&self, project_id: &str, project_name: &str) -> bool {
        self.project_ids.contains(project_id)
            || self.project_name_prefix.as_deref().is_some_and(|prefix| project_name.starts_with(prefix))
    }
}

/// Who is calling: the outcome of a verified token.
#[derive(Clone)]
pub(crate) struct Principal {
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) subject: String,
    /// The token's `scope` cut down to the tenant's.
    pub(crate) scopes: ScopeSet,
    /// `exp`, in Unix seconds.
    pub(crate) expires_at: u64,
    /// The `kid` of the JWKS key that verified the token (its verification holds only while the
    /// key is in the set).
    pub(crate) jwks_kid: Option<String>,
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
