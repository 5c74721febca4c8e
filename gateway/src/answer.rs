//! An answer of the Console API as it came ([`Answer`]: status, the headers a caller needs, body
//! bytes). The upstream produces it, the cache keeps it, egress cuts it down, and an error answer
//! of Agora's passes through inside a `GatewayError::Upstream` unchanged.

use std::time::Duration;

use agora_console_client::RawAnswer;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use bytes::Bytes;

/// Agora's own request ID, passed on under this name: `X-Request-Id` is the gateway's.
pub(crate) const AGORA_REQUEST_ID: &str = "x-agora-request-id";

/// An answer of the Console API, as it came.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// `Content-Type` and the headers a caller needs (`Retry-After`, `RateLimit-*`, Agora's
    /// request ID as `X-Agora-Request-Id`).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn from_raw(raw: RawAnswer) -> Self {
        Self { status: raw.status, headers: passed_on(&raw.headers), body: raw.body }
    }

    /// Agora's `Retry-After`, in seconds, when it gave one.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let seconds: u64 = self.headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds))
    }
}

/// The headers of an upstream answer that reach the caller.
fn passed_on(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        let text = name.as_str();
        if name == header::CONTENT_TYPE
            || name == header::RETRY_AFTER
            || text.starts_with("ratelimit-")
            || text.starts_with("x-ratelimit-")
        {
            kept.append(name.clone(), value.clone());
        } else if text == "x-request-id" {
            kept.insert(HeaderName::from_static(AGORA_REQUEST_ID), value.clone());
        }
    }
    kept
}
