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
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use chrono::{DateTime, Utc};

use crate::config::{AuditConfig, AuditSink};
use crate::metrics::Metrics;
use crate::operations::Operation;

mod event;
mod scope;

pub(crate) use event::{Event, Outcome, escaped, target_of};
pub(crate) use scope::{AuditScope, MaybeDone, ServedBy};

/// Events waiting for the file's writer; past this many, an event is dropped and counted rather
/// than make a request wait for the disk.
const FILE_QUEUE: usize = 8192;

enum Sink {
    Log,
    File { path: PathBuf, queue: SyncSender<ToFile> },
}

/// What the file's writer is told.
enum ToFile {
    Line(String),
    /// Open the file again by name (SIGUSR1, after a rotation).
    Reopen,
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

/// The file's writer: a thread of its own, so a slow or stuck disk never holds a request or a
/// runtime worker; it ends when the audit is dropped (after writing what was queued).
fn writer(path: PathBuf, mut file: File, queue: Receiver<ToFile>, metrics: Arc<Metrics>) {
    for command in queue {
        match command {
            // One write of the whole line: appends never interleave, even from another process.
            ToFile::Line(line) => {
                if let Err(error) = file.write_all(line.as_bytes()) {
                    metrics.audit_write_failures.inc();
                    tracing::error!(%error, path = %path.display(), "could not write an audit event");
                }
            }
            ToFile::Reopen => match open(&path) {
                Ok(reopened) => {
                    file = reopened;
                    tracing::info!(path = %path.display(), "audit file reopened");
                }
                Err(error) => {
                    metrics.audit_write_failures.inc();
                    tracing::error!(%error, path = %path.display(), "could not reopen the audit file: still writing the old one");
                }
            },
        }
    }
}

impl Audit {
    pub(crate) fn new(config: &AuditConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let sink = match (config.sink, &config.path) {
            (AuditSink::File, Some(path)) => {
                let file = open(path).map_err(|error| anyhow::anyhow!("audit.path {}: {error}", path.display()))?;
                let (queue, commands) = std::sync::mpsc::sync_channel(FILE_QUEUE);
                let (path_for_writer, metrics_for_writer) = (path.clone(), metrics.clone());
                std::thread::Builder::new()
                    .name("audit-writer".into())
                    .spawn(move || writer(path_for_writer, file, commands, metrics_for_writer))
                    .map_err(|error| anyhow::anyhow!("starting the audit file's writer: {error}"))?;
                Sink::File { path: path.clone(), queue }
            }
            _ => Sink::Log,
        };
        Ok(Self { sink, reads: config.reads, metrics })
    }

    /// Whether a request of `operation` is audited: writes always, reads with `audit.reads`.
    pub(crate) fn covers(&self, operation: Operation) -> bool {
        operation.policy().cache.is_none() || self.reads
    }

    /// Writes one event (the file sink: hands it to its writer, never waiting); a failure is
    /// counted and logged, never the caller's.
    pub(crate) fn record(&self, event: &Event) {
        match &self.sink {
            Sink::Log => tracing::info!(
                target: "audit",
                request_id = event.request_id.as_deref().unwrap_or("-"),
                upstream_request_id = event.upstream_request_id.as_deref().unwrap_or("-"),
                upstream_domain = event.upstream_domain.as_deref().unwrap_or("-"),
                event = %event.summary(),
                "audit"
            ),
            Sink::File { path, queue } => {
                let queued = serde_json::to_string(event).map_err(|error| error.to_string()).and_then(|mut line| {
                    line.push('\n');
                    queue.try_send(ToFile::Line(line)).map_err(|error| match error {
                        TrySendError::Full(_) => "the audit file's writer is behind".to_string(),
                        TrySendError::Disconnected(_) => "the audit file's writer has stopped".to_string(),
                    })
                });
                if let Err(error) = queued {
                    self.metrics.audit_write_failures.inc();
                    tracing::error!(%error, path = %path.display(), event = %event.summary(), "could not write an audit event");
                }
            }
        }
    }

    /// SIGUSR1: the file is opened again by name (after a rotation moved the old one away), in
    /// order with the events: those recorded before go to the old file.
    pub(crate) fn reopen(&self) {
        if let Sink::File { path, queue } = &self.sink
            && queue.try_send(ToFile::Reopen).is_err()
        {
            self.metrics.audit_write_failures.inc();
            tracing::error!(path = %path.display(), "could not reopen the audit file: its writer is behind or stopped");
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
