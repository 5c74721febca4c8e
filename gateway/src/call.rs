//! A validated request for one Console operation ([`Call`]): its parameters by name as text (path
//! and query, checked against the spec's types by the routes) and its JSON body (checked against
//! the generated request type). The routes build it, authorize checks it, the cache keys it, and
//! the generated dispatch (`generated/dispatch.rs`) sends it through the typed client.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::operations::Operation;
use crate::policy::Location;

/// A validated request for one Console operation.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) operation: Operation,
    /// Parameters given (path and query), by name, as text; defaults are not filled in.
    params: BTreeMap<&'static str, String>,
    /// The JSON body, for operations that take one.
    pub(crate) body: Option<Value>,
}

impl Call {
    pub(crate) fn new(operation: Operation) -> Self {
        Self { operation, params: BTreeMap::new(), body: None }
    }

    /// A call with these parameters (by the spec's names).
    pub(crate) fn with(operation: Operation, params: &[(&'static str, &str)]) -> Self {
        let mut call = Self::new(operation);
        for (name, value) in params {
            call.set(name, value.to_string());
        }
        call
    }

    pub(crate) fn set(&mut self, name: &'static str, value: String) {
        self.params.insert(name, value);
    }

    /// A parameter's value, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The value a policy names (`owner-param`): a parameter, or a string field of the body.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.get(name).or_else(|| self.body.as_ref()?.get(name)?.as_str())
    }

    /// The cache key: the operation and its parameters, normalized (defaults filled in, sorted by
    /// name). Reads have no body.
    pub(crate) fn cache_key(&self) -> String {
        let spec = self.operation.spec();
        let mut key = String::with_capacity(64);
        key.push_str(spec.id);
        let mut separator = '?';
        for param in spec.params.iter().filter(|p| p.location == Location::Path) {
            key.push('/');
            key.extend(escaped(self.get(param.name).unwrap_or_default()));
        }
        let mut query: Vec<_> = spec.params.iter().filter(|p| p.location == Location::Query).collect();
        query.sort_by_key(|param| param.name);
        for param in query {
            let Some(value) = self.get(param.name).or(param.default) else { continue };
            key.push(separator);
            separator = '&';
            key.push_str(param.name);
            key.push('=');
            key.extend(escaped(value));
        }
        key
    }
}

/// A parameter value in a cache key: `/`, `?`, `&`, `=` and `%` escaped, so keys cannot collide.
fn escaped(value: &str) -> form_urlencoded::ByteSerialize<'_> {
    form_urlencoded::byte_serialize(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_fill_defaults_sort_and_escape() {
        let page = |params: &[(&'static str, &str)]| Call::with(Operation::ListChannels, params).cache_key();
        assert_eq!(page(&[("appid", "a")]), "list_channels/a?page_no=0&page_size=100");
        assert_eq!(page(&[("appid", "a"), ("page_no", "0")]), page(&[("appid", "a")]));
        assert_ne!(page(&[("appid", "a"), ("page_no", "1")]), page(&[("appid", "a")]));
        assert_ne!(page(&[("appid", "a/b")]), page(&[("appid", "a"), ("page_no", "b")]));
        let get = |params: &[(&'static str, &str)]| Call::with(Operation::GetProject, params).cache_key();
        assert_ne!(get(&[("id", "x")]), get(&[("name", "x")]));
        assert_eq!(get(&[("name", "n"), ("id", "i")]), "get_project?id=i&name=n");
        let rules = Call::with(Operation::ListKickingRules, &[("appid", "k")]);
        assert_eq!(rules.cache_key(), "list_kicking_rules?appid=k");
    }

    #[test]
    fn a_policy_value_comes_from_a_parameter_or_the_body() {
        let mut call = Call::with(Operation::ListKickingRules, &[("appid", "from-query")]);
        assert_eq!(call.value("appid"), Some("from-query"));
        call = Call::new(Operation::CreateKickingRule);
        call.body = Some(serde_json::json!({"appid": "from-body", "uid": 7}));
        assert_eq!(call.value("appid"), Some("from-body"));
        assert_eq!(call.value("uid"), None, "only strings");
    }
}
