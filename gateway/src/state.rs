//! The gateway's state: everything a request needs, one per process, and its construction from a
//! validated configuration (the embedded sandbox, the upstream domains, the budget, the cache and
//! its shared tier, the audit trail). Every step of the pipeline reads it; it calls none of them.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::audit::Audit;
use crate::auth::{Authenticator, HasAuthenticator, Tenant};
use crate::cache::{ClusterCache, ResponseCache};
use crate::config::{Config, Secret};
use crate::embedded::{self, EmbeddedSandbox};
use crate::metrics::Metrics;
use crate::notify::Notifications;
use crate::notify::reconcile::{GenerationFn, IdleFn, PollFn, Reconciler};
use crate::server::{Connections, Limits};
use crate::throttle::{Budgets, Source};
use crate::upstream::Upstream;

/// Everything a request needs; one per process.
pub(crate) struct Gateway {
    /// The tenants and their keys, swapped whole by a reload (`reload.rs`).
    pub(crate) auth: arc_swap::ArcSwap<Authenticator>,
    pub(crate) cache: ResponseCache,
    pub(crate) throttle: Budgets,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body: usize,
    /// What each client connection may do (`server.rs`).
    pub(crate) limits: Limits,
    /// The client connections, over every listener (`server.rs`).
    pub(crate) connections: Arc<Connections>,
    /// `/metrics` is served on `server.admin_listen`, not on the main listener.
    pub(crate) admin_listener: bool,
    /// The audit trail of writes and admin actions (`audit/mod.rs`).
    pub(crate) audit: Arc<Audit>,
    /// The file the config came from (what a reload reads again), if it came from one.
    pub(crate) config_path: Option<std::path::PathBuf>,
    /// SIGTERM came: `/readyz` answers 503 while requests are still served
    /// (`server.shutdown_delay`), so load balancers stop sending before the listener closes.
    pub(crate) draining: AtomicBool,
    /// The configuration applied now; held by a reload while it runs.
    pub(crate) applied: tokio::sync::Mutex<Config>,
    /// The channel state of projects whose notices (NCS) come here (`notify/`).
    pub(crate) notifications: Arc<Notifications>,
    /// The gateway as a caller of Agora, for its own background polls.
    pub(crate) itself: Arc<Tenant>,
    /// The embedded sandbox, when `upstream.base_url = "sandbox"`; kept alive with the gateway.
    _sandbox: Option<EmbeddedSandbox>,
}

impl HasAuthenticator for Arc<Gateway> {
    fn authenticator(&self) -> Arc<Authenticator> {
        self.auth.load_full()
    }
}

