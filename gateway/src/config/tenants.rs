//! The tenants' section of the configuration: each tenant's issuer, audience, scopes, projects,
//! throttle weight, and keys (inline, or from its JWKS); and how the JWKS are fetched (`[jwks]`).

use std::time::Duration;

use serde::Deserialize;

use super::{Secret, human};
use crate::policy::Scope;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantConfig {
    /// Tenant ID, as it appears in logs and metrics.
    pub(crate) id: String,
    /// The `iss` of this tenant's tokens; unique across tenants.
    pub(crate) issuer: String,
    /// The `aud` this tenant's tokens must carry.
    pub(crate) audience: String,
    /// Scopes this tenant may hold; a token's `scope` is cut down to these.
    pub(crate) scopes: Vec<Scope>,
    /// The tenant owns every project whose name starts with this, and may create projects so named.
    #[serde(default)]
    pub(crate) project_name_prefix: Option<String>,
    /// Further projects the tenant owns, by project ID.
    #[serde(default)]
    pub(crate) project_ids: Vec<String>,
    /// Share of the upstream budget under contention, relative to the other tenants.
    #[serde(default = "super::defaults::weight")]
    pub(crate) weight: u32,
    /// Keys that verify this tenant's tokens, chosen by the token's `kid`; several at once for rotation.
    #[serde(default)]
    pub(crate) keys: Vec<KeyConfig>,
    /// The tenant's identity provider's key set (JWKS), fetched and kept fresh; beside `keys` or
    /// instead of them.
    #[serde(default)]
    pub(crate) jwks_url: Option<String>,
    /// Find the JWKS at `jwks_uri` of `{issuer}/.well-known/openid-configuration` instead.
    #[serde(default)]
    pub(crate) issuer_discovery: bool,
    /// Fetch the JWKS (and the discovery document) over plain `http://` too: anyone on the path
    /// could then add keys and mint this tenant's tokens. For a local identity provider only.
    #[serde(default)]
    pub(crate) allow_insecure_jwks: bool,
    /// The algorithms this tenant's JWKS keys may use (a JWK without `alg` takes the one of these
    /// that fits it); any asymmetric one when left out.
    #[serde(default)]
    pub(crate) algorithms: Vec<String>,
}

impl TenantConfig {
    /// Whether the tenant's keys come (also) from a JWKS.
    pub(crate) fn has_jwks(&self) -> bool {
        self.jwks_url.is_some() || self.issuer_discovery
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyConfig {
    /// Key ID, matched against the token header's `kid`.
    pub(crate) kid: String,
    /// The one algorithm this key verifies (HS256/384/512, RS256/384/512, PS256, ES256/384, EdDSA).
    pub(crate) alg: String,
    /// Shared secret of an HS* key.
    #[serde(default)]
    pub(crate) secret: Option<Secret>,
    /// PEM public key of an RS*/PS*/ES*/EdDSA key.
    #[serde(default)]
    pub(crate) public_key: Option<Secret>,
    /// JWK (JSON) public key, instead of `public_key`.
    #[serde(default)]
    pub(crate) jwk: Option<Secret>,
    /// The key, parsed once when the config is validated. The one import loop of the crate
    /// (config ↔ `auth/keys`), kept on purpose: a key that does not parse must fail validation
    /// with its field named, and only `auth/keys` knows how to parse one, while keys read their
    /// settings from this struct.
    #[serde(skip)]
    pub(crate) parsed: Option<crate::auth::keys::VerifyingKey>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JwksConfig {
    /// A token naming a `kid` the key set lacks makes the gateway fetch the set again — at most
    /// once per this, per tenant.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) unknown_kid_cooldown: Duration,
    /// The key set is fetched again before its `Cache-Control: max-age` runs out; a shorter
    /// max-age is raised to this.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) refresh_min: Duration,
    /// ... and a longer one (or none) lowered to this.
    #[serde(deserialize_with = "human::duration")]
    pub(crate) refresh_max: Duration,
    /// One fetch (connect to last byte).
    #[serde(deserialize_with = "human::duration")]
    pub(crate) timeout: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            unknown_kid_cooldown: Duration::from_secs(30),
            refresh_min: Duration::from_secs(60),
            refresh_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        }
    }
}
