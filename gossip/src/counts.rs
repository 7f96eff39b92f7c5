//! The shared per-block counts: a state-based CRDT of decaying rates and the
//! transactions in progress.
//!
//! Every origin (a node, known by its certificate fingerprint) owns one
//! register per source block: two exponentially decaying rates (recipients
//! taken, connections, as Exim's ratelimit smooths them), the transactions it
//! has open for the block (recipients reserved at RCPT, waiting for the
//! hold's verdict), and a version. Only the origin writes its registers, and
//! every write raises the version; peers keep the highest version they have
//! seen, so merging is commutative, associative and idempotent: duplicated,
//! re-ordered or replayed frames never inflate a count.
//!
//! This module stores and shares; it decides nothing. [`Counts::view`]
//! hands a block's registers to the caller (the node's `limits`), which
//! sums them, caps what each peer may add, and orders the open transactions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use magicmx_proto::wire::{CountEntry, OpenEntry, WireBlock};

/// An origin's index in this node's table; [`SELF`] is this node.
pub type Origin = u16;
pub const SELF: Origin = 0;

/// A certificate fingerprint (the first 16 bytes of its SHA-256).
pub type Fingerprint = [u8; 16];

/// The first six bytes of a fingerprint in hex, for logs.
pub fn short(fp: &Fingerprint) -> String {
    fp.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Rates above this are nonsense from a broken or hostile peer.
const MAX_RATE: f32 = 1.0e7;
/// A register whose rates have decayed below this (and has nothing open) is forgotten.
const FORGET_BELOW: f64 = 0.05;
/// Open transactions one origin may have for one block; more is a broken peer.
pub const MAX_OPEN: usize = 64;
/// An open transaction's recipients at most (RFC 5321's 100, with room).
const MAX_OPEN_RECIPIENTS: u16 = 1000;
/// A transaction still open after this long was abandoned by a crashed
/// origin: an SMTP transaction lasts minutes at most (RFC 5321 §4.5.3.2).
pub const OPEN_TTL: Duration = Duration::from_secs(15 * 60);
/// A transaction sealed this long ago was decided long since (the hold lasts seconds).
pub const SEALED_TTL: Duration = Duration::from_secs(60);
/// Registers with transactions open that one origin may make this node
/// hold: an SMTP server has a few thousand sessions at most, so more is a
/// broken or hostile peer, and open registers are never shed.
pub const MAX_OPEN_REGISTERS: usize = 10_000;
/// An entry stamped later than this past the sender's clock (as measured)
/// is from the future: refused.
const FUTURE_SLACK_MS: u64 = 5_000;

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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Periods {
    pub recipients: Duration,
    pub connections: Duration,
}

impl Default for Periods {
    fn default() -> Self {
        Periods { recipients: Duration::from_secs(3600), connections: Duration::from_secs(60) }
    }
}

impl Periods {
    /// `rates`, `elapsed_ms` later.
    pub fn decay(&self, rates: Rates, elapsed_ms: u64) -> Rates {
        let age = elapsed_ms as f64 / 1000.0;
        Rates {
            recipients: rates.recipients * (-age / self.recipients.as_secs_f64()).exp(),
            connections: rates.connections * (-age / self.connections.as_secs_f64()).exp(),
        }
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
    /// Not a number, negative, absurd or too long: dropped.
    Rejected,
}

/// A transaction in progress at its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub id: u32,
    pub recipients: u16,
    pub opened_ms: u64,
    /// When its DATA ended (the origin's clock). Sealed transactions are
    /// decided in the order of this time, then origin, then id.
    pub sealed_ms: Option<u64>,
}

impl Open {
    fn is_stale(&self, now_ms: u64) -> bool {
        match self.sealed_ms {
            Some(sealed) => now_ms.saturating_sub(sealed) > SEALED_TTL.as_millis() as u64,
            None => now_ms.saturating_sub(self.opened_ms) > OPEN_TTL.as_millis() as u64,
        }
    }
}

/// One origin's register for a block, as of the moment it was viewed.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginView {
    pub fingerprint: Fingerprint,
    /// This node's own register (never capped).
    pub is_self: bool,
    /// Taken recipients and connections, decayed to the moment of the view.
    pub taken: Rates,
    /// Its transactions still open (abandoned ones left out), their times
    /// on this node's clock.
    pub open: Vec<Open>,
    /// How much its word counts (its standing; 1 for this node): the judge
    /// caps what it adds at its cap times this.
    pub weight: f64,
}

