//! `cargo xtask bench [--quick]`: the gateway's speed, measured side by side with its peers in one
//! run on 127.0.0.1. Release binaries of the sandbox and the gateway run as processes; the load
//! comes from this process. Prints a table and writes `target/bench/report.json`.
//!
//! 1. hit: cached `list_projects` through the gateway, a JWT per request, 64 connections;
//! 2. direct: the same request straight to a sandbox (the gateway's overhead, as a ratio);
//! 3. nginx: the same request through the nginx cache + throttle anchor, when nginx is installed
//!    (1 to 3 in interleaved rounds: the ratios are medians of same-round ratios);
//! 4. overload: distinct uncached reads at 10x the budget from 3 tenants;
//! 5. coalesce: 1,000 concurrent identical cold reads;
//! 6. scale: the hit of a tenant owning 2 projects, in an account of 5 and of 5,005 projects
//!    (interleaved rounds; the tenant's view checked first), and the gateway's peak RSS;
//! 7. cluster: 3 gateway replicas and a redis-server under the overload of 4;
//! 8. bare: the floor under 1 — a bare hyper server answering the hit's bytes
//!    (`xtask/bare-hyper`), in the rounds of 1 to 3: what the gateway's own work costs, and what
//!    hyper and the kernel do.

pub(crate) mod bare;
mod load;
pub(crate) mod procs;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use load::ClosedRun;
use procs::{Proc, free_port, wait_port, which};
use report::{machine, table};
use scenarios::hit_path;

const CUSTOMER_ID: &str = "bench-customer";
const CUSTOMER_SECRET: &str = "bench-customer-secret";
const TENANTS: [(&str, &str); 3] = [("t1", "acme-"), ("t2", "globex-"), ("t3", "")];
const NGINX_ANCHOR: &str = include_str!("../../anchors/nginx-cache-throttle.conf");
const NGINX_PORT: u16 = 19100;
/// Projects added to the demo account's 5 in the scale scenario.
const SCALE_EXTRA_PROJECTS: usize = 5000;

struct DemoAccount {
    initech: String,
    apps: [String; 3],
}

struct Durations {
    warmup: Duration,
    closed: Duration,
    overload: Duration,
    /// Interleaved rounds of the closed-loop scenarios.
    rounds: usize,
}

struct Bench {
    root: PathBuf,
    /// wrk, when installed: the anchor's load generator.
    wrk: Option<PathBuf>,
    out: PathBuf,
    logs: PathBuf,
    durations: Durations,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct OverloadReport {
    offered_per_second: u32,
    upstream_per_second: f64,
    max_in_1s: u64,
    upstream_429: u64,
    served: usize,
    refused_429: usize,
    share_per_tenant: Vec<f64>,
}

/// `compare`: a baseline binary, and whether this build exports its spans meanwhile.
pub(crate) fn run(root: &Path, quick: bool, compare: Option<(PathBuf, bool)>, rounds: usize) -> Result<()> {
    build(root)?;
    let durations = if quick {
        let (warmup, closed, overload) = (Duration::from_secs(1), Duration::from_secs(3), Duration::from_secs(6));
        Durations { warmup, closed, overload, rounds: 3 }
    } else {
        let (warmup, closed, overload) = (Duration::from_secs(1), Duration::from_secs(6), Duration::from_secs(15));
        Durations { warmup, closed, overload, rounds: 5 }
    };
    let out = crate::target_dir(root).join("bench");
    std::fs::create_dir_all(&out)?;
    let bench = Bench {
        root: root.to_path_buf(),
        wrk: which("wrk"),
        logs: out.join("logs"),
        out,
        durations,
        http: reqwest::Client::new(),
    };
    match &bench.wrk {
        Some(_) => println!("load generator: wrk -t1 (as the nginx anchor is measured)"),
        None => {
            println!("load generator: hyper on one thread of this process (install wrk to measure as the anchor does)");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match compare {
        Some((baseline, traced)) => runtime.block_on(bench.compare(&baseline, rounds.max(1), traced)),
        None => runtime.block_on(bench.all(quick)),
    }
}

fn build(root: &Path) -> Result<()> {
    println!("building release binaries (cargo build --release -p agora-gateway -p agora-sandbox -p bare-hyper)");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "agora-gateway",
            "-p",
            "agora-sandbox",
            "-p",
            "bare-hyper",
            "--bins",
        ])
        .status()?;
    if !status.success() {
        bail!("the release build failed");
    }
    Ok(())
}

impl Bench {
    fn binary(&self, name: &str) -> PathBuf {
        crate::target_dir(&self.root).join("release").join(name)
    }

