//! What the generated dispatch (`generated/dispatch.rs`) needs between a [`Call`]'s text and the
//! generated client's types; only generated code uses it. The conversions' errors become the
//! client's `InvalidRequest`: the routes refused such input before, so they mean a bug.

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::call::Call;
use crate::error::GatewayError;

pub(crate) fn date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| format!("{text:?} is not a date"))
}

pub(crate) fn uint32(text: &str) -> Result<u32, String> {
    text.parse().map_err(|_| format!("{text:?} is not an unsigned 32-bit integer"))
}

pub(crate) fn parsed<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{text:?} is not a valid value"))
}

/// The body as the operation's generated request type.
pub(crate) fn body<T: DeserializeOwned>(call: &Call) -> Result<T, String> {
    let body = call.body.clone().ok_or("the call has no body")?;
    serde_json::from_value(body).map_err(|error| format!("the body does not fit: {error}"))
}

/// Checks a body against a generated request type, naming the offending field in the 400.
pub(crate) fn check_body<T: DeserializeOwned>(body: &Value) -> Result<(), GatewayError> {
    match serde_path_to_error::deserialize::<_, T>(body) {
        Ok(_) => Ok(()),
        Err(error) => Err(match error.path().to_string().as_str() {
            "." => GatewayError::bad_request(format!("invalid body: {}", error.inner())),
            path => GatewayError::bad_request(format!("invalid body field {path}: {}", error.inner())),
        }),
    }
}
