//! The shared per-block counts: a state-based CRDT of decaying rates.
//!
//! Every origin (a node, known by its certificate fingerprint) owns one
//! register per source block holding two exponentially decaying rates
//! (recipients, connections, as Exim's ratelimit smooths them) and the time
//! of their last update. Only the origin writes its registers; peers keep
//! the newest version they have seen (last writer wins by update time), so
//! merging is commutative, associative and idempotent: duplicated,
//! re-ordered or replayed frames never inflate a count. The mesh-wide rate
//! of a block is this node's own rate plus every peer's, each peer's capped
//! so that one faulty or hostile peer cannot lock a block out alone.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use magicmx_proto::wire::{CountEntry, WireBlock};

/// An origin's index in this node's table; [`SELF`] is this node.
pub type Origin = u16;
pub const SELF: Origin = 0;

/// A certificate fingerprint (the first 16 bytes of its SHA-256).
pub type Fingerprint = [u8; 16];

/// Rates above this are nonsense from a broken or hostile peer.
const MAX_RATE: f32 = 1.0e7;
/// A register whose rates have decayed below this is forgotten.
const FORGET_BELOW: f64 = 0.05;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Recipient,
    Connection,
}

/// Decaying rates: about the number of events in the last period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub recipients: f64,
    pub connections: f64,
}

/// The time constants of the two rates.
#[derive(Debug, Clone, Copy)]
pub struct Periods {
    pub recipients: Duration,
    pub connections: Duration,
}

impl Default for Periods {
    fn default() -> Self {
        Periods { recipients: Duration::from_secs(3600), connections: Duration::from_secs(60) }
    }
}

/// The most one peer may add to a block's mesh-wide rates.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub recipients: f64,
    pub connections: f64,
}

impl Caps {
    pub const NONE: Caps = Caps { recipients: f64::INFINITY, connections: f64::INFINITY };
}

/// What became of one incoming entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Newer than what was held: taken.
    Applied,
    /// Not newer: ignored (a duplicate or a replay).
    Stale,
    /// Not a number, negative or absurd: dropped.
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    net: u64,
    origin: Origin,
    prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Register {
    recipients: f32,
    connections: f32,
    updated_ms: u64,
}

pub struct Counts {
    registers: HashMap<Key, Register>,
    /// This node's blocks changed since the last round.
    dirty: HashSet<WireBlock>,
    origins: Vec<Fingerprint>,
    origin_index: HashMap<Fingerprint, Origin>,
    periods: Periods,
}

impl Counts {
    pub fn new(own: Fingerprint, periods: Periods) -> Counts {
        Counts {
            registers: HashMap::new(),
            dirty: HashSet::new(),
            origins: vec![own],
            origin_index: HashMap::from([(own, SELF)]),
            periods,
        }
    }

    /// The index of an origin, added if new (`None` when the table is full).
    pub fn origin(&mut self, fingerprint: Fingerprint) -> Option<Origin> {
        if let Some(&origin) = self.origin_index.get(&fingerprint) {
            return Some(origin);
        }
        let origin = Origin::try_from(self.origins.len()).ok().filter(|&o| o < Origin::MAX)?;
        self.origins.push(fingerprint);
        self.origin_index.insert(fingerprint, origin);
        Some(origin)
    }

    /// Counts one event of this node's for `block`.
    pub fn record(&mut self, block: WireBlock, kind: Kind, now_ms: u64) {
        let key = Key { net: block.net, origin: SELF, prefix: block.prefix };
        let periods = self.periods;
        let register = self.registers.entry(key).or_insert(Register {
            recipients: 0.0,
            connections: 0.0,
            updated_ms: now_ms,
        });
        let now_ms = now_ms.max(register.updated_ms);
        let mut rates = decay(register, now_ms, &periods);
        match kind {
            Kind::Recipient => rates.recipients += 1.0,
            Kind::Connection => rates.connections += 1.0,
        }
        *register = Register {
            recipients: rates.recipients as f32,
            connections: rates.connections as f32,
            updated_ms: now_ms,
        };
        self.dirty.insert(block);
    }

