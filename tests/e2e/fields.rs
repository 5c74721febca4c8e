//! The standard fields on every kind of Console answer, parsed as RFC 8941 structured fields (with
//! the `sfv` crate, not our own code): RFC 9211 `Cache-Status` for a miss, a hit, a collapsed wait,
//! a refresh, a stale answer, a write, an answer from notices and a 429 of ours; and
//! `RateLimit-Policy` / `RateLimit` on each.

use std::collections::BTreeMap;
use std::time::Duration;

use agora_sandbox::Faults;
use reqwest::Method;
use reqwest::header::HeaderMap;
use sfv::{BareItem, List, ListEntry, Parser};

use crate::common::*;

/// A parameter's value, as the test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Param {
    Flag,
    Int(i64),
    Token(String),
}

/// One member of a structured-field list: its name (a token or a string) and its parameters.
fn member(headers: &HeaderMap, name: &str) -> (String, BTreeMap<String, Param>) {
    let text = headers.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap();
    let list: List = Parser::new(text).parse().unwrap_or_else(|error| panic!("{name}: {text:?}: {error}"));
    assert_eq!(list.len(), 1, "{name}: {text:?}");
    let ListEntry::Item(item) = &list[0] else { panic!("{name}: {text:?} is an inner list") };
    let value = |bare: &BareItem| -> Param {
        if bare.as_boolean() == Some(true) {
            Param::Flag
        } else if let Some(integer) = bare.as_integer() {
            Param::Int(i64::from(integer))
        } else if let Some(token) = bare.as_token() {
            Param::Token(token.as_str().to_string())
        } else {
            panic!("{name}: {text:?}: an unexpected parameter value")
        }
    };
    let label = match (item.bare_item.as_token(), item.bare_item.as_string()) {
        (Some(token), _) => token.as_str().to_string(),
        (_, Some(string)) => string.as_str().to_string(),
        _ => panic!("{name}: {text:?} names nothing"),
    };
    let params = item.params.iter().map(|(key, bare)| (key.as_str().to_string(), value(bare))).collect();
    (label, params)
}

fn cache_status(headers: &HeaderMap) -> BTreeMap<String, Param> {
    let (cache, params) = member(headers, "cache-status");
    assert_eq!(cache, "agora-gateway");
    params
}

fn token(text: &str) -> Param {
    Param::Token(text.into())
}

/// `RateLimit-Policy` is the deployment's budget; `RateLimit` the caller's lane now.
fn assert_rate_limit(headers: &HeaderMap) -> (i64, i64) {
    let (policy, params) = member(headers, "ratelimit-policy");
    assert_eq!(
        (policy.as_str(), params.get("q"), params.get("w")),
        ("agora", Some(&Param::Int(10)), Some(&Param::Int(1)))
    );
    let (limit, params) = member(headers, "ratelimit");
    assert_eq!(limit, "agora");
    let (Some(Param::Int(remaining)), Some(Param::Int(reset))) = (params.get("r"), params.get("t")) else {
        panic!("RateLimit without r and t: {params:?}")
    };
    assert!(*remaining >= 0 && *reset >= 0, "{params:?}");
    (*remaining, *reset)
}

