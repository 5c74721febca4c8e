//! The audit trail: behind the account's one pair of credentials every write looks the same to
//! Agora; the gateway knows which tenant and which service (`sub`) made it. Every write operation
//! and every admin action (cache purge, reload) — and every read with `audit.reads` — emits
//! exactly one event when it ends: time, request id, tenant, subject, operation, target (project,
//! app, rule, channel, user), status, outcome (`ok`, `refused` with why, `failed`, `unknown` when a
//! write was sent and its answer never came), and Agora's request id when it gave one. Never a
//! token, a secret or an App certificate: events carry identifiers and outcomes, not bodies.
//!
//! Sinks: `log` (a line in the log stream under the target `audit`) or `file` (JSON lines
//! appended; SIGUSR1 reopens the file, for log rotation). A failed write is counted
//! (`agora_gateway_audit_write_failures_total`) and logged; it never fails the request.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::call::Call;
use crate::config::{AuditConfig, AuditSink};
use crate::error::ProblemReport;
use crate::metrics::Metrics;
use crate::operations::Operation;
use crate::policy::Invalidation;

/// How a request ended, for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Done.
    Ok,
    /// Refused, by the gateway (`reason` says why) or by Agora.
    Refused,
    /// Not done: the upstream failed or could not be reached.
    Failed,
    /// Sent, but its answer never came: it may or may not have been done.
    Unknown,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// One audit event (one JSON line of the file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Event {
    /// When the request ended (RFC 3339, UTC).
    pub(crate) time: DateTime<Utc>,
    pub(crate) request_id: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) operation: String,
    /// What it was about: `project`, `name`, `app`, `rule`, `cname`, `uid`, `class`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) target: BTreeMap<String, String>,
    pub(crate) status: u16,
    pub(crate) outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// Agora's request id (`X-Request-Id` of its answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upstream_request_id: Option<String>,
}

impl Event {
    pub(crate) fn new(operation: &str) -> Self {
        Self {
            time: Utc::now(),
            request_id: None,
            tenant: None,
            subject: None,
            operation: operation.to_string(),
            target: BTreeMap::new(),
            status: 0,
            outcome: Outcome::Unknown,
            reason: None,
            upstream_request_id: None,
        }
    }

    /// `name=value` pairs of the target, space-separated.
    pub(crate) fn target_text(&self) -> String {
        self.target.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join(" ")
    }

    /// When, in RFC 3339 with milliseconds.
    pub(crate) fn time_text(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The line of the log sink.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} {} {} {} [{}] {} {}{}",
            self.time_text(),
            self.tenant.as_deref().unwrap_or("-"),
            self.subject.as_deref().unwrap_or("-"),
            self.operation,
            self.target_text(),
            self.status,
            self.outcome.as_str(),
            self.reason.as_deref().map(|reason| format!(": {reason}")).unwrap_or_default()
        )
    }
}

