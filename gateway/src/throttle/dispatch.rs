//! The dispatcher of the budget: one task per budget waits for work, takes a slot — from the
//! local GCRA, or reserved in Redis — sleeps until it is due (a pause moves it), and grants it to
//! the request the fair queue picks; the next slot counts from that request's real departure.

use std::sync::Arc;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::{DEPARTURE_REPORT_WAIT, Grant, Shared, Slots, lock};

/// The dispatcher: waits for work, takes a slot, grants it. Ends when the throttle is dropped.
pub(super) async fn dispatch(shared: std::sync::Weak<Shared>, work: Arc<Notify>) {
    loop {
        let notified = work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.queue().is_empty() {
            // Wait holding only a weak reference, so dropping the throttle ends this task.
            drop(strong);
            notified.await;
            continue;
        }
        grant_one_slot(&strong).await;
    }
}

async fn grant_one_slot(shared: &Shared) {
    let reservation = match &shared.slots {
        Slots::Local(_) => None,
        Slots::Cluster(cluster) => {
            let wanted = || {
                let mut queue = shared.queue();
                queue.retain(|waiter| !waiter.granted.is_closed());
                !queue.is_empty()
            };
            match cluster.reserve(wanted).await {
                Some(reservation) => Some(reservation),
                // Everybody who waited has given up meanwhile: nothing to reserve.
                None => return,
            }
        }
    };
    // Sleep until the slot; a pause that arrives meanwhile moves it.
    loop {
        let now = Instant::now();
        let due = match (&shared.slots, &reservation) {
            (Slots::Local(gcra), _) => Instant::from_std(lock(gcra).next_slot(now.into_std())),
            (Slots::Cluster(cluster), Some(reservation)) => reservation.due.max(cluster.paused_until()),
            (Slots::Cluster(_), None) => now,
        };
        if due <= now {
            break;
        }
        tokio::time::sleep_until(due).await;
    }
    if let (Slots::Cluster(cluster), Some(reservation)) = (&shared.slots, &reservation) {
        cluster.after_predecessor(reservation).await;
    }
    let now = Instant::now();
    let interval = shared.pace(now).interval;
    let departure = {
        let mut queue = shared.queue();
        let mut departure = None;
        while let Some((_tenant, waiter)) = queue.pop(now.into_std(), interval) {
            let (departed, report) = oneshot::channel();
            if waiter.granted.send(Grant { at: now, departed }).is_ok() {
                departure = Some(report);
                break;
            }
        }
        shared.report_depth(queue.len());
        departure
    };
    let Some(report) = departure else {
        // Nobody took the slot: nothing was spent locally; a shared slot counts as spent now, so the
        // reservation after it need not wait out its report window.
        if let (Slots::Cluster(cluster), Some(reservation)) = (&shared.slots, reservation) {
            cluster.commit(reservation, now).await;
        }
        return;
    };
    // Count the next slot from the real departure (a request dropped unsent departs at its grant).
    let departed = match tokio::time::timeout(DEPARTURE_REPORT_WAIT, report).await {
        Ok(Ok(at)) => at.max(now),
        _ => now,
    };
    match (&shared.slots, reservation) {
        (Slots::Local(gcra), _) => lock(gcra).commit(departed.into_std()),
        (Slots::Cluster(cluster), Some(reservation)) => cluster.commit(reservation, departed).await,
        (Slots::Cluster(_), None) => {}
    }
}
