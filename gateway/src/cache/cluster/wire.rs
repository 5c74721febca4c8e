//! What the shared cache puts on the wire: an answer in a Redis hash (status, headers as text, body
//! bytes), the replies of the Lua scripts, and the invalidation messages replicas publish.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::answer::Answer;

/// What one replica tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Message {
    /// The invalidation's number in the cluster (filled in by Redis).
    pub(super) epoch: u64,
    /// The replica that wrote (it applied the invalidation itself already).
    pub(super) from: String,
    #[serde(flatten)]
    pub(super) change: Change,
    /// The account's seal of `from` and `change` (`seal.rs`): without it, the message is ignored.
    #[serde(default)]
    pub(super) seal: String,
}

impl Message {
    /// What the seal covers (the epoch is Redis's own, filled in by the script).
    pub(super) fn context(from: &str, change: &Change) -> Vec<u8> {
        let change = serde_json::to_string(change).unwrap_or_default();
        format!("message\n{from}\n{change}").into_bytes()
    }
}

/// What changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(crate) enum Change {
    /// A project: the project list, and answers about it.
    Project { project: String },
    /// One answer, by cache key.
    Key { key: String, class: String },
    /// Everything of a class, or everything (an admin's purge).
    Purge { class: Option<String> },
}

pub(super) fn encode_headers(headers: &HeaderMap) -> String {
    headers.iter().filter_map(|(name, value)| Some(format!("{name}: {}\n", value.to_str().ok()?))).collect()
}

pub(super) fn decode(status: &str, headers: &str, body: Vec<u8>) -> Option<Answer> {
    let status = StatusCode::from_u16(status.parse().ok()?).ok()?;
    let mut map = HeaderMap::new();
    for line in headers.lines() {
        let (name, value) = line.split_once(": ")?;
        map.append(HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?);
    }
    Some(Answer { status, headers: map, body: Bytes::from(body) })
}

pub(super) type Reply = Vec<redis::Value>;

pub(super) fn text(value: Option<&redis::Value>) -> Option<String> {
    match value? {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        redis::Value::SimpleString(text) => Some(text.clone()),
        redis::Value::Int(number) => Some(number.to_string()),
        _ => None,
    }
}

pub(super) fn bytes(value: Option<&redis::Value>) -> Option<Vec<u8>> {
    match value? {
        redis::Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    }
}

pub(super) fn int(value: Option<&redis::Value>) -> i64 {
    match value {
        Some(redis::Value::Int(number)) => *number,
        other => text(other).and_then(|t| t.parse().ok()).unwrap_or(0),
    }
}

/// A shared copy as Redis holds it: status and headers as text, the body sealed.
pub(super) struct SealedCopy {
    pub(super) status: String,
    pub(super) headers: String,
    pub(super) body: Vec<u8>,
    pub(super) age: Duration,
}

/// The copy at `offset` of a lookup's reply (status, headers, body, then its age at `age_at`).
pub(super) fn copy(reply: &Reply, offset: usize, age_at: usize) -> Option<SealedCopy> {
    Some(SealedCopy {
        status: text(reply.get(offset))?,
        headers: text(reply.get(offset + 1))?,
        body: bytes(reply.get(offset + 2))?,
        age: Duration::from_millis(u64::try_from(int(reply.get(age_at))).unwrap_or(0)),
    })
}

/// What an entry's seal covers besides its body: its key, status and headers.
pub(super) fn entry_context(key: &str, status: &str, headers: &str) -> Vec<u8> {
    format!("entry\n{key}\n{status}\n{headers}").into_bytes()
}
