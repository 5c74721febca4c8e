//! The throttle with paused time: spacing, refusals, priority, pauses. No sleeps: the clock is tokio's.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::ThrottleConfig;

fn tenants(weights: &[u32]) -> Vec<Arc<Tenant>> {
    weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| Arc::new(Tenant::for_tests(index, &format!("t{index}"), weight)))
        .collect()
}

fn throttle(max_wait: Duration, tenants: &[Arc<Tenant>]) -> Throttle {
    let config = ThrottleConfig { max_wait, ..ThrottleConfig::default() };
    let named = Named { name: "agora".into(), index: 0 };
    Throttle::local(&config, named, tenants, Arc::new(Metrics::new()))
}

/// Starts `count` acquisitions at once; answers each one's grant time (or `None` if refused).
async fn burst(
    throttle: &Throttle,
    tenant: &Arc<Tenant>,
    priority: Priority,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Option<Instant>>> {
    let mut handles = Vec::new();
    for _ in 0..count {
        let throttle = throttle.clone();
        let tenant = tenant.clone();
        handles.push(tokio::spawn(async move {
            let deadline = Instant::now() + throttle.max_wait();
            let permit = throttle.acquire(&tenant, priority, deadline, None).await.ok()?;
            permit.sending();
            Some(Instant::now())
        }));
        // Let the task queue itself before the next one, so arrival order is defined.
        tokio::task::yield_now().await;
    }
    handles
}

async fn outcomes(handles: Vec<tokio::task::JoinHandle<Option<Instant>>>) -> Vec<Option<Instant>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn grants_are_spaced_one_interval_apart_and_no_second_holds_more_than_the_rate() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(5), &tenants);
    let start = Instant::now();
    let grants: Vec<Instant> = outcomes(burst(&throttle, &tenants[0], Priority::Normal, 30).await)
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let mut sorted = grants;
    sorted.sort();
    assert_eq!(sorted[0], start, "the first slot is immediate");
    for pair in sorted.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(102), "grants {:?} apart", pair[1] - pair[0]);
    }
    for (k, first) in sorted.iter().enumerate() {
        let in_window = sorted[k..].iter().take_while(|at| **at - *first < Duration::from_secs(1)).count();
        assert!(in_window <= 10, "{in_window} grants within one second");
    }
}

#[tokio::test(start_paused = true)]
async fn requests_that_would_wait_past_max_wait_are_refused_at_once() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(1), &tenants);
    // Take the immediate slot first, so that all twenty below must queue.
    throttle
        .acquire(&tenants[0], Priority::Normal, Instant::now() + Duration::from_secs(1), None)
        .await
        .unwrap()
        .sending();
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..20 {
        let throttle = throttle.clone();
        let tenant = tenants[0].clone();
        handles.push(tokio::spawn(async move {
            let result =
                throttle.acquire(&tenant, Priority::Normal, Instant::now() + Duration::from_secs(60), None).await;
            (result.map(|permit| permit.waited), Instant::now())
        }));
        tokio::task::yield_now().await;
    }
    let (mut granted, mut refused) = (0, 0);
    for handle in handles {
        match handle.await.unwrap() {
            (Ok(waited), _) => {
                granted += 1;
                assert!(waited <= Duration::from_secs(1), "waited {waited:?}, more than max_wait");
            }
            (Err(GatewayError::Throttled { retry_after }), at) => {
                refused += 1;
                assert_eq!(at, start, "refused at once, not after waiting");
                assert!(retry_after >= Duration::from_millis(100));
            }
            (Err(other), _) => panic!("{other}"),
        }
    }
    // One second holds 9 slots of 102 ms, less a reserve of one for other tenants.
    assert_eq!((granted, refused), (8, 12));
    assert_eq!(throttle.queue_depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_kicking_rule_write_overtakes_the_queued_reads_of_its_tenant() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(5), &tenants);
    let reads = burst(&throttle, &tenants[0], Priority::Normal, 10).await;
    let write = burst(&throttle, &tenants[0], Priority::High, 1).await;
    let usage = burst(&throttle, &tenants[0], Priority::Low, 1).await;
    let reads: Vec<Instant> = outcomes(reads).await.into_iter().map(Option::unwrap).collect();
    let write = outcomes(write).await[0].unwrap();
    let usage = outcomes(usage).await[0].unwrap();
    // The first read took the immediate slot; the write took the next one.
    assert_eq!(reads.iter().filter(|read| **read < write).count(), 1);
    assert!(reads.iter().all(|read| *read < usage), "low priority goes last");
}

