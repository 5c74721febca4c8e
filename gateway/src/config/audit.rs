//! The audit trail's section of the configuration (`[audit]`).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditConfig {
    /// `log`: one line per event in the log stream (target `audit`); `file`: JSON lines appended
    /// to `path` (reopened on SIGUSR1, for log rotation).
    pub(crate) sink: AuditSink,
    /// The audit file (relative to the config file), with `sink = "file"`.
    pub(crate) path: Option<PathBuf>,
    /// Audit reads too (by default only writes and admin actions are).
    pub(crate) reads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuditSink {
    #[default]
    Log,
    File,
}
