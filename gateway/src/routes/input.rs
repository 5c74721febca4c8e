//! Reading a request's inputs into a [`Call`], and refusing bad ones with a 400 that names the
//! field, before any budget is spent: path and query parameters checked against the spec's types
//! (`ParamSpec`), the body (bounded, 413 beyond; JSON; the generated request type), the documented
//! rules (`checks.rs`); and what the edge and the client say about the request (`Inbound`).

use agora_console_client::rules;
use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::call::Call;
use crate::dispatch;
use crate::edge::RequestSlot;
use crate::error::GatewayError;
use crate::operations::Operation;
use crate::pipeline::Directives;
use crate::policy::{Location, ParamKind, ParamSpec};

use super::checks;

/// Reads a body of at most `limit` bytes (413 beyond, also when `declared` says so up front).
pub(crate) async fn read_body(body: Body, declared: Option<usize>, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = GatewayError::PayloadTooLarge { limit: limit as u64 };
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large),
        Err(error) => Err(GatewayError::bad_request(format!("the request body could not be read: {error}"))),
    }
}

/// What the handler needs before it reads the inputs: where to leave the labels of the request's
/// metrics, the credentials, and the client's directives. Cheap: one header cloned.
pub(crate) struct Inbound {
    pub(crate) slot: RequestSlot,
    /// The request's id (the edge made sure it has a usable one).
    pub(crate) request_id: Option<String>,
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) declared_length: Option<usize>,
    pub(crate) directives: Directives,
}

impl<S: Send + Sync> FromRequestParts<S> for Inbound {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Inbound::of(parts))
    }
}

impl Inbound {
    pub(crate) fn of(parts: &Parts) -> Self {
        let refresh = asks_refresh(&parts.headers);
        let slot = parts.extensions.get::<RequestSlot>().cloned().unwrap_or_default();
        let (deadline, traced) = (slot.deadline(), slot.traced());
        let request_id = parts.headers.get("x-request-id").and_then(|id| id.to_str().ok()).map(str::to_string);
        Inbound {
            slot,
            request_id,
            authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
            declared_length: parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok()?.parse().ok()),
            directives: Directives { refresh, deadline, traced },
        }
    }
}

/// Whether the client sent `Cache-Control: no-cache` (or `Pragma: no-cache`): fetch anew.
pub(crate) fn asks_refresh(headers: &HeaderMap) -> bool {
    let says_no_cache = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.split(',').any(|directive| directive.trim().eq_ignore_ascii_case("no-cache")))
    };
    says_no_cache(header::CACHE_CONTROL) || says_no_cache(header::PRAGMA)
}

/// The path's parameters, percent-decoded, by name (none for a path without parameters).
pub(crate) struct PathValues(pub(crate) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for PathValues {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => Ok(PathValues(params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())),
            Err(RawPathParamsRejection::MissingPathParams(_)) => Ok(PathValues(Vec::new())),
            Err(rejection) => Err(GatewayError::bad_request(format!("invalid path: {}", rejection.body_text()))),
        }
    }
}

/// One parameter's text checked against its spec; the 400 names it.
fn check_param(spec: &ParamSpec, value: &str) -> Result<(), GatewayError> {
    let name = spec.name;
    match spec.kind {
        ParamKind::Text => Ok(()),
        ParamKind::Date => chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(drop)
            .map_err(|_| GatewayError::bad_request(format!("{name} must be a date as YYYY-MM-DD, not {value:?}"))),
        ParamKind::Uint32 => {
            let number: u32 = value.parse().map_err(|_| {
                GatewayError::bad_request(format!("{name} must be an unsigned 32-bit integer, not {value:?}"))
            })?;
            match spec.maximum {
                Some(maximum) if u64::from(number) > maximum => {
                    Err(GatewayError::bad_request(format!("{name} must be at most {maximum}")))
                }
                _ => Ok(()),
            }
        }
        ParamKind::OneOf(values) if values.contains(&value) => Ok(()),
        ParamKind::OneOf(values) => {
            Err(GatewayError::bad_request(format!("{name} must be one of {}, not {value:?}", values.join(", "))))
        }
    }
}

/// A path parameter fills a segment of its own: never a dot segment; a channel name within
/// Agora's character set.
fn check_path_param(name: &str, value: &str) -> Result<(), GatewayError> {
    let refuse = |why: String| GatewayError::bad_request(format!("path parameter {name}: {why}"));
    rules::check_path_segment(value).map_err(refuse)?;
    if name == "cname" {
        rules::check_channel_name(value).map_err(refuse)?;
    }
    Ok(())
}

/// A body key that is one of the schema's fields but for case is refused. Unknown keys go on to
/// Agora as they came (transparency), but Go's `encoding/json` — and so, perhaps, Agora — matches
/// keys ignoring case, with Unicode's simple folding (`ſ` reads as `s`, the Kelvin sign as `k`),
/// and the last match wins: `{"id": own, "ID": another's}` passes the ownership check of `id` and
/// could make Agora act on the other. Other unknown keys pass.
fn check_key_case<'a>(fields: &[&str], keys: impl Iterator<Item = &'a String>) -> Result<(), GatewayError> {
    let folded =
        |text: &str| -> String { text.chars().flat_map(char::to_uppercase).flat_map(char::to_lowercase).collect() };
    for key in keys {
        if fields.contains(&key.as_str()) {
            continue;
        }
        let key_folded = folded(key);
        if let Some(field) = fields.iter().find(|field| folded(field) == key_folded) {
            return Err(GatewayError::bad_request(format!(
                "body key {key:?} is the field {field:?} but for case, which Agora may read as {field}: send {field} only"
            )));
        }
    }
    Ok(())
}