/// Every origin's register for one block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockView {
    pub origins: Vec<OriginView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    net: u64,
    origin: Origin,
    prefix: u8,
}

/// The rates and version of a register: 16 bytes. The version is the
/// update's millisecond shifted left 16 bits plus a sequence number within
/// that millisecond, so every write of an origin is ordered after the last.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Register {
    recipients: f32,
    connections: f32,
    version: u64,
}

impl Register {
    fn updated_ms(&self) -> u64 {
        self.version >> 16
    }

    fn rates(&self) -> Rates {
        Rates { recipients: f64::from(self.recipients), connections: f64::from(self.connections) }
    }
}

fn version(ms: u64, seq: u16) -> u64 {
    (ms << 16) | u64::from(seq)
}

pub struct Counts {
    registers: HashMap<Key, Register>,
    /// Open transactions, by register (only registers that have some).
    open: HashMap<Key, Vec<Open>>,
    /// This node's blocks changed since the last round.
    dirty: HashSet<WireBlock>,
    origins: Vec<Fingerprint>,
    /// Per origin, how far its clock runs ahead of this node's (ms); its
    /// registers keep its own times, read against `now + offset`.
    offsets: Vec<i64>,
    /// Per origin, registers with transactions open (recounted each sweep).
    open_held: Vec<usize>,
    origin_index: HashMap<Fingerprint, Origin>,
    /// Indices of origins forgotten, to be given to the next new ones.
    free: Vec<Origin>,
    /// Origins whose node restarted: their registers stay until they decay
    /// (the counts they made still count), under a name of their own.
    retired: Vec<Fingerprint>,
    periods: Periods,
}

impl Counts {
    pub fn new(own: Fingerprint, periods: Periods) -> Counts {
        Counts {
            registers: HashMap::new(),
            open: HashMap::new(),
            dirty: HashSet::new(),
            origins: vec![own],
            offsets: vec![0],
            open_held: vec![0],
            origin_index: HashMap::from([(own, SELF)]),
            free: Vec::new(),
            retired: Vec::new(),
            periods,
        }
    }

    pub fn periods(&self) -> Periods {
        self.periods
    }

    /// Sets this node's own fingerprint (known once the mesh's certificate is loaded).
    pub fn set_own(&mut self, own: Fingerprint) {
        self.origin_index.remove(&self.origins[usize::from(SELF)]);
        self.origins[usize::from(SELF)] = own;
        self.origin_index.insert(own, SELF);
    }

    /// The index of an origin, added if new (`None` when the table is full).
    pub fn origin(&mut self, fingerprint: Fingerprint) -> Option<Origin> {
        if let Some(&origin) = self.origin_index.get(&fingerprint) {
            return Some(origin);
        }
        let origin = match self.free.pop() {
            Some(origin) => {
                self.origins[usize::from(origin)] = fingerprint;
                self.offsets[usize::from(origin)] = 0;
                self.open_held[usize::from(origin)] = 0;
                origin
            }
            None => {
                let origin = Origin::try_from(self.origins.len()).ok().filter(|&o| o < Origin::MAX)?;
                self.origins.push(fingerprint);
                self.offsets.push(0);
                self.open_held.push(0);
                origin
            }
        };
        self.origin_index.insert(fingerprint, origin);
        Some(origin)
    }

    /// How far `fingerprint`'s clock runs ahead of this node's, as measured
    /// (see `clocks.rs`): its times are read through it.
    pub fn set_offset(&mut self, fingerprint: Fingerprint, offset_ms: i64) {
        if let Some(&origin) = self.origin_index.get(&fingerprint) {
            if origin != SELF {
                self.offsets[usize::from(origin)] = offset_ms;
            }
        }
    }

    /// `now_ms` on `origin`'s clock.
    fn now_at(&self, origin: Origin, now_ms: u64) -> u64 {
        now_ms.saturating_add_signed(self.offsets[usize::from(origin)])
    }

    /// A time on `origin`'s clock, on this node's.
    fn local(&self, origin: Origin, ms: u64) -> u64 {
        ms.saturating_add_signed(-self.offsets[usize::from(origin)])
    }

