//! The bench's report: the machine it ran on, and the Markdown table the README shows.

use serde_json::{Value, json};

pub(super) fn machine() -> Value {
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
pub(super) fn table(report: &Value) -> String {
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
    let ratio = |v: &Value| match v["median"].as_f64() {
        Some(median) => format!(
            "{median:.2} (rounds {:.2} to {:.2}, median of {})",
            v["low"].as_f64().unwrap_or(0.0),
            v["high"].as_f64().unwrap_or(0.0),
            v["rounds"]
        ),
        None => "skipped".to_string(),
    };
    // The row of CPU per request, the hit's over `theirs`' (none when not measured).
    let cpu_row = |theirs: &str, cpu: &Value| match cpu["median"].is_number() {
        true => format!(
            "| CPU per request, hit / {theirs} | {:.2} µs / {:.2} µs = {} |\n",
            cpu["ours_us"].as_f64().unwrap_or(0.0),
            cpu["theirs_us"].as_f64().unwrap_or(0.0),
            ratio(cpu)
        ),
        false => String::new(),
    };
    let mut out = String::new();
    let machine = &report["machine"];
    out.push_str(&format!(
        "Machine: {}, {} CPUs, {}.\n",
        machine["cpu_model"].as_str().unwrap_or("unknown CPU"),
        machine["cpus"],
        machine["os"].as_str().unwrap_or("?")
    ));
    let generator = report["hit"]["generator"].as_str().unwrap_or("?");
    out.push_str(&format!(
        "Load generator: {generator} (one thread), 64 connections; hit, nginx, direct and bare hyper in {} \
         interleaved rounds (medians shown).\n\n",
        report["rounds"]
    ));
    out.push_str("| scenario | throughput | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|\n");
    out.push_str(&format!("| hit (gateway, JWT, 64 conns) | {} |\n", closed(&report["hit"])));
    out.push_str(&format!("| hit, `server.worker_threads = 1` | {} |\n", closed(&report["hit_one_worker"])));
    out.push_str(&format!("| direct (sandbox, no gateway) | {} |\n", closed(&report["direct"])));
    out.push_str(&format!("| nginx cache + throttle anchor | {} |\n", closed(&report["nginx"])));
    out.push_str(&format!("| bare hyper, the hit's answer (no gateway work) | {} |\n", closed(&report["bare"])));
    out.push_str("\n| figure | value |\n|---|---|\n");
    out.push_str(&format!("| hit / direct | {} |\n", ratio(&report["hit_over_direct"])));
    out.push_str(&format!("| hit / nginx | {} |\n", ratio(&report["hit_over_nginx"])));
    out.push_str(&cpu_row("nginx", &report["cpu_hit_over_nginx"]));
    out.push_str(&format!("| hit / bare hyper | {} |\n", ratio(&report["hit_over_bare"])));
    out.push_str(&cpu_row("bare hyper", &report["cpu_hit_over_bare"]));
    out.push_str(&format!("| bare hyper / nginx | {} |\n", ratio(&report["bare_over_nginx"])));
    for load in report["fixed"].as_array().into_iter().flatten() {
        let latencies = |v: &Value| {
            let ms = |key: &str| v[key].as_f64().unwrap_or(0.0);
            format!("{:.2} / {:.2} / {:.2}", ms("p50_ms"), ms("p99_ms"), ms("p999_ms"))
        };
        out.push_str(&format!(
            "| fixed load {:.0}% of nginx's ceiling ({} req/s): p50 / p99 / p99.9 ms | gateway {}; one worker {}; \
             nginx {} |\n",
            load["fraction"].as_f64().unwrap_or(0.0) * 100.0,
            load["offered_per_second"],
            latencies(&load["gateway"]),
            latencies(&load["gateway_one_worker"]),
            latencies(&load["nginx"])
        ));
    }
    out.push_str(&format!(
        "| hit with one worker thread / nginx | {} |\n",
        ratio(&report["hit_one_worker_over_nginx"])
    ));
    let scale = &report["scale"];
    out.push_str(&format!(
        "| hit, account of {} projects / of 5 | {} |\n",
        scale["projects"],
        ratio(&scale["many_over_5"])
    ));
    out.push_str(&format!(
        "| gateway peak RSS, account of {} projects | {:.1} MiB |\n",
        scale["projects"],
        scale["peak_rss_mib"].as_f64().unwrap_or(0.0)
    ));
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