#[tokio::test(start_paused = true)]
async fn a_pause_holds_the_next_grant_back() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(5), &tenants);
    let start = Instant::now();
    throttle.acquire(&tenants[0], Priority::Normal, start + Duration::from_secs(5), None).await.unwrap().sending();
    throttle.pause(Duration::from_secs(2));
    throttle.acquire(&tenants[0], Priority::Normal, start + Duration::from_secs(5), None).await.unwrap().sending();
    assert!(Instant::now() - start >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn callers_that_went_away_use_no_slot() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(5), &tenants);
    let start = Instant::now();
    let doomed = burst(&throttle, &tenants[0], Priority::Normal, 5).await;
    for handle in &doomed[1..] {
        handle.abort();
    }
    let survivor = burst(&throttle, &tenants[0], Priority::Normal, 1).await;
    let at = outcomes(survivor).await[0].unwrap();
    // The first doomed request took slot 0; the aborted ones never got one.
    assert!(at - start < Duration::from_millis(250), "served at {:?}", at - start);
}

#[tokio::test(start_paused = true)]
async fn the_next_slot_counts_from_a_late_departure() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(5), &tenants);
    let start = Instant::now();
    let permit = throttle.acquire(&tenants[0], Priority::Normal, start + Duration::from_secs(5), None).await.unwrap();
    // The request was scheduled 40 ms after its grant.
    tokio::time::sleep(Duration::from_millis(40)).await;
    permit.sending();
    throttle.acquire(&tenants[0], Priority::Normal, start + Duration::from_secs(5), None).await.unwrap().sending();
    assert!(Instant::now() - start >= Duration::from_millis(142), "next grant at {:?}", Instant::now() - start);
}

#[tokio::test(start_paused = true)]
async fn a_promoted_fill_leaves_its_tenants_backlog_and_still_spends_one_slot() {
    let tenants = tenants(&[1, 1]);
    let throttle = throttle(Duration::from_secs(10), &tenants);
    let start = Instant::now();
    let backlog = burst(&throttle, &tenants[0], Priority::Normal, 20).await;
    let promotion = Arc::new(Promotion::default());
    let fill = {
        let (throttle, tenant, promotion) = (throttle.clone(), tenants[0].clone(), promotion.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + throttle.max_wait();
            throttle.acquire(&tenant, Priority::Normal, deadline, Some(&promotion)).await.unwrap().sending();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Another tenant waits for the fill's answer too.
    promotion.raise();
    let promoted_at = fill.await.unwrap();
    assert!(
        promoted_at - start < Duration::from_millis(350 + 3 * 102),
        "the promoted fill waited {:?}, behind its tenant's backlog",
        promoted_at - start
    );
    let mut grants: Vec<Instant> = outcomes(backlog).await.into_iter().map(Option::unwrap).collect();
    assert_eq!(grants.len(), 20, "the backlog is served");
    grants.push(promoted_at);
    grants.sort();
    for pair in grants.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(102), "grants {:?} apart", pair[1] - pair[0]);
    }
    // 21 requests, 21 slots: the move spent none.
    assert!(grants[20] - start >= Duration::from_millis(20 * 102), "last grant at {:?}", grants[20] - start);
}

#[tokio::test(start_paused = true)]
async fn a_pause_of_any_length_is_cut_to_the_ceiling() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(5), &tenants);
    let start = Instant::now();
    throttle.pause(Duration::MAX);
    throttle.pause(Duration::from_secs(u64::MAX));
    tokio::time::advance(MAX_PAUSE).await;
    throttle.acquire(&tenants[0], Priority::Normal, Instant::now() + Duration::from_secs(5), None).await.unwrap();
    assert!(Instant::now() - start <= MAX_PAUSE + Duration::from_secs(1));
}

