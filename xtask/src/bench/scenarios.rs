//! The scenarios that need more than one request loop: the overload of distinct reads (one
//! gateway or three replicas through Redis), the nginx anchor, and the account's size.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::load::ClosedRun;
use super::procs::{Proc, free_port, wait_port};
use super::{
    Bench, DemoAccount, NGINX_ANCHOR, NGINX_PORT, OverloadReport, SCALE_EXTRA_PROJECTS, TENANTS, load, median_run,
    ratio_of_rounds,
};

impl Bench {
    pub(super) async fn overload(
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

    /// One closed-loop run of `list_projects` at `url` (64 connections).
    /// The hit path at `url` (served by process `pid`), closed loop.
    pub(super) async fn closed(&self, url: &str, pid: u32, headers: &[(&str, String)]) -> Result<ClosedRun> {
        let (warmup, duration) = (self.durations.warmup, self.durations.closed);
        load::closed_loop(hit_path(url, pid, headers)?, warmup, duration, self.wrk.as_deref()).await
    }

    /// The hit path at `url` at a fixed `rate` (`h2load`).
    pub(super) async fn fixed(
        &self,
        h2load: &Path,
        url: &str,
        headers: &[(&str, String)],
        rate: u32,
    ) -> Result<load::FixedRun> {
        let (warmup, duration) = (self.durations.warmup, self.durations.closed);
        load::fixed_rate(h2load, hit_path(url, 0, headers)?, rate, warmup, duration).await
    }

    /// The nginx anchor, started and warmed: its process and URL.
    pub(super) async fn start_nginx(&self, binary: &Path) -> Result<(Proc, String)> {
        let prefix = std::env::temp_dir().join("agora-bench-nginx");
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(prefix.join("cache"))?;
        let config = NGINX_ANCHOR.replace("/tmp/anchor-nginx", prefix.to_str().context("a UTF-8 path")?);
        // nginx closes a keep-alive connection after 1,000 requests by default; h2load does not open
        // it again (wrk does, at a cost). Raised, as anyone serving this load would, so both load
        // generators keep their connections, as they do with the gateway.
        let config = config.replacen("http {", "http {\n  keepalive_requests 1000000000;", 1);
        let config_path = prefix.join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let args = ["-c", config_path.to_str().unwrap_or_default(), "-p", prefix.to_str().unwrap_or_default()];
        let mut process = Proc::spawn(&self.logs, "nginx", binary, &args, &[])?;
        wait_port(NGINX_PORT, "nginx", &mut process).await?;
        let url = format!("http://127.0.0.1:{NGINX_PORT}");
        self.http.get(format!("{url}/dev/v1/projects")).send().await?.error_for_status()?;
        Ok((process, url))
    }

    /// The hit of tenant t1 (2 projects) through `small` (the demo account's 5 projects) and
    /// through a gateway in front of an account of 5,005, in interleaved rounds — after checking
    /// that each tenant sees exactly its projects there, redacted.
    pub(super) async fn scale(&self, (small, small_pid): (&str, u32), tokens: &[String]) -> Result<Value> {
        println!(
            "scale: t1's hit (2 projects) in an account of 5 and of {} projects, {} interleaved rounds",
            5 + SCALE_EXTRA_PROJECTS,
            self.durations.rounds
        );
        let (sandbox_process, sandbox) = self.sandbox_with("sandbox-scale", 10, SCALE_EXTRA_PROJECTS).await?;
        let DemoAccount { initech, .. } = self.demo_account(&sandbox).await?;
        let (process, large, _) = self.gateway("gateway-scale", &sandbox, &initech, None).await?;
        let expected: [&[&str]; 3] =
            [&["acme-mobile", "acme-web"], &["globex-archive", "globex-live"], &["initech-staging"]];
        for ((tenant, token), names) in TENANTS.iter().zip(tokens).zip(expected) {
            let list: Value =
                self.http.get(format!("{large}/dev/v1/projects")).bearer_auth(token).send().await?.json().await?;
            let projects = list["projects"].as_array().context("a project list")?;
            let mut seen: Vec<&str> = projects.iter().filter_map(|p| p["name"].as_str()).collect();
            seen.sort_unstable();
            if seen != names {
                bail!("tenant {} sees {seen:?} in the large account, not {names:?}", tenant.0);
            }
            if projects.iter().any(|p| !p["sign_key"].is_null()) {
                bail!("tenant {} sees an App certificate without projects:secrets", tenant.0);
            }
        }
        let auth = [("authorization", format!("Bearer {}", tokens[0]))];
        let (mut five, mut many) = (Vec::new(), Vec::new());
        for round in 1..=self.durations.rounds {
            five.push(self.closed(small, small_pid, &auth).await?);
            many.push(self.closed(&large, process.pid(), &auth).await?);
            println!(
                "  round {round}/{}: 5 projects {:.0} req/s, {} projects {:.0} req/s",
                self.durations.rounds,
                five[round - 1].requests_per_second,
                5 + SCALE_EXTRA_PROJECTS,
                many[round - 1].requests_per_second
            );
        }
        let peak_rss_mib = process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
        process.stop();
        sandbox_process.stop();
        Ok(json!({
            "projects": 5 + SCALE_EXTRA_PROJECTS,
            "hit_5": median_run(&five),
            "hit_many": median_run(&many),
            "many_over_5": ratio_of_rounds(&many, &five),
            "peak_rss_mib": peak_rss_mib,
        }))
    }

    pub(super) async fn cluster(&self, redis_binary: &Path) -> Result<Value> {
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
        let DemoAccount { initech, apps } = self.demo_account(&sandbox).await?;
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

/// `GET /dev/v1/projects` at `url`, 64 connections.
pub(super) fn hit_path<'a>(url: &str, pid: u32, headers: &'a [(&'a str, String)]) -> Result<load::Closed<'a>> {
    let target = url.trim_start_matches("http://").parse()?;
    Ok(load::Closed { target, pid, path: "/dev/v1/projects", headers, connections: 64 })
}
