//! Leases and shares: what keeps the fleet within the budget while some replicas cannot reach
//! Redis. The argument (the README's "Several replicas" says it in full):
//!
//! - Every replica renews a lease in Redis with its heartbeat (every second; it lives [`LEASE`]),
//!   and Redis grants it a share of the budget there; the shares add up to `rate` at most, and a
//!   replica's share stays reserved until it has heard of a smaller one.
//! - The shared GCRA (`reserve.lua`) runs at `rate` minus the shares of every replica whose lease
//!   has expired, until Redis forgets them ([`LEASE`] + [`FALLBACK_FOR`] after their last
//!   heartbeat).
//! - A replica that cannot reach Redis spends its share on its own only from one quiet second
//!   after its lease has expired — counted from when its last heartbeat was answered, which is
//!   no earlier than Redis recorded it — and stops before Redis forgets its share — counted from
//!   when that heartbeat was sent, which is no later. Clocks may differ by 1% in rate.
//! - When Redis answers again, the replica stops spending at once, waits a quiet second, and
//!   only then renews its lease, so the shared budget grows back only once its last call of its
//!   own is a second old.
//!
//! So in any second the calls that leave through Redis and the ones each cut-off replica makes
//! add up to `rate` at most, whichever replicas can reach Redis.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::super::gcra::{Gcra, interval_for};
use super::{ACTIVE_WINDOW_MS, ClusterBudget, Mode, State};
use crate::redis_link::within_timeout;

/// A replica's lease lives this long after its last heartbeat (six heartbeats: one lost answer
/// does not end it).
pub(super) const LEASE: Duration = Duration::from_millis(1500);
/// How long a replica cut off from Redis may spend its share, after its lease: past it, Redis
/// forgets the share and the replica makes no upstream call until it reaches Redis again.
pub(super) const FALLBACK_FOR: Duration = Duration::from_secs(30);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// Between the shared budget and a replica's own share (either way): nothing for this long, so no
/// second holds calls of both.
const FALLBACK_QUIET: Duration = Duration::from_secs(1);
/// After rejoining a Redis that had lost its keys (restarted), the local pace stays a floor for
/// this long: the replicas that have not rejoined yet may still spend their shares, and Redis no
/// longer holds them back.
const RECOVERY_FLOOR: Duration = Duration::from_secs(2);
/// Clocks of replicas and Redis may differ this much in rate.
const CLOCK_DRIFT: f64 = 0.01;

impl ClusterBudget {
    /// Redis failed: this replica's own share, in the window the leases allow (none without a
    /// share, none before the first heartbeat).
    pub(super) fn fall_back(&self, state: &mut State, error: String) {
        state.last_error = Some(error.clone());
        if matches!(state.mode, Mode::Fallback { .. } | Mode::Starting) {
            return;
        }
        let Some((sent, answered)) = state.last_heartbeat else { return };
        let start = answered + LEASE.mul_f64(1.0 + CLOCK_DRIFT) + FALLBACK_QUIET;
        let stop = sent + (LEASE + FALLBACK_FOR).mul_f64(1.0 - CLOCK_DRIFT);
        let now = Instant::now();
        let mut local = Gcra::new(fallback_interval(state.share, self.pacing().safety_margin), 1, now.into_std());
        local.pause_until(start.max(state.paused_until).into_std());
        state.local = local;
        state.mode = Mode::Fallback { start, stop };
        self.metrics.redis_up.set(0);
        tracing::warn!(
            %error,
            share = state.share,
            starts_in_ms = start.saturating_duration_since(now).as_millis() as u64,
            for_s = stop.saturating_duration_since(start).as_secs(),
            "Redis is unreachable: this replica spends its own share of the upstream budget once its lease has expired"
        );
    }

    /// Why the budget is degraded, if it is.
    pub(crate) fn degraded(&self) -> Option<String> {
        let state = self.state();
        let error = state.last_error.as_deref().map(|error| format!(" ({error})")).unwrap_or_default();
        match state.mode {
            Mode::Fallback { stop, .. } if Instant::now() >= stop => Some(format!(
                "Redis is unreachable{error}: cut off longer than the fallback window, no upstream calls until it answers"
            )),
            Mode::Fallback { .. } => Some(format!(
                "Redis is unreachable{error}: spending this replica's share of the budget ({}/s)",
                state.share
            )),
            Mode::Rejoining { .. } => Some("Redis answers again: rejoining the shared budget".into()),
            _ => None,
        }
    }

    /// Why this replica cannot spend yet, if so: Redis has not granted it a share.
    pub(crate) fn starting(&self) -> Option<String> {
        let state = self.state();
        (state.mode == Mode::Starting).then(|| {
            let error = state.last_error.as_deref().map(|error| format!(" ({error})")).unwrap_or_default();
            format!("waiting for the shared budget's Redis to grant this replica a share{error}")
        })
    }

