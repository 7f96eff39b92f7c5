//! The tally: a node's counts and penalties, the state the throttle reads
//! and the mesh shares. It exists with or without a mesh: a lone node
//! throttles on its own tally. Every method takes the time from its caller.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use magicmx_proto::wire::{PenaltyEntry, WireBlock};
use magicmx_proto::SourceBlock;

use crate::counts::{BlockView, Caps, Counts, Fingerprint, Kind, Periods, Rates};
use crate::penalties::{Penalties, Penalty, StoredPenalty};

pub struct Tally {
    pub(crate) counts: Mutex<Counts>,
    pub(crate) penalties: Mutex<Penalties>,
    max_tracked: usize,
}

/// Unix milliseconds by the wall clock: the one time unit of the counts, the
/// penalties and the wire. Read by the shells around the logic, never inside it.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The wire form of a block: the network's top 64 bits (IPv4 in the low 32)
/// and the prefix, with 0x80 set for IPv6.
pub fn wire_block(block: SourceBlock) -> WireBlock {
    match block.network() {
        std::net::IpAddr::V4(v4) => WireBlock { net: u64::from(u32::from(v4)), prefix: block.prefix() },
        std::net::IpAddr::V6(v6) => {
            WireBlock { net: (u128::from(v6) >> 64) as u64, prefix: 0x80 | block.prefix().min(64) }
        }
    }
}

impl Tally {
    pub fn new(periods: Periods, max_tracked: usize) -> Tally {
        Tally {
            counts: Mutex::new(Counts::new([0; 16], periods)),
            penalties: Mutex::new(Penalties::new([0; 16], max_tracked)),
            max_tracked,
        }
    }

    /// Counts one event of this node's for `block`.
    pub fn record(&self, block: SourceBlock, kind: Kind, now_ms: u64) {
        self.counts.lock().unwrap().record(wire_block(block), kind, now_ms);
    }

    /// The mesh-wide taken rates of `block`, each peer's share at most `caps`.
    pub fn rate(&self, block: SourceBlock, caps: Caps, now_ms: u64) -> Rates {
        self.counts.lock().unwrap().rate(wire_block(block), now_ms, caps)
    }

    /// Every origin's register for `block` (see [`Counts::view`]).
    pub fn view(&self, block: SourceBlock, now_ms: u64) -> BlockView {
        self.counts.lock().unwrap().view(wire_block(block), now_ms)
    }

    /// The time constants of the rates.
    pub fn periods(&self) -> Periods {
        self.counts.lock().unwrap().periods()
    }

    /// Reserves `recipients` more for this node's transaction `id`.
    pub fn reserve(&self, block: SourceBlock, id: u32, recipients: u16, now_ms: u64) {
        self.counts.lock().unwrap().reserve(wire_block(block), id, recipients, now_ms);
    }

    /// Marks the end of DATA of transaction `id`; returns its seal time.
    pub fn seal(&self, block: SourceBlock, id: u32, now_ms: u64) -> u64 {
        self.counts.lock().unwrap().seal(wire_block(block), id, now_ms)
    }

    /// Closes transaction `id`, its recipients taken or not.
    pub fn settle(&self, block: SourceBlock, id: u32, taken: bool, now_ms: u64) {
        self.counts.lock().unwrap().settle(wire_block(block), id, taken, now_ms);
    }

    /// The penalty in force on `block`, if any.
    pub fn penalty(&self, block: SourceBlock, now_ms: u64) -> Option<Penalty> {
        self.penalties.lock().unwrap().active(wire_block(block), now_ms)
    }

    /// The last penalty of `block`, in force or remembered after its end.
    pub fn last_penalty(&self, block: SourceBlock) -> Option<Penalty> {
        self.penalties.lock().unwrap().last(wire_block(block))
    }

    /// Penalises `block` until `until_ms` with `strikes` (joined with what is
    /// held, and shared with the mesh); returns the penalty now in force.
    pub fn penalise(&self, block: SourceBlock, until_ms: u64, strikes: u8) -> Penalty {
        self.penalties.lock().unwrap().extend(wire_block(block), until_ms, strikes)
    }

    /// Penalties in force now.
    pub fn penalties_in_force(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        self.penalties.lock().unwrap().in_force(now_ms)
    }

    /// Penalties as they should be on disk, with their origins, if they
    /// changed since last asked.
    pub fn penalties_to_save(&self, now_ms: u64) -> Option<Vec<StoredPenalty>> {
        self.penalties.lock().unwrap().unsaved(now_ms)
    }

    /// Takes in penalties from disk, but none imposed by a `revoked` origin;
    /// how many were taken.
    pub fn restore_penalties(&self, stored: &[StoredPenalty], revoked: &[Fingerprint]) -> usize {
        let mut penalties = self.penalties.lock().unwrap();
        stored.iter().filter(|s| penalties.restore(s, revoked)).count()
    }

    /// Sets this node's fingerprint in the mesh, the origin of its own
    /// counts and penalties.
    pub fn set_own(&self, own: Fingerprint) {
        self.counts.lock().unwrap().set_own(own);
        self.penalties.lock().unwrap().set_own(own);
    }

    /// Forgets what has decayed; sheds the weakest registers over the budget.
    pub fn sweep(&self, now_ms: u64) {
        let mut counts = self.counts.lock().unwrap();
        counts.sweep(now_ms);
        while counts.len() > self.max_tracked && counts.shed(now_ms) > 0 {}
        drop(counts);
        self.penalties.lock().unwrap().sweep(now_ms);
    }

    /// The `n` blocks with the highest mesh-wide taken rates.
    pub fn top_blocks(&self, n: usize, caps: Caps, now_ms: u64) -> Vec<(String, Rates)> {
        let counts = self.counts.lock().unwrap();
        let mut rated: Vec<(WireBlock, Rates)> =
            counts.blocks().into_iter().map(|b| (b, counts.rate(b, now_ms, caps))).collect();
        rated.sort_by(|a, b| {
            (b.1.recipients + b.1.connections).total_cmp(&(a.1.recipients + a.1.connections))
        });
        rated.truncate(n);
        rated.into_iter().map(|(b, r)| (block_text(b), r)).collect()
    }

    /// Registers held, and their table's size in bytes.
    pub fn tracked(&self) -> (usize, usize) {
        let counts = self.counts.lock().unwrap();
        (counts.len(), counts.table_bytes())
    }
}

/// A block as text: `192.0.2.0/24`, `2001:db8:1::/48`.
pub fn block_text(block: WireBlock) -> String {
    if block.prefix & 0x80 == 0 {
        format!("{}/{}", std::net::Ipv4Addr::from(block.net as u32), block.prefix)
    } else {
        format!("{}/{}", std::net::Ipv6Addr::from(u128::from(block.net) << 64), block.prefix & 0x7F)
    }
}