    /// Origins retired for a restart and still holding registers.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// A peer restarted: its new process starts its registers afresh, so the
    /// old ones are kept apart, under a retired name, and keep counting
    /// until they decay; what it had open is dropped.
    pub fn retire_origin(&mut self, fingerprint: Fingerprint) {
        let Some(origin) = self.origin_index.get(&fingerprint).copied().filter(|&o| o != SELF) else {
            return;
        };
        self.open.retain(|key, _| key.origin != origin);
        let mut retired = fingerprint;
        retired[15] ^= 0xA5;
        retired[..8].copy_from_slice(&(self.retired.len() as u64 ^ u64::MAX).to_le_bytes());
        self.origin_index.remove(&fingerprint);
        self.origin_index.insert(retired, origin);
        self.origins[usize::from(origin)] = retired;
        self.retired.push(retired);
    }

    /// Forgets a peer that left the mesh for good: its registers, its open
    /// transactions, and its place in the table; how many registers went.
    pub fn forget_origin(&mut self, fingerprint: Fingerprint) -> usize {
        let Some(origin) = self.origin_index.get(&fingerprint).copied().filter(|&o| o != SELF) else {
            return 0;
        };
        let before = self.registers.len();
        self.registers.retain(|key, _| key.origin != origin);
        self.open.retain(|key, _| key.origin != origin);
        self.origin_index.remove(&fingerprint);
        self.free.push(origin);
        before - self.registers.len()
    }

    /// Counts one event of this node's for `block`: a connection, or a
    /// recipient taken outside any transaction.
    pub fn record(&mut self, block: WireBlock, kind: Kind, now_ms: u64) {
        self.update_own(block, now_ms, |rates, _| match kind {
            Kind::Recipient => rates.recipients += 1.0,
            Kind::Connection => rates.connections += 1.0,
        });
    }

    /// Reserves `recipients` more for this node's transaction `id` (opened if new).
    pub fn reserve(&mut self, block: WireBlock, id: u32, recipients: u16, now_ms: u64) {
        self.update_own(block, now_ms, |_, open| match open.iter_mut().find(|t| t.id == id) {
            Some(t) => t.recipients = t.recipients.saturating_add(recipients),
            None => open.push(Open { id, recipients, opened_ms: now_ms, sealed_ms: None }),
        });
    }

    /// Gives back `recipients` of this node's transaction `id` (a recipient
    /// refused after it was reserved); the transaction goes when none are left.
    pub fn release(&mut self, block: WireBlock, id: u32, recipients: u16, now_ms: u64) {
        self.update_own(block, now_ms, |_, open| {
            if let Some(at) = open.iter().position(|t| t.id == id) {
                open[at].recipients = open[at].recipients.saturating_sub(recipients);
                if open[at].recipients == 0 {
                    open.swap_remove(at);
                }
            }
        });
    }

    /// The DATA of this node's transaction `id` ended at `now_ms`; returns that time.
    pub fn seal(&mut self, block: WireBlock, id: u32, now_ms: u64) -> u64 {
        let mut sealed = now_ms;
        self.update_own(block, now_ms, |_, open| {
            if let Some(t) = open.iter_mut().find(|t| t.id == id) {
                sealed = *t.sealed_ms.get_or_insert(now_ms);
            }
        });
        sealed
    }

    /// Closes this node's transaction `id`: its recipients are added to the
    /// taken rate when `taken`, and forgotten otherwise.
    pub fn settle(&mut self, block: WireBlock, id: u32, taken: bool, now_ms: u64) {
        self.update_own(block, now_ms, |rates, open| {
            if let Some(at) = open.iter().position(|t| t.id == id) {
                let t = open.swap_remove(at);
                if taken {
                    rates.recipients += f64::from(t.recipients);
                }
            }
        });
    }

    /// Applies `change` to this node's register for `block`, as of `now_ms`,
    /// under a new version.
    fn update_own(&mut self, block: WireBlock, now_ms: u64, change: impl FnOnce(&mut Rates, &mut Vec<Open>)) {
        let key = Key { net: block.net, origin: SELF, prefix: block.prefix };
        let held = self.registers.get(&key).copied();
        let (ms, seq) = match held {
            Some(r) if r.updated_ms() >= now_ms => {
                let seq = (r.version & 0xFFFF) as u16;
                match seq.checked_add(1) {
                    Some(seq) => (r.updated_ms(), seq),
                    None => (r.updated_ms() + 1, 0),
                }
            }
            _ => (now_ms, 0),
        };
        let mut rates = held.map_or(Rates::default(), |r| self.periods.decay(r.rates(), ms - r.updated_ms()));
        let mut open = self.open.remove(&key).unwrap_or_default();
        change(&mut rates, &mut open);
        if !open.is_empty() {
            self.open.insert(key, open);
        }
        let register = Register {
            recipients: rates.recipients as f32,
            connections: rates.connections as f32,
            version: version(ms, seq),
        };
        self.registers.insert(key, register);
        self.dirty.insert(block);
    }

