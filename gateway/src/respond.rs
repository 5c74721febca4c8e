//! Step 8's last part: an answer as the caller gets it — Agora's status and `Content-Type` (its
//! other headers only when the answer is this request's own), `X-Cache` and `Age`, and RFC 9211
//! `Cache-Status` (`fields.rs`) saying how the cache took part.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;

use crate::answer::Answer;
use crate::cache::{CacheStatus, Outcome};
use crate::fields;

/// A channel read answered from the notices' channel state: Agora's shape and `Content-Type`,
/// `X-Cache: EVENTS`, and no age (the state is as of the last notice).
pub(crate) fn from_notices(body: Bytes, content_type: Option<HeaderValue>) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    let content_type = content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(fields::X_CACHE.clone(), HeaderValue::from_static("EVENTS"));
    headers.insert(header::AGE, fields::age(0));
    let status = fields::CacheStatus { hit: true, detail: Some("events"), ..Default::default() };
    headers.insert(fields::CACHE_STATUS.clone(), status.value());
    response
}

/// How the cache answered a read: its outcome, the answer's age, and its class's freshness.
pub(crate) struct Cached {
    pub(crate) outcome: Outcome,
    pub(crate) age: Duration,
    pub(crate) ttl: Duration,
}

impl Cached {
    /// A plain hit (fresh, found here) of an entry `age` old, in a class fresh for `ttl`.
    pub(crate) fn hit(age: Duration, ttl: Duration) -> Self {
        Self { outcome: Outcome::of(CacheStatus::Hit), age, ttl }
    }

    /// Its `Cache-Status`.
    fn status(&self, upstream_status: u16) -> fields::CacheStatus {
        let Outcome { status, shared, collapsed, failed_with } = self.outcome;
        let ttl =
            i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX) - i64::try_from(self.age.as_secs()).unwrap_or(0);
        let detail = shared.then_some("shared");
        let forwarded = |fwd| fields::CacheStatus {
            fwd: Some(fwd),
            fwd_status: Some(upstream_status),
            stored: true,
            collapsed,
            detail,
            ..Default::default()
        };
        match status {
            CacheStatus::Hit => {
                fields::CacheStatus { hit: true, ttl: Some(ttl), collapsed, detail, ..Default::default() }
            }
            CacheStatus::Miss => forwarded(fields::Forward::UriMiss),
            CacheStatus::Bypass => forwarded(fields::Forward::Request),
            CacheStatus::Stale => fields::CacheStatus {
                hit: true,
                ttl: Some(ttl),
                fwd: Some(fields::Forward::Stale),
                fwd_status: failed_with,
                detail,
                ..Default::default()
            },
        }
    }
}

/// An upstream answer with the body for this caller: Agora's status and `Content-Type`; its other
/// headers (`Retry-After`, `RateLimit-*`, its request ID) only when the answer is this request's
/// own, not a cache hit. `cache`: how the cache answered (a write: none).
pub(crate) fn answer_response(answer: &Answer, body: Bytes, cache: Option<Cached>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    // Room for every header the answer gets, here and at the edge: no growing on the way.
    headers.reserve(12);
    let replayed =
        matches!(&cache, Some(cached) if matches!(cached.outcome.status, CacheStatus::Hit | CacheStatus::Stale));
    if replayed {
        if let Some(content_type) = answer.headers.get(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
    } else {
        headers.extend(answer.headers.clone());
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let status = match &cache {
        Some(cached) => {
            headers.insert(fields::X_CACHE.clone(), HeaderValue::from_static(cached.outcome.status.as_str()));
            let age = if replayed { cached.age.as_secs() } else { 0 };
            headers.insert(header::AGE, fields::age(age));
            cached.status(answer.status.as_u16())
        }
        None => fields::CacheStatus {
            fwd: Some(fields::Forward::Method),
            fwd_status: Some(answer.status.as_u16()),
            ..Default::default()
        },
    };
    headers.insert(fields::CACHE_STATUS.clone(), status.value());
    response
}
