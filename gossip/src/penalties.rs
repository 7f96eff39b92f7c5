//! Penalties: source blocks refused at connect until a time, each remembered
//! with the node that imposed it (its origin, by certificate fingerprint).
//!
//! Per block and origin the penalty is a grow-only register (the later end
//! and the higher strike count win), so replays and re-orderings change
//! nothing; the penalty in force on a block is the join over its origins.
//! Each node sends only the penalties it imposed itself, and a receiver
//! files them under the peer the frame came from (authenticated by mutual
//! TLS), so no peer can speak for another.
//!
//! An authenticated peer may still be broken, stolen or hostile, so what it
//! imposes is bounded ([`PeerBounds`]): no longer than `penalty_max` from
//! now times its standing's weight, no more strikes than matter, no more
//! new penalties a minute than an honest node in a flood would send, and no
//! more than a tenth of the table, so no member can crowd out the others'.
//! A member whose word weighs nothing is silenced: its penalties are kept
//! (to show) but not in force. A peer's penalty is in force only once a
//! home of the block has borne it out (`confirm`); until then it is held. An origin's penalties go with
//! it: when it is revoked (at start, from the configuration) or has left
//! the mesh for good ([`Penalties::forget_origin`]). A penalty is remembered
//! a day after it ends, so that the next one can be longer; how long a
//! penalty lasts is the caller's arithmetic (the node's `limits`).

use std::collections::{HashMap, HashSet};

use magicmx_proto::wire::{PenaltyEntry, WireBlock};
use serde::{Deserialize, Serialize};

use crate::counts::Fingerprint;

/// How long a penalty is remembered after it ends.
pub const STRIKE_MEMORY_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    pub until_ms: u64,
    pub strikes: u8,
}

impl Penalty {
    fn join(self, other: Penalty) -> Penalty {
        Penalty { until_ms: self.until_ms.max(other.until_ms), strikes: self.strikes.max(other.strikes) }
    }
}

/// What one peer may impose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerBounds {
    /// A penalty ends at most this long after it arrives.
    pub penalty_max_ms: u64,
    /// Strikes are cut to this.
    pub max_strikes: u8,
    /// New or lengthened penalties taken from one origin in a minute; the
    /// rest are dropped (this node still penalises on its own counts).
    pub per_minute: u32,
}

impl Default for PeerBounds {
    fn default() -> Self {
        PeerBounds { penalty_max_ms: 24 * 3600 * 1000, max_strikes: 8, per_minute: 10_000 }
    }
}

/// A penalty as kept on disk: with its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPenalty {
    pub origin: Fingerprint,
    pub entry: PenaltyEntry,
}

/// What became of a penalty from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Changed,
    /// Already known (a replay), or no more than what is held.
    Unchanged,
    /// Over the origin's rate, the table is full, or its word weighs nothing.
    Dropped,
    /// The origin holds its share of the table already.
    OverQuota,
}

/// The share of the table one peer's penalties may hold.
const QUOTA_DIVISOR: usize = 10;

pub struct Penalties {
    own: Fingerprint,
    /// Per block, the penalty each origin imposed (usually one).
    map: HashMap<WireBlock, Vec<(Fingerprint, Penalty)>>,
    /// This node's own penalties changed since the last round.
    dirty: Vec<PenaltyEntry>,
    /// Something changed since the last snapshot was taken for disk.
    unsaved: bool,
    /// Per origin: the minute counted (Unix minutes) and penalties taken in it.
    rates: HashMap<Fingerprint, (u64, u32)>,
    /// Blocks held at most; past it peers' new penalties are dropped and
    /// this node's own push out the one ending first.
    cap: usize,
    /// Per peer, the blocks it holds a penalty on (at most `cap / 10`).
    held: HashMap<Fingerprint, usize>,
    /// Peers whose word weighs nothing: their penalties are not in force.
    silenced: HashSet<Fingerprint>,
    /// Peers' penalties no home of the block has borne out yet: held, not in force.
    unconfirmed: HashSet<(Fingerprint, WireBlock)>,
}

impl Penalties {
    pub fn new(own: Fingerprint, cap: usize) -> Penalties {
        Penalties {
            own,
            map: HashMap::new(),
            dirty: Vec::new(),
            unsaved: false,
            rates: HashMap::new(),
            cap: cap.max(1),
            held: HashMap::new(),
            silenced: HashSet::new(),
            unconfirmed: HashSet::new(),
        }
    }

