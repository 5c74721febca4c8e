//! The API's domains (`upstream.base_urls`) and the choice between them: the first usable one takes
//! each call; one that failed is out for a while, and one that could not be connected to is out
//! until the probe reaches it: an HTTP request to its origin, TLS and all, without the account's
//! credentials — so it spends no budget, and a domain that accepts TCP but fails TLS stays out
//! instead of taking (and wasting) a slot every second.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agora_console_client::Client;

use super::Upstream;
use crate::metrics::DomainLabels;

/// After a timeout or a 5xx, a domain is tried again (first) after this long.
pub(super) const SUSPECT_FOR: Duration = Duration::from_secs(10);
/// A domain that could not be connected to is probed (a request to its origin, no API call) this often.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One of the API's domains (`upstream.base_urls`).
pub(super) struct Domain {
    pub(super) client: Client,
    /// The same domain at its root, for the operations not under `/dev`.
    pub(super) root_client: Client,
    /// `host:port`, for metrics and logs.
    pub(super) label: &'static str,
    /// `scheme://host:port`, what the probe asks.
    pub(super) origin: String,
    /// Not tried first until then (a failure; all domains down: tried anyway).
    pub(super) down_until: Mutex<Option<Instant>>,
    /// Could not be connected to: out until a probe connects.
    pub(super) unreachable: AtomicBool,
}

impl Domain {
    pub(super) fn is_usable(&self, now: Instant) -> bool {
        lock(&self.down_until).is_none_or(|until| now >= until)
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Upstream {
    /// The domain to try: the first usable one in order; if none is, the one back soonest.
    pub(super) fn pick(&self) -> usize {
        let now = Instant::now();
        if let Some(index) = self.domains.iter().position(|domain| domain.is_usable(now)) {
            return index;
        }
        let back_at = |domain: &Domain| lock(&domain.down_until).unwrap_or(now);
        (0..self.domains.len()).min_by_key(|index| back_at(&self.domains[*index])).unwrap_or(0)
    }

    pub(super) fn mark_down(&self, index: usize, unreachable: bool, why: &str) {
        let domain = &self.domains[index];
        if self.domains.len() > 1 {
            // Out until the probe connects; through a proxy (no probe), like a timeout.
            let out_for = if unreachable && self.probe_directly { Duration::from_secs(3600) } else { SUSPECT_FOR };
            let until = Instant::now() + out_for;
            *lock(&domain.down_until) = Some(until);
            domain.unreachable.store(unreachable, Ordering::SeqCst);
            self.metrics.upstream_domain_up.get_or_create(&DomainLabels { domain: domain.label }).set(0);
            self.metrics.upstream_failovers.get_or_create(&DomainLabels { domain: domain.label }).inc();
            tracing::warn!(domain = domain.label, why, "an upstream domain failed: the next one takes its calls");
        }
    }

    pub(super) fn mark_up(&self, index: usize) {
        let domain = &self.domains[index];
        let was_down = lock(&domain.down_until).take().is_some();
        domain.unreachable.store(false, Ordering::SeqCst);
        if was_down {
            self.metrics.upstream_domain_up.get_or_create(&DomainLabels { domain: domain.label }).set(1);
            tracing::info!(domain = domain.label, "an upstream domain answers again");
        }
    }
}

/// `scheme://host:port` of a base URL (itself when it does not parse).
pub(super) fn origin_of(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => base_url.to_string(),
    }
}

/// The domain's root of a base URL: without the Console API's `/dev` (`https://api.agora.io/dev`
/// → `https://api.agora.io`), or else its origin.
pub(crate) fn root_of(base_url: &str) -> String {
    match base_url.trim_end_matches('/').strip_suffix("/dev") {
        Some(root) => root.to_string(),
        None => origin_of(base_url),
    }
}

/// `host:port` of a base URL.
pub(super) fn domain_label(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(url) => format!("{}:{}", url.host_str().unwrap_or("?"), url.port_or_known_default().unwrap_or(0)),
        Err(_) => base_url.to_string(),
    }
}

/// Brings back domains that could not be connected to, as soon as a TCP connect succeeds (no API
/// call: the probe spends no budget). Ends when the upstream is dropped.
pub(super) async fn probe(upstream: std::sync::Weak<Upstream>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(upstream) = upstream.upgrade() else { return };
        for index in 0..upstream.domains.len() {
            let domain = &upstream.domains[index];
            if !domain.unreachable.load(Ordering::SeqCst) {
                continue;
            }
            // Any answer at all (a 404 is fine) means the connection and its TLS work.
            let asked = upstream.prober.get(&domain.origin).send();
            if let Ok(Ok(_)) = tokio::time::timeout(upstream.connect_timeout * 2, asked).await {
                upstream.mark_up(index);
            }
        }
    }
}
