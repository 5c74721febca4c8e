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

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::config::{AuditConfig, AuditSink};
use crate::metrics::Metrics;
use crate::operations::Operation;

mod event;
mod scope;

pub(crate) use event::{Event, Outcome, escaped, target_of};
pub(crate) use scope::AuditScope;

enum Sink {
    Log,
    File { path: PathBuf, file: Mutex<File> },
}

/// Where events go.
pub(crate) struct Audit {
    sink: Sink,
    reads: bool,
    pub(super) metrics: Arc<Metrics>,
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
mod tests;
