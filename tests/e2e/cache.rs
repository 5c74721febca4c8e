//! The shared response cache, counted at the sandbox: coalescing, TTLs, sharing across tenants,
//! invalidation by writes, stale answers on failure, the byte bound, refresh and purge.

use std::time::Duration;

use agora_sandbox::Faults;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn x_cache(headers: &reqwest::header::HeaderMap) -> &str {
    headers.get("x-cache").map(|v| v.to_str().unwrap()).unwrap_or("-")
}

async fn upstream_calls(stack: &Stack, operation: &str) -> u64 {
    stack.stats().await.by_operation.get(operation).copied().unwrap_or(0)
}

#[tokio::test]
async fn two_hundred_concurrent_cold_reads_make_one_upstream_call() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let client = stack.client(&acme);
    let reads = (0..200).map(|_| client.list_projects().send());
    let answers = futures::future::join_all(reads).await;
    for answer in answers {
        let projects = answer.expect("every read is answered").into_inner().projects;
        let mut names: Vec<_> = projects.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["acme-mobile", "acme-web"]);
    }
    assert_eq!(upstream_calls(&stack, "list_projects").await, 1);
    assert_eq!(stack.stats().await.requests, 1);
}

#[tokio::test]
async fn a_read_within_the_ttl_hits_and_one_after_it_refreshes_once() {
    let _load = LOAD.lock().await;
    let stack = Stack::start(Options { channel_ttl: "1s", ..Options::default() }).await;
    let acme = token("acme", TENANT_SCOPES);
    let path = format!("/dev/v1/channel/{}", stack.app("acme-web"));

    let (status, headers, first) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!((status, x_cache(&headers)), (200, "MISS"));
    let (_, headers, second) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(first, second);
    assert_eq!(upstream_calls(&stack, "list_channels").await, 1, "the hit spent nothing");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, headers, _) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!(x_cache(&headers), "MISS");
    let (_, headers, _) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(upstream_calls(&stack, "list_channels").await, 2, "one refresh after the TTL");
}

