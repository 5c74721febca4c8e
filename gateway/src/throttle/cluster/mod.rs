//! The budget shared by every replica: one GCRA in Redis, advanced atomically by a Lua script that
//! reads the time from Redis itself (so replica clocks do not matter) and answers how long to wait
//! for the reserved slot. Replicas reserve in turn, each one slot at a time.
//!
//! Slots are counted from real departures, across the cluster as within a replica: every
//! reservation names the one before it, whoever made it, and its call leaves no earlier than one
//! interval after that one's call really left (each replica reports its departures to Redis,
//! stamped by Redis's clock, which is no earlier than the departure). A replica that stalls
//! between its slot and its call (a busy machine, a paused process) therefore delays the calls
//! after it instead of crowding a second with them. A predecessor that never reports counts as
//! having left at the end of its report window.
//!
//! Fail safe under any partition (`lease.rs`): each replica holds a lease in Redis, renewed by
//! its heartbeat, and a share of the budget granted there (the shares add up to `rate` at most).
//! A replica cut off from Redis spends its share on its own only once its lease has expired
//! everywhere and a quiet second has passed, and only until its share is forgotten; meanwhile the
//! shared GCRA runs at `rate` minus the shares of every replica whose lease has expired. So the
//! replicas that reach Redis and the ones that cannot never add up to more than `rate` in any
//! second. A replica that never reached Redis has no share and spends nothing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

mod departures;
mod lease;

use super::gcra::{Gcra, interval_for};
use crate::config::{ConfigError, ThrottleConfig};
use crate::metrics::Metrics;
use crate::redis_link::within_timeout;
use lease::{fallback_interval, heartbeats};

/// Reserve the next slot. `KEYS`: the GCRA's theoretical arrival time (µs), the set of replicas
/// that reserved lately, the last reservation (`"<slot µs> <token>"`), the replicas' leases, their
/// shares, the last tolerance. `ARGV`: rate, burst, safety margin, earliest slot µs from now,
/// replica id, token, lease ms. The GCRA runs at `rate` minus the shares of replicas whose lease
/// has expired. Answers `{µs from now until the slot, the previous reservation's token or "", µs
/// from now until its slot, the interval µs}`, or `{-1, ...}` when no share is left to reserve.
const RESERVE: &str = include_str!("reserve.lua");

/// Pause the budget: no slot before `ARGV[1]` µs from now; `KEYS[2]` tells the other replicas.
const PAUSE: &str = include_str!("pause.lua");

/// Heartbeat: renews the replica's lease and grants its share. `KEYS`: leases, replicas reserving
/// lately, shares, the pause. `ARGV`: replica id, lease ms, active window ms, rate, the share the
/// replica holds, forget-after ms, replicas to assume at least. Answers {alive, active, share,
/// pause ms left, whether Redis knew the replica (0: it was forgotten, or Redis lost its keys)}.
const HEARTBEAT: &str = include_str!("heartbeat.lua");

/// A replica leaves (shut down): its lease and share go at once. `KEYS`: leases, replicas
/// reserving lately, shares. `ARGV`: replica id.
const LEAVE: &str = include_str!("leave.lua");

/// While no slot can be had (no share, a lease not yet expired, no capacity), look again this often.
const NO_SLOT_POLL: Duration = Duration::from_millis(100);
const ACTIVE_WINDOW_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Redis has not granted this replica a share yet: no slots.
    Starting,
    Shared,
    /// Redis back: shared budget, with the local pace as a floor until then.
    Recovering {
        until: Instant,
    },
    /// Redis unreachable: the local share, from `start` (this replica's lease has expired in Redis
    /// and a quiet second passed) until `stop` (Redis forgets its share).
    Fallback {
        start: Instant,
        stop: Instant,
    },
    /// Redis answers again: no slots until `until` (the last call of its own share is a quiet
    /// second old); then the lease is renewed and the shared budget resumes.
    Rejoining {
        until: Instant,
    },
}

struct State {
    mode: Mode,
    /// The local share's pace: used in `Fallback`, a floor while `Recovering`.
    local: Gcra,
    /// The share of the budget Redis granted this replica, calls per second.
    share: u32,
    last_error: Option<String>,
    paused_until: Instant,
    /// When the last heartbeat that Redis answered was sent, and when its answer came.
    last_heartbeat: Option<(Instant, Instant)>,
    /// When the last call of this replica's own share left (while cut off from Redis).
    last_local_call: Option<Instant>,
    /// The due time of the reservation the dispatcher holds.
    pending: Option<Instant>,
    /// The shared budget's interval at the last reservation (wider while shares are out).
    shared_interval: Duration,
}

