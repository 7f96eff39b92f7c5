//! The node's one clock. Every decision (limits, penalties, holds, queue
//! retries, trust expiry) takes its time from its caller in [`Millis`],
//! read from a [`Clock`]: the system's in a running node, a [`ManualClock`]
//! in tests, which replay hours by moving it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the node's one unit of time.
pub type Millis = u64;

pub trait Clock: Send + Sync {
    fn now(&self) -> Millis;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        system_now()
    }
}

/// The system's wall clock, for code that runs outside any stage (start-up,
/// housekeeping).
pub fn system_now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as Millis
}

/// A clock that moves only when told: for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at(now: Millis) -> ManualClock {
        ManualClock(AtomicU64::new(now))
    }

    pub fn set(&self, now: Millis) {
        self.0.store(now, Ordering::SeqCst);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_millis() as Millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(std::time::Duration::from_secs(3600));
        assert_eq!(clock.now(), 3_601_000);
        clock.set(5);
        assert_eq!(clock.now(), 5);
        assert!(SystemClock.now() > 1_600_000_000_000, "the system clock is past 2020");
    }
}