    /// Takes in one entry of `origin`'s, from a frame stamped `base_ms` on
    /// its clock, at `now_ms` on this node's.
    pub fn merge(&mut self, origin: Origin, base_ms: u64, entry: &CountEntry, now_ms: u64) -> Merged {
        let valid = |v: f32| v.is_finite() && (0.0..=MAX_RATE).contains(&v);
        if origin == SELF
            || !valid(entry.recipients)
            || !valid(entry.connections)
            || entry.open.len() > MAX_OPEN
            || entry.open.iter().any(|t| t.recipients > MAX_OPEN_RECIPIENTS)
            || base_ms > self.now_at(origin, now_ms).saturating_add(FUTURE_SLACK_MS)
        {
            return Merged::Rejected;
        }
        let at = |age: u32| base_ms.saturating_sub(u64::from(age));
        let incoming = Register {
            recipients: entry.recipients,
            connections: entry.connections,
            version: version(at(entry.age_ms), entry.seq),
        };
        let key = Key { net: entry.block.net, origin, prefix: entry.block.prefix };
        if self.registers.get(&key).is_some_and(|held| held.version >= incoming.version) {
            return Merged::Stale;
        }
        let opens = !entry.open.is_empty() && !self.open.contains_key(&key);
        if opens && self.open_held[usize::from(origin)] >= MAX_OPEN_REGISTERS {
            return Merged::Rejected;
        }
        self.open_held[usize::from(origin)] += usize::from(opens);
        self.registers.insert(key, incoming);
        let open: Vec<Open> = entry
            .open
            .iter()
            .map(|t| Open {
                id: t.id,
                recipients: t.recipients,
                opened_ms: at(t.opened_age_ms),
                sealed_ms: t.sealed_age_ms.map(at),
            })
            .collect();
        if open.is_empty() {
            self.open.remove(&key);
        } else {
            self.open.insert(key, open);
        }
        Merged::Applied
    }

    /// Every origin's register for `block` as of `now_ms`, this node's own
    /// marked as such (uncapped).
    pub fn view(&self, block: WireBlock, now_ms: u64) -> BlockView {
        let own = self.origins[usize::from(SELF)];
        self.view_as(block, Some(own), now_ms)
    }

    /// Every origin's register for `block` as of `now_ms`, as `asker` sees
    /// it: its own register uncapped (`is_self`), everyone else's capped by
    /// the judge; with no asker, every one capped.
    pub fn view_as(&self, block: WireBlock, asker: Option<Fingerprint>, now_ms: u64) -> BlockView {
        let mut view = BlockView::default();
        for origin in 0..self.origins.len() as Origin {
            let key = Key { net: block.net, origin, prefix: block.prefix };
            let Some(register) = self.registers.get(&key) else { continue };
            let there = self.now_at(origin, now_ms);
            let open = self.open.get(&key).map_or(vec![], |open| {
                open.iter()
                    .filter(|t| !t.is_stale(there))
                    .map(|t| Open {
                        opened_ms: self.local(origin, t.opened_ms),
                        sealed_ms: t.sealed_ms.map(|s| self.local(origin, s)),
                        ..*t
                    })
                    .collect()
            });
            let fingerprint = self.origins[usize::from(origin)];
            view.origins.push(OriginView {
                fingerprint,
                is_self: asker == Some(fingerprint),
                taken: self.periods.decay(register.rates(), there.saturating_sub(register.updated_ms())),
                open,
                weight: 1.0,
            });
        }
        view
    }

    /// The mesh-wide taken rates of `block` now: this node's own plus every
    /// peer's, each peer's at most `caps` (open transactions left out).
    pub fn rate(&self, block: WireBlock, now_ms: u64, caps: Caps) -> Rates {
        let mut total = Rates::default();
        for origin in self.view(block, now_ms).origins {
            let (r, c) = if origin.is_self {
                (origin.taken.recipients, origin.taken.connections)
            } else {
                (origin.taken.recipients.min(caps.recipients), origin.taken.connections.min(caps.connections))
            };
            total.recipients += r;
            total.connections += c;
        }
        total
    }

