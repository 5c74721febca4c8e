//! The gateway's errors. One enum, `GatewayError`; each variant knows its status and renders as RFC 9457
//! `application/problem+json` (`type`, `title`, `status`, `detail`, `request_id`). What the client reads
//! (`detail`) is kept apart from what is logged (`log_detail`): internal causes are logged, not sent.
//! Upstream error answers are not the gateway's own: they pass through with Agora's status, body and
//! headers, whatever their shape. The `request_id` is added by the edge (`edge.rs`), which also logs.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::answer::Answer;
use crate::policy::Scope;

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum GatewayError {
    /// Malformed input; nothing was sent upstream.
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    /// Missing or bad token (RFC 6750 `invalid_token`).
    #[error("{0}")]
    Unauthorized(String),
    /// A notice of Agora's Notifications service whose signature is missing or wrong.
    #[error("{0}")]
    BadSignature(String),
    /// The gateway cannot take this now; the sender should try again (a notice that could not be
    /// passed on to the other replicas).
    #[error("{0}")]
    Unavailable(String),
    /// The token lacks the scope the operation needs (RFC 6750 `insufficient_scope`).
    #[error("this operation needs the scope {scope}")]
    InsufficientScope { scope: Scope },
    /// Allowed scope, but not this object (e.g. a project name outside the tenant's prefix).
    #[error("{0}")]
    Forbidden(String),
    /// Missing, or another tenant's: the two are indistinguishable on purpose.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Understood, but cannot be done (e.g. a reload of an invalid configuration).
    #[error("{0}")]
    Unprocessable(String),
    /// No upstream slot within `max_wait`; nothing was sent upstream.
    #[error("the upstream budget is spent: no slot within the longest wait; retry after {} s", retry_after_seconds(*.retry_after))]
    Throttled { retry_after: Duration },
    /// Agora answered an error: passed through.
    #[error("the upstream answered {}", .0.status)]
    Upstream(Box<Answer>),
    /// Agora refused the gateway's own credentials (the caller's token was fine).
    #[error("{detail}; the gateway's operator must check upstream.customer_id and upstream.customer_secret")]
    UpstreamCredentials { status: u16, detail: String },
    /// The upstream could not be reached or answered something that is not the Console API.
    #[error("the upstream could not be used: {0}")]
    BadGateway(String),
    #[error("the upstream did not answer within {0:?}")]
    GatewayTimeout(Duration),
    /// The caller went away (disconnected, or past its deadline) before its write was sent:
    /// nothing was done. Nobody reads this answer; the audit does.
    #[error("the caller went away before the write was sent upstream: nothing was done")]
    ClientClosed,
    /// The gateway took longer than its request timeout.
    #[error("the gateway could not answer within {0:?}")]
    RequestTimeout(Duration),
    /// A bug or an unexpected state: the client reads a generic message, the log the cause.
    #[error("internal error")]
    Internal(String),
}

/// `Retry-After` is whole seconds: round up, and never say 0.
fn retry_after_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs().saturating_add(u64::from(duration.subsec_nanos() > 0));
    seconds.max(1)
}

/// The problem document, before the middleware adds the request id.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Problem {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) title: &'static str,
    pub(crate) status: u16,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
}

impl Problem {
    pub(crate) fn to_body(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Left on a response by `GatewayError::into_response` for the middleware: the problem and what to log.
#[derive(Debug, Clone)]
pub(crate) struct ProblemReport {
    pub(crate) problem: Problem,
    pub(crate) log_detail: Option<String>,
}

impl GatewayError {
    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(detail.into())
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized(_) | Self::BadSignature(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientScope { .. } | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream(upstream) => upstream.status,
            Self::UpstreamCredentials { .. } | Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) | Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // nginx's "client closed request": no standard status says it.
            Self::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// The problem's short name (`throttled`, `bad-gateway`, ...).
    pub(crate) fn slug(&self) -> &'static str {
        self.slug_and_title().0
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest(_) => ("bad-request", "Bad request"),
            Self::PayloadTooLarge { .. } => ("payload-too-large", "Request body too large"),
            Self::Unauthorized(_) => ("invalid-token", "Missing or invalid token"),
            Self::BadSignature(_) => ("bad-signature", "Missing or invalid signature"),
            Self::Unavailable(_) => ("unavailable", "Try again later"),
            Self::InsufficientScope { .. } => ("insufficient-scope", "Insufficient scope"),
            Self::Forbidden(_) => ("forbidden", "Forbidden"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            Self::Unprocessable(_) => ("unprocessable", "Cannot be done"),
            Self::Throttled { .. } => ("throttled", "Upstream budget exhausted"),
            Self::Upstream(_) => ("upstream-error", "Upstream error"),
            Self::UpstreamCredentials { .. } => ("upstream-credentials", "Agora refused the gateway's credentials"),
            Self::BadGateway(_) => ("bad-gateway", "Upstream unavailable"),
            Self::GatewayTimeout(_) => ("upstream-timeout", "Upstream timeout"),
            Self::RequestTimeout(_) => ("request-timeout", "Gateway timeout"),
            Self::Internal(_) => ("internal", "Internal error"),
            Self::ClientClosed => ("client-closed", "Client closed the request"),
        }
    }

    pub(crate) fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        Problem {
            kind: format!("urn:agora-gateway:problem:{slug}"),
            title,
            status: self.status().as_u16(),
            detail: self.to_string(),
            request_id: None,
        }
    }

    /// What the log says beyond the client's `detail`.
    fn log_detail(&self) -> Option<String> {
        match self {
            Self::Internal(cause) => Some(cause.clone()),
            _ => None,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        if let Self::Upstream(upstream) = self {
            let Answer { status, headers, body } = *upstream;
            let mut response = (status, body).into_response();
            response.headers_mut().remove(header::CONTENT_TYPE);
            response.headers_mut().extend(headers);
            return response;
        }
        let problem = self.problem();
        let mut response = (self.status(), problem.to_body()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Self::Unauthorized(detail) => {
                let challenge =
                    format!("Bearer error=\"invalid_token\", error_description=\"{}\"", detail.replace('"', "'"));
                let value = HeaderValue::from_str(&challenge)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
            Self::InsufficientScope { scope } => {
                let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).expect("scopes are ASCII"));
            }
            Self::Throttled { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(*retry_after)));
            }
            _ => {}
        }
        let log_detail = self.log_detail();
        response.extensions_mut().insert(ProblemReport { problem, log_detail });
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn problems_carry_their_status_and_challenges() {
        let response = GatewayError::Unauthorized("the token has expired".into()).into_response();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\"")
        );

        let response = GatewayError::InsufficientScope { scope: Scope::KickingWrite }.into_response();
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", scope=\"kicking:write\""
        );

        let response = GatewayError::Throttled { retry_after: Duration::from_millis(2500) }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn internal_causes_are_logged_not_sent() {
        let error = GatewayError::Internal("the cache lock was poisoned at line 12".into());
        let problem = error.problem();
        assert_eq!(problem.detail, "internal error");
        assert_eq!(error.log_detail().as_deref(), Some("the cache lock was poisoned at line 12"));
    }
}
