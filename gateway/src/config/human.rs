//! Durations in human form (`500ms`, `5s`, `1h 30m`), for serde's `deserialize_with`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub(crate) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|error| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"5s\" or \"250ms\": {error}"))
    })
}

pub(crate) fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

/// A duration, or `"off"`.
pub(crate) fn optional_duration_or_off<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text == "off" {
        return Ok(None);
    }
    humantime::parse_duration(&text).map(Some).map_err(|error| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"24h\", nor \"off\": {error}"))
    })
}
