//! When Redis cannot be reached: a local share of the budget (`floor(rate / replicas)`, after a
//! quiet second), the replicas seen alive through heartbeats, and what readiness says meanwhile.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::super::gcra::{Gcra, interval_for};
use super::{
    ACTIVE_WINDOW_MS, ALIVE_WINDOW_MS, ClusterBudget, FALLBACK_QUIET, HEARTBEAT_EVERY, Mode, Reservation, State,
};
use crate::redis_link::within_timeout;

impl ClusterBudget {
    pub(super) fn fall_back(&self, state: &mut State, error: String) -> Reservation {
        let now = Instant::now();
        if state.mode != Mode::Fallback {
            let replicas = state.replicas_seen.max(self.configured_replicas).max(1);
            tracing::warn!(
                %error, replicas,
                "Redis is unreachable: falling back to a local share of the upstream budget (rate / {replicas})"
            );
            state.mode = Mode::Fallback;
            let pacing = self.pacing();
            let mut local =
                Gcra::new(fallback_interval(pacing.rate, replicas, pacing.safety_margin), 1, now.into_std());
            local.pause_until((now + FALLBACK_QUIET).into_std());
            state.local = local;
            self.metrics.redis_up.set(0);
        }
        state.last_error = Some(error);
        Reservation { due: Instant::from_std(state.local.next_slot(now.into_std())), token: None, after: None }
    }

    pub(crate) fn not_ready(&self) -> Option<String> {
        let state = self.state();
        match (&state.mode, &state.last_error) {
            (Mode::Fallback, Some(error)) => {
                Some(format!("Redis is unreachable ({error}); spending a local share of the budget"))
            }
            (Mode::Fallback, None) => Some("Redis is unreachable; spending a local share of the budget".into()),
            _ => None,
        }
    }

    async fn heartbeat(&self) {
        let mut connection = self.connection.clone();
        let mut invocation = self.heartbeat_script.key(&self.alive_key);
        invocation.key(&self.active_key).arg(&self.replica_id).arg(ALIVE_WINDOW_MS).arg(ACTIVE_WINDOW_MS);
        let invocation = invocation.invoke_async::<(u32, u32)>(&mut connection);
        match within_timeout(invocation).await {
            Ok((alive, active)) => {
                self.active_replicas.store(active.max(1), Ordering::Relaxed);
                self.state().replicas_seen = alive.max(1);
            }
            Err(error) => self.state().last_error = Some(error),
        }
    }
}

/// Each replica's safe local pace: at most `floor(rate / replicas)` in any second.
/// (With more replicas than `rate`, each still sends one per second: the guarantee needs replicas <= rate.)
pub(super) fn fallback_interval(rate: u32, replicas: u32, safety_margin: f64) -> Duration {
    let share = (rate / replicas.max(1)).max(1);
    interval_for(share, 1, safety_margin)
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
    fn the_fallback_share_keeps_every_second_within_the_rate() {
        // Three replicas at 10/s: 3 each per second, never 4.
        let interval = fallback_interval(10, 3, 0.02);
        assert!(interval > Duration::from_millis(333), "{interval:?}");
        assert!(Duration::from_secs(1).as_nanos() / interval.as_nanos() < 4);
        assert_eq!(fallback_interval(10, 1, 0.0), Duration::from_millis(100));
    }
}
