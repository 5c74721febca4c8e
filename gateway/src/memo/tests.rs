//! The memo through the app, as requests reach it: it answers what the pipeline would, counts
//! what the pipeline would, and lets go of an answer as soon as what it was made from changes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use serde_json::{Value, json};
use tower::Service;

use super::*;
use crate::app::App;
use crate::auth::mint::{MintRequest, mint};
use crate::config::Config;

const CONFIG: &str = r#"
    [upstream]
    base_url = "sandbox"
    [[tenants]]
    id = "acme"
    issuer = "https://auth.acme.test"
    audience = "agora-gateway"
    scopes = ["projects:read", "projects:write"]
    project_name_prefix = "acme-"
    keys = [{ kid = "a", alg = "HS256", secret = "0123456789abcdef0123456789abcdef" }]
    [[tenants]]
    id = "globex"
    issuer = "https://auth.globex.test"
    audience = "agora-gateway"
    scopes = ["projects:read"]
    project_name_prefix = "globex-"
    keys = [{ kid = "g", alg = "HS256", secret = "fedcba9876543210fedcba9876543210" }]
"#;

struct Setup {
    config: Config,
    gateway: Arc<Gateway>,
    app: App,
    tokens: Vec<String>,
}

async fn setup() -> Setup {
    let config = Config::parse(CONFIG, std::path::Path::new(".")).unwrap();
    let gateway = Gateway::new(&config, None).await.unwrap();
    let tokens = config
        .tenants
        .iter()
        .map(|tenant| {
            let request = MintRequest {
                tenant,
                kid: None,
                scope: None,
                subject: "svc",
                ttl: Duration::from_secs(600),
                private_key: None,
            };
            mint(&request).unwrap()
        })
        .collect();
    Setup { app: App::main(gateway.clone()), gateway, tokens, config }
}

struct Answered {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    /// Given by the memo, not the pipeline.
    remembered: bool,
}

impl Setup {
    async fn send(&mut self, method: &str, target: &str, token: usize, extra: &[(&str, &str)], body: &str) -> Answered {
        let mut request = Request::builder().method(method).uri(target);
        request = request.header("authorization", format!("Bearer {}", self.tokens[token]));
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        let before = GIVEN.with(std::cell::Cell::get);
        let response = self.app.call(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let remembered = GIVEN.with(std::cell::Cell::get) > before;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        Answered {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&body).unwrap(),
            remembered,
        }
    }

    async fn get(&mut self, target: &str, token: usize) -> Answered {
        self.send("GET", target, token, &[], "").await
    }
}

fn names(answered: &Answered) -> Vec<&str> {
    let projects = answered.body["projects"].as_array().unwrap();
    projects.iter().map(|project| project["name"].as_str().unwrap()).collect()
}