    /// Sets this node's own fingerprint (known once the mesh's certificate
    /// is loaded): penalties filed under the old one become its own.
    pub fn set_own(&mut self, own: Fingerprint) {
        let old = std::mem::replace(&mut self.own, own);
        for imposed in self.map.values_mut() {
            for (origin, _) in imposed.iter_mut() {
                if *origin == old {
                    *origin = own;
                }
            }
        }
    }

    /// This node penalises `block` until at least `until_ms`, with at least
    /// `strikes`; returns the penalty now in force (the join over origins).
    pub fn extend(&mut self, block: WireBlock, until_ms: u64, strikes: u8) -> Penalty {
        if !self.map.contains_key(&block) && self.map.len() >= self.cap {
            self.evict_first_ending();
        }
        let own = self.own;
        self.join(own, block, Penalty { until_ms, strikes });
        let held = self.imposed_by(own, block).expect("just joined");
        self.dirty.push(PenaltyEntry { block, until_ms: held.until_ms, strikes: held.strikes });
        self.last(block).expect("just joined")
    }

    /// Takes in a penalty `origin` sent at `now_ms` (its end already on
    /// this node's clock), within `bounds`, its length at most
    /// `penalty_max` times the weight of `origin`'s word.
    pub fn merge_from(
        &mut self,
        origin: Fingerprint,
        entry: &PenaltyEntry,
        bounds: PeerBounds,
        weight: f64,
        now_ms: u64,
    ) -> Taken {
        if weight <= 0.0 {
            return Taken::Dropped;
        }
        let longest = (bounds.penalty_max_ms as f64 * weight.min(1.0)) as u64;
        let penalty = Penalty {
            until_ms: entry.until_ms.min(now_ms.saturating_add(longest)),
            strikes: entry.strikes.min(bounds.max_strikes),
        };
        let held = self.imposed_by(origin, entry.block);
        if held.is_some_and(|h| h.join(penalty) == h) {
            return Taken::Unchanged;
        }
        if held.is_none() && self.held.get(&origin).copied().unwrap_or(0) >= (self.cap / QUOTA_DIVISOR).max(1)
        {
            return Taken::OverQuota;
        }
        let minute = now_ms / 60_000;
        let rate = self.rates.entry(origin).or_insert((minute, 0));
        if rate.0 != minute {
            *rate = (minute, 0);
        }
        if rate.1 >= bounds.per_minute || (held.is_none() && self.map.len() >= self.cap) {
            return Taken::Dropped;
        }
        rate.1 += 1;
        self.join(origin, entry.block, penalty);
        self.unconfirmed.insert((origin, entry.block));
        Taken::Changed
    }

    /// Takes in a penalty from disk, unless its origin is revoked.
    pub fn restore(&mut self, stored: &StoredPenalty, revoked: &[Fingerprint]) -> bool {
        if revoked.contains(&stored.origin) {
            return false;
        }
        let entry = &stored.entry;
        self.join(stored.origin, entry.block, Penalty { until_ms: entry.until_ms, strikes: entry.strikes });
        true
    }

    fn join(&mut self, origin: Fingerprint, block: WireBlock, penalty: Penalty) {
        let imposed = self.map.entry(block).or_default();
        match imposed.iter_mut().find(|(o, _)| *o == origin) {
            Some((_, held)) => {
                let joined = held.join(penalty);
                self.unsaved |= joined != *held;
                *held = joined;
            }
            None => {
                imposed.push((origin, penalty));
                *self.held.entry(origin).or_default() += 1;
                self.unsaved = true;
            }
        }
    }

    /// Silences `origin` (its word weighs nothing) or gives it its voice back.
    pub fn set_silenced(&mut self, origin: Fingerprint, silenced: bool) {
        if silenced {
            self.silenced.insert(origin);
        } else {
            self.silenced.remove(&origin);
        }
    }

    /// The penalty in force over the origins heard: the join of all but the
    /// silenced ones and those not borne out yet.
    fn joined(&self, block: WireBlock, imposed: &[(Fingerprint, Penalty)]) -> Penalty {
        imposed
            .iter()
            .filter(|(o, _)| !self.silenced.contains(o) && !self.unconfirmed.contains(&(*o, block)))
            .fold(Penalty { until_ms: 0, strikes: 0 }, |acc, (_, p)| acc.join(*p))
    }

    /// Recounts the blocks each peer holds a penalty on.
    fn recount(&mut self) {
        self.held.clear();
        for imposed in self.map.values() {
            for (origin, _) in imposed {
                *self.held.entry(*origin).or_default() += 1;
            }
        }
    }

