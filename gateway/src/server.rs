//! The accept loop — what `axum::serve` does, with the limits a service that faces many clients
//! needs (`server.*`):
//!
//! - HTTP/1.1 with hyper's timer: a client has `header_read_timeout` to send a request's headers,
//!   counted from when the connection is ready for a request — so an idle keep-alive connection
//!   is closed after that long too, and a connection that never sends anything sooner;
//! - request heads of at most `max_header_bytes` (431 beyond), and at most 100 headers;
//! - at most `max_connections` connections at once: beyond that the loop stops accepting (new
//!   connections wait in the kernel's listen backlog), and the cap is kept below the process's
//!   open-file limit, so the process never runs out of descriptors;
//! - on shutdown, idle connections close at once and busy ones after their response.
//!
//! Request bodies and handlers are bounded by the edge's request timeout (`edge.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;

/// Descriptors kept free beside the client connections (upstream, Redis, files, listeners).
const RESERVED_DESCRIPTORS: u64 = 64;

/// After an accept error other than a client's connection failing (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one connection may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_connections: usize,
}

impl Limits {
    /// The configured limits; the connection cap kept below the open-file limit.
    pub(crate) fn new(server: &ServerConfig) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: usize::try_from(server.max_header_bytes.as_u64()).unwrap_or(usize::MAX),
            max_connections: connection_cap(server.max_connections, open_file_limit()),
        }
    }
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

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and waits for the
/// open connections to finish their responses.
pub(crate) async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(100);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
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
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