#[tokio::test]
async fn tenants_share_one_upstream_call_and_each_gets_its_own_view() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let globex = token("globex", TENANT_SCOPES);
    let admin = token("ops", ALL_SCOPES);

    let (_, _, acme_list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let (_, headers, globex_list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&globex), None).await;
    assert_eq!(x_cache(&headers), "HIT", "acme's read warmed globex's");
    let names = |list: &Value| {
        list["projects"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert!(names(&acme_list).iter().all(|n| n.starts_with("acme-")));
    assert!(names(&globex_list).iter().all(|n| n.starts_with("globex-")));
    assert_eq!(upstream_calls(&stack, "list_projects").await, 1);

    // The same channel read by two tenants that may both see it (acme owns it; ops is admin).
    let path = format!("/dev/v1/channel/user/{}/lobby", stack.app("acme-web"));
    let (_, _, by_acme) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    let (_, headers, by_ops) = call(&stack, Method::GET, &path, Some(&admin), None).await;
    assert_eq!(x_cache(&headers), "HIT");
    assert_eq!(by_acme, by_ops);
    assert_eq!(upstream_calls(&stack, "list_channel_users").await, 1);
}

#[tokio::test]
async fn a_write_through_the_gateway_is_seen_by_the_next_reads() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let mobile = stack.projects.named("acme-mobile").id.clone();
    let get = format!("/dev/v1/project?id={mobile}");
    let status_of = |body: &Value, field: &str| {
        body[field].as_array().unwrap().iter().find(|p| p["id"] == mobile.as_str()).unwrap()["status"].clone()
    };

    // Warm both reads.
    let (_, _, list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let (_, _, got) = call(&stack, Method::GET, &get, Some(&acme), None).await;
    assert_eq!((status_of(&list, "projects"), status_of(&got, "project")), (json!(1), json!(1)));

    let (status, _, _) =
        call(&stack, Method::POST, "/dev/v1/project_status", Some(&acme), Some(json!({"id": mobile, "status": 0})))
            .await;
    assert_eq!(status, PROJECTS_OK);
    let (_, _, got) = call(&stack, Method::GET, &get, Some(&acme), None).await;
    assert_eq!(status_of(&got, "project"), json!(0), "no stale get_project after the write");
    let (_, _, list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(status_of(&list, "projects"), json!(0), "no stale list after the write");

    // Kicking-rule writes refresh that app's rule list.
    let app = stack.app("acme-web");
    let rules = format!("/dev/v1/kicking-rule?appid={app}");
    let (_, _, before) = call(&stack, Method::GET, &rules, Some(&acme), None).await;
    let (_, _, created) = call(
        &stack,
        Method::POST,
        "/dev/v1/kicking-rule",
        Some(&acme),
        Some(json!({"appid": app, "uid": 99, "time": 10})),
    )
    .await;
    let (_, headers, after) = call(&stack, Method::GET, &rules, Some(&acme), None).await;
    assert_ne!(x_cache(&headers), "HIT");
    assert_eq!(after["rules"].as_array().unwrap().len(), before["rules"].as_array().unwrap().len() + 1);
    assert!(after["rules"].as_array().unwrap().iter().any(|rule| rule["id"] == created["id"]));
}

#[tokio::test]
async fn a_failing_upstream_is_covered_by_stale_answers_and_uncached_reads_get_its_error() {
    let _load = LOAD.lock().await;
    let stack = Stack::start(Options { project_ttl: "1s", channel_ttl: "1s", ..Options::default() }).await;
    let acme = token("acme", TENANT_SCOPES);
    let channels = format!("/dev/v1/channel/{}", stack.app("acme-web"));
    let (_, _, list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let (_, _, page) = call(&stack, Method::GET, &channels, Some(&acme), None).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    set_faults(&stack.sandbox, Faults { fail_rate: 1.0, status: Some(500), ..Default::default() }).await;
    let (status, headers, stale_list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!((status, x_cache(&headers)), (PROJECTS_OK, "STALE"));
    assert_eq!(stale_list, list);
    assert!(headers["age"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let (status, headers, stale_page) = call(&stack, Method::GET, &channels, Some(&acme), None).await;
    assert_eq!((status, x_cache(&headers)), (200, "STALE"));
    assert_eq!(stale_page, page);

    // Never read before: the upstream's error passes through.
    let users = format!("/dev/v1/channel/user/{}/lobby", stack.app("acme-web"));
    let (status, headers, body) = call(&stack, Method::GET, &users, Some(&acme), None).await;
    assert_eq!((status, &body), (500, &json!({"error_msg": "fault injected by the sandbox"})));
    assert_eq!(headers["content-type"], "application/json; charset=utf-8", "as Agora sent it");
}

#[tokio::test]
async fn no_cache_refreshes_and_admins_can_purge() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let admin = token("ops", ALL_SCOPES);
    call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let response = http()
        .get(stack.url("/dev/v1/projects"))
        .bearer_auth(&acme)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-cache"], "BYPASS");
    assert_eq!(upstream_calls(&stack, "list_projects").await, 2);

    let (status, _, answer) =
        call(&stack, Method::POST, "/admin/cache/purge", Some(&admin), Some(json!({"class": "project"}))).await;
    assert_eq!((status, answer), (200, json!({"purged": "project"})));
    let (_, headers, _) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(x_cache(&headers), "MISS");
    let (status, headers, body) =
        call(&stack, Method::POST, "/admin/cache/purge", Some(&admin), Some(json!({"class": "nope"}))).await;
    assert!(problem_detail(status, &headers, &body, 400).contains("class"));
    let (status, _, answer) = call(&stack, Method::POST, "/admin/cache/purge", Some(&admin), None).await;
    assert_eq!((status, answer), (200, json!({"purged": "all"})));
}

#[tokio::test]
async fn the_cache_stays_within_max_bytes_under_a_flood_of_distinct_keys() {
    let _load = LOAD.lock().await;
    let stack = Stack::start(Options { max_bytes: "1MiB", ..Options::default() }).await;
    let admin = token("ops", ALL_SCOPES);
    let app = stack.app("acme-web");
    for n in 0..30 {
        let cname = format!("big-{n}");
        join_channel(
            &stack.sandbox,
            json!({"appid": app, "cname": cname, "mode": 2, "broadcasters": [7], "extra_audience": 5000}),
        )
        .await;
    }
    // Thirty distinct answers of about 55 KB each: 1.6 MB offered to a 1 MiB cache.
    let client = stack.client(&admin);
    let reads = (0..30).map(|n| {
        let client = client.clone();
        let app = app.clone();
        async move { client.list_channel_users().appid(app).cname(format!("big-{n}")).send().await }
    });
    for answer in futures::future::join_all(reads).await {
        assert_eq!(answer.unwrap().into_inner().data.audience_total, Some(5000));
    }
    let metrics = metrics_text(&stack.gateway.base_url()).await;
    let bytes: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("agora_gateway_cache_bytes "))
        .expect("the cache_bytes gauge")
        .trim()
        .parse()
        .unwrap();
    assert!(bytes <= 1024 * 1024, "{bytes} bytes held, more than max_bytes");
    assert!(bytes >= 512 * 1024, "{bytes} bytes held: the cache is used");
}
