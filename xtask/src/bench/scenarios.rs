//! The scenarios that need more than one request loop: the overload of distinct reads (one
//! gateway or three replicas through Redis) and the nginx anchor.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use super::procs::{Proc, free_port, wait_port};
use super::{Bench, DemoAccount, NGINX_ANCHOR, NGINX_PORT, OverloadReport, TENANTS, load};

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

    pub(super) async fn nginx(&self, binary: &Path) -> Result<load::ClosedRun> {
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
