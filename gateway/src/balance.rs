//! Which serving thread takes a connection, and when a busy one hands connections to another
//! (`server.runtime = "per-core"`).
//!
//! Each thread measures its own CPU time over windows of [`WINDOW`]. A thread counts as busy once
//! that share reaches `server.busy_threshold`. A new connection goes to the first thread that is
//! not busy: at a light or moderate load every connection stays on one thread, which then sleeps
//! rarely and answers with the shortest tail (two half-busy threads each sleep and wake thousands
//! of times a second, and on a core shared with another busy process a woken thread can wait for
//! the scheduler's next tick). A busy thread hands connections, between two of their requests, to
//! a thread at least [`GAP`] less busy (`handoff.rs`), so that a pool opened while the gateway was
//! idle spreads as its load grows, and no thread saturates while another idles — where the cores
//! have idle time to give the other thread (`spare.rs`, `server.idle_to_move`): on cores another
//! busy process takes, the busy thread keeps its connections. A thread with no connection left,
//! once its load has faded, stops measuring until one opens: an idle gateway's serving threads
//! sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc};

use crate::handoff::Moved;
use crate::spare::{Idle, SpareMeter};

/// How often each thread measures its CPU time.
pub(crate) const WINDOW: Duration = Duration::from_millis(20);

/// Windows a thread waits, after asking for connections to move, before it asks again: the loads
/// it sees by then include the move.
const SETTLE: u32 = 5;

/// Each window's share of the smoothed load is one in this many.
const SMOOTHING: u32 = 4;

/// How much less busy (per mille of a core) a thread must be to take connections from a busy one.
const GAP: u32 = 250;

/// A thread with no connection stops measuring once its load is below this (per mille).
const FADED: u32 = 10;

/// Longest a thread that should not take the next connection leaves it to the others.
const TURN_WAIT: Duration = Duration::from_millis(5);

/// The serving threads of the main listener, as each of them sees the others.
pub(crate) struct Cores {
    /// Each thread's CPU time over its last window, per mille of a core.
    load: Box<[AtomicU32]>,
    /// Each thread's open connections.
    open: Box<[AtomicUsize]>,
    /// Wakes a thread's measuring when its first connection opens.
    opening: Box<[Notify]>,
    /// Connections each thread is to hand over, and to which thread.
    shed: Box<[AtomicUsize]>,
    shed_to: Box<[AtomicUsize]>,
    /// Where each thread receives the connections handed to it.
    inboxes: Box<[mpsc::UnboundedSender<Moved>]>,
    /// Per mille of a core from which a thread counts as busy.
    busy: u32,
    /// Per mille of a core the process's cores must have been idle for a busy thread to hand
    /// connections over (0: whatever their idle time).
    idle_to_move: u32,
    pub(crate) moved: Counter,
}

impl Cores {
    /// `count` threads, and the inbox of each.
    pub(crate) fn new(
        count: usize,
        busy: u32,
        idle_to_move: u32,
        moved: Counter,
    ) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Moved>>) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let cores = Self {
            load: (0..count).map(|_| AtomicU32::new(0)).collect(),
            open: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            opening: (0..count).map(|_| Notify::new()).collect(),
            shed: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            shed_to: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: inboxes.into(),
            busy,
            idle_to_move,
            moved,
        };
        (Arc::new(cores), receivers)
    }

    fn loads(&self) -> Vec<u32> {
        self.load.iter().map(|load| load.load(Relaxed)).collect()
    }
}

/// One of the serving threads, with its view of the others.
#[derive(Clone)]
pub(crate) struct CoreShare {
    pub(crate) cores: Arc<Cores>,
    pub(crate) core: usize,
}

