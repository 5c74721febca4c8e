//! Reading a request's inputs into typed values, and refusing bad ones with a 400 that names the
//! field: the body (bounded, 413 beyond), JSON and query strings (with the path of the offending
//! field), path parameters, and the client's directives (refresh, deadline).

use agora_console_client::rules;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use chrono::NaiveDate;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::edge::RequestDeadline;
use crate::error::GatewayError;

/// Application states that bound request bodies.
pub trait HasBodyLimit {
    /// Largest body accepted, in bytes.
    fn body_limit(&self) -> usize;
}

/// The request body, bounded by `server.max_body` (413 beyond it).
pub struct Body(pub Bytes);

impl<S: HasBodyLimit + Send + Sync> FromRequest<S> for Body {
    type Rejection = GatewayError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = state.body_limit();
        let too_large = GatewayError::PayloadTooLarge { limit: limit as u64 };
        let declared =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large);
        }
        match Limited::new(request.into_body(), limit).collect().await {
            Ok(collected) => Ok(Body(collected.to_bytes())),
            Err(error) if error.is::<LengthLimitError>() => Err(too_large),
            Err(error) => Err(GatewayError::bad_request(format!("the request body could not be read: {error}"))),
        }
    }
}

/// How the client wants its request handled: `refresh` when it sent `Cache-Control: no-cache` (or
/// `Pragma: no-cache`); `deadline`, the edge's, by when it must be answered.
#[derive(Clone, Copy)]
pub struct Directives {
    pub refresh: bool,
    pub deadline: Option<tokio::time::Instant>,
}

impl<S: Send + Sync> FromRequestParts<S> for Directives {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let says_no_cache = |name| {
            parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.split(',').any(|directive| directive.trim().eq_ignore_ascii_case("no-cache")))
        };
        let refresh = says_no_cache(header::CACHE_CONTROL) || says_no_cache(header::PRAGMA);
        let deadline = parts.extensions.get::<RequestDeadline>().map(|deadline| deadline.0);
        Ok(Directives { refresh, deadline })
    }
}

/// Path parameters, with a problem document when they cannot be read.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(PathParams(params)),
            Err(rejection) => Err(GatewayError::bad_request(format!("invalid path: {}", rejection.body_text()))),
        }
    }
}

pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let value = parse_json(body)?;
    from_json(value)
}

pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|error| GatewayError::bad_request(format!("the body is not valid JSON: {error}")))
}

pub fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, GatewayError> {
    serde_path_to_error::deserialize(value).map_err(|error| naming_the_field(error, "body", "body field"))
}

pub fn parse_query<T: DeserializeOwned>(raw: Option<String>) -> Result<T, GatewayError> {
    let raw = raw.unwrap_or_default();
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(raw.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| naming_the_field(error, "query", "query parameter"))
}

/// A 400 that names the offending field (`invalid body field status: ...`), or the whole input
/// when the error is not about one field (`invalid query: missing field ...`).
fn naming_the_field<E: std::fmt::Display>(
    error: serde_path_to_error::Error<E>,
    whole: &str,
    field: &str,
) -> GatewayError {
    match error.path().to_string().as_str() {
        "." => GatewayError::bad_request(format!("invalid {whole}: {}", error.inner())),
        path => GatewayError::bad_request(format!("invalid {field} {path}: {}", error.inner())),
    }
}

fn date(field: &str, value: &str) -> Result<NaiveDate, GatewayError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| GatewayError::bad_request(format!("{field} must be a date as YYYY-MM-DD, not {value:?}")))
}

pub fn date_range(from: &str, to: &str) -> Result<(NaiveDate, NaiveDate), GatewayError> {
    let (from, to) = (date("from_date", from)?, date("to_date", to)?);
    rules::check_usage_range(from, to).map_err(GatewayError::bad_request)?;
    Ok((from, to))
}
