//! The demo: `cargo run -p agora-gateway` with no arguments. The embedded sandbox with demo data,
//! three tenants with fresh random HS256 secrets, and a ready-to-paste token for each.

use std::time::Duration;

use crate::auth::mint::{MintRequest, mint};
use crate::config::{Config, KeyConfig, NotificationsConfig, Secret, TenantConfig, UpstreamConfig};
use crate::policy::Scope;

pub(crate) const DEMO_AUDIENCE: &str = "agora-gateway";
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

fn tenant(id: &str, prefix: &str, scopes: &[Scope], weight: u32) -> TenantConfig {
    TenantConfig {
        id: id.into(),
        issuer: format!("https://auth.{id}.example"),
        audience: DEMO_AUDIENCE.into(),
        scopes: scopes.to_vec(),
        project_name_prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
        project_ids: vec![],
        weight,
        keys: vec![KeyConfig {
            kid: format!("{id}-demo"),
            alg: "HS256".into(),
            secret: Some(Secret::generate().expect("the operating system's random number generator works")),
            public_key: None,
            jwk: None,
            parsed: None,
        }],
        jwks_url: None,
        issuer_discovery: false,
        allow_insecure_jwks: false,
        algorithms: vec![],
    }
}

/// The demo's configuration (validated like any other).
pub(crate) fn config() -> Config {
    use Scope::*;
    let mut config = Config {
        server: crate::config::ServerConfig {
            listen: "127.0.0.1:8080".parse().expect("an address"),
            ..Default::default()
        },
        upstream: UpstreamConfig {
            base_url: crate::config::EMBEDDED_SANDBOX.into(),
            base_urls: vec![],
            area: None,
            customer_id: None,
            customer_secret: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_retry_after: Duration::from_secs(60),
            proxy: None,
        },
        throttle: Default::default(),
        cache: Default::default(),
        jwks: Default::default(),
        audit: Default::default(),
        telemetry: Default::default(),
        tenants: vec![
            tenant(
                "acme",
                "acme-",
                &[ProjectsRead, ProjectsWrite, ProjectsSecrets, UsageRead, KickingRead, KickingWrite, ChannelsRead],
                1,
            ),
            tenant("globex", "globex-", &[ProjectsRead, UsageRead, KickingRead, KickingWrite, ChannelsRead], 1),
            tenant("ops", "", &Scope::ALL, 1),
        ],
        notifications: notifications(),
        demo: true,
    };
    config.validate().expect("the demo config is valid");
    config
}

/// Every demo project's channel state comes from the notices of the embedded sandbox (which plays
/// Agora's Notifications service, with users joining and leaving the demo channels).
fn notifications() -> Vec<NotificationsConfig> {
    let secret = Secret::generate().expect("the operating system's random number generator works");
    agora_sandbox::demo_app_ids()
        .into_iter()
        .map(|(_, appid)| NotificationsConfig {
            appid,
            secret: secret.clone(),
            reconcile_every: Duration::from_secs(60),
            silence_after: Duration::from_secs(300),
            allow_agora_ips: false,
        })
        .collect()
}

/// A token for each demo tenant, with all of its scopes.
pub(crate) fn tokens(config: &Config) -> Vec<(String, String)> {
    config
        .tenants
        .iter()
        .map(|tenant| {
            let request =
                MintRequest { tenant, kid: None, scope: None, subject: "demo-user", ttl: TOKEN_TTL, private_key: None };
            (tenant.id.clone(), mint(&request).expect("demo keys are HS256 secrets"))
        })
        .collect()
}
