//! Tracing (`[telemetry]`): where OpenTelemetry spans go, under which service name, and how many
//! of the requests that come without a sampled trace are traced.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` (spans are posted to
    /// `{otlp_endpoint}/v1/traces`, protobuf). None: nothing is exported, and only a caller's
    /// sampled `traceparent` is continued (to Agora and back).
    pub(crate) otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub(crate) service_name: String,
    /// Share of requests traced when the caller sent no `traceparent` (0.0 to 1.0). Parent-based:
    /// a caller's sampling decision is always followed.
    pub(crate) sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "agora-gateway".into(), sample_ratio: 1.0 }
    }
}

impl TelemetryConfig {
    /// Spans are exported (an endpoint is set).
    pub(crate) fn exports(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    /// Where the spans are posted.
    pub(crate) fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let parsed: Result<http::Uri, _> = endpoint.parse();
            let usable = parsed.is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|host| !host.is_empty())
            });
            if !usable {
                return Err(ConfigError::new(
                    "telemetry.otlp_endpoint",
                    "must be an http:// or https:// URL (the collector's OTLP/HTTP base, e.g. http://127.0.0.1:4318)",
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::new("telemetry.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::new("telemetry.sample_ratio", "must be between 0.0 and 1.0"));
        }
        Ok(())
    }
}
