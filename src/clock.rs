//! Time, injected: the API and the dispatcher ask a [`Clock`] for "now" so
//! that tests can set it. Projections never ask; times reach them inside
//! records.

use crate::record::UnixMicros;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMicros;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMicros {
        UnixMicros::from_timestamp(jiff::Timestamp::now())
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(at: UnixMicros) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(at.0))
    }

    pub fn set(&self, at: UnixMicros) {
        self.0.store(at.0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMicros {
        UnixMicros(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}
