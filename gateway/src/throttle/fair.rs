//! The queue of requests waiting for an upstream slot: fair across tenants, ordered by priority
//! within a tenant, and never letting an admitted request miss its deadline.
//!
//! - **Admission** (at arrival, so a refusal is immediate): a tenant may hold at most its weighted
//!   share of the slots of one `max_wait` window, shared among the tenants that are waiting — less a
//!   reserve kept for tenants that are not waiting yet, so a newcomer is never refused because
//!   another tenant filled the queue. A request counts only the tenant's requests of its priority
//!   or higher. It is admitted only if every admitted deadline can still be met
//!   (earliest-deadline-first feasibility).
//! - **Dispatch** (at each slot): smooth weighted round robin over the waiting tenants, and within
//!   a tenant `high` before `normal` before `low`, FIFO; except that when some deadline could
//!   otherwise be missed, the earliest deadline is served first.
//!
//! Pure logic over `Instant`s: the dispatcher in `mod.rs` owns the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::policy::Priority;

struct Queued<T> {
    deadline: Instant,
    payload: T,
}

struct Lane<T> {
    weight: u32,
    /// Its tenant was removed from the configuration: nothing is admitted any more.
    retired: bool,
    /// When this tenant last had a request admitted: it counts as active for one `max_wait` after.
    last_admitted: Option<Instant>,
    /// Smooth weighted round robin state.
    current: i64,
    by_priority: [VecDeque<Queued<T>>; 3],
}

impl<T> Lane<T> {
    fn len(&self) -> usize {
        self.by_priority.iter().map(VecDeque::len).sum()
    }
}

/// Why a request was refused, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) retry_after: Duration,
}

/// The timing an admission decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// When the next slot can be granted, at the earliest.
    pub(crate) next_slot: Instant,
    /// Time between slots this queue can count on.
    pub(crate) interval: Duration,
    /// Longest queueing any request may do.
    pub(crate) max_wait: Duration,
}

impl Pace {
    /// Slots of one `max_wait` window.
    fn window_slots(&self) -> usize {
        (self.max_wait.as_nanos() / self.interval.as_nanos().max(1)) as usize
    }
}

pub(crate) struct FairQueue<T> {
    lanes: Vec<Lane<T>>,
    len: usize,
}