/// What a call was about, by name: never a body, only the identifiers in it. The `id` of a write
/// to kicking rules (by its policy: it invalidates them) names a rule, any other a project.
pub(crate) fn target_of(call: &Call) -> BTreeMap<String, String> {
    let kicking = call.operation.policy().invalidates == Invalidation::KickingRules;
    let value = |name: &str| -> Option<String> {
        if let Some(value) = call.get(name) {
            return Some(value.to_string());
        }
        match call.body.as_ref()?.get(name)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    };
    let mut target = BTreeMap::new();
    for (input, named) in [
        ("id", if kicking { "rule" } else { "project" }),
        ("name", "name"),
        ("appid", "app"),
        ("cname", "cname"),
        ("uid", "uid"),
        ("projects", "projects"),
    ] {
        if let Some(value) = value(input).filter(|value| !value.is_empty()) {
            target.insert(named.to_string(), value);
        }
    }
    target
}

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
        event.outcome = outcome(status, self.write);
        event.reason = match (&event.outcome, problem) {
            (Outcome::Ok, _) => None,
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

enum Sink {
    Log,
    File { path: PathBuf, file: Mutex<File> },
}

/// Where events go.
pub(crate) struct Audit {
    sink: Sink,
    reads: bool,
    metrics: Arc<Metrics>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Audit {
    pub(crate) fn new(config: &AuditConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let sink = match (config.sink, &config.path) {
            (AuditSink::File, Some(path)) => {
                let file = open(path).map_err(|error| anyhow::anyhow!("audit.path {}: {error}", path.display()))?;
                Sink::File { path: path.clone(), file: Mutex::new(file) }
            }
            _ => Sink::Log,
        };
        Ok(Self { sink, reads: config.reads, metrics })
    }

    /// Whether a request of `operation` is audited: writes always, reads with `audit.reads`.
    pub(crate) fn covers(&self, operation: Operation) -> bool {
        operation.policy().cache.is_none() || self.reads
    }

    /// Writes one event; a failure is counted and logged, never the caller's.
    pub(crate) fn record(&self, event: &Event) {
        match &self.sink {
            Sink::Log => tracing::info!(
                target: "audit",
                request_id = event.request_id.as_deref().unwrap_or("-"),
                upstream_request_id = event.upstream_request_id.as_deref().unwrap_or("-"),
                event = %event.summary(),
                "audit"
            ),
            Sink::File { path, file } => {
                let written = serde_json::to_string(event).map_err(std::io::Error::other).and_then(|mut line| {
                    line.push('\n');
                    // One write of the whole line: appends from concurrent requests never interleave.
                    file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write_all(line.as_bytes())
                });
                if let Err(error) = written {
                    self.metrics.audit_write_failures.inc();
                    tracing::error!(%error, path = %path.display(), event = %event.summary(), "could not write an audit event");
                }
            }
        }
    }

    /// SIGUSR1: the file is opened again by name (after a rotation moved the old one away).
    pub(crate) fn reopen(&self) {
        if let Sink::File { path, file } = &self.sink {
            match open(path) {
                Ok(reopened) => {
                    *file.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = reopened;
                    tracing::info!(path = %path.display(), "audit file reopened");
                }
                Err(error) => {
                    self.metrics.audit_write_failures.inc();
                    tracing::error!(%error, path = %path.display(), "could not reopen the audit file: still writing the old one");
                }
            }
        }
    }
}

/// Reads an audit file: the events that match, oldest first (lines that are not events are
/// skipped and counted).
pub(crate) fn read(
    path: &Path,
    tenant: Option<&str>,
    since: Option<DateTime<Utc>>,
    operation: Option<&str>,
) -> anyhow::Result<(Vec<Event>, usize)> {
    use std::io::BufRead;
    let failed = |error: std::io::Error| anyhow::anyhow!("reading {}: {error}", path.display());
    // Line by line: an audit file grows for as long as it is not rotated.
    let file = std::io::BufReader::new(File::open(path).map_err(failed)?);
    let (mut events, mut unreadable) = (Vec::new(), 0);
    for line in file.split(b'\n') {
        let line = line.map_err(failed)?;
        if line.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<Event>(&line) {
            Ok(event) => {
                let keep = tenant.is_none_or(|tenant| event.tenant.as_deref() == Some(tenant))
                    && since.is_none_or(|since| event.time >= since)
                    && operation.is_none_or(|operation| event.operation == operation);
                if keep {
                    events.push(event);
                }
            }
            Err(_) => unreadable += 1,
        }
    }
    Ok((events, unreadable))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn targets_name_identifiers_never_bodies() {
        let mut call = Call::new(Operation::UpdateKickingRule);
        call.body = Some(json!({"appid": "app-1", "id": 1953, "time": 60}));
        let target = target_of(&call);
        assert_eq!(target, BTreeMap::from([("app".into(), "app-1".into()), ("rule".into(), "1953".into())]));
        let mut call = Call::new(Operation::SetRecordingConfig);
        call.body = Some(json!({"id": "p1", "recording_server": "10.0.0.1:80"}));
        assert_eq!(target_of(&call), BTreeMap::from([("project".into(), "p1".into())]));
    }

    #[test]
    fn events_round_trip_through_a_file_and_filter() {
        let dir = std::env::temp_dir().join(format!("agora-audit-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let config = AuditConfig { sink: AuditSink::File, path: Some(path.clone()), reads: false };
        let audit = Audit::new(&config, Arc::new(Metrics::new())).unwrap();
        for (tenant, operation) in [("acme", "create_project"), ("globex", "delete_kicking_rule")] {
            let mut event = Event::new(operation);
            event.tenant = Some(tenant.into());
            event.status = 201;
            event.outcome = Outcome::Ok;
            audit.record(&event);
        }
        std::fs::write(dir.join("other"), "").unwrap();
        let (events, unreadable) = read(&path, Some("globex"), None, None).unwrap();
        assert_eq!((events.len(), unreadable, events[0].operation.as_str()), (1, 0, "delete_kicking_rule"));
        let (events, _) = read(&path, None, Some(Utc::now() + chrono::Duration::hours(1)), None).unwrap();
        assert!(events.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
