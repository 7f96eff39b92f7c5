//! Each peer's clock, as this node measures it. Every frame a peer sends
//! carries its clock (a frame's `base_ms`, an answer's `at_ms`); the
//! difference to this node's clock on arrival is the peer's offset less the
//! time the frame travelled, so the largest difference seen lately is the
//! offset less the shortest trip (milliseconds on a LAN or the Internet).
//! Its registers, open transactions and penalties are then read through
//! that offset: a peer whose clock is minutes off neither ages its counts
//! too fast or too slow, nor has its seals judged stale, nor its penalties
//! end early or late. Beyond [`MAX_SKEW_MS`] its times are not believed at
//! all: its frames are refused until its clock is put right.

use std::collections::HashMap;

use crate::counts::Fingerprint;

/// An offset beyond this is a clock nobody keeps by accident for long:
/// that peer's time-dependent claims are refused.
pub const MAX_SKEW_MS: i64 = 3_600_000;
/// The largest difference is kept over two windows of this length, so a
/// clock put right is followed within two minutes.
const WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Estimate {
    window: u64,
    this: i64,
    last: Option<i64>,
}

impl Estimate {
    fn offset(&self) -> i64 {
        self.last.map_or(self.this, |last| last.max(self.this))
    }
}

/// The peers' clocks.
#[derive(Debug, Default)]
pub struct Clocks {
    peers: HashMap<Fingerprint, Estimate>,
}

impl Clocks {
    /// Takes `their_ms` from `peer`, which arrived at `now_ms`; its offset
    /// now, or `None` when it is beyond [`MAX_SKEW_MS`] (refuse the frame).
    pub fn sample(&mut self, peer: Fingerprint, their_ms: u64, now_ms: u64) -> Option<i64> {
        let difference = (their_ms as i128 - now_ms as i128).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        if difference.abs() > MAX_SKEW_MS {
            return None;
        }
        let window = now_ms / WINDOW_MS;
        let estimate = self.peers.entry(peer).or_insert(Estimate { window, this: difference, last: None });
        if estimate.window != window {
            let recent = window == estimate.window + 1;
            *estimate = Estimate { window, this: difference, last: recent.then_some(estimate.this) };
        }
        estimate.this = estimate.this.max(difference);
        Some(estimate.offset())
    }

    /// How far `peer`'s clock runs ahead of this node's (0 if unmeasured).
    pub fn offset(&self, peer: &Fingerprint) -> i64 {
        self.peers.get(peer).map_or(0, Estimate::offset)
    }

    /// `ms` on `peer`'s clock, on this node's.
    pub fn local(&self, peer: &Fingerprint, ms: u64) -> u64 {
        ms.saturating_add_signed(-self.offset(peer))
    }

    pub fn forget(&mut self, peer: &Fingerprint) {
        self.peers.remove(peer);
    }

    /// Every measured peer's offset.
    pub fn all(&self) -> Vec<(Fingerprint, i64)> {
        self.peers.iter().map(|(fp, e)| (*fp, e.offset())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_largest_difference_lately() {
        let mut clocks = Clocks::default();
        let peer = [3; 16];
        // Ten minutes fast; frames take 5 to 50 ms.
        let fast = 600_000;
        for (i, trip) in [50, 5, 20, 35].into_iter().enumerate() {
            let sent = 1_000_000 + i as u64 * 100;
            assert!(clocks.sample(peer, sent + fast, sent + trip).is_some());
        }
        assert_eq!(clocks.offset(&peer), fast as i64 - 5);
        assert_eq!(clocks.local(&peer, 2_000_000 + fast), 2_000_000 + 5);
        // Put right: followed within two windows.
        let later = 1_000_000 + 3 * WINDOW_MS;
        clocks.sample(peer, later, later + 10);
        clocks.sample(peer, later + WINDOW_MS, later + WINDOW_MS + 10);
        assert_eq!(clocks.offset(&peer), -10);
        // Slow clocks are measured too, and absurd ones refused.
        assert!(clocks.sample([4; 16], 1_000_000 - 90_000, 1_000_000).is_some());
        assert_eq!(clocks.offset(&[4; 16]), -90_000);
        assert_eq!(clocks.sample([5; 16], u64::MAX, 1_000_000), None);
        assert_eq!(clocks.sample([5; 16], 0, 1_000_000_000_000), None);
    }
}
