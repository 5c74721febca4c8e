//! The load generators of the bench: closed-loop keep-alive HTTP/1.1 connections on hyper (the hot
//! path: as many requests as the target answers), and an open-loop offer of a fixed rate of
//! distinct requests (the budget: what the throttle lets through).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What a closed-loop run measured.
pub struct Closed {
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
}

impl Closed {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.latency.value_at_quantile(p) as f64 / 1000.0
    }
}

/// `connections` keep-alive connections, each sending the same GET (with `headers`) as fast as it
/// is answered, for `duration` after a `warmup` that is not measured.
pub async fn closed_loop(
    target: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Closed> {
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + duration;
    let headers: Arc<Vec<(String, String)>> = Arc::new(headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
    let path = Arc::new(path.to_string());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (headers, path) = (headers.clone(), path.clone());
        tasks.push(tokio::spawn(async move { connection(target, &path, &headers, measure_from, stop_at).await }));
    }
    let mut total = Closed {
        requests: 0,
        statuses: BTreeMap::new(),
        elapsed: duration,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    };
    for task in tasks {
        let part = task.await.context("a load connection panicked")??;
        total.requests += part.requests;
        for (status, count) in part.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
        total.latency.add(&part.latency).expect("same bounds");
    }
    Ok(total)
}

async fn connection(target: SocketAddr, path: &str, headers: &[(String, String)], measure_from: Instant, stop_at: Instant) -> Result<Closed> {
    let mut result = Closed {
        requests: 0,
        statuses: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
    };
    'connect: while Instant::now() < stop_at {
        let stream = TcpStream::connect(target).await.with_context(|| format!("connecting to {target}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        while Instant::now() < stop_at {
            let mut request = Request::get(path).header("host", target.to_string());
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request.body(Empty::<Bytes>::new())?;
            let sent = Instant::now();
            let Ok(response) = sender.send_request(request).await else { continue 'connect };
            let status = response.status().as_u16();
            if response.into_body().collect().await.is_err() {
                continue 'connect;
            }
            if sent >= measure_from {
                result.requests += 1;
                *result.statuses.entry(status).or_default() += 1;
                result.latency.record(sent.elapsed().as_micros().max(1) as u64).ok();
            }
        }
    }
    Ok(result)
}

/// Where an open-loop offer sends: a URL, with a tenant's token.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub token: String,
    pub tenant: usize,
}

/// One answer of an open-loop offer.
pub struct Answer {
    pub tenant: usize,
    pub status: u16,
}

/// Offers `rate` requests per second for `duration`, round robin over `targets`; each reads a
/// distinct page, so none is a cache hit. Waits for every answer.
pub async fn offer(targets: &[Target], rate: u32, duration: Duration, first_page: usize) -> Vec<Answer> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("a client");
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    let started = Instant::now();
    let mut handles = Vec::new();
    let mut n = 0usize;
    while started.elapsed() < duration {
        ticker.tick().await;
        let Target { url, token, tenant } = targets[n % targets.len()].clone();
        let client = client.clone();
        let page = first_page + n;
        handles.push(tokio::spawn(async move {
            let response = client.get(format!("{url}?page_no={page}&page_size=1")).bearer_auth(token).send().await;
            let status = match response {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            Answer { tenant, status }
        }));
        n += 1;
    }
    let mut answers = Vec::new();
    for handle in handles {
        if let Ok(answer) = handle.await {
            answers.push(answer);
        }
    }
    answers
}
