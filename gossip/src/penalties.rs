//! Penalties: source blocks refused at connect until a time. A grow-only
//! CRDT per block (the later end and the higher strike count win), so any
//! node may impose one and every node converges on it. A penalty is
//! remembered a day after it ends, so that the next one can be longer; how
//! long a penalty lasts is the caller's arithmetic (the node's `limits`).

use std::collections::HashMap;

use magicmx_proto::wire::{PenaltyEntry, WireBlock};

/// How long a penalty is remembered after it ends.
pub const STRIKE_MEMORY_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    pub until_ms: u64,
    pub strikes: u8,
}

#[derive(Default)]
pub struct Penalties {
    map: HashMap<WireBlock, Penalty>,
    dirty: Vec<PenaltyEntry>,
    /// Something changed since the last snapshot was taken for disk.
    unsaved: bool,
}

impl Penalties {
    /// Penalises `block` until at least `until_ms`, with at least `strikes`;
    /// returns the penalty now held (the join with what was there).
    pub fn extend(&mut self, block: WireBlock, until_ms: u64, strikes: u8) -> Penalty {
        let entry = PenaltyEntry { block, until_ms, strikes };
        self.merge(&entry);
        self.dirty.push(entry);
        self.map[&block]
    }

    /// Takes in a penalty learnt from a peer or from disk; true if it changed anything.
    pub fn merge(&mut self, entry: &PenaltyEntry) -> bool {
        let held = self.map.entry(entry.block).or_insert(Penalty { until_ms: 0, strikes: 0 });
        let joined =
            Penalty { until_ms: held.until_ms.max(entry.until_ms), strikes: held.strikes.max(entry.strikes) };
        let changed = joined != *held;
        *held = joined;
        self.unsaved |= changed;
        changed
    }

    /// The last penalty of `block`, in force or ended, while it is remembered.
    pub fn last(&self, block: WireBlock) -> Option<Penalty> {
        self.map.get(&block).copied()
    }

    /// The penalty on `block` if it is in force at `now_ms`.
    pub fn active(&self, block: WireBlock, now_ms: u64) -> Option<Penalty> {
        self.map.get(&block).copied().filter(|p| p.until_ms > now_ms)
    }

    pub fn take_changes(&mut self) -> Vec<PenaltyEntry> {
        std::mem::take(&mut self.dirty)
    }

    /// Every penalty still worth remembering (in force, or strikes to keep).
    pub fn all(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        self.map
            .iter()
            .filter(|(_, p)| p.until_ms + STRIKE_MEMORY_MS > now_ms)
            .map(|(&block, p)| PenaltyEntry { block, until_ms: p.until_ms, strikes: p.strikes })
            .collect()
    }

    /// The penalties in force at `now_ms`.
    pub fn in_force(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        self.all(now_ms).into_iter().filter(|p| p.until_ms > now_ms).collect()
    }

    /// A snapshot for disk if anything changed since the last one.
    pub fn unsaved(&mut self, now_ms: u64) -> Option<Vec<PenaltyEntry>> {
        std::mem::take(&mut self.unsaved).then(|| self.all(now_ms))
    }

    /// Forgets penalties whose strikes have expired.
    pub fn sweep(&mut self, now_ms: u64) {
        self.map.retain(|_, p| p.until_ms + STRIKE_MEMORY_MS > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: WireBlock = WireBlock { net: 0xC000_0200, prefix: 24 };

    #[test]
    fn merging_is_a_join() {
        let mut a = Penalties::default();
        let e1 = PenaltyEntry { block: B, until_ms: 100, strikes: 1 };
        let e2 = PenaltyEntry { block: B, until_ms: 50, strikes: 3 };
        assert!(a.merge(&e1) && a.merge(&e2));
        assert!(!a.merge(&e1), "idempotent");
        let mut b = Penalties::default();
        b.merge(&e2);
        b.merge(&e1);
        assert_eq!(a.active(B, 0), b.active(B, 0));
        assert_eq!(a.active(B, 0), Some(Penalty { until_ms: 100, strikes: 3 }));
        assert_eq!(a.active(B, 100), None, "over at its end");
        assert_eq!(a.last(B), Some(Penalty { until_ms: 100, strikes: 3 }), "but remembered");
        a.sweep(100 + STRIKE_MEMORY_MS);
        assert_eq!(a.last(B), None, "for a day");
    }
}
