//! `allow_agora_ips`: a project's notices let in only from the addresses of Agora's NCS servers,
//! as `GET /v2/ncs/ip` (`get_ncs_ips`) answers them — fetched at start, then every half
//! `cache.addresses_ttl` (Agora asks for at least every 24 hours), and every 10 s while none was
//! had. The address is the connection's peer on `server.notifications_listen`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use agora_console_client::types::NcsIpResponse;

use super::reconcile::PollFn;
use crate::call::Call;
use crate::error::GatewayError;
use crate::operations::Operation;

/// While no list was had, ask again this often.
const RETRY_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct AgoraAddresses {
    ips: RwLock<Option<HashSet<IpAddr>>>,
}

impl AgoraAddresses {
    /// Takes Agora's answer; answers how many addresses it names.
    pub(crate) fn take(&self, body: &[u8]) -> Result<usize, String> {
        let answer: NcsIpResponse =
            serde_json::from_slice(body).map_err(|e| format!("not an NCS address list: {e}"))?;
        let ips: HashSet<IpAddr> =
            answer.data.service.hosts.iter().filter_map(|host| host.primary_ip.trim().parse().ok()).collect();
        if ips.is_empty() {
            return Err("Agora named no address".into());
        }
        let count = ips.len();
        *self.ips.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(ips);
        Ok(count)
    }

    /// Whether a notice from `peer` is let in (`None`: a listener that does not tell).
    pub(crate) fn admits(&self, peer: Option<IpAddr>) -> Result<(), GatewayError> {
        let Some(peer) = peer else {
            return Err(GatewayError::Forbidden(
                "this project's notices are taken on server.notifications_listen only (allow_agora_ips)".into(),
            ));
        };
        let ips = self.ips.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match ips.as_ref() {
            // Agora sends it again later.
            None => Err(GatewayError::Unavailable("the addresses of Agora's NCS servers are not known yet".into())),
            Some(ips) if ips.contains(&peer.to_canonical()) => Ok(()),
            Some(_) => Err(GatewayError::Forbidden("not an address of Agora's NCS servers".into())),
        }
    }
}

/// Keeps `addresses` fresh for as long as they live.
pub(crate) async fn keep_fresh(addresses: Weak<AgoraAddresses>, poll: PollFn, every: Duration) {
    loop {
        let Some(strong) = addresses.upgrade() else { return };
        let fetched = match poll(Call::new(Operation::GetNcsIps)).await {
            Ok(answer) if answer.status.is_success() => strong.take(&answer.body),
            Ok(answer) => Err(format!("Agora answered {}", answer.status)),
            Err(error) => Err(error.to_string()),
        };
        drop(strong);
        let wait = match fetched {
            Ok(count) => {
                tracing::info!(count, "NCS: the addresses of Agora's notification servers");
                every
            }
            Err(error) => {
                tracing::warn!(%error, "NCS: could not fetch the addresses of Agora's notification servers");
                RETRY_EVERY
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The list, fetched by the gateway's own polls.
pub(crate) fn start(addresses: &Arc<AgoraAddresses>, poll: PollFn, every: Duration) {
    tokio::spawn(keep_fresh(Arc::downgrade(addresses), poll, every));
}
