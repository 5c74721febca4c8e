//! Prometheus metrics (`GET /metrics`), with the names the README documents. Labels are tenant IDs,
//! operationIds, classes and statuses only: never tokens, keys, project IDs or anything secret.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod requests;

use requests::RequestMetrics;

/// Tenant label of requests that never authenticated.
pub(crate) const ANONYMOUS: &str = "anonymous";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) tenant: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    pub(crate) operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabels {
    pub(crate) class: &'static str,
    pub(crate) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct UpstreamLabels {
    pub(crate) operation: &'static str,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabels {
    pub(crate) tenant: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// The `result` label values of `cache_events`.
pub(crate) const CACHE_RESULTS: [&str; 5] = ["hit", "miss", "stale", "bypass", "shared_hit"];

pub(crate) struct Metrics {
    registry: Registry,
    /// `requests`, `request_duration_seconds` and `cache_events`, in each thread's shard.
    counts: Arc<RequestMetrics>,
    pub(crate) upstream_requests: Family<UpstreamLabels, Counter>,
    pub(crate) upstream_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    pub(crate) throttle_wait: Family<TenantLabels, Histogram, fn() -> Histogram>,
    pub(crate) throttle_rejected: Family<TenantLabels, Counter>,
    pub(crate) throttle_queue_depth: Gauge,
    pub(crate) cache_bytes: Gauge,
    pub(crate) redis_up: Gauge,
    pub(crate) upstream_credentials_refused: Counter,
    pub(crate) cache_cluster_up: Gauge,
    pub(crate) cache_invalidations_missed: Counter,
    pub(crate) cache_shared_rejected: Counter,
    pub(crate) jwks_keys: Family<TenantLabels, Gauge>,
    pub(crate) jwks_fetch_failures: Family<TenantLabels, Counter>,
    pub(crate) config_reloads: Family<ResultLabels, Counter>,
    pub(crate) upstream_domain_up: Family<DomainLabels, Gauge>,
    pub(crate) upstream_failovers: Family<DomainLabels, Counter>,
    pub(crate) audit_write_failures: Counter,
    pub(crate) audit_unauthenticated: Counter,
    pub(crate) degraded: Family<CauseLabels, Gauge>,
    pub(crate) ncs_notices: Family<ResultLabels, Counter>,
    pub(crate) ncs_reads: Counter,
    pub(crate) ncs_reconcile_polls: Counter,
    pub(crate) ncs_corrections: Counter,
    pub(crate) connections_moved: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabels {
    pub(crate) cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DomainLabels {
    pub(crate) domain: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("agora_gateway");
        let counts = Arc::new(RequestMetrics::new());
        registry.register_collector(Box::new(counts.clone()));
        let upstream_requests = Family::default();
        registry.register(
            "upstream_requests",
            "Calls to the Console API by operation and status (0: no answer)",
            upstream_requests.clone(),
        );
        let upstream_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time of one call to the Console API",
            upstream_duration.clone(),
        );
        let throttle_wait = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("throttle_wait_seconds", "Time a request queued for an upstream slot", throttle_wait.clone());
        let throttle_rejected = Family::default();
        registry.register(
            "throttle_rejected",
            "Requests refused with 429 because no slot was free within max_wait",
            throttle_rejected.clone(),
        );
        let throttle_queue_depth = Gauge::default();
        registry.register(
            "throttle_queue_depth",
            "Requests waiting for an upstream slot",
            throttle_queue_depth.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register("cache_bytes", "Bytes held by the response cache", cache_bytes.clone());
        let redis_up = Gauge::default();
        registry.register(
            "throttle_redis_up",
            "1 while the shared budget in Redis is in use, 0 while falling back to a local share",
            redis_up.clone(),
        );
        let upstream_credentials_refused = Counter::default();
        registry.register(
            "upstream_credentials_refused",
            "Answers in which Agora refused the gateway's own credentials (401/403)",
            upstream_credentials_refused.clone(),
        );
        let cache_cluster_up = Gauge::default();
        registry.register(
            "cache_cluster_up",
            "1 while the replicas' shared cache and invalidations are in use, 0 while this replica's cache stands alone",
            cache_cluster_up.clone(),
        );
        let cache_invalidations_missed = Counter::default();
        registry.register(
            "cache_invalidations_missed",
            "Times this replica found it had missed other replicas' invalidations and stopped trusting its cache",
            cache_invalidations_missed.clone(),
        );
        let jwks_keys = Family::default();
        registry.register("jwks_keys", "Keys in each tenant's JWKS as last fetched", jwks_keys.clone());
        let jwks_fetch_failures = Family::default();
        registry.register(
            "jwks_fetch_failures",
            "Failed fetches of a tenant's JWKS (the last good set stays in use)",
            jwks_fetch_failures.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, POST /admin/reload) by result: applied, or failed (nothing changed)",
            config_reloads.clone(),
        );
        let upstream_domain_up = Family::default();
        registry.register(
            "upstream_domain_up",
            "1 while an upstream domain takes calls, 0 while it is skipped after a failure",
            upstream_domain_up.clone(),
        );
        let upstream_failovers = Family::default();
        registry.register(
            "upstream_failovers",
            "Failures of an upstream domain that sent its calls to the next one",
            upstream_failovers.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit events that could not be written to the audit sink",
            audit_write_failures.clone(),
        );
        let audit_unauthenticated = Counter::default();
        registry.register(
            "audit_unauthenticated",
            "Writes and admin actions refused for want of a valid token: counted here, not audited one by one",
            audit_unauthenticated.clone(),
        );
        let cache_shared_rejected = Counter::default();
        registry.register(
            "cache_shared_rejected",
            "Shared cache entries and invalidation messages in Redis that failed their seal (not written by a gateway of this account): ignored",
            cache_shared_rejected.clone(),
        );
        let degraded = Family::default();
        registry.register(
            "degraded",
            "1 while this replica serves in a degraded state, by cause (redis, tenant_keys, \
             upstream_credentials, upstream_unreachable); /readyz stays 200 for these",
            degraded.clone(),
        );
        let ncs_notices = Family::default();
        registry.register(
            "ncs_notices",
            "Agora NCS notices by result: accepted, duplicate (a noticeId seen before), refused (bad signature, \
             unknown App ID, unreadable)",
            ncs_notices.clone(),
        );
        let ncs_reads = Counter::default();
        registry.register(
            "ncs_channel_reads",
            "Channel reads answered from the channel state built from NCS notices (no upstream call)",
            ncs_reads.clone(),
        );
        let ncs_reconcile_polls = Counter::default();
        registry.register(
            "ncs_reconcile_polls",
            "Polls of Agora that reconcile the channel state built from NCS notices (each spends a slot)",
            ncs_reconcile_polls.clone(),
        );
        let ncs_corrections = Counter::default();
        registry.register(
            "ncs_reconcile_corrections",
            "Users and channels the reconciliation polls corrected in the state built from NCS notices",
            ncs_corrections.clone(),
        );
        let connections_moved = Counter::default();
        registry.register(
            "connections_moved",
            "Client connections a busy serving thread handed to a less busy one, between two requests",
            connections_moved.clone(),
        );
        let spans = crate::telemetry::spans_counters();
        registry.register(
            "trace_spans_exported",
            "Spans sent to telemetry.otlp_endpoint (by this process)",
            spans.exported.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "Spans that never reached telemetry.otlp_endpoint: the export failed, or its queue was full",
            spans.dropped.clone(),
        );
        Self {
            registry,
            counts,
            upstream_requests,
            upstream_duration,
            throttle_wait,
            throttle_rejected,
            throttle_queue_depth,
            cache_bytes,
            redis_up,
            upstream_credentials_refused,
            cache_cluster_up,
            cache_invalidations_missed,
            cache_shared_rejected,
            jwks_keys,
            jwks_fetch_failures,
            config_reloads,
            upstream_domain_up,
            upstream_failovers,
            audit_write_failures,
            audit_unauthenticated,
            degraded,
            ncs_notices,
            ncs_reads,
            ncs_reconcile_polls,
            ncs_corrections,
            connections_moved,
        }
    }

    /// Counts one answered request and its latency.
    pub(crate) fn record_request(&self, tenant: &'static str, operation: &'static str, status: u16, seconds: f64) {
        self.counts.request(tenant, operation, status, seconds);
    }

    /// Counts one cache lookup of `class` (its index) with `result` (one of `CACHE_RESULTS`).
    pub(crate) fn cache_event(&self, class: usize, result: &'static str) {
        let index = CACHE_RESULTS.iter().position(|known| *known == result).unwrap_or(0);
        self.counts.cache_event(class * CACHE_RESULTS.len() + index);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_documented_ones() {
        let metrics = Metrics::new();
        metrics.record_request("acme", "list_projects", 200, 0.001);
        metrics.cache_event(0, "hit");
        metrics.throttle_rejected.get_or_create(&TenantLabels { tenant: "acme" }).inc();
        metrics.throttle_wait.get_or_create(&TenantLabels { tenant: "acme" }).observe(0.1);
        metrics.upstream_requests.get_or_create(&UpstreamLabels { operation: "list_projects", status: 200 }).inc();
        metrics.upstream_duration.get_or_create(&OperationLabels { operation: "list_projects" }).observe(0.01);
        let text = metrics.render();
        for name in [
            "agora_gateway_requests_total{tenant=\"acme\",operation=\"list_projects\",status=\"200\"} 1",
            "agora_gateway_cache_events_total{class=\"project\",result=\"hit\"} 1",
            "agora_gateway_throttle_rejected_total{tenant=\"acme\"} 1",
            "agora_gateway_throttle_wait_seconds_bucket",
            "agora_gateway_upstream_requests_total{operation=\"list_projects\",status=\"200\"} 1",
            "agora_gateway_upstream_duration_seconds_count",
            "agora_gateway_request_duration_seconds_count",
            "agora_gateway_throttle_queue_depth",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
