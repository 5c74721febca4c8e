//! One sandbox as several of Agora's domains (primary, alternate suffix, regional): one account,
//! one world and one set of rate limits behind all of them, as behind Agora's; each domain can go
//! down — its listener closes, so connections are refused — and come back on its address, on its
//! own (`Sandbox::set_domain_up`, `POST /__sandbox/domains/{n}`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::routes::Domain;

/// The switches of the domains: whether each should serve, and whether it does.
pub(crate) struct Switches {
    domains: Vec<Switch>,
}

struct Switch {
    addr: SocketAddr,
    /// Set by the caller: the domain should serve.
    wanted: watch::Sender<bool>,
    /// Set by the domain: it listens (or has closed its listener).
    listening: watch::Sender<bool>,
}

impl Switches {
    pub(crate) fn new(addrs: &[SocketAddr]) -> Self {
        let switch = |addr: &SocketAddr| Switch {
            addr: *addr,
            wanted: watch::Sender::new(true),
            listening: watch::Sender::new(true),
        };
        Self { domains: addrs.iter().map(switch).collect() }
    }

    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.domains.iter().map(|switch| switch.addr).collect()
    }

    /// Whether each domain serves now.
    pub(crate) fn states(&self) -> Vec<bool> {
        self.domains.iter().map(|switch| *switch.listening.borrow()).collect()
    }

    /// Takes domain `index` down (or up), and waits until it has closed (or opened) its listener.
    /// Answers whether there is such a domain and it got there (within 5 s).
    pub(crate) async fn set(&self, index: usize, up: bool) -> Result<(), String> {
        let switch = self.domains.get(index).ok_or_else(|| format!("no domain {index}"))?;
        switch.wanted.send_replace(up);
        let mut listening = switch.listening.subscribe();
        match tokio::time::timeout(Duration::from_secs(5), listening.wait_for(|now| *now == up)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!("domain {index} did not {} within 5 s", if up { "open" } else { "close" })),
        }
    }
}

/// Serves domain `index` on `listener` until `stop`; while its switch says down, its listener is
/// closed, and it binds its address again when it says up.
pub(crate) async fn serve(
    app: Router,
    switches: std::sync::Arc<Switches>,
    index: usize,
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let switch = &switches.domains[index];
    let app = app.layer(axum::Extension(Domain(index)));
    let mut listener = Some(listener);
    let mut wanted = switch.wanted.subscribe();
    loop {
        let std_listener = match listener.take() {
            Some(listener) => listener,
            None => match std::net::TcpListener::bind(switch.addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, addr = %switch.addr, "the sandbox's domain cannot listen again");
                    return;
                }
            },
        };
        let listener = match TcpListener::from_std(std_listener) {
            Ok(listener) => listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            Err(error) => return tracing::error!(%error, "the sandbox cannot listen"),
        };
        switch.listening.send_replace(true);
        let (mut down, mut stopping) = (wanted.clone(), stop.clone());
        let server = axum::serve(listener, app.clone().into_make_service()).with_graceful_shutdown(async move {
            tokio::select! {
                _ = down.wait_for(|up| !*up) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        });
        if let Err(error) = server.await {
            tracing::error!(%error, "the sandbox stopped with an error");
        }
        switch.listening.send_replace(false);
        tokio::select! {
            _ = wanted.wait_for(|up| *up) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
