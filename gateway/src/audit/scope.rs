//! The audit scope of one request or admin action, from its start to its end.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

use super::{Audit, Event, Outcome};
use crate::auth::Principal;
use crate::error::ProblemReport;

/// Left on a write's response that is not Agora's own answer although the write was sent (a
/// broken connection, an answer that cannot be passed on): it may have been done.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaybeDone;

/// Left on a write's response: the domain its last attempt went to (`upstream.base_urls`, `area`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedBy(pub(crate) &'static str);

/// The audit event of one request, from its start to its end: recorded exactly once — by
/// [`AuditScope::finish`], or, if the request is dropped before it ends (the edge's deadline
/// passed), with an unknown outcome. Routes and admin actions alike keep one.
pub(crate) struct AuditScope {
    audit: Arc<Audit>,
    event: Option<Event>,
    /// A write: sent and unanswered (504), its outcome is unknown rather than failed.
    write: bool,
}

impl AuditScope {
    /// Starts the event of a request of `operation`.
    pub(crate) fn start(audit: &Arc<Audit>, operation: &str, request_id: Option<String>, write: bool) -> Self {
        let mut event = Event::new(operation);
        event.request_id = request_id;
        Self { audit: audit.clone(), event: Some(event), write }
    }

    /// Who made the request.
    pub(crate) fn principal(&mut self, principal: &Principal) {
        if let Some(event) = self.event.as_mut() {
            event.tenant = Some(principal.tenant.id.clone());
            event.subject = Some(principal.subject.clone());
        }
    }

    /// What it is about (named identifiers, never a body).
    pub(crate) fn target(&mut self, target: BTreeMap<String, String>) {
        if let Some(event) = self.event.as_mut() {
            event.target = target;
        }
    }

    /// The caller could not be authenticated: no event (anybody can send such requests, and a
    /// flood of them would drown the trail), one more in `agora_gateway_audit_unauthenticated_total`.
    pub(crate) fn unauthenticated(mut self) {
        self.event = None;
        self.audit.metrics.audit_unauthenticated.inc();
    }

    /// Records the event from the request's response: its status, the problem's detail as the
    /// reason, Agora's request id.
    pub(crate) fn finish(mut self, response: &Response) {
        let Some(mut event) = self.event.take() else { return };
        let status = response.status();
        event.time = Utc::now();
        event.status = status.as_u16();
        let problem = response.extensions().get::<ProblemReport>().map(|report| report.problem.detail.clone());
        event.upstream_request_id =
            response.headers().get(crate::answer::AGORA_REQUEST_ID).and_then(|id| id.to_str().ok()).map(str::to_string);
        event.upstream_domain = response.extensions().get::<ServedBy>().map(|served| served.0.to_string());
        let maybe_done = response.extensions().get::<MaybeDone>().is_some();
        event.outcome = if maybe_done { Outcome::Unknown } else { outcome(status, self.write) };
        event.reason = match (&event.outcome, problem) {
            (Outcome::Ok, _) => None,
            (Outcome::Unknown, Some(detail)) if maybe_done => {
                Some(format!("sent, and what came back cannot be passed on ({detail}): it may have been done"))
            }
            (Outcome::Unknown, _) => Some("sent, and no answer came: it may or may not have been done".into()),
            (_, Some(detail)) => Some(detail),
            (_, None) => Some(format!("Agora answered {status}")),
        };
        self.audit.record(&event);
    }
}

impl Drop for AuditScope {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.time = Utc::now();
            event.status = 504;
            event.outcome = Outcome::Unknown;
            event.reason = Some("the request ran past the gateway's deadline: it may or may not have been done".into());
            self.audit.record(&event);
        }
    }
}

/// How a request ended, from its status.
fn outcome(status: StatusCode, write: bool) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Ok,
        // A write that timed out upstream was sent: whether it was done, nobody knows.
        504 if write => Outcome::Unknown,
        400..=499 => Outcome::Refused,
        _ => Outcome::Failed,
    }
}