impl Gateway {
    /// Builds the gateway from a validated config (starting the embedded sandbox if asked to, and
    /// fetching the tenants' JWKS); `config_path` is what a reload reads again.
    pub(crate) async fn new(config: &Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::new());
        let auth = Authenticator::new(config, metrics.clone()).map_err(anyhow::Error::msg)?;
        auth.fetch_new_key_sets().await;
        let (customer_id, customer_secret) = account_credentials(config)?;
        let (sandbox, base_urls) = if config.upstream.is_embedded_sandbox() {
            // The sandbox plays Agora's Notifications service too, for the projects that have it.
            let notify = (!config.notifications.is_empty()).then(|| embedded::Notify {
                listen: config.server.listen,
                secrets: config.notifications.iter().map(|n| (n.appid.as_str(), n.secret.expose())).collect(),
                activity: config.demo.then_some(Duration::from_secs(1)),
            });
            let (sandbox, base_url) = embedded::start(&customer_id, &customer_secret, notify).await?;
            (Some(sandbox), vec![base_url])
        } else {
            (None, config.upstream.domains())
        };
        let upstream = Upstream::new(&base_urls, &customer_id, &customer_secret, &config.upstream, metrics.clone())?;
        let namespace = crate::redis_link::namespace(&customer_id, &base_urls);
        let throttle = budget(config, &auth, &namespace, &metrics)?;
        let cluster = match &config.throttle.redis_url {
            Some(url) => {
                let prefix = &config.throttle.redis_key_prefix;
                Some(ClusterCache::new(url.expose(), prefix, &namespace, &customer_secret, metrics.clone())?)
            }
            None => None,
        };
        let metrics_for_audit = metrics.clone();
        // Several replicas: each passes the notices it takes on to the others, through Redis.
        let relay = config.throttle.redis_url.as_ref().map(|url| crate::notify::RelayTerms {
            redis_url: url.expose(),
            prefix: &config.throttle.redis_key_prefix,
            namespace: &namespace,
            customer_secret: &customer_secret,
        });
        let notifications = Notifications::new(&config.notifications, relay, metrics.clone())?;
        let gateway = Arc::new(Self {
            auth: arc_swap::ArcSwap::from_pointee(auth),
            cache: ResponseCache::new(&config.cache, cluster, metrics.clone()),
            throttle,
            upstream,
            metrics,
            request_timeout: config.request_timeout(),
            max_body: usize::try_from(config.server.max_body.as_u64()).unwrap_or(usize::MAX),
            limits: Limits::new(&config.server),
            connections: Connections::new(&config.server),
            admin_listener: config.server.admin_listen.is_some(),
            audit: Arc::new(Audit::new(&config.audit, metrics_for_audit)?),
            config_path,
            draining: AtomicBool::new(false),
            applied: tokio::sync::Mutex::new(config.clone()),
            notifications,
            itself: Arc::new(Tenant::gateway_itself()),
            _sandbox: sandbox,
        });
        gateway.start_reconcilers(config.cache.addresses_ttl);
        Ok(gateway)
    }

    /// The gateway's own polls of Agora, at low priority in idle slots; they end with the gateway.
    fn own_polls(self: &Arc<Self>) -> PollFn {
        let weak = Arc::downgrade(self);
        Arc::new(move |call| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(gateway) => gateway.reconcile_poll(call).await,
                    None => Err(crate::error::GatewayError::Internal("the gateway stopped".into())),
                }
            })
        })
    }

    /// One reconciliation task per project with notifications, and the fetch of Agora's NCS
    /// addresses if a project takes notices from them alone; each ends with the gateway.
    fn start_reconcilers(self: &Arc<Self>, addresses_ttl: Duration) {
        if let Some(agora) = &self.notifications.agora {
            crate::notify::allow::start(agora, self.own_polls(), addresses_ttl / 2);
        }
        for project in self.notifications.projects() {
            let poll = self.own_polls();
            let throttle = self.throttle.clone();
            let idle: IdleFn = Arc::new(move || throttle.is_idle());
            let notifications = Arc::downgrade(&self.notifications);
            let generation: GenerationFn =
                Arc::new(move || notifications.upgrade().map_or(u64::MAX - 1, |n| n.generation()));
            let metrics = self.metrics.clone();
            let reconciler = Reconciler { project: project.clone(), poll, idle, generation, metrics };
            let alive = Arc::downgrade(self);
            tokio::spawn(reconciler.run(move || alive.strong_count() > 0));
        }
    }
}

/// The account's Basic credentials; made up for the embedded sandbox when the config has none
/// (validation requires both otherwise), the secret from the operating system's CSPRNG.
fn account_credentials(config: &Config) -> anyhow::Result<(String, String)> {
    let secret = |value: &Option<Secret>| value.as_ref().map(|s| s.expose().to_string());
    Ok(match (secret(&config.upstream.customer_id), secret(&config.upstream.customer_secret)) {
        (Some(id), Some(secret)) => (id, secret),
        _ => {
            let generated = Secret::generate()
                .map_err(|error| anyhow::anyhow!("no random numbers from the operating system: {error}"))?;
            ("sandbox".to_string(), generated.expose().to_string())
        }
    })
}

/// The upstream budgets: this process's own, or shared through Redis.
fn budget(config: &Config, auth: &Authenticator, namespace: &str, metrics: &Arc<Metrics>) -> anyhow::Result<Budgets> {
    let source = match &config.throttle.redis_url {
        None => Source::Local,
        Some(url) => Source::Redis { url: url.expose(), namespace },
    };
    Ok(Budgets::start(&config.throttle, source, auth.tenants(), metrics)?)
}
