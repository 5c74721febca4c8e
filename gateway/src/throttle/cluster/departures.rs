//! Departures across the fleet: every reservation names the one before it, whoever made it, and
//! its call leaves no earlier than one interval after that one's call really left (each replica
//! reports its departures to Redis, stamped by Redis's clock). A predecessor that never reports
//! counts as gone at the end of its report window.

use std::time::Duration;

use tokio::time::Instant;

use super::{ClusterBudget, Mode, Reservation, micros};
use crate::redis_link::within_timeout;

/// A reserved slot's call left (or was given up): Redis's now, no earlier than the departure, is
/// recorded for the next reservation to count from, and no new slot is reserved before one
/// interval after it. `KEYS`: tat, the departure record. `ARGV`: interval µs.
pub(super) const DEPARTED: &str = include_str!("departed.lua");

/// When may the call after a departure leave? `KEYS`: the predecessor's departure record.
/// `ARGV`: interval µs. Answers µs from now until one interval after the departure (0 when
/// passed), or -1 when the predecessor has not reported yet.
pub(super) const AFTER: &str = include_str!("after.lua");

/// How long after its slot a replica may take to report its call sent; past it, the next one
/// goes on as if the call had left then.
const REPORT_WINDOW: Duration = Duration::from_secs(1);
/// While the predecessor has not reported, ask again this often.
const REPORT_POLL: Duration = Duration::from_millis(2);
impl ClusterBudget {
    /// Waits until one interval after the previous reservation's call left (at most until the end
    /// of its report window, plus one interval, when it never reports or Redis cannot say). The
    /// window counts from this slot when that is later: a pause (Agora's 429) between the two
    /// holds the previous call back too, and it leaves when the pause ends, as this one would.
    pub(crate) async fn after_predecessor(&self, reservation: &Reservation) {
        let Some((previous, previous_due)) = &reservation.after else { return };
        let interval = reservation.interval;
        let give_up = (*previous_due + interval).max(reservation.due) + REPORT_WINDOW;
        let key = format!("{}{previous}", self.keys.departed_prefix);
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
            state.pending = None;
            if state.mode != Mode::Shared {
                state.local.commit(at.into_std());
            }
            if reservation.token.is_none() {
                state.last_local_call = Some(at);
            }
        }
        let Some(token) = reservation.token else { return };
        let mut connection = self.connection.clone();
        let mut invocation = self.departed_script.key(&self.keys.tat);
        invocation.key(format!("{}{token}", self.keys.departed_prefix)).arg(micros(reservation.interval));
        let invocation = invocation.invoke_async::<i64>(&mut connection);
        if let Err(error) = within_timeout(invocation).await {
            // The next reservation waits out the report window instead.
            tracing::debug!(%error, "could not report a departure to Redis");
        }
    }
}
