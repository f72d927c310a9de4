//! A hold on one appender's wake-up, for tests of the order in which
//! records are applied.
//!
//! [`Service::append`](crate::service::Service::append) passes through
//! [`WakeHold::pause`] once its batch is durable, before it returns. A test
//! arms [`WakeHold::hold`] with a sequence number; the appender whose batch
//! holds it waits there until [`WakeHold::release`], as a task the runtime
//! is slow to wake would. Appenders committed after it in the same group
//! go on, so a test can look at what they see while the earlier batch's
//! appender is still asleep: its records must be applied all the same,
//! since the log holds them first.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::log::Appended;

/// How long a held appender waits for its release, and a test for a hold:
/// a test that forgets to release fails instead of hanging.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Holds the appender of one sequence number after its batch is durable.
#[derive(Debug, Default)]
pub struct WakeHold {
    state: Mutex<HoldState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct HoldState {
    /// The appender whose batch holds this sequence number is held.
    armed: Option<u64>,
    /// An appender is held now.
    holding: bool,
    released: bool,
}

impl WakeHold {
    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds the appender whose batch is given sequence number `seq`, once
    /// that batch is durable, until [`WakeHold::release`].
    pub fn hold(&self, seq: u64) {
        let mut st = self.lock();
        assert!(!st.holding, "an appender is held already");
        st.armed = Some(seq);
        st.released = false;
    }

    /// Waits (at most 10 s) until the armed appender is held; panics if it
    /// is not.
    pub async fn wait_held(&self) {
        self.wait_until("an appender is held", |st| st.holding)
            .await;
    }

    /// Lets the held appender go on (and disarms a hold not yet reached).
    pub fn release(&self) {
        let mut st = self.lock();
        st.armed = None;
        st.released = true;
        self.changed.notify_waiters();
    }

    /// Called by every appender once its batch is durable: waits there if
    /// the batch holds the armed sequence number.
    pub(crate) async fn pause(&self, appended: &[Appended]) {
        {
            let mut st = self.lock();
            let Some(seq) = st.armed else { return };
            if !appended.iter().any(|a| a.seq == seq) {
                return;
            }
            st.armed = None;
            st.holding = true;
            self.changed.notify_waiters();
        }
        self.wait_until("the held appender is released", |st| st.released)
            .await;
        self.lock().holding = false;
        self.changed.notify_waiters();
    }

    /// Waits (at most [`HOLD_LIMIT`]) until `done` holds; panics if it does
    /// not.
    async fn wait_until(&self, what: &str, done: impl Fn(&HoldState) -> bool) {
        let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
        loop {
            // Made (and enabled) before looking, so a change in between
            // still wakes this wait (`notify_waiters` reaches it).
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{what}: not within {HOLD_LIMIT:?}");
            }
        }
    }
}