/// The default budget at 10/s and a group of channel queries at 20/s.
fn grouped(tenants: &[Arc<Tenant>]) -> Budgets {
    let group = crate::config::BudgetGroup {
        name: "channel-queries".into(),
        operations: vec!["list_channels".into(), "list_channel_users".into()],
        rate: 20,
        burst: 1,
    };
    let config = ThrottleConfig { groups: vec![group], ..ThrottleConfig::default() };
    Budgets::start(&config, Source::Local, tenants, &Arc::new(Metrics::new())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_group_spends_its_own_rate_and_a_flood_of_one_does_not_delay_the_other() {
    use crate::operations::Operation;
    let tenants = tenants(&[1]);
    let budgets = grouped(&tenants);
    let channels = budgets.of(Operation::ListChannels).clone();
    assert!(std::ptr::eq(budgets.of(Operation::ListChannelUsers), budgets.of(Operation::ListChannels)));
    assert!(!std::ptr::eq(budgets.of(Operation::ListProjects), budgets.of(Operation::ListChannels)));
    let start = Instant::now();
    // A backlog of 60 channel queries (3 s of the group's 20/s), then one project write.
    let flood = burst(&channels, &tenants[0], Priority::Normal, 60).await;
    let write = burst(budgets.of(Operation::CreateProject), &tenants[0], Priority::Normal, 1).await;
    let written = outcomes(write).await[0].unwrap();
    assert!(written - start < Duration::from_millis(10), "the write waited {:?}", written - start);
    let grants: Vec<Instant> = outcomes(flood).await.into_iter().map(Option::unwrap).collect();
    for second in 0..3 {
        let from = start + Duration::from_secs(second);
        let within = grants.iter().filter(|at| **at >= from && **at < from + Duration::from_secs(1)).count();
        assert!((19..=20).contains(&within), "second {second}: {within} channel queries");
    }
    // `RateLimit-Policy` names the group of the operation.
    let [policy, _] = budgets.rate_limit_fields(&tenants[0], Operation::ListChannels, std::time::Instant::now());
    assert_eq!(policy.to_str().unwrap(), "\"channel-queries\";q=20;w=1");
    let [policy, _] = budgets.rate_limit_fields(&tenants[0], Operation::GetProject, std::time::Instant::now());
    assert_eq!(policy.to_str().unwrap(), "\"agora\";q=10;w=1");
}

#[tokio::test(start_paused = true)]
async fn agora_s_429_pauses_only_the_group_it_came_from() {
    use crate::operations::Operation;
    let tenants = tenants(&[1]);
    let budgets = grouped(&tenants);
    budgets.of(Operation::ListChannels).pause(Duration::from_secs(3));
    let start = Instant::now();
    let project = burst(budgets.of(Operation::GetProject), &tenants[0], Priority::Normal, 1).await;
    let channel = burst(budgets.of(Operation::ListChannelUsers), &tenants[0], Priority::Normal, 1).await;
    let project = outcomes(project).await[0].unwrap();
    let channel = outcomes(channel).await[0].unwrap();
    assert!(project - start < Duration::from_millis(10), "the default budget waited {:?}", project - start);
    assert!(channel - start >= Duration::from_secs(3), "the paused group granted after {:?}", channel - start);
}

/// A refused request's `RateLimit` says its lane is full, however recently a hit read the fields:
/// admitting or refusing one of a tenant's requests forgets the tenant's memo of them.
#[tokio::test(start_paused = true)]
async fn a_refusal_reports_the_lane_as_it_is_not_as_a_hit_read_it_just_before() {
    let tenants = tenants(&[1]);
    let throttle = throttle(Duration::from_secs(1), &tenants);
    let remaining = |throttle: &Throttle| {
        let [_, rate_limit] = throttle.rate_limit_fields(&tenants[0], std::time::Instant::now());
        let fields = rate_limit.to_str().unwrap().to_string();
        let r = fields.split(';').find_map(|param| param.strip_prefix("r=")).unwrap().parse::<u64>().unwrap();
        (r, fields)
    };
    let (before, _) = remaining(&throttle);
    assert!(before >= 5, "an idle lane has room: r={before}");
    // The memo (50 ms of the real clock, which barely moves here) now holds `before`.
    let flood = burst(&throttle, &tenants[0], Priority::Normal, 30).await;
    let (after, fields) = remaining(&throttle);
    let outcomes = outcomes(flood).await;
    assert!(outcomes.iter().any(Option::is_none), "the flood met a refusal");
    assert!(after <= 1, "the refusals' lane is full: {fields}");
}