/// What the pipeline and the memo must answer alike: all but the request id — and the age and
/// `Cache-Status` (its TTL left) only when no second of the entry's age passed between the two.
fn same_answer(a: &Answered, b: &Answered) {
    assert_eq!((a.status, &a.body), (b.status, &b.body));
    let age = |answered: &Answered| answered.headers["age"].to_str().unwrap().parse::<u64>().unwrap();
    let same_second = age(a) == age(b);
    let compared =
        |name: &&HeaderName| *name != "x-request-id" && (same_second || (*name != "age" && *name != "cache-status"));
    let mut names: Vec<_> = a.headers.keys().filter(compared).collect();
    names.sort_by_key(|name| name.as_str());
    let mut theirs: Vec<_> = b.headers.keys().filter(compared).collect();
    theirs.sort_by_key(|name| name.as_str());
    assert_eq!(names, theirs);
    for name in names {
        assert_eq!(
            a.headers.get_all(name).iter().collect::<Vec<_>>(),
            b.headers.get_all(name).iter().collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_repeated_hit_is_given_whole_as_the_pipeline_made_it() {
    let mut setup = setup().await;
    let miss = setup.get("/dev/v1/projects", 0).await;
    assert_eq!((miss.headers["x-cache"].to_str().unwrap(), miss.remembered), ("MISS", false));
    // Past the budget's next slot after the miss's call: `RateLimit` holds still from here on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The pipeline's hit (the token front knows the token now) is remembered, then given.
    let hit = setup.get("/dev/v1/projects", 0).await;
    let given = setup.get("/dev/v1/projects", 0).await;
    assert!(!hit.remembered && given.remembered, "the second hit comes from the memo");
    same_answer(&hit, &given);
    assert_eq!(names(&given), ["acme-web", "acme-mobile"]);
    assert_ne!(hit.headers["x-request-id"], given.headers["x-request-id"], "a request id of its own");
    let echoed = setup.send("GET", "/dev/v1/projects", 0, &[("x-request-id", "mine-1")], "").await;
    assert!(echoed.remembered);
    assert_eq!(echoed.headers["x-request-id"], "mine-1");

    // Counted as the pipeline counts: every request, every cache lookup.
    let metrics = setup.gateway.metrics.render();
    let requests = format!("operation=\"list_projects\",status=\"{}\"}} 4", hit.status.as_u16());
    assert!(metrics.contains(&requests), "{metrics}");
    assert!(metrics.contains("agora_gateway_cache_events_total{class=\"project\",result=\"hit\"} 3"), "{metrics}");

    // Another tenant's token, another target: none of it given from acme's answer.
    let globex = setup.get("/dev/v1/projects", 1).await;
    assert!(!globex.remembered);
    assert!(!names(&globex).is_empty() && names(&globex).iter().all(|name| name.starts_with("globex-")));
    let slash = setup.get("/dev/v1/projects/", 0).await;
    assert!(!slash.remembered);
}

#[tokio::test(flavor = "current_thread")]
async fn a_change_to_what_it_was_made_from_ends_it() {
    let mut setup = setup().await;
    for _ in 0..3 {
        setup.get("/dev/v1/projects", 0).await;
    }
    assert!(setup.get("/dev/v1/projects", 0).await.remembered);

    // A write through the gateway invalidates the list: the next read is the pipeline's.
    let created = setup
        .send("POST", "/dev/v1/project", 0, &[], &json!({"name": "acme-memo", "enable_sign_key": true}).to_string())
        .await;
    assert!(created.status.is_success(), "{:?}", created.body);
    let after = setup.get("/dev/v1/projects", 0).await;
    assert!(!after.remembered);
    assert!(names(&after).contains(&"acme-memo"), "{:?}", names(&after));

    // `no-cache` goes upstream, as the pipeline takes it.
    setup.get("/dev/v1/projects", 0).await;
    assert!(setup.get("/dev/v1/projects", 0).await.remembered);
    let refreshed = setup.send("GET", "/dev/v1/projects", 0, &[("cache-control", "no-cache")], "").await;
    assert_eq!((refreshed.headers["x-cache"].to_str().unwrap(), refreshed.remembered), ("BYPASS", false));

    // An invalidation from elsewhere (another replica's, a purge) bumps the cache's version.
    setup.get("/dev/v1/projects", 0).await;
    assert!(setup.get("/dev/v1/projects", 0).await.remembered);
    setup.gateway.cache.invalidate_project("").await;
    assert!(!setup.get("/dev/v1/projects", 0).await.remembered);

    // An entry past its freshness is not given, though nothing bumped the version: a reload
    // that shortens the class's TTL below the entry's age.
    setup.get("/dev/v1/projects", 0).await;
    assert!(setup.get("/dev/v1/projects", 0).await.remembered);
    let mut short = setup.config.cache.clone();
    short.project_ttl = Duration::from_millis(1);
    setup.gateway.cache.set_timings(&short);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let late = setup.get("/dev/v1/projects", 0).await;
    assert_eq!((late.headers["x-cache"].to_str().unwrap(), late.remembered), ("MISS", false));
    setup.gateway.cache.set_timings(&setup.config.cache);

    // One answer in `USES` runs the pipeline again.
    setup.get("/dev/v1/projects", 0).await;
    let mut remembered = 0;
    for _ in 0..=USES {
        remembered += u32::from(setup.get("/dev/v1/projects", 0).await.remembered);
    }
    assert_eq!(remembered, USES);
}