    fn imposed_by(&self, origin: Fingerprint, block: WireBlock) -> Option<Penalty> {
        self.map.get(&block)?.iter().find(|(o, _)| *o == origin).map(|(_, p)| *p)
    }

    fn evict_first_ending(&mut self) {
        let first =
            self.map.iter().min_by_key(|(b, imposed)| self.joined(**b, imposed).until_ms).map(|(b, _)| *b);
        if let Some(block) = first {
            for (origin, _) in self.map.remove(&block).unwrap_or_default() {
                self.held.entry(origin).and_modify(|n| *n = n.saturating_sub(1));
            }
            self.unsaved = true;
        }
    }

    /// A home of the block bore out `origin`'s penalty on it: in force now.
    pub fn confirm(&mut self, origin: Fingerprint, block: WireBlock) {
        self.unconfirmed.remove(&(origin, block));
    }

    /// Withdraws `origin`'s penalty on `block` (a home contradicted it).
    pub fn withdraw(&mut self, origin: Fingerprint, block: WireBlock) {
        self.unconfirmed.remove(&(origin, block));
        if let Some(imposed) = self.map.get_mut(&block) {
            let before = imposed.len();
            imposed.retain(|(o, _)| *o != origin);
            if imposed.len() < before {
                self.held.entry(origin).and_modify(|n| *n = n.saturating_sub(1));
                self.unsaved = true;
            }
            if imposed.is_empty() {
                self.map.remove(&block);
            }
        }
    }

    /// Forgets every penalty `origin` imposed (revoked, or gone for good).
    pub fn forget_origin(&mut self, origin: Fingerprint) -> usize {
        let mut forgotten = 0;
        self.map.retain(|_, imposed| {
            let before = imposed.len();
            imposed.retain(|(o, _)| *o != origin);
            forgotten += before - imposed.len();
            !imposed.is_empty()
        });
        self.rates.remove(&origin);
        self.held.remove(&origin);
        self.silenced.remove(&origin);
        self.unconfirmed.retain(|(o, _)| *o != origin);
        self.unsaved |= forgotten > 0;
        forgotten
    }

    /// The last penalty of `block`, in force or ended, while it is remembered.
    pub fn last(&self, block: WireBlock) -> Option<Penalty> {
        self.map.get(&block).map(|imposed| self.joined(block, imposed)).filter(|p| p.until_ms > 0)
    }

    /// The penalty on `block` if it is in force at `now_ms`.
    pub fn active(&self, block: WireBlock, now_ms: u64) -> Option<Penalty> {
        self.last(block).filter(|p| p.until_ms > now_ms)
    }

    /// This node's own penalties changed since the last call.
    pub fn take_changes(&mut self) -> Vec<PenaltyEntry> {
        std::mem::take(&mut self.dirty)
    }

    /// This node's own penalties still worth remembering: what it tells a
    /// peer that connects.
    pub fn own(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        let own = self.own;
        self.stored(now_ms).into_iter().filter(|s| s.origin == own).map(|s| s.entry).collect()
    }

    /// The penalties in force at `now_ms`, joined per block.
    pub fn in_force(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        self.map
            .iter()
            .map(|(&block, imposed)| (block, self.joined(block, imposed)))
            .filter(|(_, p)| p.until_ms > now_ms)
            .map(|(block, p)| PenaltyEntry { block, until_ms: p.until_ms, strikes: p.strikes })
            .collect()
    }

    /// Every penalty still worth remembering, with its origin.
    pub fn stored(&self, now_ms: u64) -> Vec<StoredPenalty> {
        self.map
            .iter()
            .flat_map(|(&block, imposed)| {
                imposed.iter().map(move |&(origin, p)| StoredPenalty {
                    origin,
                    entry: PenaltyEntry { block, until_ms: p.until_ms, strikes: p.strikes },
                })
            })
            .filter(|s| s.entry.until_ms + STRIKE_MEMORY_MS > now_ms)
            .collect()
    }

    /// A snapshot for disk if anything changed since the last one.
    pub fn unsaved(&mut self, now_ms: u64) -> Option<Vec<StoredPenalty>> {
        std::mem::take(&mut self.unsaved).then(|| self.stored(now_ms))
    }

    /// Forgets penalties whose strikes have expired.
    pub fn sweep(&mut self, now_ms: u64) {
        self.map.retain(|_, imposed| {
            imposed.retain(|(_, p)| p.until_ms + STRIKE_MEMORY_MS > now_ms);
            !imposed.is_empty()
        });
        let map = &self.map;
        self.unconfirmed
            .retain(|(o, b)| map.get(b).is_some_and(|imposed| imposed.iter().any(|(x, _)| x == o)));
        self.recount();
    }

