//! The load generators of the bench: closed-loop keep-alive HTTP/1.1 connections on hyper (the hot
//! path: as many requests as the target answers), and an open-loop offer of a fixed rate of
//! distinct requests (the budget: what the throttle lets through).

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

use super::procs::cpu_seconds;

/// What a closed-loop run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct ClosedRun {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Answers other than 2xx, and connection errors.
    pub errors: u64,
    /// `wrk` (when installed, as the anchor measures) or `hyper` (this process, one thread).
    pub generator: &'static str,
    /// CPU time the server spent per request (user + system, all its threads and worker
    /// processes), in µs, over the measured part of the run.
    pub cpu_us_per_request: Option<f64>,
}

/// Counts of one connection's requests.
struct Counts {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// What a closed loop sends: the server's address and process (for its CPU time), the path and
/// headers, over how many connections.
pub(super) struct Closed<'a> {
    pub target: SocketAddr,
    pub pid: u32,
    pub path: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub connections: usize,
}

/// A closed loop with `wrk` if it is installed, else with hyper in this process — on one thread
/// either way, like the anchor's `wrk -t1`, so the server under test keeps the other core.
pub(super) async fn closed_loop(
    closed: Closed<'_>,
    warmup: Duration,
    duration: Duration,
    wrk: Option<&std::path::Path>,
) -> Result<ClosedRun> {
    if let Some(wrk) = wrk {
        return with_wrk(wrk, closed, warmup, duration).await;
    }
    let Closed { target, pid, path, headers, connections } = closed;
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let path = path.to_string();
    let cpu_from = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        cpu_seconds(pid)
    });
    let run = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(hyper_loop(target, path, headers, connections, warmup, duration))
    });
    let mut run = tokio::task::spawn_blocking(move || run.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let requests = run.requests_per_second * duration.as_secs_f64();
    run.cpu_us_per_request = Some((cpu_seconds(pid) - cpu_from.await?) * 1e6 / requests.max(1.0));
    Ok(run)
}

