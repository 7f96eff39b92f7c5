//! Penalties: how long, and when a sender told to come back is taken.
//!
//! A block over a limit is penalised (refused at connect) until the later of
//! two times: the penalty's length (`penalty`, doubled for each penalty the
//! block had that ended within the last day, at most `penalty_max`), and the
//! moment a person-to-person message fits again, so that "come back after
//! T" is true. While a penalty is in force, asking again does not lengthen
//! it or add a strike: strikes grow only with abuse after a penalty ends.
//!
//! A node that hears only part of the mesh (a split) judges with its part of
//! each limit and cannot tell how much of the whole limit is left: its
//! penalties last their plain length. Waiting until a message fits under its
//! part could take hours, and the penalty would follow the block across the
//! whole mesh when the split heals, refusing a sender still within its
//! limit. Meanwhile the part it hears still refuses what is over its share.

use magicmx_gossip::counts::BlockView;
use magicmx_gossip::penalties::STRIKE_MEMORY_MS;
use magicmx_gossip::Penalty;

use super::{Limits, Usage};

/// How far ahead a come-back is looked for; beyond it a sender is told this.
const LOOK_AHEAD_MS: u64 = 7 * 24 * 3600 * 1000;

impl Limits {
    /// The penalty for a block found over a limit at `now_ms`, given its
    /// `last` penalty (in force or remembered).
    pub fn next_penalty(&self, last: Option<Penalty>, view: &BlockView, share: f64, now_ms: u64) -> Penalty {
        if let Some(in_force) = last.filter(|p| p.until_ms > now_ms) {
            return in_force;
        }
        let strikes = match last {
            Some(p) if p.until_ms + STRIKE_MEMORY_MS > now_ms => p.strikes.saturating_add(1),
            _ => 1,
        };
        let doubled = self.penalty.saturating_mul(1u32 << (strikes - 1).min(16)).min(self.penalty_max);
        let comeback_ms = if share < 1.0 { now_ms } else { self.comeback_ms(view, share, now_ms) };
        let until_ms = (now_ms + doubled.as_millis() as u64).max(comeback_ms);
        Penalty { until_ms, strikes }
    }

    /// The earliest time a message to `comeback_recipients` on a new
    /// connection fits, if nothing more is asked of the block meanwhile.
    pub fn comeback_ms(&self, view: &BlockView, share: f64, now_ms: u64) -> u64 {
        let (recipients, connections) = (self.recipients(share), self.connections(share));
        let recipients_target = recipients - self.comeback_recipients.min(recipients / 2.0);
        let connections_target = connections - 1f64.min(connections / 2.0);
        let fits = |elapsed_ms: u64| {
            let usage = Usage::after(view, self.caps(), &self.periods, elapsed_ms);
            usage.recipients <= recipients_target && usage.connections <= connections_target
        };
        // Usage only falls with time: the first moment it fits, to the millisecond.
        let (mut lo, mut hi) = (0, LOOK_AHEAD_MS);
        if fits(0) {
            return now_ms;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        now_ms + hi
    }
}
