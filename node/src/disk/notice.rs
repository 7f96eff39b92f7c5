//! One log line per cause and minute while the disk refuses mail, with
//! the refusals since the last line: a flood of refusals does not become
//! a flood of log lines. Time is passed in.

use std::sync::Mutex;

use crate::clock::Millis;

/// How often a cause is logged at most.
const EVERY_MS: Millis = 60_000;

/// Why the disk refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Below `queue.min_free`.
    Floor = 0,
    /// `queue.max_in_flight` reached.
    Total = 1,
    /// `queue.max_in_flight_per_block` reached by some block.
    Block = 2,
}

#[derive(Default)]
pub(crate) struct Notices {
    /// Per cause: when it was last logged, and refusals not logged since.
    state: Mutex<[(Option<Millis>, u64); 3]>,
}

impl Notices {
    /// Notes a refusal for `cause` at `now`; `Some(n)` when a line is due
    /// now, `n` being the refusals it stands for (this one included).
    pub(crate) fn note(&self, cause: Cause, now: Millis) -> Option<u64> {
        let mut state = self.state.lock().unwrap();
        let (last, since) = &mut state[cause as usize];
        *since += 1;
        if last.is_some_and(|at| now.saturating_sub(at) < EVERY_MS) {
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_logged_once_a_minute_with_what_it_stands_for() {
        let notices = Notices::default();
        assert_eq!(notices.note(Cause::Floor, 1_000), Some(1));
        for t in 0..500 {
            assert_eq!(notices.note(Cause::Floor, 1_000 + t * 100), None);
        }
        assert_eq!(notices.note(Cause::Block, 2_000), Some(1), "each cause on its own");
        assert_eq!(notices.note(Cause::Floor, 61_000), Some(501));
        assert_eq!(notices.note(Cause::Floor, 61_001), None);
    }
}