impl<T> FairQueue<T> {
    /// One lane per tenant, by tenant index, with its weight.
    pub(crate) fn new(weights: &[u32]) -> Self {
        let lanes = weights
            .iter()
            .map(|&weight| Lane {
                weight: weight.max(1),
                retired: false,
                last_admitted: None,
                current: 0,
                by_priority: Default::default(),
            })
            .collect();
        Self { lanes, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Lane `index` with `weight` from now on (a reload): a new lane if there is none yet.
    pub(crate) fn set_lane(&mut self, index: usize, weight: u32) {
        while self.lanes.len() <= index {
            self.lanes.push(Lane {
                weight: 1,
                retired: true,
                last_admitted: None,
                current: 0,
                by_priority: Default::default(),
            });
        }
        let lane = &mut self.lanes[index];
        lane.weight = weight.max(1);
        lane.retired = false;
    }

    /// Lane `index`'s tenant is gone: its waiting requests are handed back, and nothing more is
    /// admitted there.
    pub(crate) fn retire(&mut self, index: usize) -> Vec<T> {
        let Some(lane) = self.lanes.get_mut(index) else { return Vec::new() };
        lane.retired = true;
        lane.last_admitted = None;
        lane.current = 0;
        let drained: Vec<T> =
            lane.by_priority.iter_mut().flat_map(|queue| queue.drain(..)).map(|q| q.payload).collect();
        self.len -= drained.len();
        drained
    }

    /// Whether lane `index` belongs to a tenant that is gone.
    pub(crate) fn is_retired(&self, index: usize) -> bool {
        self.lanes.get(index).is_none_or(|lane| lane.retired)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Requests waiting in lane `index`.
    pub(crate) fn waiting(&self, index: usize) -> usize {
        self.lanes.get(index).map_or(0, Lane::len)
    }

    /// Total weight of the tenants sharing the budget now: `tenant`, those waiting, and those
    /// that had a request admitted within the last `max_wait` (an occasional tenant keeps its share
    /// between its requests, so a flooding one cannot take all the slack).
    fn active_weight_with(&self, tenant: usize, now: Instant, pace: &Pace) -> u64 {
        self.lanes
            .iter()
            .enumerate()
            .filter(|(index, lane)| {
                *index == tenant
                    || lane.len() > 0
                    || lane.last_admitted.is_some_and(|at| now.saturating_duration_since(at) < pace.max_wait)
            })
            .map(|(_, lane)| u64::from(lane.weight))
            .sum()
    }

    /// The most requests `tenant` may have waiting now.
    pub(crate) fn share(&self, tenant: usize, now: Instant, pace: &Pace) -> usize {
        let window = pace.window_slots();
        let reserve = if window >= 5 { window / 5 } else { 0 };
        let weight = u64::from(self.lanes[tenant].weight);
        let share = (window - reserve) as u64 * weight / self.active_weight_with(tenant, now, pace).max(1);
        (share as usize).max(1)
    }

    /// Queues `payload` for `tenant`, or refuses at once.
    pub(crate) fn admit(
        &mut self,
        tenant: usize,
        priority: Priority,
        deadline: Instant,
        payload: T,
        now: Instant,
        pace: &Pace,
    ) -> Result<(), (Refusal, T)> {
        // Only the tenant's requests served before this one count against its share, so a
        // kicking-rule write still gets in while the tenant's reads fill its share.
        let queued: usize = self.lanes[tenant].by_priority[..=priority as usize].iter().map(VecDeque::len).sum();
        let share = self.share(tenant, now, pace);
        let weight = u64::from(self.lanes[tenant].weight);
        if queued >= share {
            // Until this tenant's queue drains below its share, at its share of the slots.
            let slots = (queued + 1 - share) as u64 * self.active_weight_with(tenant, now, pace) / weight.max(1);
            let retry_after = pace.interval * (slots.max(1) as u32);
            return Err((Refusal { retry_after }, payload));
        }
        if let Some(late_by) = self.infeasible_with(deadline, now, pace) {
            return Err((Refusal { retry_after: late_by.max(pace.interval) }, payload));
        }
        let lane = &mut self.lanes[tenant];
        lane.last_admitted = Some(now);
        lane.by_priority[priority as usize].push_back(Queued { deadline, payload });
        self.len += 1;
        Ok(())
    }

    fn sorted_deadlines(&self) -> Vec<Instant> {
        let mut deadlines: Vec<Instant> =
            self.lanes.iter().flat_map(|lane| lane.by_priority.iter().flatten().map(|q| q.deadline)).collect();
        deadlines.sort_unstable();
        deadlines
    }

    /// With one more request due by `deadline`, by how much the tightest deadline would be missed
    /// if every request were served earliest-deadline-first from `pace.next_slot`.
    fn infeasible_with(&self, deadline: Instant, now: Instant, pace: &Pace) -> Option<Duration> {
        let mut deadlines = self.sorted_deadlines();
        let position = deadlines.partition_point(|d| *d <= deadline);
        deadlines.insert(position, deadline);
        let start = pace.next_slot.max(now);
        deadlines
            .iter()
            .enumerate()
            .filter_map(|(k, d)| {
                let served = start + pace.interval * k as u32;
                // Only the requests due after this one are pushed back by admitting it.
                (k >= position && served > *d).then(|| served - *d)
            })
            .max()
    }

    /// The request to grant a slot starting `now`; slots follow every `interval`.
    pub(crate) fn pop(&mut self, now: Instant, interval: Duration) -> Option<(usize, T)> {
        if self.len == 0 {
            return None;
        }
        let deadlines = self.sorted_deadlines();
        let tight = deadlines.iter().enumerate().any(|(k, d)| *d < now + interval * (k as u32 + 1));
        let (tenant, priority, index) = if tight { self.earliest() } else { self.round_robin() };
        let queued = self.lanes[tenant].by_priority[priority].remove(index).expect("located above");
        self.len -= 1;
        Some((tenant, queued.payload))
    }

    /// Position of the request with the earliest deadline.
    fn earliest(&self) -> (usize, usize, usize) {
        let mut best: Option<(Instant, (usize, usize, usize))> = None;
        for (tenant, lane) in self.lanes.iter().enumerate() {
            for (priority, queue) in lane.by_priority.iter().enumerate() {
                for (index, queued) in queue.iter().enumerate() {
                    if best.is_none_or(|(deadline, _)| queued.deadline < deadline) {
                        best = Some((queued.deadline, (tenant, priority, index)));
                    }
                }
            }
        }
        best.expect("the queue is not empty").1
    }

    /// Smooth weighted round robin over waiting tenants; the head of the chosen tenant's best lane.
    fn round_robin(&mut self) -> (usize, usize, usize) {
        let total: i64 = self.lanes.iter().filter(|lane| lane.len() > 0).map(|lane| i64::from(lane.weight)).sum();
        let mut chosen = None;
        for (tenant, lane) in self.lanes.iter_mut().enumerate() {
            if lane.len() == 0 {
                lane.current = 0;
                continue;
            }
            lane.current += i64::from(lane.weight);
            if chosen.is_none_or(|(_, current)| lane.current > current) {
                chosen = Some((tenant, lane.current));
            }
        }
        let (tenant, _) = chosen.expect("the queue is not empty");
        self.lanes[tenant].current -= total;
        let priority =
            self.lanes[tenant].by_priority.iter().position(|queue| !queue.is_empty()).expect("a waiting tenant");
        (tenant, priority, 0)
    }

    /// Queues an admitted request again, in another lane (a promoted shared fill): no share or
    /// deadline check, it was admitted already.
    pub(crate) fn requeue(&mut self, lane: usize, priority: Priority, deadline: Instant, payload: T) {
        self.lanes[lane].by_priority[priority as usize].push_back(Queued { deadline, payload });
        self.len += 1;
    }

    /// Drops the requests `keep` rejects (their callers went away).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for lane in &mut self.lanes {
            for queue in &mut lane.by_priority {
                queue.retain(|queued| keep(&queued.payload));
            }
        }
        self.len = self.lanes.iter().map(Lane::len).sum();
    }
}

#[cfg(test)]
mod tests;