/// The call of `operation` from its inputs, checked as the spec and the document say.
pub(crate) fn build_call(
    operation: Operation,
    path: PathValues,
    query: Option<&str>,
    body: Option<Bytes>,
) -> Result<Call, GatewayError> {
    let spec = operation.spec();
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut call = Call::new(operation);
    for param in spec.params {
        let given = match param.location {
            Location::Path => path.0.iter().find(|(name, _)| name == param.name).map(|(_, value)| value.as_str()),
            // An empty query value reads as not given, as forms write it.
            Location::Query => query
                .iter()
                .find(|(name, _)| name == param.name)
                .map(|(_, value)| value.as_str())
                .filter(|v| !v.is_empty()),
        };
        match given {
            Some(value) => {
                if param.location == Location::Path {
                    check_path_param(param.name, value)?;
                }
                check_param(param, value)?;
                call.set(param.name, value.to_string());
            }
            None if param.required => {
                return Err(GatewayError::bad_request(format!("query parameter {} is required", param.name)));
            }
            None => {}
        }
    }
    if spec.body.is_some() {
        let body = body.unwrap_or_default();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(GatewayError::bad_request("the request needs a JSON body"));
        }
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|error| GatewayError::bad_request(format!("the body is not valid JSON: {error}")))?;
        if let Some(keys) = value.as_object() {
            check_key_case(spec.body_fields, keys.keys())?;
        }
        call.body = Some(value);
    }
    for check in spec.policy.checks {
        checks::run(*check, &mut call)?;
    }
    if let Some(body) = &call.body {
        dispatch::check_body(operation, body)?;
    }
    Ok(call)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn detail(result: Result<Call, GatewayError>) -> String {
        match result {
            Err(GatewayError::BadRequest(detail)) => detail,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    fn path(pairs: &[(&str, &str)]) -> PathValues {
        PathValues(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn parameters_are_checked_against_the_spec_naming_the_field() {
        let channels = |query: &str| build_call(Operation::ListChannels, path(&[("appid", "a")]), Some(query), None);
        assert_eq!(detail(channels("page_size=501")), "page_size must be at most 500");
        assert_eq!(detail(channels("page_size=many")), "page_size must be an unsigned 32-bit integer, not \"many\"");
        assert!(detail(channels("page_no=-1")).starts_with("page_no must be"));
        let call = channels("page_no=2&page_size=0&unknown=1").unwrap();
        assert_eq!((call.get("page_no"), call.get("page_size"), call.get("unknown")), (Some("2"), Some("0"), None));

        let user = |uid: &str| {
            build_call(Operation::GetUserProperty, path(&[("appid", "a"), ("uid", uid), ("cname", "c")]), None, None)
        };
        assert!(detail(user("someone")).starts_with("uid must be an unsigned 32-bit integer"));
        assert!(user("0").is_ok(), "the document does not forbid uid 0 here");
        assert!(user("4294967295").is_ok());

        let usage = |query: &str| build_call(Operation::GetUsageV3, path(&[]), Some(query), None);
        assert_eq!(detail(usage("from_date=2026-01-01&to_date=2026-01-02")), "query parameter project_id is required");
        assert!(
            detail(usage("from_date=2026-13-01&to_date=2026-01-02&project_id=p"))
                .starts_with("from_date must be a date")
        );
        let business = detail(usage("from_date=2026-01-01&to_date=2026-01-02&project_id=p&business=video"));
        assert!(business.starts_with("business must be one of default,"), "{business}");
    }

    #[test]
    fn bodies_are_json_of_the_generated_type() {
        let status = |body: &str| {
            build_call(Operation::SetProjectStatus, path(&[]), None, Some(Bytes::copy_from_slice(body.as_bytes())))
        };
        assert_eq!(detail(status(" ")), "the request needs a JSON body");
        assert!(detail(status("{not json")).starts_with("the body is not valid JSON"));
        assert!(detail(status(r#"{"id": 5, "status": 1}"#)).starts_with("invalid body field id"));
        assert!(detail(status(r#"{"id": "x", "status": 2}"#)).starts_with("invalid body field status"));
        assert!(detail(status(r#"{"status": 1}"#)).contains("missing field `id`"));
        // A key that is a field but for case (Go's folding included) would be read as that field.
        for smuggled in [r#""ID": "other""#, r#""Id": "other""#, r#""ſtatus": 1"#, r#""STATUS": 1"#] {
            let refused = detail(status(&format!(r#"{{"id": "x", "status": 0, {smuggled}}}"#)));
            assert!(refused.starts_with("body key") && refused.contains("but for case"), "{smuggled}: {refused}");
        }
        let create = |body: &str| {
            build_call(Operation::CreateProject, path(&[]), None, Some(Bytes::copy_from_slice(body.as_bytes())))
        };
        assert!(detail(create(r#"{"name": "acme-a", "NAME": "globex-b"}"#)).contains(r#""NAME""#));
        assert!(detail(create("{\"name\": \"acme-a\", \"enable_sign_\u{212A}ey\": true}")).contains("but for case"));
        let kept = status(r#"{"id": "x", "status": 0, "note": "unknown fields stay"}"#).unwrap();
        assert_eq!(kept.body, Some(json!({"id": "x", "status": 0, "note": "unknown fields stay"})));
    }
}
