//! What passes between a waiting request and the dispatcher: the grant of a slot, the permit it
//! becomes, and the promotion of a fill that several tenants wait for.

use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

pub(super) struct Waiter {
    pub(super) granted: oneshot::Sender<Grant>,
}

/// What the dispatcher hands a waiting request: when, and where to report the real departure.
pub(super) struct Grant {
    pub(super) at: Instant,
    pub(super) departed: oneshot::Sender<Instant>,
}

/// The right to make one upstream call. Call [`Permit::sending`] right before sending.
pub(crate) struct Permit {
    pub(super) departed: Option<oneshot::Sender<Instant>>,
    /// How long the request queued (the tests read it; the metrics record it at the grant).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) waited: Duration,
}

impl Permit {
    /// The request is leaving now.
    pub(crate) fn sending(mut self) {
        if let Some(departed) = self.departed.take() {
            let _ = departed.send(Instant::now());
        }
    }
}

/// Longest the dispatcher waits for a granted request to report its departure.
pub(super) const DEPARTURE_REPORT_WAIT: Duration = Duration::from_secs(1);

/// Raised when a request's answer turns out to be wanted by more than its own tenant (a shared
/// cache fill): the request moves to the shared lane.
#[derive(Default)]
pub(crate) struct Promotion {
    raised: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Promotion {
    pub(crate) fn raise(&self) {
        if !self.raised.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) async fn raised(&self) {
        let notified = self.notify.notified();
        if self.is_raised() {
            return;
        }
        notified.await;
    }
}