    /// Takes in one entry of `origin`'s, from a frame stamped `base_ms`.
    pub fn merge(&mut self, origin: Origin, base_ms: u64, entry: &CountEntry) -> Merged {
        let valid = |v: f32| v.is_finite() && (0.0..=MAX_RATE).contains(&v);
        if origin == SELF || !valid(entry.recipients) || !valid(entry.connections) {
            return Merged::Rejected;
        }
        let incoming = Register {
            recipients: entry.recipients,
            connections: entry.connections,
            updated_ms: base_ms.saturating_sub(u64::from(entry.age_ms)),
        };
        let key = Key { net: entry.block.net, origin, prefix: entry.block.prefix };
        match self.registers.get_mut(&key) {
            Some(held) => {
                let joined = join(*held, incoming);
                if joined == *held {
                    return Merged::Stale;
                }
                *held = joined;
                Merged::Applied
            }
            None => {
                self.registers.insert(key, incoming);
                Merged::Applied
            }
        }
    }

    /// The mesh-wide rates of `block` now: this node's own plus each peer's,
    /// each peer's at most `caps`.
    pub fn rate(&self, block: WireBlock, now_ms: u64, caps: Caps) -> Rates {
        let mut total = Rates::default();
        for origin in 0..self.origins.len() as Origin {
            let key = Key { net: block.net, origin, prefix: block.prefix };
            let Some(register) = self.registers.get(&key) else { continue };
            let rates = decay(register, now_ms, &self.periods);
            let (r, c) = if origin == SELF {
                (rates.recipients, rates.connections)
            } else {
                (rates.recipients.min(caps.recipients), rates.connections.min(caps.connections))
            };
            total.recipients += r;
            total.connections += c;
        }
        total
    }

    /// This node's registers changed since the last call, stamped against `now_ms`.
    pub fn take_changes(&mut self, now_ms: u64) -> Vec<CountEntry> {
        let dirty: Vec<WireBlock> = self.dirty.drain().collect();
        dirty.into_iter().filter_map(|block| self.own_entry(block, now_ms)).collect()
    }

    /// All of this node's registers (for a peer that has just joined).
    pub fn own_state(&self, now_ms: u64) -> Vec<CountEntry> {
        self.registers
            .keys()
            .filter(|k| k.origin == SELF)
            .filter_map(|k| self.own_entry(WireBlock { net: k.net, prefix: k.prefix }, now_ms))
            .collect()
    }

    fn own_entry(&self, block: WireBlock, now_ms: u64) -> Option<CountEntry> {
        let register = self.registers.get(&Key { net: block.net, origin: SELF, prefix: block.prefix })?;
        let age = now_ms.saturating_sub(register.updated_ms).min(u64::from(u32::MAX)) as u32;
        Some(CountEntry {
            block,
            recipients: register.recipients,
            connections: register.connections,
            age_ms: age,
        })
    }