/// A slot, and how to report its call sent.
pub(crate) struct Reservation {
    pub(crate) due: Instant,
    /// This reservation in Redis, when the slot came from there.
    token: Option<String>,
    /// The reservation before it (its token and slot), whose departure this one waits for.
    after: Option<(String, Instant)>,
    /// The shared budget's interval when it was reserved.
    interval: Duration,
}

/// Redis's keys of the shared budget.
struct Keys {
    tat: String,
    last: String,
    tolerance: String,
    /// Prefix of the departure records, one key per reservation token.
    departed_prefix: String,
    leases: String,
    active: String,
    shares: String,
    pause: String,
}

pub(crate) struct ClusterBudget {
    connection: ConnectionManager,
    reserve_script: Script,
    departed_script: Script,
    after_script: Script,
    pause_script: Script,
    heartbeat_script: Script,
    leave_script: Script,
    keys: Keys,
    reservations: AtomicU64,
    replica_id: String,
    configured_replicas: u32,
    /// Rate, burst and margin (a reload may change them).
    pacing: std::sync::RwLock<Pacing>,
    active_replicas: AtomicU32,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

/// The shared budget's pace.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    rate: u32,
    burst: u32,
    safety_margin: f64,
    interval: Duration,
}

impl Pacing {
    fn of(config: &ThrottleConfig) -> Self {
        Self {
            rate: config.rate,
            burst: config.burst,
            safety_margin: config.safety_margin,
            interval: interval_for(config.rate, config.burst, config.safety_margin),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A duration from now that Redis gave in µs (negative: already passed).
fn signed_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl ClusterBudget {
    /// Connects lazily: a gateway starts even while Redis is down (with no share until it answers).
    /// `namespace`: the account's part of every key (`redis_link::namespace`).
    pub(crate) fn new(
        config: &ThrottleConfig,
        redis_url: &str,
        namespace: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ConfigError> {
        let (_, connection) = crate::redis_link::connect_lazily(redis_url)?;
        let configured_replicas = config.replicas.unwrap_or(1);
        let prefix = format!("{}:{namespace}", config.redis_key_prefix);
        let now = Instant::now();
        let pacing = Pacing::of(config);
        let budget = Arc::new(Self {
            connection,
            reserve_script: Script::new(RESERVE),
            departed_script: Script::new(departures::DEPARTED),
            after_script: Script::new(departures::AFTER),
            pause_script: Script::new(PAUSE),
            heartbeat_script: Script::new(HEARTBEAT),
            leave_script: Script::new(LEAVE),
            keys: Keys {
                tat: format!("{prefix}:tat"),
                last: format!("{prefix}:last"),
                tolerance: format!("{prefix}:tolerance"),
                departed_prefix: format!("{prefix}:departed:"),
                leases: format!("{prefix}:replicas"),
                active: format!("{prefix}:active"),
                shares: format!("{prefix}:shares"),
                pause: format!("{prefix}:paused"),
            },
            reservations: AtomicU64::new(0),
            replica_id: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            configured_replicas,
            pacing: std::sync::RwLock::new(pacing),
            active_replicas: AtomicU32::new(1),
            state: Mutex::new(State {
                mode: Mode::Starting,
                local: Gcra::new(fallback_interval(0, config.safety_margin), 1, now.into_std()),
                share: 0,
                last_error: None,
                paused_until: now,
                last_heartbeat: None,
                last_local_call: None,
                pending: None,
                shared_interval: pacing.interval,
            }),
            metrics,
        });
        budget.metrics.redis_up.set(0);
        tokio::spawn(heartbeats(Arc::downgrade(&budget)));
        Ok(budget)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pacing(&self) -> Pacing {
        *self.pacing.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A reload changed the rate, burst or margin: every reservation from now on uses them (a
    /// larger burst is earned, not granted at once: `reserve.lua`); shares follow at the next
    /// heartbeat.
    pub(crate) fn reconfigure(&self, config: &ThrottleConfig) {
        *self.pacing.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Pacing::of(config);
    }

    /// The interval this replica can count on: the shared budget's, times the replicas reserving
    /// lately; its own share's while cut off.
    pub(crate) fn effective_interval(&self) -> Duration {
        let state = self.state();
        match state.mode {
            Mode::Fallback { .. } => state.local.interval(),
            _ => state.shared_interval * self.active_replicas.load(Ordering::Relaxed).max(1),
        }
    }

    /// The earliest a slot can come, as far as this replica knows: not before a pause (its own,
    /// or another replica's, heard at the heartbeat), nor before the reservation it holds.
    pub(crate) fn next_slot(&self, now: Instant) -> Instant {
        let state = self.state();
        let mut next = now.max(state.paused_until).max(state.pending.unwrap_or(now));
        if let Mode::Fallback { start, .. } | Mode::Rejoining { until: start } = state.mode {
            next = next.max(start);
        }
        next
    }

    pub(crate) fn paused_until(&self) -> Instant {
        self.state().paused_until
    }

    /// Reserves the next slot and answers when it is due. While none can be had (no share yet,
    /// a lease not expired yet, a fallback window over, no capacity left), it waits — as long as
    /// somebody `wants` one.
    pub(crate) async fn reserve(&self, wanted: impl Fn() -> bool) -> Option<Reservation> {
        while wanted() {
            if let Some(reservation) = self.try_reserve().await {
                self.state().pending = Some(reservation.due);
                return Some(reservation);
            }
            tokio::time::sleep(NO_SLOT_POLL).await;
        }
        None
    }

    async fn try_reserve(&self) -> Option<Reservation> {
        let now = Instant::now();
        let floor = {
            let mut state = self.state();
            if let Mode::Recovering { until } = state.mode
                && now >= until
            {
                state.mode = Mode::Shared;
            }
            match state.mode {
                Mode::Starting | Mode::Rejoining { .. } => return None,
                Mode::Fallback { start, stop } => return self.local_slot(&mut state, now, start, stop),
                // The pace of the share it was cut off with, until the window ends.
                Mode::Recovering { until } => Instant::from_std(state.local.next_slot(now.into_std())).min(until),
                Mode::Shared => now,
            }
        };
        let pacing = self.pacing();
        let token = format!("{}-{}", self.replica_id, self.reservations.fetch_add(1, Ordering::Relaxed));
        let mut connection = self.connection.clone();
        let keys = &self.keys;
        let mut invocation = self.reserve_script.key(&keys.tat);
        invocation
            .key(&keys.active)
            .key(&keys.last)
            .key(&keys.leases)
            .key(&keys.shares)
            .key(&keys.tolerance)
            .arg(pacing.rate)
            .arg(pacing.burst)
            .arg(pacing.safety_margin)
            .arg(micros(floor.saturating_duration_since(now)))
            .arg(&self.replica_id)
            .arg(&token)
            .arg(lease::LEASE.as_millis() as u64);
        let invocation = invocation.invoke_async::<(i64, String, i64, i64)>(&mut connection);
        let answer = within_timeout(invocation).await;
        let mut state = self.state();
        match answer {
            Ok((wait_us, _, _, _)) if wait_us < 0 => None,
            Ok((wait_us, previous, previous_us, interval_us)) => {
                state.last_error = None;
                let interval = signed_micros(interval_us).max(pacing.interval);
                state.shared_interval = interval;
                // Counted from after the answer: late, never early.
                let answered = Instant::now();
                let after = (!previous.is_empty()).then(|| (previous, answered + signed_micros(previous_us)));
                Some(Reservation { due: answered + signed_micros(wait_us), token: Some(token), after, interval })
            }
            Err(error) => {
                self.fall_back(&mut state, error);
                None
            }
        }
    }

    /// A slot of this replica's own share, while cut off from Redis: none outside its window.
    fn local_slot(&self, state: &mut State, now: Instant, start: Instant, stop: Instant) -> Option<Reservation> {
        if state.share == 0 || now >= stop {
            return None;
        }
        let due = Instant::from_std(state.local.next_slot(now.into_std())).max(start).max(state.paused_until);
        (due < stop).then(|| Reservation { due, token: None, after: None, interval: state.local.interval() })
    }

    /// Agora answered 429: pause every replica (through Redis; the others hear of it at their next
    /// heartbeat) and this one at once.
    pub(crate) fn pause(self: &Arc<Self>, duration: Duration) {
        let duration = duration.min(super::MAX_PAUSE);
        {
            let mut state = self.state();
            let until = Instant::now() + duration;
            state.paused_until = state.paused_until.max(until);
            state.local.pause_until(until.into_std());
        }
        let budget = self.clone();
        tokio::spawn(async move {
            let mut connection = budget.connection.clone();
            let mut invocation = budget.pause_script.key(&budget.keys.tat);
            invocation.key(&budget.keys.pause).arg(micros(duration));
            let invocation = invocation.invoke_async::<i64>(&mut connection);
            if let Err(error) = within_timeout(invocation).await {
                tracing::warn!(%error, "could not pause the shared budget in Redis");
            }
        });
    }
}