    async fn sandbox(&self, name: &str, rate_limit: u32) -> Result<(Proc, String)> {
        self.sandbox_with(name, rate_limit, 0).await
    }

    /// A sandbox with `extra_projects` beside the demo account's.
    async fn sandbox_with(&self, name: &str, rate_limit: u32, extra_projects: usize) -> Result<(Proc, String)> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let (rate, extra) = (rate_limit.to_string(), extra_projects.to_string());
        let args = [
            "--listen",
            &listen,
            "--customer-id",
            CUSTOMER_ID,
            "--customer-secret",
            CUSTOMER_SECRET,
            "--rate-limit",
            &rate,
            "--extra-projects",
            &extra,
        ];
        let mut process = Proc::spawn(&self.logs, name, &self.binary("agora-sandbox"), &args, &[("RUST_LOG", "warn")])?;
        wait_port(port, name, &mut process).await?;
        Ok((process, format!("http://{listen}")))
    }

    async fn stats(&self, sandbox: &str) -> Result<Value> {
        Ok(self.http.get(format!("{sandbox}/__sandbox/stats")).send().await?.json().await?)
    }

    async fn reset(&self, sandbox: &str) -> Result<()> {
        self.http.post(format!("{sandbox}/__sandbox/reset")).send().await?.error_for_status()?;
        Ok(())
    }

    /// The demo projects the bench's tenants use: initech's project ID (t3 owns it by ID) and the
    /// app ID of one project of each tenant, in `TENANTS` order.
    async fn demo_account(&self, sandbox: &str) -> Result<DemoAccount> {
        let list: Value = self
            .http
            .get(format!("{sandbox}/dev/v1/projects"))
            .basic_auth(CUSTOMER_ID, Some(CUSTOMER_SECRET))
            .send()
            .await?
            .json()
            .await?;
        let projects = list["projects"].as_array().context("a project list")?;
        let field = |name: &str, field: &str| -> Result<String> {
            let project =
                projects.iter().find(|p| p["name"] == name).with_context(|| format!("no demo project {name}"))?;
            Ok(project[field].as_str().unwrap_or_default().to_string())
        };
        Ok(DemoAccount {
            initech: field("initech-staging", "id")?,
            apps: [
                field("acme-web", "vendor_key")?,
                field("globex-live", "vendor_key")?,
                field("initech-staging", "vendor_key")?,
            ],
        })
    }