    /// Bytes of the table's allocations.
    pub fn table_bytes(&self) -> usize {
        let per_block = std::mem::size_of::<(WireBlock, Vec<(Fingerprint, Penalty)>)>() + 1;
        let imposed: usize =
            self.map.values().map(|v| v.capacity() * std::mem::size_of::<(Fingerprint, Penalty)>()).sum();
        self.map.capacity() * per_block + imposed
    }

    /// Blocks with a penalty remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: WireBlock = WireBlock { net: 0xC000_0200, prefix: 24 };
    const OWN: Fingerprint = [0; 16];
    const PEER: Fingerprint = [1; 16];
    const OTHER: Fingerprint = [2; 16];

    /// A peer's penalty taken and borne out by a home.
    fn merged(
        p: &mut Penalties,
        origin: Fingerprint,
        e: &PenaltyEntry,
        b: PeerBounds,
        w: f64,
        now: u64,
    ) -> Taken {
        let taken = p.merge_from(origin, e, b, w, now);
        p.confirm(origin, e.block);
        taken
    }

    fn entry(until_ms: u64, strikes: u8) -> PenaltyEntry {
        PenaltyEntry { block: B, until_ms, strikes }
    }

    #[test]
    fn merging_is_a_join_per_origin() {
        let bounds = PeerBounds::default();
        let mut a = Penalties::new(OWN, 100);
        assert_eq!(merged(&mut a, PEER, &entry(100, 1), bounds, 1.0, 0), Taken::Changed);
        assert_eq!(merged(&mut a, OTHER, &entry(50, 3), bounds, 1.0, 0), Taken::Changed);
        assert_eq!(merged(&mut a, PEER, &entry(100, 1), bounds, 1.0, 0), Taken::Unchanged, "idempotent");
        let mut b = Penalties::new(OWN, 100);
        merged(&mut b, OTHER, &entry(50, 3), bounds, 1.0, 0);
        merged(&mut b, PEER, &entry(100, 1), bounds, 1.0, 0);
        assert_eq!(a.active(B, 0), b.active(B, 0), "in any order");
        assert_eq!(a.active(B, 0), Some(Penalty { until_ms: 100, strikes: 3 }));
        assert_eq!(a.active(B, 100), None, "over at its end");
        assert_eq!(a.last(B), Some(Penalty { until_ms: 100, strikes: 3 }), "but remembered");
        a.sweep(100 + STRIKE_MEMORY_MS);
        assert_eq!(a.last(B), None, "for a day");
    }

    #[test]
    fn a_peer_imposes_no_more_than_its_bounds() {
        let bounds = PeerBounds { penalty_max_ms: 1_000, max_strikes: 4, per_minute: 10 };
        let mut p = Penalties::new(OWN, 1_000);
        merged(&mut p, PEER, &entry(u64::MAX, 200), bounds, 1.0, 5_000);
        assert_eq!(p.active(B, 5_000), Some(Penalty { until_ms: 6_000, strikes: 4 }));
        // Ten new penalties a minute, then the rest of the minute is dropped.
        let many =
            |n: u64| PenaltyEntry { block: WireBlock { net: n, prefix: 24 }, until_ms: 5_500, strikes: 1 };
        let taken: Vec<Taken> =
            (1..=20).map(|n| merged(&mut p, PEER, &many(n), bounds, 1.0, 5_000)).collect();
        assert_eq!(taken.iter().filter(|t| **t == Taken::Changed).count(), 9, "one was used above");
        assert_eq!(merged(&mut p, OTHER, &many(100), bounds, 1.0, 5_000), Taken::Changed, "per origin");
        assert_eq!(merged(&mut p, PEER, &many(200), bounds, 1.0, 60_000), Taken::Changed, "the next minute");
    }

    #[test]
    fn an_origins_penalties_go_with_it_and_the_others_stay() {
        let bounds = PeerBounds::default();
        let mut p = Penalties::new(OWN, 100);
        merged(&mut p, PEER, &entry(1_000, 1), bounds, 1.0, 0);
        merged(&mut p, OTHER, &entry(500, 1), bounds, 1.0, 0);
        assert_eq!(p.forget_origin(PEER), 1);
        assert_eq!(p.active(B, 0), Some(Penalty { until_ms: 500, strikes: 1 }));
        assert_eq!(p.forget_origin(OTHER), 1);
        assert_eq!(p.active(B, 0), None);
    }