    /// One heartbeat: renews the lease and hears the share and any pause; while cut off, only
    /// asks whether Redis answers again (and then rejoins after a quiet second).
    async fn heartbeat(&self) {
        let now = Instant::now();
        let (mode, held, quiet_from) = {
            let state = self.state();
            // A slot of its own share still held by the dispatcher may leave yet (up to a second
            // after it is due); the quiet second counts from then.
            let pending =
                state.pending.filter(|_| matches!(state.mode, Mode::Fallback { .. } | Mode::Rejoining { .. }));
            let quiet_from = state.last_local_call.max(pending.map(|due| due + Duration::from_secs(1)));
            (state.mode, state.share, quiet_from)
        };
        match mode {
            Mode::Fallback { .. } => {
                let mut connection = self.connection.clone();
                let ping = redis::cmd("PING");
                if within_timeout(ping.query_async::<String>(&mut connection)).await.is_ok() {
                    let mut state = self.state();
                    // A quiet second after the last call of its own share, if it made any.
                    let until = quiet_from.map_or(now, |at| at + FALLBACK_QUIET).max(now);
                    state.mode = Mode::Rejoining { until };
                    tracing::info!("Redis answers again: rejoining the shared upstream budget");
                }
                return;
            }
            Mode::Rejoining { until } if now < until.max(quiet_from.map_or(until, |at| at + FALLBACK_QUIET)) => return,
            _ => {}
        }
        let pacing = self.pacing();
        let mut connection = self.connection.clone();
        let keys = &self.keys;
        let mut invocation = self.heartbeat_script.key(&keys.leases);
        invocation
            .key(&keys.active)
            .key(&keys.shares)
            .key(&keys.pause)
            .arg(&self.replica_id)
            .arg(LEASE.as_millis() as u64)
            .arg(ACTIVE_WINDOW_MS)
            .arg(pacing.rate)
            .arg(held)
            .arg((LEASE + FALLBACK_FOR).as_millis() as u64)
            .arg(self.configured_replicas);
        let sent = Instant::now();
        let answer = within_timeout(invocation.invoke_async::<(u32, u32, u32, i64, u8)>(&mut connection)).await;
        let answered = Instant::now();
        let mut state = self.state();
        match answer {
            // (How many replicas are alive is Redis's to weigh: it sets the share.)
            Ok((_alive, active, share, pause_ms, known)) => {
                self.active_replicas.store(active.max(1), Ordering::Relaxed);
                state.last_heartbeat = Some((sent, answered));
                state.last_error = None;
                if let Ok(pause_ms) = u64::try_from(pause_ms) {
                    let until = answered + Duration::from_millis(pause_ms);
                    state.paused_until = state.paused_until.max(until);
                }
                // (The local pace keeps the share it was cut off with: it is the floor while
                // `Recovering`; a new fallback starts from the new share.)
                state.share = share;
                match state.mode {
                    Mode::Starting => {
                        state.mode = Mode::Shared;
                        tracing::info!(share, "the shared upstream budget granted this replica a share");
                    }
                    // Redis still held this replica's share back: nothing else to wait for.
                    Mode::Rejoining { .. } if known == 1 => {
                        state.mode = Mode::Shared;
                        state.last_local_call = None;
                        tracing::info!(share, "rejoined the shared upstream budget");
                    }
                    Mode::Rejoining { .. } => {
                        state.mode = Mode::Recovering { until: answered + RECOVERY_FLOOR };
                        state.last_local_call = None;
                        tracing::info!(share, "rejoined the shared upstream budget (Redis had lost its keys)");
                    }
                    _ => {}
                }
                self.metrics.redis_up.set(1);
            }
            Err(error) => self.fall_back(&mut state, error),
        }
    }

    /// Shut down: the lease and share go at once, so the others need not hold the share back.
    pub(crate) async fn leave(&self) {
        if !matches!(self.state().mode, Mode::Shared | Mode::Recovering { .. }) {
            return;
        }
        let mut connection = self.connection.clone();
        let keys = &self.keys;
        let mut invocation = self.leave_script.key(&keys.leases);
        invocation.key(&keys.active).key(&keys.shares).arg(&self.replica_id);
        if let Err(error) = within_timeout(invocation.invoke_async::<i64>(&mut connection)).await {
            tracing::debug!(%error, "could not leave the shared budget: the others hold this replica's share back until it is forgotten");
        }
    }
}

/// The pace of a share: at most `share` calls in any second (none for a share of 0).
pub(super) fn fallback_interval(share: u32, safety_margin: f64) -> Duration {
    if share == 0 { Duration::from_secs(3600) } else { interval_for(share, 1, safety_margin) }
}

pub(super) async fn heartbeats(budget: std::sync::Weak<ClusterBudget>) {
    let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(budget) = budget.upgrade() else {
            return;
        };
        budget.heartbeat().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_keeps_every_second_within_it() {
        // A share of 3 at 10/s: 3 per second, never 4.
        let interval = fallback_interval(3, 0.02);
        assert!(interval > Duration::from_millis(333), "{interval:?}");
        assert!(Duration::from_secs(1).as_nanos() / interval.as_nanos() < 4);
        assert_eq!(fallback_interval(10, 0.0), Duration::from_millis(100));
        assert!(fallback_interval(0, 0.0) >= Duration::from_secs(3600), "no share, no calls");
    }

    #[test]
    fn a_cut_off_replica_spends_only_between_its_lease_and_its_share_being_forgotten() {
        // As `fall_back` computes them, for a heartbeat sent at 0 and answered at 50 ms.
        let (sent, answered) = (Duration::ZERO, Duration::from_millis(50));
        let start = answered + LEASE.mul_f64(1.0 + CLOCK_DRIFT) + FALLBACK_QUIET;
        let stop = sent + (LEASE + FALLBACK_FOR).mul_f64(1.0 - CLOCK_DRIFT);
        // Redis recorded the heartbeat somewhere in [sent, answered]: whenever, the lease has
        // expired (and a quiet second passed) before `start`, and the share is still held at `stop`.
        for recorded in [sent, answered] {
            assert!(start >= recorded + LEASE + FALLBACK_QUIET);
            assert!(stop <= recorded + LEASE + FALLBACK_FOR);
        }
    }
}
