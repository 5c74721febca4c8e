//! The cache on its own: coalescing, stale answers, invalidation races, the byte bound.

use std::sync::atomic::AtomicUsize;

use axum::http::{HeaderMap, StatusCode};
use bytesize::ByteSize;
use serde_json::json;

use super::fill::UnderWay;
use super::*;
use crate::answer::Answer;
use crate::operations::Operation;

fn config(ttl: Duration) -> CacheConfig {
    CacheConfig {
        project_ttl: ttl,
        channel_ttl: ttl,
        usage_ttl: ttl,
        addresses_ttl: ttl,
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

/// A project list of these projects, as Agora answers it.
fn projects(names: &[&str]) -> Answer {
    let list: Vec<_> = names.iter().map(|name| project(name)).collect();
    answer(json!({ "projects": list }))
}

fn cache(ttl: Duration) -> ResponseCache {
    ResponseCache::new(&config(ttl), None, Arc::new(Metrics::new()))
}

/// A read of `key` (a project list unless it names `get_project`) by tenant 0.
fn read(key: &str, class: CacheClass) -> Read {
    let operation = if key.starts_with("get_project") { Operation::GetProject } else { Operation::ListProjects };
    Read {
        key: key.to_string(),
        operation,
        class,
        refresh: false,
        tenant: 0,
        shared: true,
        wait_for_others: Duration::from_secs(1),
        traced: false,
    }
}

fn list() -> Read {
    read("list_projects", CacheClass::Project)
}

#[tokio::test(start_paused = true)]
async fn concurrent_identical_misses_make_one_call() {
    let cache = cache(Duration::from_secs(60));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let calls = calls.clone();
        readers.push(tokio::spawn(async move {
            cache
                .read(list(), move |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(projects(&["a"]))
                })
                .await
                .map(|(_, outcome)| outcome)
        }));
    }
    let outcomes: Vec<_> = futures::future::join_all(readers).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(outcomes.iter().all(|outcome| outcome.status == CacheStatus::Miss));
    // One made the call; every other waited for it.
    assert_eq!(outcomes.iter().filter(|outcome| !outcome.collapsed).count(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let (_, outcome) = cache.read(list(), |_| async { unreachable!() }).await.unwrap();
    let status = outcome.status;
    assert_eq!(status, CacheStatus::Hit);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_serves_the_stale_entry_and_client_errors_pass() {
    let cache = cache(Duration::from_secs(20));
    cache.read(list(), |_| async { Ok(projects(&["a"])) }).await.unwrap();
    let (_, outcome) = cache.read(list(), |_| async { unreachable!() }).await.unwrap();
    let status = outcome.status;
    assert_eq!(status, CacheStatus::Hit, "fresh for 20 s");
    tokio::time::advance(Duration::from_secs(30)).await;
    let down = |_| async { Err(GatewayError::BadGateway("down".into())) };
    let (entry, outcome) = cache.read(list(), down).await.unwrap();
    let status = outcome.status;
    assert_eq!(status, CacheStatus::Stale);
    assert_eq!(entry.age(), Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(60)).await;
    let down = |_| async { Err(GatewayError::BadGateway("down".into())) };
    assert!(cache.read(list(), down).await.is_err(), "stale only for stale_for (60 s)");
    let missing = |_| async { Err(GatewayError::not_found("gone")) };
    assert!(cache.read(list(), missing).await.is_err(), "a 4xx is not covered by stale");
}

#[tokio::test]
async fn a_write_during_a_fill_keeps_the_old_answer_out_of_the_cache() {
    let cache = cache(Duration::from_secs(60));
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .read(list(), move |_| async move {
                    let _ = wait.await;
                    Ok(projects(&["old"]))
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    cache.invalidate_project("id-new").await;
    release.send(()).unwrap();
    reader.await.unwrap().unwrap();
    assert!(cache.fresh("list_projects", CacheClass::Project).await.is_none(), "the pre-write answer was not stored");
}

#[tokio::test]
async fn invalidation_drops_the_list_and_that_project_only() {
    let cache = cache(Duration::from_secs(60));
    cache.read(list(), |_| async { Ok(projects(&["a", "b"])) }).await.unwrap();
    for name in ["a", "b"] {
        let one = answer(json!({ "project": project(name) }));
        cache.read(read(&format!("get_project {name}"), CacheClass::Project), |_| async { Ok(one) }).await.unwrap();
    }
    cache.invalidate_project("id-a").await;
    assert!(cache.fresh("list_projects", CacheClass::Project).await.is_none());
    assert!(cache.fresh("get_project a", CacheClass::Project).await.is_none());
    assert!(cache.fresh("get_project b", CacheClass::Project).await.is_some());
}

#[tokio::test]
async fn the_cache_stays_within_its_byte_bound() {
    let cache = cache(Duration::from_secs(60));
    let names: Vec<String> = (0..20).map(|n| format!("project-with-a-long-name-{n}")).collect();
    for key in 0..500 {
        let names = names.clone();
        cache
            .read(read(&format!("key-{key}"), CacheClass::Channel), move |_| async move {
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

#[tokio::test]
async fn a_fill_that_fails_or_panics_frees_its_key() {
    let cache = cache(Duration::from_secs(60));
    let down = |_| async { Err(GatewayError::BadGateway("down".into())) };
    assert!(cache.read(list(), down).await.is_err());
    let panics = |_| async { panic!("a fill panicked") };
    let error = cache.read(list(), panics).await.err().expect("a panicked fill is an error");
    assert!(matches!(error, GatewayError::Internal(_)), "{error:?}");
    // Neither left the key stuck: the next read fills it.
    let (_, outcome) = cache.read(list(), |_| async { Ok(projects(&["a"])) }).await.unwrap();
    let status = outcome.status;
    assert_eq!(status, CacheStatus::Miss);
    // (An ended fill is kept a moment, joinable, never waited for.)
    assert!(cache.inner.filling.lock().unwrap().values().all(UnderWay::has_ended));
}

#[tokio::test(start_paused = true)]
async fn a_distrusted_cache_serves_nothing_older_as_fresh_but_covers_failures_with_it() {
    let cache = cache(Duration::from_secs(60));
    cache.read(list(), |_| async { Ok(projects(&["a"])) }).await.unwrap();
    // Invalidations may have been missed (Redis reconnected).
    cache.inner.distrust();
    assert!(cache.fresh("list_projects", CacheClass::Project).await.is_none());
    let down = |_| async { Err(GatewayError::BadGateway("down".into())) };
    let (_, outcome) = cache.read(list(), down).await.unwrap();
    let status = outcome.status;
    assert_eq!(status, CacheStatus::Stale, "still within its TTL: it may cover a failure");
    let (_, outcome) = cache.read(list(), |_| async { Ok(projects(&["a", "b"])) }).await.unwrap();
    let status = outcome.status;
    assert_eq!(status, CacheStatus::Miss);
    let (entry, outcome) = cache.read(list(), |_| async { unreachable!() }).await.unwrap();
    let status = outcome.status;
    assert_eq!((entry.projects().len(), status), (2, CacheStatus::Hit), "what was filled after is trusted");
}

#[tokio::test]
async fn a_fill_another_tenant_joins_is_promoted() {
    let cache = cache(Duration::from_secs(60));
    let (promoted, was_promoted) = tokio::sync::oneshot::channel();
    let first = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .read(list(), move |promotion| async move {
                    // Waits, as a queued request would, until another tenant joins.
                    while !promotion.is_raised() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let _ = promoted.send(());
                    Ok(projects(&["a"]))
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    // The same tenant joining does not promote it.
    let same = tokio::spawn({
        let cache = cache.clone();
        async move { cache.read(list(), |_| async { unreachable!() }).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!first.is_finished() && !same.is_finished());
    let other = Read { tenant: 1, ..list() };
    let (_, outcome) = cache.read(other, |_| async { unreachable!() }).await.unwrap();
    assert_eq!((outcome.status, outcome.collapsed), (CacheStatus::Miss, true), "it waited for the first's fill");
    was_promoted.await.unwrap();
    let first = first.await.unwrap().unwrap().1;
    assert_eq!((first.status, first.collapsed), (CacheStatus::Miss, false), "the first made the call");
    let same = same.await.unwrap().unwrap().1;
    assert_eq!((same.status, same.collapsed), (CacheStatus::Miss, true));
}

/// The serving thread's front (`front.rs`) answers what the cache would, and nothing it no longer
/// would: not after an invalidation, a purge, a refresh stored, a loss of trust, or its TTL.
#[tokio::test(start_paused = true)]
async fn the_threads_front_never_answers_what_the_cache_no_longer_would() {
    let cache = cache(Duration::from_secs(20));
    let fill = |names: &'static [&'static str]| move |_| async move { Ok(projects(names)) };
    let (first, _) = cache.read(list(), fill(&["a"])).await.unwrap();
    for _ in 0..3 {
        let (again, outcome) = cache.read(list(), |_| async { unreachable!() }).await.unwrap();
        assert!(Arc::ptr_eq(&again, &first) && outcome.status == CacheStatus::Hit);
    }
    type Change = fn(&ResponseCache) -> futures::future::BoxFuture<'_, ()>;
    let changes: [(&str, Change); 3] = [
        ("an invalidation", |cache| Box::pin(cache.invalidate_key("list_projects", CacheClass::Project))),
        ("a project's invalidation", |cache| Box::pin(cache.invalidate_project("id-a"))),
        ("a purge", |cache| Box::pin(cache.purge(Some(CacheClass::Project)))),
    ];
    let mut latest = first;
    for (change, apply) in changes {
        apply(&cache).await;
        let (entry, outcome) = cache.read(list(), fill(&["b"])).await.unwrap();
        assert_eq!(outcome.status, CacheStatus::Miss, "after {change}");
        assert!(!Arc::ptr_eq(&entry, &latest));
        let (hit, _) = cache.read(list(), |_| async { unreachable!() }).await.unwrap();
        assert!(Arc::ptr_eq(&hit, &entry));
        latest = entry;
    }
    // A refresh stores a newer entry: the next read answers it.
    let refresh = Read { refresh: true, ..list() };
    let (refreshed, _) = cache.read(refresh, fill(&["c"])).await.unwrap();
    let (hit, _) = cache.read(list(), |_| async { unreachable!() }).await.unwrap();
    assert!(Arc::ptr_eq(&hit, &refreshed) && !Arc::ptr_eq(&hit, &latest));
    // Distrusted: not fresh any more.
    cache.inner.distrust();
    let (_, outcome) = cache.read(list(), fill(&["d"])).await.unwrap();
    assert_eq!(outcome.status, CacheStatus::Miss, "after a loss of trust");
    // Past its TTL: not fresh either.
    tokio::time::advance(Duration::from_secs(21)).await;
    let (_, outcome) = cache.read(list(), fill(&["e"])).await.unwrap();
    assert_eq!(outcome.status, CacheStatus::Miss, "past its TTL");
}