    /// The gateway's configuration for a sandbox: three tenants, HS256 keys.
    fn gateway_config(
        &self,
        name: &str,
        sandbox: &str,
        port: u16,
        initech: &str,
        redis: Option<&str>,
        extra: Extra<'_>,
    ) -> Result<PathBuf> {
        let Extra { server: server_extra, sections } = extra;
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_extra}\n[upstream]\nbase_url = \"{sandbox}/dev\"\ncustomer_id = \"{CUSTOMER_ID}\"\ncustomer_secret = \"{CUSTOMER_SECRET}\"\n\n[throttle]\nrate = 10\n"
        );
        if let Some(redis) = redis {
            toml.push_str(&format!("redis_url = \"{redis}\"\n"));
        }
        for (id, prefix) in TENANTS {
            let owned = if prefix.is_empty() {
                format!("project_ids = [\"{initech}\"]")
            } else {
                format!("project_name_prefix = \"{prefix}\"")
            };
            toml.push_str(&format!(
                "\n[[tenants]]\nid = \"{id}\"\nissuer = \"https://{id}.bench\"\naudience = \"agora-gateway\"\nscopes = [\"projects:read\", \"channels:read\", \"usage:read\"]\n{owned}\nkeys = [{{ kid = \"{id}\", alg = \"HS256\", secret = \"{id}-bench-secret-0123456789abcdef0123\" }}]\n"
            ));
        }
        toml.push_str(sections);
        let path = self.out.join(format!("{name}.toml"));
        std::fs::write(&path, toml)?;
        Ok(path)
    }

    async fn gateway(
        &self,
        name: &str,
        sandbox: &str,
        initech: &str,
        redis: Option<&str>,
    ) -> Result<(Proc, String, PathBuf)> {
        self.gateway_binary(&self.binary("agora-gateway"), name, sandbox, initech, redis, Extra::default()).await
    }

    async fn gateway_binary(
        &self,
        binary: &Path,
        name: &str,
        sandbox: &str,
        initech: &str,
        redis: Option<&str>,
        extra: Extra<'_>,
    ) -> Result<(Proc, String, PathBuf)> {
        let port = free_port()?;
        let config = self.gateway_config(name, sandbox, port, initech, redis, extra)?;
        let args = ["serve", "--config", config.to_str().context("a UTF-8 path")?];
        let mut process = Proc::spawn(&self.logs, name, binary, &args, &[("RUST_LOG", "warn")])?;
        wait_port(port, name, &mut process).await?;
        Ok((process, format!("http://127.0.0.1:{port}"), config))
    }

    /// The hit path of nginx, of the gateway and of the gateway with one worker thread at 50% and
    /// 80% of nginx's `ceiling`, each in turn, in up to 3 rounds: the medians of p50, p99 and p99.9.
    async fn fixed_loads(
        &self,
        h2load: &Path,
        ceiling: f64,
        nginx: &str,
        [gateway, one_worker]: [&str; 2],
        auth: &[(&str, String)],
    ) -> Result<Value> {
        let rounds = self.durations.rounds.min(3);
        println!(
            "fixed loads (h2load --h1 --rps, 32 connections): 50% and 80% of nginx's {ceiling:.0} req/s, {rounds} rounds"
        );
        let mut results = Vec::new();
        for fraction in [0.5, 0.8] {
            let rate = (ceiling * fraction) as u32;
            let (mut theirs, mut ours, mut one_thread) = (Vec::new(), Vec::new(), Vec::new());
            for round in 1..=rounds {
                theirs.push(self.fixed(h2load, nginx, &[], rate).await?);
                ours.push(self.fixed(h2load, gateway, auth, rate).await?);
                one_thread.push(self.fixed(h2load, one_worker, auth, rate).await?);
                println!(
                    "  {rate} req/s, round {round}/{rounds}: nginx p99 {:.2} ms, gateway p99 {:.2} ms, one worker p99 \
                     {:.2} ms",
                    theirs[round - 1].p99_ms,
                    ours[round - 1].p99_ms,
                    one_thread[round - 1].p99_ms
                );
            }
            let medians = |runs: &[load::FixedRun]| {
                let median = |pick: fn(&load::FixedRun) -> f64| {
                    let mut values: Vec<f64> = runs.iter().map(pick).collect();
                    values.sort_by(f64::total_cmp);
                    values[values.len() / 2]
                };
                json!({
                    "p50_ms": median(|r| r.p50_ms),
                    "p99_ms": median(|r| r.p99_ms),
                    "p999_ms": median(|r| r.p999_ms),
                    "answered_per_second": median(|r| r.answered_per_second),
                    "errors": runs.iter().map(|r| r.errors).sum::<u64>(),
                })
            };
            results.push(json!({
                "fraction": fraction,
                "offered_per_second": rate,
                "nginx": medians(&theirs),
                "gateway": medians(&ours),
                "gateway_one_worker": medians(&one_thread),
            }));
        }
        Ok(Value::Array(results))
    }

    /// The hit scenario against this build and `baseline`, in interleaved rounds (the machine is
    /// shared and noisy: a ratio of medians of interleaved rounds is what can be compared).
    /// `traced`: this build traces every request and exports its spans, to a sink that counts them.
    async fn compare(&self, baseline: &Path, rounds: usize, traced: bool) -> Result<()> {
        let d = &self.durations;
        let (_sandbox_process, sandbox) = self.sandbox("sandbox", 0).await?;
        let DemoAccount { initech, .. } = self.demo_account(&sandbox).await?;
        let (sink, exports) = match traced {
            true => {
                let (url, exports) = otlp_sink().await?;
                (format!("\n[telemetry]\notlp_endpoint = \"{url}\"\nsample_ratio = 1.0\n"), Some(exports))
            }
            false => (String::new(), None),
        };
        let this = self.binary("agora-gateway");
        let (current, current_url, config) = self
            .gateway_binary(&this, "gateway", &sandbox, &initech, None, Extra { sections: &sink, ..Extra::default() })
            .await?;
        let (previous, previous_url, _) =
            self.gateway_binary(baseline, "baseline-gateway", &sandbox, &initech, None, Extra::default()).await?;
        let token = self.token(&config, TENANTS[0].0)?;
        let auth = [("authorization", format!("Bearer {token}"))];
        for url in [&current_url, &previous_url] {
            self.http.get(format!("{url}/dev/v1/projects")).bearer_auth(&token).send().await?.error_for_status()?;
        }
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            for (runs, url, pid) in
                [(&mut ours, &current_url, current.pid()), (&mut theirs, &previous_url, previous.pid())]
            {
                let run =
                    load::closed_loop(hit_path(url, pid, &auth)?, d.warmup, d.closed, self.wrk.as_deref()).await?;
                runs.push(run);
            }
            println!(
                "round {round}/{rounds}: this build {:.0} req/s (p99 {:.2} ms), baseline {:.0} req/s (p99 {:.2} ms)",
                ours[round - 1].requests_per_second,
                ours[round - 1].p99_ms,
                theirs[round - 1].requests_per_second,
                theirs[round - 1].p99_ms
            );
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let mut ratios: Vec<f64> =
            ours.iter().zip(&theirs).map(|(a, b)| a.requests_per_second / b.requests_per_second).collect();
        let (low, high) = (ratios.iter().copied().fold(f64::MAX, f64::min), ratios.iter().copied().fold(0.0, f64::max));
        let ratio = median(&mut ratios);
        let ours_rps = median(&mut ours.iter().map(|r| r.requests_per_second).collect());
        let theirs_rps = median(&mut theirs.iter().map(|r| r.requests_per_second).collect());
        println!(
            "\nhit, median of {rounds} interleaved rounds: this build {ours_rps:.0} req/s, baseline {theirs_rps:.0} req/s; \
             this / baseline {ratio:.3} (rounds {low:.3} to {high:.3})"
        );
        let cpu = cpu_ratio_of_rounds(&ours, &theirs);
        println!(
            "CPU per request, median: this build {:.2} µs, baseline {:.2} µs; this / baseline {:.3}",
            cpu["ours_us"].as_f64().unwrap_or(0.0),
            cpu["theirs_us"].as_f64().unwrap_or(0.0),
            cpu["median"].as_f64().unwrap_or(0.0)
        );
        if let Some(exports) = exports {
            let exports = exports.load(std::sync::atomic::Ordering::Relaxed);
            println!("this build traced every request: {exports} OTLP exports reached the bench's sink");
        }
        current.stop();
        previous.stop();
        Ok(())
    }

    /// The bare server (`xtask/bare-hyper`) answering what `gateway` answers the hit, with as many
    /// threads as the gateway has by default (one per CPU): started, and checked to answer the same.
    async fn start_bare(&self, gateway: &str, auth: &[(&str, String)]) -> Result<(Proc, String)> {
        let hit = |url: String| {
            auth.iter().fold(self.http.get(url), |request, (name, value)| request.header(*name, value)).send()
        };
        let answer = bare::Answer::read(hit(format!("{gateway}/dev/v1/projects")).await?.error_for_status()?).await?;
        let path = self.out.join("bare-answer.json");
        std::fs::write(&path, serde_json::to_vec(&answer)?)?;
        let port = free_port()?;
        let (listen, threads) = (format!("127.0.0.1:{port}"), std::thread::available_parallelism()?.to_string());
        let args = [listen.as_str(), path.to_str().context("a UTF-8 path")?, &threads];
        let mut process = Proc::spawn(&self.logs, "bare", &self.binary("bare-hyper"), &args, &[])?;
        wait_port(port, "bare", &mut process).await?;
        let url = format!("http://{listen}");
        let served = hit(format!("{url}/dev/v1/projects")).await?;
        if served.status().as_u16() != answer.status || served.bytes().await? != answer.body {
            bail!("the bare server does not answer what the gateway answered");
        }
        Ok((process, url))
    }

    fn token(&self, config: &Path, tenant: &str) -> Result<String> {
        let output = std::process::Command::new(self.binary("agora-gateway"))
            .args(["token", "--config", config.to_str().context("a UTF-8 path")?, "--tenant", tenant, "--ttl", "2h"])
            .args(["--scope", "projects:read channels:read usage:read"])
            .output()?;
        if !output.status.success() {
            bail!("minting a token: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_string())
    }

    async fn all(&self, quick: bool) -> Result<()> {
        let d = &self.durations;
        let (sandbox_process, sandbox) = self.sandbox("sandbox", 10).await?;
        let (direct_process, direct) = self.sandbox("sandbox-direct", 0).await?;
        let DemoAccount { initech, apps } = self.demo_account(&sandbox).await?;
        let (gateway_process, gateway, config) = self.gateway("gateway", &sandbox, &initech, None).await?;
        let tokens: Vec<String> = TENANTS.iter().map(|(id, _)| self.token(&config, id)).collect::<Result<_>>()?;

        // 1-3. hit, nginx, direct: interleaved rounds.
        let nginx = match which("nginx") {
            Some(binary) => Some(self.start_nginx(&binary).await?),
            None => {
                println!("nginx: SKIPPED (nginx is not installed: apt-get install nginx)");
                None
            }
        };
        let auth = [("authorization", format!("Bearer {}", tokens[0]))];
        let warm = self.http.get(format!("{gateway}/dev/v1/projects")).bearer_auth(&tokens[0]).send().await?;
        if !warm.status().is_success() {
            bail!("the gateway answered {} to the warming read", warm.status());
        }
        let basic = [("authorization", format!("Basic {}", base64_credentials()))];
        // The same gateway with one worker thread: on a machine that also runs the load generator.
        let binary = self.binary("agora-gateway");
        let one_thread = Extra { server: "worker_threads = 1\n", ..Extra::default() };
        let (one_worker_process, one_worker, _) =
            self.gateway_binary(&binary, "gateway-1-worker", &sandbox, &initech, None, one_thread).await?;
        let warm = self.http.get(format!("{one_worker}/dev/v1/projects")).bearer_auth(&tokens[0]).send().await?;
        if !warm.status().is_success() {
            bail!("the one-worker gateway answered {} to the warming read", warm.status());
        }
        // The floor: hyper alone, answering the same bytes.
        let (bare_process, bare) = self.start_bare(&gateway, &auth).await?;
        println!(
            "hit (cached list_projects through the gateway, JWT per request; also with one worker thread), nginx \
             anchor, direct sandbox, bare hyper with the hit's answer: {} interleaved rounds, 64 connections",
            d.rounds
        );
        let (mut hits, mut one_worker_hits, mut nginx_runs, mut direct_runs, mut bare_runs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 1..=d.rounds {
            let hit = self.closed(&gateway, gateway_process.pid(), &auth).await?;
            let one_worker_hit = self.closed(&one_worker, one_worker_process.pid(), &auth).await?;
            let nginx_run = match &nginx {
                Some((process, url)) => Some(self.closed(url, process.pid(), &[]).await?),
                None => None,
            };
            let direct_run = self.closed(&direct, direct_process.pid(), &basic).await?;
            let bare_run = self.closed(&bare, bare_process.pid(), &auth).await?;
            println!(
                "  round {round}/{}: hit {:.0} req/s (p99 {:.2} ms), one worker {:.0} req/s (p99 {:.2} ms), nginx {}, \
                 direct {:.0} req/s, bare hyper {:.0} req/s",
                d.rounds,
                hit.requests_per_second,
                hit.p99_ms,
                one_worker_hit.requests_per_second,
                one_worker_hit.p99_ms,
                nginx_run.as_ref().map_or("skipped".to_string(), |n| format!("{:.0} req/s", n.requests_per_second)),
                direct_run.requests_per_second,
                bare_run.requests_per_second
            );
            hits.push(hit);
            one_worker_hits.push(one_worker_hit);
            nginx_runs.extend(nginx_run);
            direct_runs.push(direct_run);
            bare_runs.push(bare_run);
        }
        bare_process.stop();
        // 3b. latency at fixed loads: 50% and 80% of nginx's ceiling, nginx and the gateways in turn.
        let fixed = match (which("h2load"), &nginx, nginx_runs.is_empty()) {
            (Some(h2load), Some((_, nginx_url)), false) => {
                let ceiling = median_run(&nginx_runs).requests_per_second;
                Some(self.fixed_loads(&h2load, ceiling, nginx_url, [&gateway, &one_worker], &auth).await?)
            }
            (None, _, _) => {
                println!("fixed loads: SKIPPED (h2load is not installed: apt-get install nghttp2-client)");
                None
            }
            _ => None,
        };
        let peak_rss_mib = gateway_process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
        if let Some((process, _)) = nginx {
            process.stop();
        }
        direct_process.stop();
        one_worker_process.stop();
        let (hit, direct_run) = (median_run(&hits), median_run(&direct_runs));
        let nginx_run = (!nginx_runs.is_empty()).then(|| median_run(&nginx_runs));

        // 4. overload
        println!("overload: distinct uncached reads at 10x the budget from 3 tenants");
        let targets: Vec<load::Target> = apps
            .iter()
            .zip(&tokens)
            .enumerate()
            .map(|(tenant, (app, token))| load::Target {
                url: format!("{gateway}/dev/v1/channel/{app}"),
                token: token.clone(),
                tenant,
            })
            .collect();
        for token in &tokens {
            self.http.get(format!("{gateway}/dev/v1/projects")).bearer_auth(token).send().await?;
        }
        let overload = self.overload(&sandbox, &targets, d.overload, 0).await?;

        // 5. coalesce
        println!("coalesce: 1,000 concurrent identical cold reads");
        let before = self.stats(&sandbox).await?["by_operation"]["list_channel_users"].as_u64().unwrap_or(0);
        let url = format!("{gateway}/dev/v1/channel/user/{}/lobby", apps[0]);
        let client = reqwest::Client::builder().pool_max_idle_per_host(1000).build()?;
        let reads = (0..1000).map(|_| client.get(&url).bearer_auth(&tokens[0]).send());
        let answers = futures::future::join_all(reads).await;
        let coalesced_ok = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| r.status() == 200)).count();
        let after = self.stats(&sandbox).await?["by_operation"]["list_channel_users"].as_u64().unwrap_or(0);
        let coalesce =
            json!({ "concurrent_reads": 1000, "answered_200": coalesced_ok, "upstream_calls": after - before });

        // 6. scale
        let scale = self.scale((&gateway, gateway_process.pid()), &tokens).await?;
        gateway_process.stop();
        sandbox_process.stop();

        // 7. cluster
        let cluster = match which("redis-server") {
            Some(redis) => {
                println!("cluster: 3 gateway replicas + redis-server, overload as in 4");
                Some(self.cluster(&redis).await?)
            }
            None => {
                println!("cluster: SKIPPED (redis-server is not installed: apt-get install redis-server)");
                None
            }
        };

        let report = json!({
            "machine": machine(),
            "quick": quick,
            "rounds": d.rounds,
            "hit": hit,
            "hit_rounds": hits,
            "hit_gateway_peak_rss_mib": peak_rss_mib,
            "direct": direct_run,
            "direct_rounds": direct_runs,
            "hit_over_direct": ratio_of_rounds(&hits, &direct_runs),
            "bare": median_run(&bare_runs),
            "bare_rounds": bare_runs,
            "hit_over_bare": ratio_of_rounds(&hits, &bare_runs),
            "cpu_hit_over_bare": cpu_ratio_of_rounds(&hits, &bare_runs),
            "bare_over_nginx": (!nginx_runs.is_empty()).then(|| ratio_of_rounds(&bare_runs, &nginx_runs)),
            "nginx": nginx_run,
            "nginx_rounds": nginx_runs,
            "hit_over_nginx": (!nginx_runs.is_empty()).then(|| ratio_of_rounds(&hits, &nginx_runs)),
            "cpu_hit_over_nginx": (!nginx_runs.is_empty()).then(|| cpu_ratio_of_rounds(&hits, &nginx_runs)),
            "fixed": fixed,
            "hit_one_worker": median_run(&one_worker_hits),
            "hit_one_worker_rounds": one_worker_hits,
            "hit_one_worker_over_nginx":
                (!nginx_runs.is_empty()).then(|| ratio_of_rounds(&one_worker_hits, &nginx_runs)),
            "scale": scale,
            "overload": overload,
            "coalesce": coalesce,
            "cluster": cluster,
        });
        std::fs::write(self.out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
        println!();
        print!("{}", table(&report));
        println!("\nwrote target/bench/report.json");
        Ok(())
    }
}

/// The run of median throughput.
fn median_run(runs: &[ClosedRun]) -> ClosedRun {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    sorted[sorted.len() / 2].clone()
}

/// Same-round throughput ratios of `ours` over `theirs`: their median, lowest and highest.
fn ratio_of_rounds(ours: &[ClosedRun], theirs: &[ClosedRun]) -> Value {
    let mut ratios: Vec<f64> =
        ours.iter().zip(theirs).map(|(a, b)| a.requests_per_second / b.requests_per_second).collect();
    ratios.sort_by(f64::total_cmp);
    json!({
        "median": ratios[ratios.len() / 2],
        "low": ratios.first(),
        "high": ratios.last(),
        "rounds": ratios.len(),
    })
}

/// CPU per request of `ours` over `theirs`, round by round (the same rounds), and the medians of
/// each.
fn cpu_ratio_of_rounds(ours: &[ClosedRun], theirs: &[ClosedRun]) -> Value {
    let cpu = |run: &ClosedRun| run.cpu_us_per_request.unwrap_or(f64::NAN);
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let ratios: Vec<f64> = ours.iter().zip(theirs).map(|(a, b)| cpu(a) / cpu(b)).collect();
    json!({
        "median": median(ratios.clone()),
        "low": ratios.iter().copied().fold(f64::MAX, f64::min),
        "high": ratios.iter().copied().fold(0.0, f64::max),
        "rounds": ratios.len(),
        "ours_us": median(ours.iter().map(cpu).collect()),
        "theirs_us": median(theirs.iter().map(cpu).collect()),
    })
}

fn base64_credentials() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{CUSTOMER_ID}:{CUSTOMER_SECRET}"))
}

/// Settings added to a bench gateway's configuration: `[server]` lines, and whole sections.
#[derive(Default, Clone, Copy)]
struct Extra<'a> {
    server: &'a str,
    sections: &'a str,
}

/// An OTLP/HTTP sink for `--traced`: takes `POST /v1/traces` and counts the exports.
async fn otlp_sink() -> Result<(String, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    let exports = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = exports.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |_body: bytes::Bytes| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { [("content-type", "application/x-protobuf")] }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, exports))
}
