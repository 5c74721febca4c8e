//! The fair queue's order, by tenant weight and priority, on paused time.

use super::*;

const INTERVAL: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(5);

fn pace(now: Instant) -> Pace {
    Pace { next_slot: now, interval: INTERVAL, max_wait: MAX_WAIT }
}

fn admit(queue: &mut FairQueue<u32>, tenant: usize, priority: Priority, id: u32, now: Instant) -> bool {
    queue.admit(tenant, priority, now + MAX_WAIT, id, now, &pace(now)).is_ok()
}

#[test]
fn within_a_tenant_high_goes_before_normal_before_low_and_fifo_within_each() {
    let now = Instant::now();
    let mut queue = FairQueue::new(&[1]);
    for (id, priority) in
        [(1, Priority::Low), (2, Priority::Normal), (3, Priority::High), (4, Priority::Normal), (5, Priority::High)]
    {
        assert!(admit(&mut queue, 0, priority, id, now));
    }
    let order: Vec<u32> = (0..5).map(|k| queue.pop(now + INTERVAL * k, INTERVAL).unwrap().1).collect();
    assert_eq!(order, [3, 5, 2, 4, 1]);
    assert!(queue.pop(now, INTERVAL).is_none());
}

#[test]
fn slots_follow_the_weights_when_everyone_floods() {
    let now = Instant::now();
    let mut queue = FairQueue::new(&[2, 1, 1]);
    let mut id = 0;
    let mut served = [0u32; 3];
    for slot in 0..400u32 {
        let at = now + INTERVAL * slot;
        for tenant in 0..3 {
            // Each tenant offers far more than its share.
            for _ in 0..3 {
                id += 1;
                let _ = queue.admit(tenant, Priority::Normal, at + MAX_WAIT, id, at, &pace(at));
            }
        }
        served[queue.pop(at, INTERVAL).unwrap().0] += 1;
    }
    assert_eq!(served.iter().sum::<u32>(), 400, "every slot is used");
    assert!((195..=205).contains(&served[0]), "weight 2 gets half: {served:?}");
    assert!((95..=105).contains(&served[1]) && (95..=105).contains(&served[2]), "{served:?}");
}

#[test]
fn an_occasional_tenant_is_served_within_a_few_slots_while_another_floods() {
    let now = Instant::now();
    let mut queue = FairQueue::new(&[1, 1]);
    let mut next_id = 1000;
    let mut worst_wait = 0;
    for slot in 0..600u32 {
        let at = now + INTERVAL * slot;
        for _ in 0..6 {
            next_id += 1;
            let _ = queue.admit(0, Priority::Normal, at + MAX_WAIT, next_id, at, &pace(at));
        }
        if slot % 10 == 0 {
            assert!(queue.admit(1, Priority::Normal, at + MAX_WAIT, slot, at, &pace(at)).is_ok(), "B is never refused");
        }
        if let Some((1, arrived)) = queue.pop(at, INTERVAL) {
            worst_wait = worst_wait.max(slot - arrived);
        }
    }
    assert!(worst_wait <= 2, "B waited {worst_wait} slots");
}

#[test]
fn a_lone_tenant_may_fill_the_window_less_the_reserve_then_is_refused_at_once() {
    let now = Instant::now();
    let mut queue = FairQueue::new(&[1, 1, 1]);
    let admitted = (0..100).filter(|&id| admit(&mut queue, 0, Priority::Normal, id, now)).count();
    assert_eq!(admitted, 40, "50 slots in 5 s, less a reserve of 10");
    let refusal = queue.admit(0, Priority::Normal, now + MAX_WAIT, 999, now, &pace(now)).unwrap_err().0;
    assert!(refusal.retry_after >= INTERVAL);
    // A second tenant still gets in, and the first one's share halves while both wait.
    assert!(admit(&mut queue, 1, Priority::Normal, 1000, now));
    assert_eq!(queue.share(0, now, &pace(now)), 20);
}

#[test]
fn no_admitted_request_ever_misses_its_deadline() {
    let mut rng = fastrand::Rng::with_seed(42);
    let start = Instant::now();
    let mut queue: FairQueue<Instant> = FairQueue::new(&[3, 1, 1, 2]);
    let (mut admitted, mut refused, mut served) = (0, 0, 0);
    for slot in 0..3000u32 {
        let at = start + INTERVAL * slot;
        for _ in 0..rng.usize(0..30) {
            let tenant = rng.usize(0..4);
            let priority = Priority::ALL[rng.usize(0..3)];
            // Some requests bring a shorter deadline of their own.
            let wait = if rng.bool() { MAX_WAIT } else { Duration::from_millis(rng.u64(200..5000)) };
            match queue.admit(tenant, priority, at + wait, at + wait, at, &pace(at)) {
                Ok(()) => admitted += 1,
                Err(_) => refused += 1,
            }
        }
        if let Some((_, deadline)) = queue.pop(at, INTERVAL) {
            assert!(at <= deadline, "slot {slot} served a request {:?} past its deadline", at - deadline);
            served += 1;
        }
    }
    assert!(admitted > 2500 && refused > 0 && served > 2500, "{admitted} {refused} {served}");
}

#[test]
fn a_high_priority_request_gets_in_while_the_tenants_reads_fill_its_share() {
    let now = Instant::now();
    let mut queue = FairQueue::new(&[1, 1]);
    let reads = (0..100).filter(|&id| admit(&mut queue, 0, Priority::Normal, id, now)).count();
    assert_eq!(reads, 40);
    assert!(!admit(&mut queue, 0, Priority::Low, 500, now), "a lower priority counts everything ahead of it");
    assert!(admit(&mut queue, 0, Priority::High, 501, now), "a higher priority counts only its own kind");
    assert_eq!(queue.pop(now, INTERVAL).unwrap().1, 501);
}

#[test]
fn departed_callers_are_dropped() {
    let now = Instant::now();
    let mut queue = FairQueue::new(&[1]);
    for id in 0..6 {
        assert!(admit(&mut queue, 0, Priority::Normal, id, now));
    }
    queue.retain(|id| id % 2 == 0);
    assert_eq!(queue.len(), 3);
    assert_eq!(queue.pop(now, INTERVAL).unwrap().1, 0);
}
