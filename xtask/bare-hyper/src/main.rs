//! The floor under the bench's hit (`cargo xtask bench`, which builds this in release and starts
//! it as a process of its own): a bare hyper server answering every request with the answer the
//! gateway gave the hit — its status, headers and body, hyper adding `date` — served as the
//! gateway serves by default: a single-threaded runtime per worker thread, all accepting from one
//! listening socket, `TCP_NODELAY`, hyper's header-read timeout (10 s) and header limit (16 KiB),
//! mimalloc. It verifies no token, looks nothing up and counts nothing: what the gateway spends
//! beyond it per request is the gateway's own work, and what both spend is hyper's and the
//! kernel's.
//!
//! Usage: `bare-hyper LISTEN ANSWER_JSON THREADS`; the answer is `{"status", "headers": [[name,
//! value]], "body": [bytes]}` (`xtask/src/bench/bare.rs` writes it).

use std::convert::Infallible;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;

/// As the gateway's binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The answer to serve.
#[derive(Deserialize)]
struct Answer {
    status: u16,
    /// Every header but `date` and `content-length` (hyper's own).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, answer, threads] = args.as_slice() else {
        bail!("usage: bare-hyper LISTEN ANSWER_JSON THREADS");
    };
    serve(listen, Path::new(answer), threads.parse().context("THREADS: a number")?)
}

/// The answer's parts, made once for the life of the process: each response is built from
/// static bytes, as the gateway's hit is.
struct Parts {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: &'static [u8],
}

/// Serves the answer in `answer` (JSON) on `listen` with `threads` threads, until killed.
fn serve(listen: &str, answer: &Path, threads: usize) -> Result<()> {
    let answer: Answer = serde_json::from_slice(&std::fs::read(answer).context("reading the answer")?)?;
    let mut headers = Vec::new();
    for (name, value) in answer.headers {
        HeaderValue::from_str(&value).with_context(|| format!("header {name}"))?;
        let value: &'static str = Box::leak(value.into_boxed_str());
        headers.push((HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_static(value)));
    }
    let parts: &'static Parts = Box::leak(Box::new(Parts {
        status: StatusCode::from_u16(answer.status)?,
        headers,
        body: Box::leak(answer.body.into_boxed_slice()),
    }));
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    listener.set_nonblocking(true)?;
    let mut workers = Vec::new();
    for _ in 0..threads.max(1) {
        let socket = listener.try_clone()?;
        workers.push(std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move { accept(tokio::net::TcpListener::from_std(socket)?, parts).await })
        }));
    }
    for worker in workers {
        worker.join().map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener, parts: &'static Parts) -> Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).max_header_size(16 * 1024);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: a later accept may do.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |_request: Request<Incoming>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(parts.body)));
                *response.status_mut() = parts.status;
                let headers = response.headers_mut();
                for (name, value) in &parts.headers {
                    headers.append(name.clone(), value.clone());
                }
                Ok::<_, Infallible>(response)
            }),
        );
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
