//! Readiness means "this process can serve": `/readyz` answers 503 only while the process starts
//! (a shared budget that has not granted it a share yet), while it drains after SIGTERM
//! (`server.shutdown_delay`), or when it could serve nothing at all (no tenant has a key). A
//! dependency every replica shares — Redis, one tenant's identity provider, Agora refusing the
//! credentials or unreachable — is a degraded state instead: reported by cause on the admin
//! listener, in `agora_gateway_degraded{cause}` and in the logs, never as a 503 that would take
//! every replica of the fleet out at once while each can still answer hits, stale answers and the
//! other tenants.

use std::sync::atomic::Ordering;

use crate::metrics::CauseLabels;
use crate::state::Gateway;

/// Every cause of a degraded state, as the metric labels them.
const CAUSES: [&str; 4] = ["redis", "tenant_keys", "upstream_credentials", "upstream_unreachable"];

/// What `/readyz` says of this process.
pub(crate) struct Assessment {
    /// Not ready (503): `starting`, `draining` or `unavailable`, and why.
    pub(crate) unready: Option<(&'static str, String)>,
    /// Serving, but degraded: by cause, and why.
    pub(crate) degraded: Vec<(&'static str, String)>,
}

impl Assessment {
    /// The reasons, in one line.
    pub(crate) fn reasons(&self) -> Option<String> {
        let reasons: Vec<&str> = self
            .unready
            .iter()
            .map(|(_, why)| why.as_str())
            .chain(self.degraded.iter().map(|(_, why)| why.as_str()))
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// Assesses this process now, and sets `agora_gateway_degraded` from what it finds.
pub(crate) fn assess(gateway: &Gateway) -> Assessment {
    let auth = gateway.auth.load();
    let keyless = auth.tenants_without_keys();
    let mut degraded = Vec::new();
    if let Some(why) = gateway.throttle.degraded() {
        degraded.push(("redis", why));
    }
    if !keyless.is_empty() {
        let why = format!("no keys for tenant(s) {}: their JWKS could not be fetched yet", keyless.join(", "));
        degraded.push(("tenant_keys", why));
    }
    if let Some(why) = gateway.upstream.credentials_refused() {
        degraded.push(("upstream_credentials", why));
    }
    if let Some(why) = gateway.upstream.unreachable() {
        degraded.push(("upstream_unreachable", why));
    }
    for cause in CAUSES {
        let present = degraded.iter().any(|(found, _)| *found == cause);
        gateway.metrics.degraded.get_or_create(&CauseLabels { cause }).set(i64::from(present));
    }
    let unready = if gateway.draining.load(Ordering::SeqCst) {
        Some(("draining", "draining after SIGTERM: finishing what is under way".to_string()))
    } else if !auth.tenants().is_empty() && keyless.len() == auth.tenants().len() {
        Some(("unavailable", "no tenant has a key yet: no token can be verified".to_string()))
    } else {
        gateway.throttle.starting().map(|why| ("starting", why))
    };
    Assessment { unready, degraded }
}
