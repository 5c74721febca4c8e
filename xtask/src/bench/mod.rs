//! `cargo xtask bench [--quick]`: the gateway's speed, measured side by side with its peers in one
//! run on 127.0.0.1. Release binaries of the sandbox and the gateway run as processes; the load
//! comes from this process. Prints a table and writes `target/bench/report.json`.
//!
//! 1. hit: cached `list_projects` through the gateway, a JWT per request, 64 connections;
//! 2. direct: the same request straight to a sandbox (the gateway's overhead, as a ratio);
//! 3. nginx: the same request through the nginx cache + throttle anchor, when nginx is installed;
//! 4. overload: distinct uncached reads at 10x the budget from 3 tenants;
//! 5. coalesce: 1,000 concurrent identical cold reads;
//! 6. cluster: 3 gateway replicas and a redis-server under the overload of 4.

mod load;
mod procs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use procs::{Proc, free_port, wait_port, which};

const CUSTOMER_ID: &str = "bench-customer";
const CUSTOMER_SECRET: &str = "bench-customer-secret";
const TENANTS: [(&str, &str); 3] = [("t1", "acme-"), ("t2", "globex-"), ("t3", "")];
const NGINX_ANCHOR: &str = include_str!("../../anchors/nginx-cache-throttle.conf");
const NGINX_PORT: u16 = 19100;

struct Durations {
    warmup: Duration,
    closed: Duration,
    overload: Duration,
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

pub fn run(root: &Path, quick: bool) -> Result<()> {
    build(root)?;
    let durations = if quick {
        Durations { warmup: Duration::from_secs(1), closed: Duration::from_secs(3), overload: Duration::from_secs(6) }
    } else {
        Durations { warmup: Duration::from_secs(2), closed: Duration::from_secs(10), overload: Duration::from_secs(15) }
    };
    let out = root.join("target/bench");
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
            println!("load generator: hyper on one thread of this process (install wrk to measure as the anchor does)")
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench.all(quick))
}

fn build(root: &Path) -> Result<()> {
    println!("building release binaries (cargo build --release -p agora-gateway -p agora-sandbox)");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["build", "--release", "--quiet", "-p", "agora-gateway", "-p", "agora-sandbox", "--bins"])
        .status()?;
    if !status.success() {
        bail!("the release build failed");
    }
    Ok(())
}

