//! What the driver of a connection (`handoff.rs`) knows of hyper's state — whether the
//! connection is between two requests, and by when the next request's head must have come — from
//! the connection's socket, its service and its timer, which keep [`Flags`] as hyper reads,
//! writes, calls the service, drops a response and sets its header-read deadline.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Buf, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower::Service;

use crate::app::App;

/// What the driver of a connection knows of hyper's state, from its socket and its service.
#[derive(Default)]
pub(crate) struct Flags {
    /// Requests handed to the service.
    pub(crate) started: AtomicU64,
    /// Responses whose body hyper has finished with (and dropped).
    pub(crate) ended: AtomicU64,
    /// The last read found nothing to read.
    pub(crate) waiting: AtomicBool,
    /// Bytes written to the socket since its last flush (hyper flushes once its buffer is empty).
    pub(crate) unflushed: AtomicBool,
    /// A request came with a body: the connection is never handed over.
    pinned: AtomicBool,
    /// hyper's deadline for the next request's head (nanoseconds from [`EPOCH`]; 0: none yet).
    head_by: AtomicU64,
}

/// What [`Flags::head_by`] counts from.
static EPOCH: LazyLock<std::time::Instant> = LazyLock::new(std::time::Instant::now);

impl Flags {
    /// Idle, as hyper sees it: no request in flight, nothing left to write, nothing unread — and
    /// one request served at least (hyper counts a connection busy until its first response).
    pub(crate) fn between_requests(&self) -> bool {
        let ended = self.ended.load(Relaxed);
        self.waiting.load(Relaxed)
            && !self.unflushed.load(Relaxed)
            && !self.pinned.load(Relaxed)
            && ended > 0
            && self.started.load(Relaxed) == ended
    }

    /// hyper's deadline for the next request's head, once it has set one.
    pub(crate) fn head_by(&self) -> Option<std::time::Instant> {
        match self.head_by.load(Relaxed) {
            0 => None,
            nanos => EPOCH.checked_add(Duration::from_nanos(nanos)),
        }
    }

    fn note_head_by(&self, deadline: std::time::Instant) {
        let nanos = u64::try_from(deadline.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX);
        self.head_by.store(nanos.max(1), Relaxed);
    }
}

/// hyper's timer (tokio's), with each deadline it sets noted in the connection's [`Flags`]: an
/// HTTP/1 server connection sets one only, the next request head's (`server.header_read_timeout`).
pub(crate) struct HeadTimer(pub(crate) Arc<Flags>);

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn Sleep>> {
        self.0.note_head_by(deadline);
        TokioTimer::new().sleep_until(deadline)
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: std::time::Instant) {
        self.0.note_head_by(new_deadline);
        TokioTimer::new().reset(sleep, new_deadline);
    }

    fn now(&self) -> std::time::Instant {
        TokioTimer::new().now()
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
    /// `stream`, whose next bytes are `read`.
    pub(crate) fn new(read: Bytes, stream: TcpStream, write_timeout: Duration, flags: Arc<Flags>) -> Self {
        Self { read, stream, write_timeout, stalled: None, flags }
    }

    /// The socket, and the bytes read ahead that hyper has not had yet.
    pub(crate) fn into_parts(self) -> (Bytes, TcpStream) {
        (self.read, self.stream)
    }

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
pub(crate) struct Counted {
    pub(crate) app: App,
    pub(crate) flags: Arc<Flags>,
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

pub(crate) struct CountedFuture {
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