    /// Drops the open transactions of a peer that restarted or left: its
    /// new process knows nothing of them.
    pub fn forget_open(&mut self, fingerprint: Fingerprint) {
        if let Some(&origin) = self.origin_index.get(&fingerprint) {
            if origin != SELF {
                self.open.retain(|key, _| key.origin != origin);
            }
        }
    }

    /// This node's registers changed since the last call, stamped against `now_ms`.
    pub fn take_changes(&mut self, now_ms: u64) -> Vec<CountEntry> {
        let mut dirty: Vec<WireBlock> = self.dirty.drain().collect();
        dirty.sort_unstable();
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

    /// The blocks this node has a register of its own for, in order.
    pub fn own_blocks(&self) -> Vec<WireBlock> {
        let mut blocks: Vec<WireBlock> = self
            .registers
            .keys()
            .filter(|k| k.origin == SELF)
            .map(|k| WireBlock { net: k.net, prefix: k.prefix })
            .collect();
        blocks.sort_unstable();
        blocks
    }

    /// This node's register for `block`, as an entry stamped against `now_ms`.
    pub fn own_entry(&self, block: WireBlock, now_ms: u64) -> Option<CountEntry> {
        let key = Key { net: block.net, origin: SELF, prefix: block.prefix };
        let register = self.registers.get(&key)?;
        let age = |ms: u64| now_ms.saturating_sub(ms).min(u64::from(u32::MAX)) as u32;
        let open = self.open.get(&key).map_or(vec![], |open| {
            open.iter()
                .take(MAX_OPEN)
                .map(|t| OpenEntry {
                    id: t.id,
                    recipients: t.recipients.min(MAX_OPEN_RECIPIENTS),
                    opened_age_ms: age(t.opened_ms),
                    sealed_age_ms: t.sealed_ms.map(age),
                })
                .collect()
        });
        Some(CountEntry {
            block,
            recipients: register.recipients,
            connections: register.connections,
            age_ms: age(register.updated_ms()),
            seq: (register.version & 0xFFFF) as u16,
            open,
        })
    }

    /// Forgets open transactions that were abandoned, and registers that
    /// have decayed to nothing with nothing open; returns how many registers went.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let offsets = &self.offsets;
        let there = |origin: Origin| now_ms.saturating_add_signed(offsets[usize::from(origin)]);
        self.open.retain(|key, open| {
            open.retain(|t| !t.is_stale(there(key.origin)));
            !open.is_empty()
        });
        self.open_held.iter_mut().for_each(|n| *n = 0);
        for key in self.open.keys() {
            self.open_held[usize::from(key.origin)] += 1;
        }
        let before = self.registers.len();
        let periods = self.periods;
        let open = &self.open;
        self.registers.retain(|key, r| {
            let rates = periods.decay(r.rates(), there(key.origin).saturating_sub(r.updated_ms()));
            rates.recipients >= FORGET_BELOW || rates.connections >= FORGET_BELOW || open.contains_key(key)
        });
        // Retired origins whose registers have all decayed go.
        if !self.retired.is_empty() {
            let live: HashSet<Origin> = self.registers.keys().map(|k| k.origin).collect();
            let gone: Vec<Fingerprint> = self
                .retired
                .iter()
                .filter(|fp| self.origin_index.get(*fp).is_some_and(|o| !live.contains(o)))
                .copied()
                .collect();
            for fp in gone {
                self.forget_origin(fp);
                self.retired.retain(|r| *r != fp);
            }
        }
        before - self.registers.len()
    }

