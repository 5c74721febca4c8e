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
//! Fail safe, never open: when Redis cannot be reached, a replica waits one second (so nothing it
//! sends shares a one-second window with what the shared budget granted), then spends
//! `floor(rate / replicas)` per second locally, where `replicas` is the number of replicas seen
//! alive through heartbeats before Redis went away (or `throttle.replicas`). When Redis answers
//! again, the replica keeps its local pace as a floor for two more seconds while it rejoins the
//! shared budget, so the replicas that have not noticed yet and the ones that have never crowd
//! a second between them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

mod fallback;

use super::gcra::{Gcra, interval_for};
use crate::config::{ConfigError, ThrottleConfig};
use crate::metrics::Metrics;
use crate::redis_link::within_timeout;
use fallback::{fallback_interval, heartbeats};

/// Reserve the next slot. `KEYS`: the GCRA's theoretical arrival time (µs), the set of replicas
/// that reserved lately, the last reservation (`"<slot µs> <token>"`). `ARGV`: interval µs,
/// tolerance µs, earliest slot µs from now, replica id, token.
/// Answers `{µs from now until the slot, the previous reservation's token or "", µs from now
/// until its slot}`.
const RESERVE: &str = include_str!("reserve.lua");

/// A reserved slot's call left (or was given up): Redis's now, no earlier than the departure, is
/// recorded for the next reservation to count from, and no new slot is reserved before one
/// interval after it. `KEYS`: tat, the departure record. `ARGV`: interval µs.
const DEPARTED: &str = include_str!("departed.lua");

/// When may the call after a departure leave? `KEYS`: the predecessor's departure record.
/// `ARGV`: interval µs. Answers µs from now until one interval after the departure (0 when
/// passed), or -1 when the predecessor has not reported yet.
const AFTER: &str = include_str!("after.lua");

/// Pause the budget: no slot before `ARGV[1]` µs from now.
const PAUSE: &str = include_str!("pause.lua");

/// Heartbeat: `KEYS[1]` replicas alive, `KEYS[2]` replicas reserving lately. `ARGV`: replica id,
/// alive window ms, active window ms. Answers {alive, active}.
const HEARTBEAT: &str = include_str!("heartbeat.lua");

/// How long after its slot a replica may take to report its call sent; past it, the next one
/// goes on as if the call had left then.
const REPORT_WINDOW: Duration = Duration::from_secs(1);
/// While the predecessor has not reported, ask again this often.
const REPORT_POLL: Duration = Duration::from_millis(2);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const ALIVE_WINDOW_MS: u64 = 5_000;
const ACTIVE_WINDOW_MS: u64 = 2_000;
/// After Redis went away: nothing for this long, then the local share.
const FALLBACK_QUIET: Duration = Duration::from_secs(1);
/// After Redis came back: the local pace stays a floor for this long.
const RECOVERY_FLOOR: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Shared,
    /// Redis unreachable: local share only.
    Fallback,
    /// Redis back: shared budget, with the local pace as a floor until then.
    Recovering {
        until: Instant,
    },
}

struct State {
    mode: Mode,
    /// The local share's pace: used in `Fallback`, a floor while `Recovering`.
    local: Gcra,
    replicas_seen: u32,
    last_error: Option<String>,
    paused_until: Instant,
}

/// A slot, and how to report its call sent.
pub(crate) struct Reservation {
    pub(crate) due: Instant,
    /// This reservation in Redis, when the slot came from there.
    token: Option<String>,
    /// The reservation before it (its token and slot), whose departure this one waits for.
    after: Option<(String, Instant)>,
}

