//! The one way the gateway talks to Redis (the shared budget and the shared cache): a lazily
//! connected, self-reconnecting connection whose every command is bounded by [`REDIS_TIMEOUT`].

use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;

/// The longest a connect or a command may take before Redis counts as unreachable.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// A client for `redis_url` and its connection, made lazily: the gateway starts even while Redis
/// is down. An invalid URL is an error of `throttle.redis_url`.
pub(crate) fn connect_lazily(redis_url: &str) -> Result<(redis::Client, ConnectionManager), ConfigError> {
    let invalid = |error: redis::RedisError| ConfigError::new("throttle.redis_url", error.to_string());
    let client = redis::Client::open(redis_url).map_err(invalid)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let connection = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(invalid)?;
    Ok((client, connection))
}

/// A command's answer within [`REDIS_TIMEOUT`], or why not.
pub(crate) async fn within_timeout<T>(command: impl Future<Output = redis::RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
    }
}

/// A subscription to `channel`, made within two seconds, or why not.
pub(crate) async fn subscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub, String> {
    let subscription = async {
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(pubsub)
    };
    tokio::time::timeout(Duration::from_secs(2), subscription).await.map_err(|_| "no answer within 2s".to_string())?
}

/// The account's part of every Redis key: `{<hash>}`, 16 hex digits of a SHA-256 of the customer
/// ID and the upstream's domains. The customer ID never appears in Redis in clear; a gateway in
/// front of another upstream (a staging one sharing Redis, prefix and account) keeps apart; and,
/// as a hash tag, it puts every key of the account in one slot of a cluster-mode Redis, where the
/// scripts that touch several keys need them.
pub(crate) fn namespace(customer_id: &str, upstream: &[String]) -> String {
    let mut hash = Sha256::new();
    hash.update(b"agora-gateway namespace\n");
    hash.update(customer_id.as_bytes());
    for domain in upstream {
        hash.update(b"\n");
        hash.update(domain.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("{{{hex}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_hides_the_account_and_tells_upstreams_apart() {
        let live = namespace("customer-1", &["https://api.agora.io/dev".into()]);
        assert!(live.starts_with('{') && live.ends_with('}') && live.len() == 18, "{live}");
        assert!(!live.contains("customer-1"));
        assert_eq!(live, namespace("customer-1", &["https://api.agora.io/dev".into()]));
        assert_ne!(live, namespace("customer-1", &["http://staging.internal/dev".into()]));
        assert_ne!(live, namespace("customer-2", &["https://api.agora.io/dev".into()]));
    }
}
