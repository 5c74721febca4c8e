//! The accept loop — what `axum::serve` does, with the limits a service that faces many clients
//! needs (`server.*`):
//!
//! - HTTP/1.1 with hyper's timer: a client has `header_read_timeout` to send a request's headers,
//!   counted from when the connection is ready for a request — so an idle keep-alive connection
//!   is closed after that long too, and a connection that never sends anything sooner (a
//!   connection that moves to another serving thread takes its deadline along: `handoff.rs`);
//! - request heads of at most `max_header_bytes` (431 beyond), and at most 100 headers;
//! - at most `max_connections` connections at once, over both listeners: beyond that the loops
//!   stop accepting (new connections wait in the kernel's listen backlog), and the cap is kept
//!   below the process's open-file limit, so the process never runs out of descriptors; at most
//!   `max_connections_per_ip` from one client address (beyond it, closed at once);
//! - a connection whose writes make no progress for `write_timeout` — a client that does not read
//!   its answers, holding its place — is closed (hyper has no write timeout of its own; `handoff.rs`);
//! - TCP keepalive, so a client that vanished without a word is found out;
//! - on shutdown, idle connections close at once and busy ones after their response.
//!
//! Request bodies and handlers are bounded by the edge's request timeout (`edge.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::app::App;
use crate::balance::CoreShare;
use crate::config::{RuntimeKind, ServerConfig};
use crate::handoff::{Moved, Serving};

/// Descriptors kept free beside the client connections (upstream, Redis, files, listeners).
const RESERVED_DESCRIPTORS: u64 = 64;

/// After an accept error other than a client's connection failing (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Idle time before the first keepalive probe, and between probes.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(10));

/// What one connection may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) write_timeout: Duration,
    /// Threads serving the main listener, each with a runtime of its own (`cores.rs`); 0: the
    /// shared work-stealing runtime serves it.
    pub(crate) cores: usize,
    /// Per mille of a core from which one of those threads counts as busy (`balance.rs`).
    pub(crate) busy: u32,
    /// Per mille of a core of idle time the process's cores must have had for a busy thread to
    /// hand connections over (`spare.rs`).
    pub(crate) idle_to_move: u32,
}

impl Limits {
    /// The configured limits.
    pub(crate) fn new(server: &ServerConfig) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: usize::try_from(server.max_header_bytes.as_u64()).unwrap_or(usize::MAX),
            write_timeout: server.write_timeout,
            cores: match server.runtime {
                RuntimeKind::Shared => 0,
                RuntimeKind::PerCore => server
                    .worker_threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
            },
            // Validated to lie in 0..=1.
            busy: (server.busy_threshold * 1000.0).round() as u32,
            // Validated to lie in 0..=1024.
            idle_to_move: (server.idle_to_move * 1000.0).round() as u32,
        }
    }
}

/// The connections of the process, over every listener: one cap for all, and one per address.
pub(crate) struct Connections {
    permits: Arc<Semaphore>,
    per_ip: Option<usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl Connections {
    /// The configured caps, the total kept below the open-file limit.
    pub(crate) fn new(server: &ServerConfig) -> Arc<Self> {
        let cap = connection_cap(server.max_connections, open_file_limit());
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(cap)),
            per_ip: server.max_connections_per_ip,
            open: Mutex::default(),
        })
    }

    /// A place for a connection from `ip`, if that address has one left.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(ip).or_insert(0);
        if self.per_ip.is_some_and(|cap| *count >= cap) {
            return None;
        }
        *count += 1;
        Some(AddressSlot { connections: self.clone(), ip })
    }
}

/// One connection's place among its address's.
struct AddressSlot {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// TCP keepalive on an accepted socket (best effort: a platform without it serves all the same).
fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE.0).with_interval(KEEPALIVE.1);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// The process's open-file limit, raised to its hard maximum first (as servers do).
fn open_file_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// `configured`, or fewer when the open-file limit leaves room for fewer.
fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else { return configured };
    let room = usize::try_from(open_files.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX).max(1);
    if room < configured {
        tracing::warn!(
            configured,
            open_files,
            cap = room,
            "server.max_connections is above what the open-file limit allows: capped"
        );
    }
    configured.min(room)
}

/// The address a request came from, on a listener that tags them (`server.notifications_listen`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) std::net::SocketAddr);

/// A connection's places under the caps, held while it is open (on whichever thread).
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and waits for the
/// open connections to finish their responses. `tag_peer`: each request carries its [`Peer`] (at
/// the cost of an extension per request). `core`: this is one of the threads serving the main
/// listener (`cores.rs`), with the inbox of the connections the others hand to it.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    tag_peer: bool,
    limits: Limits,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
    core: Option<(CoreShare, mpsc::UnboundedReceiver<Moved>)>,
) {
    // The timer the header-read timeout needs is each connection's own (`HeadTimer`, set in
    // `handoff.rs`): it notes hyper's deadline, which a connection takes along when it moves.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(limits.header_read_timeout).max_header_size(limits.max_header_bytes);
    // At most 100 headers: hyper's own limit. (Setting it, even to 100, makes hyper fill a vector
    // of that many slots for every request it parses.)
    let (stopping, stop) = watch::channel(false);
    let (live, mut drained) = mpsc::channel::<()>(1);
    let (share, inbox) = core.unzip();
    let serving = Serving { http, app, tag_peer, limits, core: share.clone(), stop, live };
    if let Some(inbox) = inbox {
        tokio::spawn(serving.clone().adopt(inbox));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        if let Some(share) = &share {
            share.wait_turn().await;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        tracing::error!(%error, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // One address over its cap: closed at once (its permit goes back with it).
        let Some(address) = connections.admit(peer.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        keep_alive(&stream);
        let held = Held { _permit: permit, _address: address };
        tokio::spawn(serving.connection(stream, peer, held, None));
    }
    drop(listener);
    // Idle connections close at once, busy ones after their response; then no one holds `live`.
    let _ = stopping.send(true);
    drop(serving);
    let _ = drained.recv().await;
}

/// A client's connection failing as it was accepted: nothing to wait for.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(error.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(1024, None), 1024);
        assert_eq!(connection_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_cap(1024, Some(256)), 192);
        assert_eq!(connection_cap(1024, Some(10)), 1);
    }
}