pub(crate) struct ClusterBudget {
    connection: ConnectionManager,
    reserve_script: Script,
    departed_script: Script,
    after_script: Script,
    pause_script: Script,
    heartbeat_script: Script,
    tat_key: String,
    last_key: String,
    /// Prefix of the departure records, one key per reservation token.
    departed_prefix: String,
    reservations: AtomicU64,
    alive_key: String,
    active_key: String,
    replica_id: String,
    configured_replicas: u32,
    /// Rate, margin and the slot spacing they make (a reload may change them).
    pacing: std::sync::RwLock<Pacing>,
    active_replicas: AtomicU32,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

/// The shared budget's pace.
#[derive(Debug, Clone, Copy)]
struct Pacing {
    rate: u32,
    safety_margin: f64,
    interval: Duration,
    tolerance: Duration,
}

impl Pacing {
    fn of(config: &ThrottleConfig) -> Self {
        let interval = interval_for(config.rate, config.burst, config.safety_margin);
        Self {
            rate: config.rate,
            safety_margin: config.safety_margin,
            interval,
            tolerance: interval * config.burst.saturating_sub(1),
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
    /// Connects lazily: a gateway starts even while Redis is down (in fallback).
    pub(crate) fn new(
        config: &ThrottleConfig,
        redis_url: &str,
        account: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ConfigError> {
        let (_, connection) = crate::redis_link::connect_lazily(redis_url)?;
        let configured_replicas = config.replicas.unwrap_or(1);
        let prefix = format!("{}:{account}", config.redis_key_prefix);
        let now = Instant::now();
        let budget = Arc::new(Self {
            connection,
            reserve_script: Script::new(RESERVE),
            departed_script: Script::new(DEPARTED),
            after_script: Script::new(AFTER),
            pause_script: Script::new(PAUSE),
            heartbeat_script: Script::new(HEARTBEAT),
            tat_key: format!("{prefix}:tat"),
            last_key: format!("{prefix}:last"),
            departed_prefix: format!("{prefix}:departed:"),
            reservations: AtomicU64::new(0),
            alive_key: format!("{prefix}:replicas"),
            active_key: format!("{prefix}:active"),
            replica_id: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
            configured_replicas,
            pacing: std::sync::RwLock::new(Pacing::of(config)),
            active_replicas: AtomicU32::new(1),
            state: Mutex::new(State {
                mode: Mode::Shared,
                local: Gcra::new(
                    fallback_interval(config.rate, configured_replicas, config.safety_margin),
                    1,
                    now.into_std(),
                ),
                replicas_seen: configured_replicas,
                last_error: None,
                paused_until: now,
            }),
            metrics,
        });
        budget.metrics.redis_up.set(1);
        tokio::spawn(heartbeats(Arc::downgrade(&budget)));
        Ok(budget)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pacing(&self) -> Pacing {
        *self.pacing.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A reload changed the rate, burst or margin: every reservation from now on uses them, and
    /// so does the fallback share.
    pub(crate) fn reconfigure(&self, config: &ThrottleConfig) {
        let pacing = Pacing::of(config);
        *self.pacing.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = pacing;
        let mut state = self.state();
        let replicas = state.replicas_seen.max(self.configured_replicas).max(1);
        state.local.reconfigure(fallback_interval(pacing.rate, replicas, pacing.safety_margin), 1);
    }

    /// The interval this replica can count on: the budget's, times the replicas reserving lately.
    pub(crate) fn effective_interval(&self) -> Duration {
        let state = self.state();
        match state.mode {
            Mode::Fallback => state.local.interval(),
            _ => self.pacing().interval * self.active_replicas.load(Ordering::Relaxed).max(1),
        }
    }

    pub(crate) fn paused_until(&self) -> Instant {
        self.state().paused_until
    }

    /// Reserves the next slot and answers when it is due.
    pub(crate) async fn reserve(&self) -> Reservation {
        let now = Instant::now();
        let floor = {
            let mut state = self.state();
            if let Mode::Recovering { until } = state.mode
                && now >= until
            {
                state.mode = Mode::Shared;
            }
            match state.mode {
                Mode::Recovering { .. } | Mode::Fallback => Instant::from_std(state.local.next_slot(now.into_std())),
                Mode::Shared => now,
            }
        };
        let earliest = floor.saturating_duration_since(now);
        let token = format!("{}-{}", self.replica_id, self.reservations.fetch_add(1, Ordering::Relaxed));
        let mut connection = self.connection.clone();
        let mut invocation = self.reserve_script.key(&self.tat_key);
        invocation
            .key(&self.active_key)
            .key(&self.last_key)
            .arg(micros(self.pacing().interval))
            .arg(micros(self.pacing().tolerance))
            .arg(micros(earliest))
            .arg(&self.replica_id)
            .arg(&token);
        let invocation = invocation.invoke_async::<(i64, String, i64)>(&mut connection);
        let answer = within_timeout(invocation).await;
        let mut state = self.state();
        match answer {
            Ok((wait_us, previous, previous_us)) => {
                if state.mode == Mode::Fallback {
                    tracing::info!("Redis answers again: rejoining the shared upstream budget");
                    state.mode = Mode::Recovering { until: Instant::now() + RECOVERY_FLOOR };
                    self.metrics.redis_up.set(1);
                }
                state.last_error = None;
                // Counted from after the answer: late, never early.
                let answered = Instant::now();
                let after = (!previous.is_empty()).then(|| (previous, answered + signed_micros(previous_us)));
                Reservation { due: answered + signed_micros(wait_us), token: Some(token), after }
            }
            Err(error) => self.fall_back(&mut state, error),
        }
    }

    /// Waits until one interval after the previous reservation's call left (at most until the end
    /// of its report window, plus one interval, when it never reports or Redis cannot say).
    pub(crate) async fn after_predecessor(&self, reservation: &Reservation) {
        let Some((previous, previous_due)) = &reservation.after else { return };
        let interval = self.pacing().interval;
        let give_up = *previous_due + REPORT_WINDOW + interval;
        let key = format!("{}{previous}", self.departed_prefix);
        loop {
            let mut connection = self.connection.clone();
            let mut invocation = self.after_script.key(&key);
            invocation.arg(micros(interval));
            let invocation = invocation.invoke_async::<i64>(&mut connection);
            match within_timeout(invocation).await {
                Ok(wait_us) if wait_us >= 0 => {
                    let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
                    let ready = Instant::now().checked_add(wait).map_or(give_up, |ready| ready.min(give_up));
                    return tokio::time::sleep_until(ready).await;
                }
                Ok(_) if Instant::now() + REPORT_POLL < give_up => tokio::time::sleep(REPORT_POLL).await,
                // No report in time, or no answer: count the predecessor as gone at its window's end.
                _ => return tokio::time::sleep_until(give_up).await,
            }
        }
    }

    /// The call of `reservation` left at `at` (or was given up then): the local pace follows it
    /// while it matters, and the departure is reported to Redis for the next reservation.
    pub(crate) async fn commit(&self, reservation: Reservation, at: Instant) {
        {
            let mut state = self.state();
            if state.mode != Mode::Shared {
                state.local.commit(at.into_std());
            }
        }
        let Some(token) = reservation.token else { return };
        let mut connection = self.connection.clone();
        let mut invocation = self.departed_script.key(&self.tat_key);
        invocation.key(format!("{}{token}", self.departed_prefix)).arg(micros(self.pacing().interval));
        let invocation = invocation.invoke_async::<i64>(&mut connection);
        if let Err(error) = within_timeout(invocation).await {
            // The next reservation waits out the report window instead.
            tracing::debug!(%error, "could not report a departure to Redis");
        }
    }

    /// Agora answered 429: pause every replica (through Redis) and this one at once.
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
            let mut invocation = budget.pause_script.key(&budget.tat_key);
            invocation.arg(micros(duration));
            let invocation = invocation.invoke_async::<i64>(&mut connection);
            if let Err(error) = within_timeout(invocation).await {
                tracing::warn!(%error, "could not pause the shared budget in Redis");
            }
        });
    }
}
