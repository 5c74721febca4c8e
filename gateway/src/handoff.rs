//! One client connection, served by hyper until it ends — or, on a serving thread that is to hand
//! connections over (`balance.rs`), until it is between two requests: then its socket, and any
//! bytes of the next request already read, go to another thread, which serves it on. The client
//! sees nothing: the connection stays open, and no byte is lost or answered twice.
//!
//! Between two requests means what hyper means by an idle keep-alive connection: one request at
//! least was served (hyper counts a new connection busy until then), every request parsed has had
//! its response written to the end and flushed to the socket, the last read found nothing more to
//! read, and no request had a body (a connection that sent one stays where it is).
//! Only then does the driver ask hyper to shut down gracefully, which closes an idle connection at
//! once and hands back its parts without closing the socket.
//!
//! hyper's header-read timer starts when a connection becomes idle, and the next thread's hyper
//! starts one afresh: so the connection takes hyper's deadline along, and the next thread closes
//! it then unless a request has begun — a client that trickles a request head, moved between
//! threads, still has `server.header_read_timeout` in all, not that much again after a move.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::app::App;
use crate::balance::CoreShare;
use crate::idle::{Counted, Flags, HeadTimer, Tracked};
use crate::server::{Held, Limits, Peer};

/// A connection on its way to another serving thread, between two requests.
pub(crate) struct Moved {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    held: Held,
    carried: Carried,
}

/// What a connection that moved brings of its next request.
pub(crate) struct Carried {
    /// Bytes of it that were read already.
    read: Bytes,
    /// When its head must have been read (hyper's deadline on the thread it left).
    head_by: Option<Instant>,
}

/// What the driver of a connection needs besides the connection: to close it, or to move it.
struct Along {
    peer: SocketAddr,
    held: Held,
    /// Closed then unless a request has begun (a deadline carried from the thread before).
    head_by: Option<Instant>,
}

/// What every connection of one listener (on one thread) is served with.
#[derive(Clone)]
pub(crate) struct Serving {
    pub(crate) http: http1::Builder,
    pub(crate) app: App,
    pub(crate) tag_peer: bool,
    pub(crate) limits: Limits,
    /// This thread, if connections may be handed between threads.
    pub(crate) core: Option<CoreShare>,
    /// Becomes true on shutdown: idle connections close, busy ones after their response.
    pub(crate) stop: watch::Receiver<bool>,
    /// Held by every connection: the listener's loop waits until no one holds it.
    pub(crate) live: mpsc::Sender<()>,
}

impl Serving {
    /// Serves `stream` (new, or moved here with what it `carried`) until it ends or moves.
    pub(crate) fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        held: Held,
        carried: Option<Carried>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let flags = Arc::new(Flags::default());
        let app = if self.tag_peer { self.app.with_peer(Peer(peer)) } else { self.app.clone() };
        let (read, head_by) = carried.map_or((Bytes::new(), None), |carried| (carried.read, carried.head_by));
        let along = Along { peer, held, head_by };
        let io = Tracked::new(read, stream, self.limits.write_timeout, flags.clone());
        let mut http = self.http.clone();
        http.timer(HeadTimer(flags.clone()));
        let conn = http.serve_connection(TokioIo::new(io), Counted { app, flags: flags.clone() });
        let (core, mut stop, live) = (self.core.clone(), self.stop.clone(), self.live.clone());
        let opened = core.as_ref().map(CoreShare::opened);
        async move {
            let stopped = std::pin::pin!(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            });
            drive(conn, flags, core, stopped, along).await;
            drop((opened, live));
        }
    }

    /// Serves the connections other threads hand to this one, until shutdown.
    pub(crate) async fn adopt(self, mut inbox: mpsc::UnboundedReceiver<Moved>) {
        let mut stop = self.stop.clone();
        loop {
            let moved = tokio::select! {
                moved = inbox.recv() => match moved {
                    Some(moved) => moved,
                    None => return,
                },
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match TcpStream::from_std(moved.stream) {
                Ok(stream) => {
                    tokio::spawn(self.connection(stream, moved.peer, moved.held, Some(moved.carried)));
                }
                Err(error) => tracing::debug!(%error, "a connection handed over could not be served here"),
            }
        }
    }
}

type Conn = http1::Connection<TokioIo<Tracked>, Counted>;

/// Serves `conn` until it ends, shutdown (`stopped`), a hand-over, or the head deadline it
/// carried passes with no request begun.
async fn drive(
    mut conn: Conn,
    flags: Arc<Flags>,
    core: Option<CoreShare>,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
    along: Along,
) {
    let (mut moving, mut stopping) = (None, false);
    let mut head_by = along.head_by.map(|deadline| Box::pin(tokio::time::sleep_until(deadline)));
    let outcome = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(Some(result));
            }
            if flags.started.load(Relaxed) > 0 {
                head_by = None;
            } else if head_by.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready()) {
                return Poll::Ready(None);
            }
            if moving.take().is_some() {
                // hyper did not close it at once: it was not idle after all, and it now closes
                // after its response instead (with `connection: close`). Not expected.
                tracing::warn!(
                    started = flags.started.load(Relaxed),
                    ended = flags.ended.load(Relaxed),
                    waiting = flags.waiting.load(Relaxed),
                    unflushed = flags.unflushed.load(Relaxed),
                    "a connection to hand over was not between two requests: it closes after its response"
                );
                return Poll::Pending;
            }
            if !stopping && stopped.as_mut().poll(cx).is_ready() {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
                continue;
            }
            if !stopping
                && flags.between_requests()
                && let Some(to) = core.as_ref().and_then(CoreShare::take_shed)
            {
                moving = Some(to);
                Pin::new(&mut conn).graceful_shutdown();
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
    match outcome {
        Some(Ok(())) => {}
        Some(Err(error)) => return tracing::debug!(%error, "connection ended"),
        // As hyper closes a connection whose head is late: without an answer.
        None => return tracing::debug!("no request head within server.header_read_timeout (carried over a move)"),
    }
    let parts = conn.into_parts();
    let (unread, mut stream) = parts.io.into_inner().into_parts();
    if let (Some(to), Some(core)) = (moving, &core) {
        let read = if unread.is_empty() { parts.read_buf } else { [unread, parts.read_buf].concat().into() };
        let head_by = flags.head_by().map(Instant::from_std);
        match stream.into_std() {
            // A thread that has stopped drops it: closed, as an idle connection is on shutdown.
            Ok(stream) => {
                let Along { peer, held, .. } = along;
                core.hand_over(to, Moved { stream, peer, held, carried: Carried { read, head_by } });
            }
            Err(error) => tracing::debug!(%error, "a connection to hand over could not leave its thread"),
        }
        return;
    }
    let _ = stream.shutdown().await;
}
