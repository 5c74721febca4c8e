//! Failover across Agora's API domains, with two sandboxes as the two domains: the first down,
//! slow, and back; no write sent twice; the budget across both never more than 10 in a second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agora_sandbox::{Faults, Sandbox, SandboxConfig, Seed};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn domain(listen: SocketAddr) -> Sandbox {
    let config = SandboxConfig { seed: Seed::Demo, rate_limit: 10, ..SandboxConfig::new(CUSTOMER_ID, CUSTOMER_SECRET) };
    Sandbox::start(config, listen).await.expect("a sandbox")
}

/// The test configuration in front of `domains`, in order (`upstream.base_urls`), with a 1 s
/// upstream timeout and the audit going to `audit`.
pub(crate) fn ladder_toml(domains: &[String], initech_project: &str, audit: &std::path::Path) -> String {
    let options = Options { upstream_timeout: "1s", ..audited(audit) };
    let ladder = domains.iter().map(|url| format!("\"{url}\"")).collect::<Vec<_>>().join(", ");
    gateway_toml(&domains[0], initech_project, &options)
        .replace(&format!("base_url = \"{}\"", domains[0]), &format!("base_urls = [{ladder}]"))
}

async fn count(sandbox: &Sandbox, operation: &str) -> u64 {
    sandbox_stats(sandbox).await.by_operation.get(operation).copied().unwrap_or(0)
}

async fn arrivals(sandbox: &Sandbox) -> Vec<u64> {
    let answer: Value =
        http().get(format!("{}/__sandbox/arrivals", sandbox.root_url())).send().await.unwrap().json().await.unwrap();
    answer["unix_us"].as_array().unwrap().iter().map(|us| us.as_u64().unwrap()).collect()
}

/// The most arrivals within any one second, over both domains' logs together.
fn most_in_one_second(mut all: Vec<u64>) -> usize {
    all.sort_unstable();
    (0..all.len()).map(|k| all[k..].iter().take_while(|at| **at - all[k] < 1_000_000).count()).max().unwrap_or(0)
}