    /// Forgets registers that have decayed to nothing; returns how many.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.registers.len();
        let periods = self.periods;
        self.registers.retain(|_, r| {
            let rates = decay(r, now_ms, &periods);
            rates.recipients >= FORGET_BELOW || rates.connections >= FORGET_BELOW
        });
        before - self.registers.len()
    }

    /// Over the memory budget: forgets the weaker half of the registers
    /// (by recipient rate); returns how many went.
    pub fn shed(&mut self, now_ms: u64) -> usize {
        let periods = self.periods;
        let mut rates: Vec<f64> =
            self.registers.values().map(|r| decay(r, now_ms, &periods).recipients).collect();
        if rates.is_empty() {
            return 0;
        }
        let middle = rates.len() / 2;
        let (_, median, _) = rates.select_nth_unstable_by(middle, |a, b| a.total_cmp(b));
        let median = *median;
        let before = self.registers.len();
        self.registers.retain(|_, r| decay(r, now_ms, &periods).recipients > median);
        before - self.registers.len()
    }

    /// Every block with a register, once.
    pub fn blocks(&self) -> Vec<WireBlock> {
        let mut blocks: Vec<WireBlock> =
            self.registers.keys().map(|k| WireBlock { net: k.net, prefix: k.prefix }).collect();
        blocks.sort();
        blocks.dedup();
        blocks
    }

    /// Registers held, over all origins.
    pub fn len(&self) -> usize {
        self.registers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }

    /// Bytes of the register table as allocated (for the memory budget).
    pub fn table_bytes(&self) -> usize {
        self.registers.capacity() * (std::mem::size_of::<(Key, Register)>() + 1)
    }
}

/// The join of two versions of one register: the newer wins; at the same
/// time, each rate's larger value (an origin's rates only grow within one
/// millisecond). Commutative, associative and idempotent.
fn join(a: Register, b: Register) -> Register {
    match a.updated_ms.cmp(&b.updated_ms) {
        std::cmp::Ordering::Less => b,
        std::cmp::Ordering::Greater => a,
        std::cmp::Ordering::Equal => Register {
            recipients: a.recipients.max(b.recipients),
            connections: a.connections.max(b.connections),
            updated_ms: a.updated_ms,
        },
    }
}

fn decay(register: &Register, now_ms: u64, periods: &Periods) -> Rates {
    let age = now_ms.saturating_sub(register.updated_ms) as f64 / 1000.0;
    Rates {
        recipients: f64::from(register.recipients) * (-age / periods.recipients.as_secs_f64()).exp(),
        connections: f64::from(register.connections) * (-age / periods.connections.as_secs_f64()).exp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: WireBlock = WireBlock { net: 0xC000_0200, prefix: 24 };

    #[test]
    fn rates_count_events_and_decay_with_their_period() {
        let mut counts = Counts::new([0; 16], Periods::default());
        for _ in 0..30 {
            counts.record(BLOCK, Kind::Recipient, 1_000);
        }
        counts.record(BLOCK, Kind::Connection, 1_000);
        let now = counts.rate(BLOCK, 1_000, Caps::NONE);
        assert!((now.recipients - 30.0).abs() < 1e-3 && (now.connections - 1.0).abs() < 1e-6);
        let hour_later = counts.rate(BLOCK, 1_000 + 3_600_000, Caps::NONE);
        assert!((hour_later.recipients - 30.0 / std::f64::consts::E).abs() < 1e-3);
    }

    #[test]
    fn a_register_is_a_tiny_table_entry() {
        assert!(std::mem::size_of::<(Key, Register)>() <= 32);
    }

    #[test]
    fn sweep_forgets_what_has_decayed() {
        let mut counts = Counts::new([0; 16], Periods::default());
        counts.record(BLOCK, Kind::Connection, 0);
        assert_eq!(counts.sweep(60_000), 0);
        assert_eq!(counts.sweep(60_000 * 10), 1);
        assert!(counts.is_empty());
    }

    #[test]
    fn peer_entries_that_are_not_numbers_are_rejected() {
        let mut counts = Counts::new([0; 16], Periods::default());
        let peer = counts.origin([1; 16]).unwrap();
        for bad in [f32::NAN, f32::INFINITY, -1.0, 1.0e9] {
            let entry = CountEntry { block: BLOCK, recipients: bad, connections: 0.0, age_ms: 0 };
            assert_eq!(counts.merge(peer, 10, &entry), Merged::Rejected);
        }
        let entry = CountEntry { block: BLOCK, recipients: 1.0, connections: 0.0, age_ms: 0 };
        assert_eq!(counts.merge(SELF, 10, &entry), Merged::Rejected, "nobody writes our registers");
    }
}