    /// Over the memory budget: forgets the weaker half of the registers
    /// (by recipient rate; those with open transactions stay); returns how many went.
    pub fn shed(&mut self, now_ms: u64) -> usize {
        let periods = self.periods;
        let offsets = &self.offsets;
        let strength = |key: &Key, r: &Register| {
            let there = now_ms.saturating_add_signed(offsets[usize::from(key.origin)]);
            periods.decay(r.rates(), there.saturating_sub(r.updated_ms())).recipients
        };
        let mut rates: Vec<f64> = self.registers.iter().map(|(k, r)| strength(k, r)).collect();
        if rates.is_empty() {
            return 0;
        }
        let middle = rates.len() / 2;
        let (_, median, _) = rates.select_nth_unstable_by(middle, |a, b| a.total_cmp(b));
        let median = *median;
        let before = self.registers.len();
        let open = &self.open;
        self.registers.retain(|key, r| strength(key, r) > median || open.contains_key(key));
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
        let entry = |r: f32| CountEntry {
            block: BLOCK,
            recipients: r,
            connections: 0.0,
            age_ms: 0,
            seq: 0,
            open: vec![],
        };
        for bad in [f32::NAN, f32::INFINITY, -1.0, 1.0e9] {
            assert_eq!(counts.merge(peer, 10, &entry(bad), 10), Merged::Rejected);
        }
        let too_many = OpenEntry { id: 1, recipients: 1, opened_age_ms: 0, sealed_age_ms: None };
        let flooded = CountEntry { open: vec![too_many; MAX_OPEN + 1], ..entry(1.0) };
        assert_eq!(counts.merge(peer, 10, &flooded, 10), Merged::Rejected);
        assert_eq!(counts.merge(SELF, 10, &entry(1.0), 10), Merged::Rejected, "nobody writes our registers");
    }

    #[test]
    fn a_transaction_is_reserved_sealed_and_settled_and_peers_see_each_step() {
        let mut origin = Counts::new([1; 16], Periods::default());
        let mut peer = Counts::new([2; 16], Periods::default());
        let from = peer.origin([1; 16]).unwrap();
        let ship = |origin: &mut Counts, peer: &mut Counts, now: u64| {
            for entry in origin.take_changes(now) {
                assert_eq!(peer.merge(from, now, &entry, now), Merged::Applied);
            }
        };
        origin.reserve(BLOCK, 7, 2, 1_000);
        origin.reserve(BLOCK, 7, 1, 1_000);
        ship(&mut origin, &mut peer, 1_000);
        let open = &peer.view(BLOCK, 1_000).origins[0].open;
        assert_eq!(open, &vec![Open { id: 7, recipients: 3, opened_ms: 1_000, sealed_ms: None }]);
        assert_eq!(origin.seal(BLOCK, 7, 1_500), 1_500);
        ship(&mut origin, &mut peer, 1_600);
        assert_eq!(
            peer.view(BLOCK, 1_600).origins[0].open[0].sealed_ms,
            Some(1_500),
            "the seal time is exact"
        );
        origin.settle(BLOCK, 7, true, 2_000);
        ship(&mut origin, &mut peer, 2_000);
        let seen = &peer.view(BLOCK, 2_000).origins[0];
        assert!(seen.open.is_empty());
        assert!((seen.taken.recipients - 3.0).abs() < 1e-6, "{seen:?}");
    }

    #[test]
    fn updates_within_one_millisecond_are_ordered_and_replays_are_stale() {
        let mut origin = Counts::new([1; 16], Periods::default());
        let mut peer = Counts::new([2; 16], Periods::default());
        let from = peer.origin([1; 16]).unwrap();
        origin.reserve(BLOCK, 1, 1, 5_000);
        let first = origin.take_changes(5_000);
        origin.settle(BLOCK, 1, false, 5_000);
        let second = origin.take_changes(5_000);
        assert_eq!(peer.merge(from, 5_000, &second[0], 5_000), Merged::Applied);
        assert_eq!(peer.merge(from, 5_000, &first[0], 5_000), Merged::Stale, "an older write loses");
        assert_eq!(peer.merge(from, 5_000, &second[0], 5_000), Merged::Stale, "a replay changes nothing");
        assert!(peer.view(BLOCK, 5_000).origins[0].open.is_empty());
    }

    #[test]
    fn abandoned_transactions_are_left_out_and_swept() {
        let mut counts = Counts::new([0; 16], Periods::default());
        counts.reserve(BLOCK, 1, 5, 0);
        counts.reserve(BLOCK, 2, 5, 0);
        counts.seal(BLOCK, 2, 0);
        let later = SEALED_TTL.as_millis() as u64 + 1;
        assert_eq!(counts.view(BLOCK, later).origins[0].open.len(), 1, "the sealed one is stale first");
        let much_later = OPEN_TTL.as_millis() as u64 + 1;
        assert!(counts.view(BLOCK, much_later).origins[0].open.is_empty());
        counts.sweep(much_later);
        assert!(counts.is_empty(), "nothing taken, nothing open: forgotten");
    }
}
