//! One audit event: what it records, its one line in the log sink (every caller-written field
//! escaped), and what a call was about.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::call::Call;
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
    /// The domain (`host:port`) a write's last attempt went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upstream_domain: Option<String>,
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
            upstream_domain: None,
        }
    }

    /// `name=value` pairs of the target, space-separated, each value escaped ([`escaped`]).
    pub(crate) fn target_text(&self) -> String {
        let pairs: Vec<String> =
            self.target.iter().map(|(name, value)| format!("{}={}", escaped(name), escaped(value))).collect();
        pairs.join(" ")
    }

    /// When, in RFC 3339 with milliseconds.
    pub(crate) fn time_text(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// The line of the log sink: every field that a caller could have written (subject, target,
    /// reason) escaped, so no caller can end the line and write one of its own.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} {} {} {} [{}] {} {}{}",
            self.time_text(),
            escaped(self.tenant.as_deref().unwrap_or("-")),
            escaped(self.subject.as_deref().unwrap_or("-")),
            escaped(&self.operation),
            self.target_text(),
            self.status,
            self.outcome.as_str(),
            self.reason.as_deref().map(|reason| format!(": {}", escaped(reason))).unwrap_or_default()
        )
    }
}

/// `text` with control characters (newlines, carriage returns, escapes of a terminal), Unicode's
/// line and paragraph separators, the backslash and `|` (a column of the `audit` table) escaped:
/// one line, one column, whatever a caller put in a token's `sub` or a body's fields.
pub(crate) fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || matches!(c, '\\' | '|' | '\u{2028}' | '\u{2029}' | '\u{85}');
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if needs(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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