    /// This node's penalty on B, and PEER's on another block.
    fn own_on_b_and_peers_on_7() -> Penalties {
        let mut p = Penalties::new(OWN, 100);
        p.extend(B, 1_000, 1);
        let peers = PenaltyEntry { block: WireBlock { net: 7, prefix: 24 }, ..entry(2_000, 1) };
        merged(&mut p, PEER, &peers, PeerBounds::default(), 1.0, 0);
        p
    }

    #[test]
    fn a_revoked_origin_is_not_restored_from_disk() {
        let mut p = own_on_b_and_peers_on_7();
        let disk = p.unsaved(0).unwrap();
        assert_eq!(disk.len(), 2);
        let mut restarted = Penalties::new(OWN, 100);
        let restored = disk.iter().filter(|s| restarted.restore(s, &[PEER])).count();
        assert_eq!(restored, 1);
        assert!(restarted.active(B, 0).is_some());
        assert!(restarted.active(WireBlock { net: 7, prefix: 24 }, 0).is_none());
    }

    #[test]
    fn only_own_penalties_are_told_to_peers() {
        let mut p = own_on_b_and_peers_on_7();
        assert_eq!(p.own(0), vec![entry(1_000, 1)]);
        assert_eq!(p.take_changes(), vec![entry(1_000, 1)]);
    }

    #[test]
    fn a_million_penalties_keep_the_table_at_its_cap() {
        let bounds = PeerBounds { per_minute: u32::MAX, ..PeerBounds::default() };
        let mut p = Penalties::new(OWN, 10_000);
        for n in 0..1_000_000u64 {
            let e = PenaltyEntry { block: WireBlock { net: n, prefix: 24 }, until_ms: 1_000 + n, strikes: 1 };
            merged(&mut p, PEER, &e, bounds, 1.0, 0);
        }
        assert_eq!(p.len(), 1_000, "a peer holds at most a tenth of the table");
        for peer in 2..12u8 {
            for n in 0..1_000u64 {
                let e = PenaltyEntry {
                    block: WireBlock { net: n + 1_000 * u64::from(peer), prefix: 24 },
                    until_ms: 1_000,
                    strikes: 1,
                };
                merged(&mut p, [peer; 16], &e, bounds, 1.0, 0);
            }
        }
        assert_eq!(p.len(), 10_000, "beyond the cap the rest are dropped");
        for n in 0..2_000u64 {
            p.extend(WireBlock { net: 2_000_000 + n, prefix: 24 }, 10_000_000, 1);
        }
        assert_eq!(p.len(), 10_000, "own ones push out the first ending");
        assert!(p.active(WireBlock { net: 2_001_999, prefix: 24 }, 0).is_some());
    }

    #[test]
    fn a_peers_penalty_is_in_force_only_once_borne_out() {
        let mut p = Penalties::new(OWN, 100);
        assert_eq!(p.merge_from(PEER, &entry(1_000, 1), PeerBounds::default(), 1.0, 0), Taken::Changed);
        assert_eq!(p.active(B, 0), None, "held, not in force");
        assert_eq!(p.stored(0).len(), 1);
        p.confirm(PEER, B);
        assert!(p.active(B, 0).is_some());
        p.withdraw(PEER, B);
        assert_eq!(p.active(B, 0), None);
        assert!(p.stored(0).is_empty());
    }

    #[test]
    fn a_peers_penalty_weighs_as_its_standing_and_a_silenced_ones_not_at_all() {
        let bounds = PeerBounds { penalty_max_ms: 10_000, ..PeerBounds::default() };
        let mut p = Penalties::new(OWN, 100);
        merged(&mut p, PEER, &entry(u64::MAX, 1), bounds, 0.5, 0);
        assert_eq!(p.active(B, 0).unwrap().until_ms, 5_000, "half the standing, half penalty_max");
        assert_eq!(merged(&mut p, OTHER, &entry(u64::MAX, 1), bounds, 0.0, 0), Taken::Dropped);
        p.set_silenced(PEER, true);
        assert_eq!(p.active(B, 0), None, "a silenced member's penalty is not in force");
        p.extend(B, 3_000, 1);
        assert_eq!(p.active(B, 0).unwrap().until_ms, 3_000, "this node's own still is");
        p.set_silenced(PEER, false);
        assert_eq!(p.active(B, 0).unwrap().until_ms, 5_000);
    }
}
