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

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Buf, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tower::Service;

use crate::app::App;
use crate::balance::CoreShare;
use crate::server::{Held, Limits, Peer};

/// A connection on its way to another serving thread, between two requests.
pub(crate) struct Moved {
    stream: std::net::TcpStream,
    /// Bytes of the next request that were read already.
    read: Bytes,
    peer: SocketAddr,
    held: Held,
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
    /// Serves `stream` (whose next request begins with `read`) until it ends or moves.
    pub(crate) fn connection(
        &self,
        stream: TcpStream,
        read: Bytes,
        peer: SocketAddr,
        held: Held,
    ) -> impl Future<Output = ()> + Send + 'static {
        let flags = Arc::new(Flags::default());
        let app = if self.tag_peer { self.app.with_peer(Peer(peer)) } else { self.app.clone() };
        let io =
            Tracked { read, stream, write_timeout: self.limits.write_timeout, stalled: None, flags: flags.clone() };
        let conn = self.http.serve_connection(TokioIo::new(io), Counted { app, flags: flags.clone() });
        let (core, mut stop, live) = (self.core.clone(), self.stop.clone(), self.live.clone());
        let opened = core.as_ref().map(CoreShare::opened);
        async move {
            let stopped = std::pin::pin!(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            });
            drive(conn, flags, core, stopped, peer, held).await;
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
                    tokio::spawn(self.connection(stream, moved.read, moved.peer, moved.held));
                }
                Err(error) => tracing::debug!(%error, "a connection handed over could not be served here"),
            }
        }
    }
}

type Conn = http1::Connection<TokioIo<Tracked>, Counted>;

/// Serves `conn` until it ends, shutdown (`stopped`) or a hand-over.
async fn drive(
    mut conn: Conn,
    flags: Arc<Flags>,
    core: Option<CoreShare>,
    mut stopped: Pin<&mut impl Future<Output = ()>>,
    peer: SocketAddr,
    held: Held,
) {
    let (mut moving, mut stopping) = (None, false);
    let outcome = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(result);
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
    if let Err(error) = outcome {
        return tracing::debug!(%error, "connection ended");
    }
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    if let (Some(to), Some(core)) = (moving, &core) {
        let read = if io.read.is_empty() { parts.read_buf } else { [io.read, parts.read_buf].concat().into() };
        match io.stream.into_std() {
            // A thread that has stopped drops it: closed, as an idle connection is on shutdown.
            Ok(stream) => {
                core.hand_over(to, Moved { stream, read, peer, held });
            }
            Err(error) => tracing::debug!(%error, "a connection to hand over could not leave its thread"),
        }
        return;
    }
    let _ = io.shutdown().await;
}

/// What the driver of a connection knows of hyper's state, from its socket and its service.
#[derive(Default)]
struct Flags {
    /// Requests handed to the service.
    started: AtomicU64,
    /// Responses whose body hyper has finished with (and dropped).
    ended: AtomicU64,
    /// The last read found nothing to read.
    waiting: AtomicBool,
    /// Bytes written to the socket since its last flush (hyper flushes once its buffer is empty).
    unflushed: AtomicBool,
    /// A request came with a body: the connection is never handed over.
    pinned: AtomicBool,
}

impl Flags {
    /// Idle, as hyper sees it: no request in flight, nothing left to write, nothing unread — and
    /// one request served at least (hyper counts a connection busy until its first response).
    fn between_requests(&self) -> bool {
        let ended = self.ended.load(Relaxed);
        self.waiting.load(Relaxed)
            && !self.unflushed.load(Relaxed)
            && !self.pinned.load(Relaxed)
            && ended > 0
            && self.started.load(Relaxed) == ended
    }
}

/// The client's socket, behind the bytes read ahead by the thread that handed it over, with its
/// [`Flags`] kept — and its writes failing once they have made no progress for
/// `server.write_timeout` (a client that does not read its answers; hyper has no write timeout).
pub(crate) struct Tracked {
    read: Bytes,
    stream: TcpStream,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    flags: Arc<Flags>,
}

impl Tracked {
    /// A write, flush or shutdown's outcome: a write that cannot go on fails once it has waited
    /// `write_timeout`.
    fn progressed<T>(&mut self, result: Poll<std::io::Result<T>>, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing for server.write_timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// A write's outcome, with the bytes it may have left unflushed noted.
    fn wrote<T>(&mut self, result: Poll<std::io::Result<T>>, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let result = self.progressed(result, cx);
        if !matches!(result, Poll::Ready(Err(_))) {
            self.flags.unflushed.store(true, Relaxed);
        }
        result
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.read.is_empty() {
            let count = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..count]);
            this.read.advance(count);
            this.flags.waiting.store(false, Relaxed);
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.flags.waiting.store(result.is_pending(), Relaxed);
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        let result = self.progressed(result, cx);
        if matches!(result, Poll::Ready(Ok(()))) {
            self.flags.unflushed.store(false, Relaxed);
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.progressed(result, cx)
    }
}

/// The connection's service: the app, with its requests and finished responses counted.
struct Counted {
    app: App,
    flags: Arc<Flags>,
}

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response = Response<Ended>;
    type Error = Infallible;
    type Future = CountedFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        use hyper::body::Body as _;
        self.flags.started.fetch_add(1, Relaxed);
        if !request.body().is_end_stream() {
            self.flags.pinned.store(true, Relaxed);
        }
        // The app is always ready (`App::poll_ready`); its `call` takes it by `&mut`.
        CountedFuture { inner: self.app.clone().call(request), flags: Some(self.flags.clone()) }
    }
}

struct CountedFuture {
    inner: <App as Service<Request<Incoming>>>::Future,
    flags: Option<Arc<Flags>>,
}

impl Future for CountedFuture {
    type Output = Result<Response<Ended>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = std::task::ready!(Pin::new(&mut self.inner).poll(cx));
        let flags = self.flags.take();
        Poll::Ready(Ok(response.map(|body| Ended { body, flags })))
    }
}

/// A response's body, counted as ended when hyper drops it (it has written it to the end, or the
/// connection is gone).
pub(crate) struct Ended {
    body: Body,
    flags: Option<Arc<Flags>>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(flags) = &self.flags {
            flags.ended.fetch_add(1, Relaxed);
        }
    }
}

impl hyper::body::Body for Ended {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