#[tokio::test]
async fn the_second_domain_takes_over_while_the_first_is_down_or_slow_and_traffic_returns() {
    let _load = LOAD.lock().await;
    let first_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut first = domain(first_addr).await;
    let second = domain(any_port()).await;
    let projects = DemoProjects(console_client(&second).list_projects().send().await.unwrap().into_inner().projects);
    let dir = temp_dir("failover");
    let audit = dir.join("audit.jsonl");
    let toml = ladder_toml(&[first.base_url(), second.base_url()], &projects.named("initech-staging").id, &audit);
    let config = agora_gateway::Config::parse(&toml, &fixtures()).unwrap();
    let gateway = GatewayThread::start(config).await;
    let base = gateway.base_url();
    let acme = token("acme", TENANT_SCOPES);
    let app = projects.named("acme-web").vendor_key.clone();
    let project = projects.named("acme-web").id.clone();
    let pages = std::sync::atomic::AtomicU32::new(0);
    // One uncached read (a page not asked before), answered 200.
    let read = async |label: &str| {
        let page = pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let path = format!("/dev/v1/channel/{app}?page_no={page}");
        let (status, _, body) = call_at(&base, Method::GET, &path, Some(&acme), None).await;
        assert_eq!(status, 200, "{label}: {body}");
    };
    // Twenty of them at once: more than the budget lets out in a second.
    let burst = async |label: &str| futures::future::join_all((0..20).map(|_| read(label))).await;
    let ready = async || http().get(format!("{base}/readyz")).send().await.unwrap().status().as_u16();

    // Both up: the first domain takes the calls.
    read("both up").await;
    assert_eq!((count(&first, "list_channels").await, count(&second, "list_channels").await), (1, 0));

    // The first down: reads and writes go on through the second, with no client error; the
    // gateway stays ready while any domain is.
    let mut arrived = arrivals(&first).await;
    first.stop().await;
    burst("first down, a burst").await;
    for n in 0..12 {
        read("first down").await;
        if n % 4 == 0 {
            let body = json!({"id": project, "recording_server": format!("10.0.1.{n}:80")});
            let (status, _, answer) =
                call_at(&base, Method::POST, "/dev/v1/recording_config", Some(&acme), Some(body)).await;
            assert_eq!(status, PROJECTS_OK, "a write while the first domain is down: {answer}");
        }
    }
    assert!(count(&second, "list_channels").await >= 32, "the second domain answered the reads");
    assert_eq!(count(&second, "set_recording_config").await, 3);
    assert_eq!(ready().await, 200, "ready while the second domain is");

    // The first back (same address): the probe finds it, and traffic returns.
    first = domain(first_addr).await;
    let back = Instant::now();
    loop {
        read("first back").await;
        if count(&first, "list_channels").await > 0 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "traffic did not return to the first domain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("failover: traffic back on the first domain {:?} after it came back", back.elapsed());
    burst("first back, a burst").await;

    // The first slow (3 s, the upstream timeout is 1 s), a write and a read sent to it together:
    // the write times out there and is not sent again; the read fails over within its deadline.
    set_faults(&first, Faults { latency_ms: 3000, ..Faults::default() }).await;
    // (The slow domain counts arrivals at once; an operation only once its answer is due.)
    let before = (
        sandbox_stats(&first).await.requests,
        count(&second, "set_recording_config").await,
        count(&second, "list_channels").await,
    );
    let write = async {
        let body = json!({"id": project, "recording_server": "10.0.2.1:80"});
        let request = http()
            .post(format!("{base}/dev/v1/recording_config"))
            .bearer_auth(&acme)
            .header("x-request-id", "failover-timed-out-write")
            .json(&body);
        request.send().await.unwrap().status().as_u16()
    };
    let started = Instant::now();
    let timed_read = async {
        read("first slow").await;
        started.elapsed()
    };
    let (write_status, read_took) = tokio::join!(write, timed_read);
    assert_eq!(write_status, 504, "a write whose answer never came");
    assert!(read_took < Duration::from_secs(3), "the read failed over in {read_took:?}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = (
        sandbox_stats(&first).await.requests,
        count(&second, "set_recording_config").await,
        count(&second, "list_channels").await,
    );
    assert_eq!(
        after,
        (before.0 + 2, before.1, before.2 + 1),
        "the write and the read reached the slow domain once each; the read, not the write, reached the second"
    );
    eprintln!("failover: a read that timed out on the slow domain answered after {read_took:?}");
    let events: Vec<Value> =
        std::fs::read_to_string(&audit).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let unknown = events.iter().find(|event| event["request_id"] == "failover-timed-out-write").expect("audited");
    assert_eq!((unknown["outcome"].as_str(), unknown["status"].as_u64()), (Some("unknown"), Some(504)));
    let first_label = first_addr.to_string();
    assert_eq!(unknown["upstream_domain"].as_str(), Some(first_label.as_str()), "the domain it was sent to");
    // The writes while the first domain was down went to the second, and their events say so.
    let second_label = second.base_url().trim_start_matches("http://").trim_end_matches("/dev").to_string();
    let through_second = events
        .iter()
        .filter(|event| {
            event["operation"] == "set_recording_config" && event["upstream_domain"] == second_label.as_str()
        })
        .count();
    assert_eq!(through_second, 3, "{events:#?}");

    // The budget, across both domains: never more than 10 in any second.
    arrived.extend(arrivals(&first).await);
    arrived.extend(arrivals(&second).await);
    let total = arrived.len();
    let most = most_in_one_second(arrived);
    eprintln!("failover: the two domains together saw {total} requests, at most {most} in one second");
    assert!(most <= 10, "{most} requests in one second across both domains");

    // No domain at all: a clear 502, and still ready (hits and stale answers are served; every
    // replica shares this state, so a 503 would empty the load balancer), degraded by cause.
    first.stop().await;
    second.stop().await;
    let path = format!("/dev/v1/channel/{app}?page_no=99999");
    let (status, _, body) = call_at(&base, Method::GET, &path, Some(&acme), None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(ready().await, 200, "ready, degraded, while no domain can be connected to");
    let metrics = metrics_text(&base).await;
    assert!(metrics.contains("agora_gateway_degraded{cause=\"upstream_unreachable\"} 1"), "{metrics}");
    std::fs::remove_dir_all(dir).unwrap();
}