const WRK_REPORT: &str = r#"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status
  io.write(string.format("\nREPORT %d %d %d %d %d %d\n", summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

async fn with_wrk(
    wrk: &std::path::Path,
    Closed { target, pid, path, headers, connections }: Closed<'_>,
    warmup: Duration,
    duration: Duration,
) -> Result<ClosedRun> {
    let script = std::env::temp_dir().join(format!("agora-bench-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, WRK_REPORT)?;
    let url = format!("http://{target}{path}");
    let run = |seconds: u64| {
        let mut command = tokio::process::Command::new(wrk);
        command.args([
            "-t1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "-s",
            script.to_str().unwrap_or_default(),
        ]);
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        command.arg(&url);
        command.output()
    };
    run(warmup.as_secs().max(1)).await?;
    let cpu_before = cpu_seconds(pid);
    let output = run(duration.as_secs().max(1)).await?;
    let cpu = cpu_seconds(pid) - cpu_before;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("REPORT "))
        .with_context(|| format!("wrk printed no report: {text}"))?;
    let numbers: Vec<f64> = line.split_whitespace().map(|n| n.parse().unwrap_or(0.0)).collect();
    let [requests, duration_us, errors, p50, p99, p999] = numbers[..] else {
        anyhow::bail!("an unexpected wrk report: {line}")
    };
    Ok(ClosedRun {
        requests_per_second: requests / (duration_us / 1e6),
        p50_ms: p50 / 1000.0,
        p99_ms: p99 / 1000.0,
        p999_ms: p999 / 1000.0,
        errors: errors as u64,
        generator: "wrk",
        cpu_us_per_request: Some(cpu * 1e6 / requests.max(1.0)),
    })
}

/// `connections` keep-alive connections, each sending the same GET (with `headers`) as fast as it
/// is answered, for `duration` after a `warmup` that is not measured.
async fn hyper_loop(
    target: SocketAddr,
    path: String,
    headers: Vec<(String, String)>,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<ClosedRun> {
    let started = Instant::now();
    let measure_from = started + warmup;
    let stop_at = measure_from + duration;
    let mut headers_map = hyper::HeaderMap::new();
    headers_map.insert(hyper::header::HOST, target.to_string().parse()?);
    for (name, value) in &headers {
        headers_map.insert(hyper::header::HeaderName::from_bytes(name.as_bytes())?, value.parse()?);
    }
    let headers = Arc::new(headers_map);
    let path = Arc::new(path);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (headers, path) = (headers.clone(), path.clone());
        tasks.push(tokio::spawn(async move { connection(target, &path, &headers, measure_from, stop_at).await }));
    }
    let mut total = Counts { requests: 0, errors: 0, latency: histogram() };
    for task in tasks {
        let part = task.await.context("a load connection panicked")??;
        total.requests += part.requests;
        total.errors += part.errors;
        total.latency.add(&part.latency).expect("same bounds");
    }
    let quantile_ms = |q: f64| total.latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(ClosedRun {
        requests_per_second: total.requests as f64 / duration.as_secs_f64(),
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        p999_ms: quantile_ms(0.999),
        errors: total.errors,
        generator: "hyper",
        cpu_us_per_request: None,
    })
}

async fn connection(
    target: SocketAddr,
    path: &str,
    headers: &hyper::HeaderMap,
    measure_from: Instant,
    stop_at: Instant,
) -> Result<Counts> {
    let mut counts = Counts { requests: 0, errors: 0, latency: histogram() };
    'connect: while Instant::now() < stop_at {
        let stream = TcpStream::connect(target).await.with_context(|| format!("connecting to {target}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        while Instant::now() < stop_at {
            let mut request = Request::get(path).body(Empty::<Bytes>::new())?;
            *request.headers_mut() = headers.clone();
            let sent = Instant::now();
            let Ok(response) = sender.send_request(request).await else {
                counts.errors += 1;
                continue 'connect;
            };
            let ok = response.status().is_success();
            let read = response.into_body().collect().await.is_ok();
            if sent >= measure_from {
                counts.requests += 1;
                counts.errors += u64::from(!ok || !read);
                counts.latency.record(sent.elapsed().as_micros().max(1) as u64).ok();
            }
            if !read {
                continue 'connect;
            }
        }
    }
    Ok(counts)
}

/// Where an open-loop offer sends: a URL, with a tenant's token.
#[derive(Clone)]
pub(super) struct Target {
    pub url: String,
    pub token: String,
    pub tenant: usize,
}

/// One answer of an open-loop offer.
pub(super) struct Answer {
    pub tenant: usize,
    pub status: u16,
}

/// Offers `rate` requests per second for `duration`, round robin over `targets`; each reads a
/// distinct page, so none is a cache hit. Waits for every answer.
pub(super) async fn offer(targets: &[Target], rate: u32, duration: Duration, first_page: usize) -> Vec<Answer> {
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

/// What a fixed offered load measured (`h2load --h1 --rps`): the latency of every request.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct FixedRun {
    pub offered_per_second: u32,
    pub answered_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Answers other than 2xx.
    pub errors: u64,
}

/// `rate` requests per second over 32 keep-alive connections (`h2load --h1 --rps`, one thread),
/// for `duration` after a `warmup`: an open loop, so the latencies are those of a server that is
/// not saturated.
pub(super) async fn fixed_rate(
    h2load: &std::path::Path,
    closed: Closed<'_>,
    rate: u32,
    warmup: Duration,
    duration: Duration,
) -> Result<FixedRun> {
    const CLIENTS: u32 = 32;
    let log = std::env::temp_dir().join(format!("agora-bench-h2load-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut command = tokio::process::Command::new(h2load);
    command.args(["--h1", "-t", "1", "-c", &CLIENTS.to_string(), "--rps", &(rate / CLIENTS).max(1).to_string()]);
    command.args([
        "-D",
        &duration.as_secs().max(1).to_string(),
        "--warm-up-time",
        &warmup.as_secs().max(1).to_string(),
    ]);
    command.arg(format!("--log-file={}", log.display()));
    for (name, value) in closed.headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    command.arg(format!("http://{}{}", closed.target, closed.path));
    let output = command.output().await?;
    if !output.status.success() {
        anyhow::bail!("h2load failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    // One line per request: start (µs since the epoch), status, latency (µs).
    let text = std::fs::read_to_string(&log).context("h2load's log")?;
    let _ = std::fs::remove_file(&log);
    let mut latency = histogram();
    let mut errors = 0;
    for line in text.lines() {
        let fields: Vec<u64> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
        if let [_, status, micros] = fields[..] {
            latency.record(micros.max(1)).ok();
            errors += u64::from(!(200..300).contains(&status));
        }
    }
    anyhow::ensure!(!latency.is_empty(), "h2load measured no request");
    let quantile_ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(FixedRun {
        offered_per_second: rate,
        answered_per_second: latency.len() as f64 / duration.as_secs_f64(),
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        p999_ms: quantile_ms(0.999),
        errors,
    })
}