#[tokio::test]
async fn every_kind_of_answer_says_how_the_cache_and_the_budget_took_part() {
    let _load = LOAD.lock().await;
    let stack = Stack::start(Options { channel_ttl: "2s", max_wait: "300ms", ..Options::default() }).await;
    let acme = token_for_acme();
    let app = stack.app("acme-web");

    // A miss: forwarded, and stored.
    let (status, headers, _) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(status, PROJECTS_OK);
    let miss = cache_status(&headers);
    assert_eq!(miss.get("fwd"), Some(&token("uri-miss")));
    assert_eq!(miss.get("fwd-status"), Some(&Param::Int(i64::from(PROJECTS_OK))));
    assert_eq!(miss.get("stored"), Some(&Param::Flag));
    assert_rate_limit(&headers);
    // A hit: with the freshness left.
    let (_, headers, _) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    let hit = cache_status(&headers);
    assert_eq!(hit.get("hit"), Some(&Param::Flag));
    assert!(matches!(hit.get("ttl"), Some(Param::Int(ttl)) if (0..=60).contains(ttl)), "{hit:?}");
    assert_rate_limit(&headers);
    // A refresh the caller asked for.
    let refresh = http()
        .get(stack.url("/dev/v1/projects"))
        .bearer_auth(&acme)
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(cache_status(refresh.headers()).get("fwd"), Some(&token("request")));

    // Concurrent cold reads: one goes to Agora (slow, so that all come while it is under way),
    // the others wait for it (collapsed).
    set_faults(&stack.sandbox, Faults { latency_ms: 1_500, ..Default::default() }).await;
    let path = format!("/dev/v1/channel/{app}");
    let reads = (0..8).map(|_| call(&stack, Method::GET, &path, Some(&acme), None));
    let answers = futures::future::join_all(reads).await;
    set_faults(&stack.sandbox, Faults::default()).await;
    let statuses: Vec<_> = answers.iter().map(|(_, headers, _)| cache_status(headers)).collect();
    let own = statuses.iter().filter(|s| s.get("fwd").is_some() && s.get("collapsed").is_none()).count();
    let collapsed = statuses.iter().filter(|s| s.get("collapsed") == Some(&Param::Flag)).count();
    assert_eq!(own, 1, "one upstream call: {statuses:?}");
    assert!(collapsed >= 1, "the others waited for it: {statuses:?}");

    // Stale: Agora fails after the freshness ran out; the stale copy says so.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    set_faults(&stack.sandbox, Faults { fail_rate: 1.0, status: Some(503), ..Default::default() }).await;
    let (status, headers, _) = call(&stack, Method::GET, &path, Some(&acme), None).await;
    assert_eq!((status, headers["x-cache"].to_str().unwrap()), (200, "STALE"));
    let stale = cache_status(&headers);
    assert_eq!((stale.get("fwd"), stale.get("fwd-status")), (Some(&token("stale")), Some(&Param::Int(503))));
    assert!(matches!(stale.get("ttl"), Some(Param::Int(ttl)) if *ttl <= 0), "stale by its age: {stale:?}");
    set_faults(&stack.sandbox, Faults::default()).await;

    // A write: never cached.
    let rule = serde_json::json!({ "appid": app, "uid": 31, "time": 5 });
    let (status, headers, body) = call(&stack, Method::POST, "/dev/v1/kicking-rule", Some(&acme), Some(rule)).await;
    assert!((200..300).contains(&status), "{body}");
    let write = cache_status(&headers);
    assert_eq!((write.get("fwd"), write.get("hit")), (Some(&token("method")), None));

    // A 429 of ours: nothing forwarded, and the budget's fields beside Retry-After.
    let flood = (0..40).map(|day| {
        let path = format!("/dev/v1/usage?from_date=2025-03-{:02}&to_date=2025-03-{:02}", day % 28 + 1, day % 28 + 1);
        let acme = acme.clone();
        let base = stack.gateway.base_url();
        async move { call_at(&base, Method::GET, &path, Some(&acme), None).await }
    });
    let answers = futures::future::join_all(flood).await;
    let (_, headers, _) = answers.iter().find(|(status, _, _)| *status == 429).expect("the flood met a 429");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(cache_status(headers).get("detail"), Some(&token("throttled")));
    assert!(!cache_status(headers).contains_key("fwd"), "nothing went to Agora");
    let (remaining, _) = assert_rate_limit(headers);
    assert!(remaining <= 1, "a refused caller's lane is (nearly) full: r={remaining}");
}

fn token_for_acme() -> String {
    crate::common::token("acme", TENANT_SCOPES)
}
