//! agora-gateway: a gateway in front of Agora's Console RESTful API. Internal services call it with
//! a tenant's JWT; it checks who they are and which projects they may touch, answers project and
//! channel reads from a shared cache, and spends the account's 10 requests per second centrally
//! and fairly — queueing rather than failing — across every replica.
//!
//! `app.rs` puts the pipeline together; each step is its own module (`CONTRIBUTING.md` draws the
//! layout). The public surface is what
//! the binary and the end-to-end tests use: [`Config`], [`start`], [`Running`], [`cli::main`].
#![warn(missing_docs)]

mod answer;
mod app;
mod audit;
mod auth;
mod authorize;
mod balance;
mod cache;
mod call;
pub mod cli;
mod config;
mod cores;
#[cfg(feature = "demo")]
mod demo;
mod docs;
mod edge;
mod egress;
mod embedded;
mod error;
mod fetch;
mod fields;
mod handoff;
mod idle;
mod memo;
mod metrics;
mod notify;
mod ops;
mod pipeline;
mod policy;
mod readiness;
mod recent;
mod redis_link;
mod reload;
mod respond;
mod routes;
mod seal;
mod server;
mod spare;
mod state;
mod telemetry;
mod throttle;
mod upstream;
mod wire;

/// The operation table, generated from the spec's operations and their `x-gateway` policies by
/// `cargo xtask regen` (never edited by hand). Lint allowances live here, not in the generated text.
#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code, unused_qualifications)]
mod operations {
    include!("generated/operations.rs");
}

/// The check of request bodies against the generated types and the dispatch of a validated call
/// to the generated client, generated likewise.
#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code, unused_qualifications)]
mod dispatch {
    include!("generated/dispatch.rs");
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use tokio::net::TcpListener;

use app::{App, admin_router, notifications_router};
pub use config::{Config, ConfigError};
use state::Gateway;

/// A gateway serving on a socket.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its admin listener listens (`server.admin_listen`), if it has one.
    pub admin_addr: Option<SocketAddr>,
    /// Where its listener for Agora's notices listens (`server.notifications_listen`), if it has one.
    pub notifications_addr: Option<SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// `http://` and the address.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits (up to `grace`) for in-flight requests.
    pub async fn stop(mut self, grace: std::time::Duration) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Builds the gateway from `config` and serves it on `listener` in the background (and on
/// `server.admin_listen`, bound here, if set).
pub async fn start(config: &Config, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    // Where an embedded sandbox sends its notices, if it plays Agora's Notifications service.
    let mut config = config.clone();
    config.server.listen = addr;
    let config = &config;
    let gateway = Gateway::new(config, None).await?;
    let side = SideListeners::bind(config).await?;
    let local = |listener: &Option<TcpListener>| listener.as_ref().map(TcpListener::local_addr).transpose();
    let (admin_addr, notifications_addr) = (local(&side.admin)?, local(&side.notifications)?);
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(gateway, listener, side, async move {
        let _ = signal.await;
    }));
    Ok(Running { addr, admin_addr, notifications_addr, shutdown: Some(shutdown), task: Some(task) })
}

/// The listeners beside the main one: `server.admin_listen` and `server.notifications_listen`.
#[derive(Default)]
pub(crate) struct SideListeners {
    pub(crate) admin: Option<TcpListener>,
    pub(crate) notifications: Option<TcpListener>,
}

impl SideListeners {
    pub(crate) async fn bind(config: &Config) -> anyhow::Result<Self> {
        let bind = async |address: Option<SocketAddr>, field: &str| -> anyhow::Result<Option<TcpListener>> {
            let Some(address) = address else { return Ok(None) };
            let listener = TcpListener::bind(address).await.map_err(|e| anyhow::anyhow!("{field} {address}: {e}"))?;
            Ok(Some(listener))
        };
        Ok(Self {
            admin: bind(config.server.admin_listen, "server.admin_listen").await?,
            notifications: bind(config.server.notifications_listen, "server.notifications_listen").await?,
        })
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    side: SideListeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let (limits, connections) = (gateway.limits, gateway.connections.clone());
    // Traced requests carry their client's address (`client.address`), at the cost of an extension
    // per request: only while spans are exported.
    let tag_peer = telemetry::exporting();
    let app = App::main(gateway.clone());
    let main = match limits.cores {
        0 => server::serve(listener, app, tag_peer, limits, connections.clone(), shutdown.clone(), None).boxed(),
        _ => {
            let moved = gateway.metrics.connections_moved.clone();
            cores::serve(listener, app, tag_peer, limits, connections.clone(), moved, shutdown.clone()).boxed()
        }
    };
    let admin = side.admin.map(|admin| {
        let admin_app = App::of(admin_router(gateway.clone()));
        server::serve(admin, admin_app, false, limits, connections.clone(), shutdown.clone(), None)
    });
    let notifications = side.notifications.map(|notifications| {
        // Where the notices came from, for `allow_agora_ips`.
        server::serve(notifications, App::of(notifications_router(gateway)), true, limits, connections, shutdown, None)
    });
    tokio::join!(main, async { futures::future::OptionFuture::from(admin).await }, async {
        futures::future::OptionFuture::from(notifications).await
    });
}
