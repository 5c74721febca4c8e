//! The projects whose channel state comes from Agora's Notifications service (`[[notifications]]`).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Secret, human};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotificationsConfig {
    /// The project's App ID (its `vendor_key`): notices come to `POST /agora/ncs/{appid}`.
    pub(crate) appid: String,
    /// The NCS secret set in Agora Console for this project (`env:NAME` or `file:PATH`).
    pub(crate) secret: Secret,
    /// Every channel of the project is polled this often (in idle slots of the budget), and the
    /// channel list too, to correct what lost notices left wrong.
    #[serde(default = "reconcile_every", deserialize_with = "human::duration")]
    pub(crate) reconcile_every: Duration,
    /// No notice for this long: channel reads go back to the cache and polling until notices come
    /// again (and the state is reconciled with Agora once more).
    #[serde(default = "silence_after", deserialize_with = "human::duration")]
    pub(crate) silence_after: Duration,
    /// Take this project's notices only from the addresses of Agora's NCS servers (`GET
    /// /v2/ncs/ip`, fetched at start and every half `cache.addresses_ttl`), and only on
    /// `server.notifications_listen`.
    #[serde(default)]
    pub(crate) allow_agora_ips: bool,
}

fn reconcile_every() -> Duration {
    Duration::from_secs(60)
}

fn silence_after() -> Duration {
    Duration::from_secs(300)
}

/// App IDs unique and of Agora's form, secrets not empty, durations in range; an allow-list only
/// where the peer's address is known (`server.notifications_listen`).
pub(super) fn validate(entries: &[NotificationsConfig], listener: bool) -> Result<(), ConfigError> {
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| format!("notifications[{i}].{name}");
        if entry.appid.len() != 32 || !entry.appid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::new(field("appid"), "must be an App ID: 32 hexadecimal characters"));
        }
        if entries[..i].iter().any(|other| other.appid == entry.appid) {
            return Err(ConfigError::new(field("appid"), "appears in two [[notifications]] entries"));
        }
        if entry.secret.expose().is_empty() {
            return Err(ConfigError::new(field("secret"), "must not be empty"));
        }
        if entry.allow_agora_ips && !listener {
            return Err(ConfigError::new(
                field("allow_agora_ips"),
                "needs server.notifications_listen: the address Agora's servers connect to",
            ));
        }
        for (name, value) in [("reconcile_every", entry.reconcile_every), ("silence_after", entry.silence_after)] {
            if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&value) {
                return Err(ConfigError::new(field(name), "must be between 1s and 24h"));
            }
        }
    }
    Ok(())
}
