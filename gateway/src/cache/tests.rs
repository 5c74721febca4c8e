//! The cache on its own: coalescing, stale answers, invalidation races, the byte bound.

use std::sync::atomic::AtomicUsize;

use axum::http::{HeaderMap, StatusCode};
use bytesize::ByteSize;
use serde_json::json;

use super::*;
use crate::policy::Operation;
use crate::upstream::Answer;

fn config(ttl: Duration) -> CacheConfig {
    CacheConfig {
        project_ttl: ttl,
        channel_ttl: ttl,
        usage_ttl: ttl,
        stale_for: Duration::from_secs(60),
        max_bytes: ByteSize::kib(256),
    }
}

fn answer(body: serde_json::Value) -> Answer {
    Answer { status: StatusCode::OK, headers: HeaderMap::new(), body: body.to_string().into() }
}

fn project(name: &str) -> serde_json::Value {
    json!({"id": format!("id-{name}"), "name": name, "vendor_key": "f".repeat(32), "sign_key": "e".repeat(32)})
}

/// A project list of these projects, as an entry.
fn projects(names: &[&str]) -> Entry {
    let list: Vec<_> = names.iter().map(|name| project(name)).collect();
    Entry::new(Operation::ListProjects, answer(json!({ "projects": list }))).unwrap()
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_misses_make_one_call() {
    let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let calls = calls.clone();
        readers.push(tokio::spawn(async move {
            cache
                .read("list_projects".into(), CacheClass::Project, false, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(projects(&["a"]))
                })
                .await
                .map(|(_, status)| status)
        }));
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap().unwrap(), CacheStatus::Miss);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let (_, status) =
        cache.read("list_projects".into(), CacheClass::Project, false, || async { unreachable!() }).await.unwrap();
    assert_eq!(status, CacheStatus::Hit);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_serves_the_stale_entry_and_client_errors_pass() {
    let cache = ResponseCache::new(&config(Duration::from_secs(20)), Arc::new(Metrics::new()));
    let key = || "list_projects".to_string();
    cache.read(key(), CacheClass::Project, false, || async { Ok(projects(&["a"])) }).await.unwrap();
    let (_, status) = cache.read(key(), CacheClass::Project, false, || async { unreachable!() }).await.unwrap();
    assert_eq!(status, CacheStatus::Hit, "fresh for 20 s");
    tokio::time::advance(Duration::from_secs(30)).await;
    let down = || async { Err(GatewayError::BadGateway("down".into())) };
    let (entry, status) = cache.read(key(), CacheClass::Project, false, down).await.unwrap();
    assert_eq!(status, CacheStatus::Stale);
    assert_eq!(entry.age(), Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(60)).await;
    let down = || async { Err(GatewayError::BadGateway("down".into())) };
    assert!(cache.read(key(), CacheClass::Project, false, down).await.is_err(), "stale only for stale_for (60 s)");
    let missing = || async { Err(GatewayError::not_found("gone")) };
    assert!(cache.read(key(), CacheClass::Project, false, missing).await.is_err(), "a 4xx is not covered by stale");
}

#[tokio::test]
async fn a_write_during_a_fill_keeps_the_old_answer_out_of_the_cache() {
    let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .read("list_projects".into(), CacheClass::Project, false, move || async move {
                    let _ = wait.await;
                    Ok(projects(&["old"]))
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    cache.invalidate_project("id-new");
    release.send(()).unwrap();
    reader.await.unwrap().unwrap();
    assert!(cache.fresh("list_projects", CacheClass::Project).await.is_none(), "the pre-write answer was not stored");
}

#[tokio::test]
async fn invalidation_drops_the_list_and_that_project_only() {
    let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
    cache
        .read("list_projects".into(), CacheClass::Project, false, || async { Ok(projects(&["a", "b"])) })
        .await
        .unwrap();
    for name in ["a", "b"] {
        let entry = Entry::new(Operation::GetProject, answer(json!({ "project": project(name) }))).unwrap();
        cache
            .read(format!("get_project {name}"), CacheClass::Project, false, move || async move { Ok(entry) })
            .await
            .unwrap();
    }
    cache.invalidate_project("id-a");
    assert!(cache.fresh("list_projects", CacheClass::Project).await.is_none());
    assert!(cache.fresh("get_project a", CacheClass::Project).await.is_none());
    assert!(cache.fresh("get_project b", CacheClass::Project).await.is_some());
}

#[tokio::test]
async fn the_cache_stays_within_its_byte_bound() {
    let cache = ResponseCache::new(&config(Duration::from_secs(60)), Arc::new(Metrics::new()));
    let names: Vec<String> = (0..20).map(|n| format!("project-with-a-long-name-{n}")).collect();
    for key in 0..500 {
        let names = names.clone();
        cache
            .read(format!("key-{key}"), CacheClass::Channel, false, move || async move {
                Ok(projects(&names.iter().map(String::as_str).collect::<Vec<_>>()))
            })
            .await
            .unwrap();
    }
    let size = cache.weighted_size().await;
    let bound = config(Duration::from_secs(60)).max_bytes.as_u64();
    assert!(size <= bound, "{size} > {bound}");
    assert!(size > bound / 2, "the cache is used: {size}");
}