impl Bench {
    fn binary(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

    async fn sandbox(&self, name: &str, rate_limit: u32) -> Result<(Proc, String)> {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let rate = rate_limit.to_string();
        let args = [
            "--listen",
            &listen,
            "--customer-id",
            CUSTOMER_ID,
            "--customer-secret",
            CUSTOMER_SECRET,
            "--rate-limit",
            &rate,
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

    async fn projects(&self, sandbox: &str) -> Result<Vec<Value>> {
        let list: Value = self
            .http
            .get(format!("{sandbox}/dev/v1/projects"))
            .basic_auth(CUSTOMER_ID, Some(CUSTOMER_SECRET))
            .send()
            .await?
            .json()
            .await?;
        Ok(list["projects"].as_array().context("a project list")?.clone())
    }

    /// The gateway's configuration for a sandbox: three tenants, HS256 keys.
    fn gateway_config(
        &self,
        name: &str,
        sandbox: &str,
        port: u16,
        initech: &str,
        redis: Option<&str>,
    ) -> Result<PathBuf> {
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[upstream]\nbase_url = \"{sandbox}/dev\"\ncustomer_id = \"{CUSTOMER_ID}\"\ncustomer_secret = \"{CUSTOMER_SECRET}\"\n\n[throttle]\nrate = 10\n"
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
        let port = free_port()?;
        let config = self.gateway_config(name, sandbox, port, initech, redis)?;
        let args = ["serve", "--config", config.to_str().context("a UTF-8 path")?];
        let mut process = Proc::spawn(&self.logs, name, &self.binary("agora-gateway"), &args, &[("RUST_LOG", "warn")])?;
        wait_port(port, name, &mut process).await?;
        Ok((process, format!("http://127.0.0.1:{port}"), config))
    }

    fn token(&self, config: &Path, tenant: &str) -> Result<String> {
        let output = std::process::Command::new(self.binary("agora-gateway"))
            .args(["token", "--config", config.to_str().context("a UTF-8 path")?, "--tenant", tenant, "--ttl", "2h"])
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
        let projects = self.projects(&sandbox).await?;
        let find = |name: &str| projects.iter().find(|p| p["name"] == name).cloned().context("a demo project");
        let initech = find("initech-staging")?["id"].as_str().unwrap_or_default().to_string();
        let apps = [find("acme-web")?, find("globex-live")?, find("initech-staging")?]
            .map(|p| p["vendor_key"].as_str().unwrap_or_default().to_string());
        let (gateway_process, gateway, config) = self.gateway("gateway", &sandbox, &initech, None).await?;
        let tokens: Vec<String> = TENANTS.iter().map(|(id, _)| self.token(&config, id)).collect::<Result<_>>()?;
        let address = |url: &str| -> Result<std::net::SocketAddr> { Ok(url.trim_start_matches("http://").parse()?) };

        // 1. hit
        println!("hit: cached list_projects through the gateway, JWT per request, 64 connections");
        let auth = [("authorization", format!("Bearer {}", tokens[0]))];
        let warm = self.http.get(format!("{gateway}/dev/v1/projects")).bearer_auth(&tokens[0]).send().await?;
        if warm.status() != 200 {
            bail!("the gateway answered {} to the warming read", warm.status());
        }
        let hit = load::closed_loop(
            address(&gateway)?,
            "/dev/v1/projects",
            &auth,
            64,
            d.warmup,
            d.closed,
            self.wrk.as_deref(),
        )
        .await?;
        let peak_rss_mib = gateway_process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;

        // 2. direct
        println!("direct: the same request straight to a sandbox");
        let basic = [("authorization", format!("Basic {}", base64_credentials()))];
        let direct_run = load::closed_loop(
            address(&direct)?,
            "/dev/v1/projects",
            &basic,
            64,
            d.warmup,
            d.closed,
            self.wrk.as_deref(),
        )
        .await?;
        direct_process.stop();

        // 3. nginx
        let nginx = match which("nginx") {
            Some(binary) => {
                println!("nginx: the same request through the nginx cache + throttle anchor");
                Some(self.nginx(&binary).await?)
            }
            None => {
                println!("nginx: SKIPPED (nginx is not installed: apt-get install nginx)");
                None
            }
        };

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
        gateway_process.stop();
        sandbox_process.stop();

        // 6. cluster
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
            "hit": hit,
            "hit_gateway_peak_rss_mib": peak_rss_mib,
            "direct": direct_run,
            "hit_over_direct": hit.requests_per_second / direct_run.requests_per_second,
            "nginx": nginx,
            "hit_over_nginx": nginx.as_ref().map(|n| hit.requests_per_second / n.requests_per_second),
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

    async fn overload(
        &self,
        sandbox: &str,
        targets: &[load::Target],
        duration: Duration,
        first_page: usize,
    ) -> Result<OverloadReport> {
        self.reset(sandbox).await?;
        let offered = 100;
        let offer = load::offer(targets, offered, duration, first_page);
        let measure = async {
            // Steady state: from 1 s in to the end of the offer, while the queue is never empty.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (start, at_start) = (Instant::now(), self.stats(sandbox).await);
            tokio::time::sleep(duration - Duration::from_secs(1)).await;
            let (end, at_end) = (Instant::now(), self.stats(sandbox).await);
            (at_start, at_end, end - start)
        };
        let (answers, (at_start, at_end, window)) = tokio::join!(offer, measure);
        let (at_start, at_end) = (at_start?, at_end?);
        let final_stats = self.stats(sandbox).await?;
        let upstream = at_end["requests"].as_u64().unwrap_or(0) - at_start["requests"].as_u64().unwrap_or(0);
        let served: Vec<&load::Answer> = answers.iter().filter(|a| a.status == 200).collect();
        let mut per_tenant = BTreeMap::new();
        for answer in &served {
            *per_tenant.entry(answer.tenant).or_insert(0usize) += 1;
        }
        let share_per_tenant =
            (0..TENANTS.len()).map(|t| *per_tenant.get(&t).unwrap_or(&0) as f64 / served.len().max(1) as f64).collect();
        Ok(OverloadReport {
            offered_per_second: offered,
            upstream_per_second: upstream as f64 / window.as_secs_f64(),
            max_in_1s: final_stats["max_in_1s"].as_u64().unwrap_or(0),
            upstream_429: final_stats["throttled"].as_u64().unwrap_or(0),
            served: served.len(),
            refused_429: answers.iter().filter(|a| a.status == 429).count(),
            share_per_tenant,
        })
    }

    async fn nginx(&self, binary: &Path) -> Result<load::ClosedRun> {
        let prefix = std::env::temp_dir().join("agora-bench-nginx");
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("cache"))?;
        let config = NGINX_ANCHOR.replace("/tmp/anchor-nginx", prefix.to_str().context("a UTF-8 path")?);
        let config_path = prefix.join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let args = ["-c", config_path.to_str().unwrap_or_default(), "-p", prefix.to_str().unwrap_or_default()];
        let mut process = Proc::spawn(&self.logs, "nginx", binary, &args, &[])?;
        wait_port(NGINX_PORT, "nginx", &mut process).await?;
        let url = format!("http://127.0.0.1:{NGINX_PORT}/dev/v1/projects");
        self.http.get(&url).send().await?.error_for_status()?;
        let address = format!("127.0.0.1:{NGINX_PORT}").parse()?;
        let (warmup, duration) = (self.durations.warmup, self.durations.closed);
        let run = load::closed_loop(address, "/dev/v1/projects", &[], 64, warmup, duration, self.wrk.as_deref()).await;
        process.stop();
        run
    }

    async fn cluster(&self, redis_binary: &Path) -> Result<Value> {
        let redis_port = free_port()?;
        let port = redis_port.to_string();
        let mut redis = Proc::spawn(
            &self.logs,
            "redis",
            redis_binary,
            &["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            &[],
        )?;
        wait_port(redis_port, "redis-server", &mut redis).await?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}/");
        let (sandbox_process, sandbox) = self.sandbox("sandbox-cluster", 10).await?;
        let projects = self.projects(&sandbox).await?;
        let find = |name: &str| -> String {
            projects
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["vendor_key"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default()
        };
        let initech = projects
            .iter()
            .find(|p| p["name"] == "initech-staging")
            .and_then(|p| p["id"].as_str())
            .unwrap_or_default()
            .to_string();
        let apps = [find("acme-web"), find("globex-live"), find("initech-staging")];
        let mut replicas = Vec::new();
        let mut targets: Vec<load::Target> = Vec::new();
        for n in 0..3 {
            let (process, base, config) =
                self.gateway(&format!("replica-{n}"), &sandbox, &initech, Some(&redis_url)).await?;
            for (tenant, app) in apps.iter().enumerate() {
                let token = self.token(&config, TENANTS[tenant].0)?;
                self.http.get(format!("{base}/dev/v1/projects")).bearer_auth(&token).send().await?;
                targets.push(load::Target { url: format!("{base}/dev/v1/channel/{app}"), token, tenant });
            }
            replicas.push(process);
        }
        // A Latin square over (replica, tenant): consecutive requests go to different replicas and tenants.
        let targets: Vec<load::Target> = (0..9).map(|k| targets[(k % 3) * 3 + (k + k / 3) % 3].clone()).collect();
        let report = self.overload(&sandbox, &targets, self.durations.overload, 0).await?;
        drop(replicas);
        sandbox_process.stop();
        redis.stop();
        Ok(serde_json::to_value(report)?)
    }
}

fn base64_credentials() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{CUSTOMER_ID}:{CUSTOMER_SECRET}"))
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu_model": model,
        "os": std::env::consts::OS,
    })
}

/// The Markdown table of a report (what the README shows).
fn table(report: &Value) -> String {
    let closed = |v: &Value| {
        if v.is_null() {
            return "skipped | | | ".to_string();
        }
        format!(
            "{:.0} req/s | {:.2} | {:.2} | {:.2}",
            v["requests_per_second"].as_f64().unwrap_or(0.0),
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["p999_ms"].as_f64().unwrap_or(0.0)
        )
    };
    let overload = |v: &Value| {
        if v.is_null() {
            return "skipped".to_string();
        }
        let shares: Vec<String> = v["share_per_tenant"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{:.0}%", s.as_f64().unwrap_or(0.0) * 100.0))
            .collect();
        format!(
            "{:.2} upstream req/s (offered {}/s), most in 1 s: {}, upstream 429s: {}, shares {}",
            v["upstream_per_second"].as_f64().unwrap_or(0.0),
            v["offered_per_second"],
            v["max_in_1s"],
            v["upstream_429"],
            shares.join(" / ")
        )
    };
    let mut out = String::new();
    let generator = report["hit"]["generator"].as_str().unwrap_or("?");
    out.push_str(&format!("Load generator: {generator}, 64 connections.\n\n"));
    out.push_str("| scenario | throughput | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|\n");
    out.push_str(&format!("| hit (gateway, JWT, 64 conns) | {} |\n", closed(&report["hit"])));
    out.push_str(&format!("| direct (sandbox, no gateway) | {} |\n", closed(&report["direct"])));
    out.push_str(&format!("| nginx cache + throttle anchor | {} |\n", closed(&report["nginx"])));
    out.push_str("\n| figure | value |\n|---|---|\n");
    out.push_str(&format!("| hit / direct | {:.2} |\n", report["hit_over_direct"].as_f64().unwrap_or(0.0)));
    match report["hit_over_nginx"].as_f64() {
        Some(ratio) => out.push_str(&format!("| hit / nginx | {ratio:.2} |\n")),
        None => out.push_str("| hit / nginx | skipped (no nginx) |\n"),
    }
    out.push_str(&format!(
        "| gateway peak RSS during hit | {:.1} MiB |\n",
        report["hit_gateway_peak_rss_mib"].as_f64().unwrap_or(0.0)
    ));
    out.push_str(&format!("| overload (1 gateway) | {} |\n", overload(&report["overload"])));
    out.push_str(&format!(
        "| coalesce | {} concurrent cold reads, {} answered, {} upstream call(s) |\n",
        report["coalesce"]["concurrent_reads"],
        report["coalesce"]["answered_200"],
        report["coalesce"]["upstream_calls"]
    ));
    out.push_str(&format!("| cluster (3 replicas + Redis) | {} |\n", overload(&report["cluster"])));
    out
}