impl CoreShare {
    /// Waits while another thread should take the next connection (at most [`TURN_WAIT`]).
    pub(crate) async fn wait_turn(&self) {
        let started = tokio::time::Instant::now();
        while started.elapsed() < TURN_WAIT {
            if taker(&self.cores.loads(), self.cores.busy) == self.core {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Counts a connection of this thread until the guard is dropped.
    pub(crate) fn opened(&self) -> OpenConnection {
        if self.cores.open[self.core].fetch_add(1, Relaxed) == 0 {
            // A permit if the thread is not waiting yet: its next wait ends at once.
            self.cores.opening[self.core].notify_one();
        }
        OpenConnection(self.clone())
    }

    /// A connection of this thread between two requests: the thread to hand it to, if this thread
    /// is to hand one over.
    pub(crate) fn take_shed(&self) -> Option<usize> {
        let shed = &self.cores.shed[self.core];
        shed.fetch_update(Relaxed, Relaxed, |left| left.checked_sub(1)).ok()?;
        Some(self.cores.shed_to[self.core].load(Relaxed))
    }

    /// Hands `moved` to thread `to`; false if that thread has stopped.
    pub(crate) fn hand_over(&self, to: usize, moved: Moved) -> bool {
        let sent = self.cores.inboxes.get(to).is_some_and(|inbox| inbox.send(moved).is_ok());
        if sent {
            self.cores.moved.inc();
        }
        sent
    }

    /// Measures this thread's CPU time every [`WINDOW`], and asks for connections to move while it
    /// is busy and another is not. Runs on the thread it measures, for as long as its runtime.
    pub(crate) async fn meter(self) {
        let mut ticks = tokio::time::interval(WINDOW);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: the first window starts after it.
        ticks.tick().await;
        let Some(mut last) = thread_cpu() else {
            tracing::warn!(core = self.core, "no CPU time of this thread: connections stay where they land");
            return;
        };
        let (mut settling, mut load) = (0, 0);
        let mut spare = SpareMeter::new();
        loop {
            ticks.tick().await;
            let Some(now) = thread_cpu() else { return };
            let (cpu, wall) = (now.1.saturating_sub(last.1), now.0.saturating_duration_since(last.0));
            last = now;
            let sample = u32::try_from(cpu.as_micros() * 1000 / wall.as_micros().max(1)).unwrap_or(1000).min(1000);
            // Smoothed over about four windows: one burst does not move connections.
            load = (load * (SMOOTHING - 1) + sample) / SMOOTHING;
            self.cores.load[self.core].store(load, Relaxed);
            // Connections not taken in the last window are not taken any more: the loads changed.
            self.cores.shed[self.core].store(0, Relaxed);
            if self.cores.open[self.core].load(Relaxed) == 0 && load < FADED {
                // Nothing to measure or hand over until a connection opens here.
                self.cores.load[self.core].store(0, Relaxed);
                self.cores.opening[self.core].notified().await;
                ticks.reset();
                let Some(now) = thread_cpu() else { return };
                (last, load, settling) = (now, 0, 0);
                continue;
            }
            if settling > 0 {
                settling -= 1;
                continue;
            }
            let open = self.cores.open[self.core].load(Relaxed);
            let loads = self.cores.loads();
            let Some((to, count)) = plan(self.core, &loads, open, self.cores.busy) else {
                spare.forget();
                continue;
            };
            if !self.has_room(&mut spare) {
                continue;
            }
            tracing::debug!(core = self.core, ?loads, open, to, count, "busy: handing connections over");
            self.cores.shed_to[self.core].store(to, Relaxed);
            self.cores.shed[self.core].store(count, Relaxed);
            settling = SETTLE;
        }
    }

    /// Whether the process's cores have had the idle time to give another thread (measured over
    /// [`crate::spare::MEASURE`] at least; not yet known: not yet).
    fn has_room(&self, spare: &mut SpareMeter) -> bool {
        let room = has_room(self.cores.idle_to_move, || spare.measure(Instant::now()));
        if !room {
            tracing::debug!(core = self.core, "busy, but the cores have too little idle time for another thread");
        }
        room
    }
}

/// Whether a busy thread may hand connections over when the process's cores must have been idle
/// for `need` per mille of a core (0: whatever their idle time, not measured).
fn has_room(need: u32, measure: impl FnOnce() -> Idle) -> bool {
    if need == 0 {
        return true;
    }
    match measure() {
        Idle::Measuring => false,
        Idle::Cores(idle) => idle >= need,
        // No `/proc/stat`: as the loads alone say.
        Idle::Unknown => true,
    }
}

/// The wall clock and this thread's CPU time.
fn thread_cpu() -> Option<(Instant, Duration)> {
    let cpu = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some((Instant::now(), Duration::from(cpu)))
}

/// The thread that should take the next connection: the first that is not busy, or else the least
/// busy.
fn taker(loads: &[u32], busy: u32) -> usize {
    loads
        .iter()
        .position(|&load| !is_busy(load, busy))
        .unwrap_or_else(|| loads.iter().enumerate().min_by_key(|&(_, load)| *load).map_or(0, |(core, _)| core))
}

/// How many of its `open` connections thread `me` should hand over, and to which thread: while it
/// is busy and the least busy other is at least [`GAP`] (or `busy`, if less) below it, enough to
/// meet halfway.
fn plan(me: usize, loads: &[u32], open: usize, busy: u32) -> Option<(usize, usize)> {
    let mine = *loads.get(me)?;
    if !is_busy(mine, busy) {
        return None;
    }
    let (to, theirs) =
        loads.iter().copied().enumerate().filter(|&(core, _)| core != me).min_by_key(|&(_, load)| load)?;
    if mine <= theirs || mine - theirs < GAP.min(busy).max(1) {
        return None;
    }
    let count = (open * (mine - theirs) as usize).div_ceil(2 * mine as usize);
    (count > 0).then_some((to, count))
}

/// Whether a thread at `load` is busy: at `busy` or above, unless `busy` is a whole core (1.0:
/// never).
fn is_busy(load: u32, busy: u32) -> bool {
    busy < 1000 && load >= busy
}

/// A connection of one thread, counted while it is open there.
pub(crate) struct OpenConnection(CoreShare);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.cores.open[self.0.core].fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_connection_goes_to_the_first_thread_that_is_not_busy() {
        assert_eq!(taker(&[0, 0], 850), 0, "idle: the first");
        assert_eq!(taker(&[700, 0], 850), 0, "a thread below the threshold keeps taking them");
        assert_eq!(taker(&[900, 300], 850), 1);
        assert_eq!(taker(&[950, 900, 870], 850), 2, "all busy: the least busy");
        assert_eq!(taker(&[10, 0], 0), 1, "a threshold of 0: always the least busy");
        assert_eq!(taker(&[1000, 0], 1000), 0, "a threshold of 1: never busy");
    }

    /// The thread that should take the next connection accepts at once; another waits (at most
    /// `TURN_WAIT`); the count of a thread's connections follows their guards.
    #[tokio::test(start_paused = true)]
    async fn a_thread_that_should_not_take_the_next_connection_leaves_it_to_the_other() {
        let (cores, _inboxes) = Cores::new(2, 970, 250, Counter::default());
        let (first, second) =
            (CoreShare { cores: cores.clone(), core: 0 }, CoreShare { cores: cores.clone(), core: 1 });
        let started = tokio::time::Instant::now();
        first.wait_turn().await;
        assert_eq!(started.elapsed(), Duration::ZERO, "idle: the first takes it at once");
        second.wait_turn().await;
        assert!(started.elapsed() >= TURN_WAIT, "the second waited: {:?}", started.elapsed());
        cores.load[0].store(990, Relaxed);
        let before = tokio::time::Instant::now();
        second.wait_turn().await;
        assert_eq!(before.elapsed(), Duration::ZERO, "the first busy: the second takes it at once");
        let held = [first.opened(), first.opened()];
        assert_eq!(cores.open[0].load(Relaxed), 2);
        drop(held);
        assert_eq!(cores.open[0].load(Relaxed), 0);
    }

    #[test]
    fn a_busy_thread_hands_over_only_where_the_cores_have_idle_time_for_another() {
        assert!(!has_room(500, || Idle::Measuring), "not measured yet: not yet");
        assert!(!has_room(500, || Idle::Cores(120)), "the other core taken by another process");
        assert!(has_room(500, || Idle::Cores(500)));
        assert!(has_room(500, || Idle::Cores(950)), "an idle core beside the busy thread");
        assert!(has_room(500, || Idle::Unknown), "no /proc/stat: as the loads say");
        assert!(has_room(0, || panic!("not measured")), "0: whatever the idle time");
    }

    #[test]
    fn a_busy_thread_hands_over_enough_to_meet_halfway() {
        assert_eq!(plan(0, &[1000, 0], 64, 850), Some((1, 32)), "saturated beside an idle one: half");
        assert_eq!(plan(0, &[900, 500], 20, 850), Some((1, 5)));
        assert_eq!(plan(0, &[800, 0], 64, 850), None, "not busy: keeps them all");
        assert_eq!(plan(0, &[1000, 800], 64, 850), None, "the others are nearly as busy");
        assert_eq!(plan(1, &[100, 1000, 600], 10, 850), Some((0, 5)), "to the least busy");
        assert_eq!(plan(0, &[1000], 10, 850), None, "alone");
        assert_eq!(plan(0, &[1000, 0], 0, 850), None, "nothing open");
        assert_eq!(plan(0, &[40, 10], 8, 0), Some((1, 3)), "a threshold of 0: any difference");
        assert_eq!(plan(0, &[0, 0], 8, 0), None);
        assert_eq!(plan(0, &[1000, 0], 8, 1000), None, "a threshold of 1: never busy");
    }
}
