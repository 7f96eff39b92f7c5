//! The tally: a node's [`Engine`] behind a lock, the state the throttle
//! reads and the mesh shares. It exists with or without a mesh: a lone node
//! is the home of every block and answers its own questions. Every method
//! takes the time from its caller, in Unix milliseconds ([`now_ms`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use magicmx_proto::wire::{PenaltyEntry, Question, WireBlock};
use magicmx_proto::SourceBlock;

use crate::counts::{BlockView, Caps, Fingerprint, Kind, Rates};
use crate::engine::{Answer, Engine, EngineSettings, Event, Judge};
use crate::penalties::{Penalty, StoredPenalty};

pub struct Tally {
    engine: Mutex<Engine>,
    /// Told of every penalty this node imposes (the node logs it and saves it).
    on_penalised: std::sync::OnceLock<OnPenalised>,
}

/// Called with a block, the penalty this node imposed on it, and why.
pub type OnPenalised = Box<dyn Fn(WireBlock, Penalty, &'static str) + Send + Sync>;

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
    pub fn new(settings: EngineSettings, judge: Arc<dyn Judge>) -> Tally {
        Tally { engine: Mutex::new(Engine::new([0; 16], settings, judge)), on_penalised: Default::default() }
    }

    /// Sets who is told of the penalties this node imposes (once).
    pub fn on_penalised(&self, tell: OnPenalised) {
        let _ = self.on_penalised.set(tell);
    }

    /// The engine, for the mesh's shell.
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap()
    }

    /// Takes the engine's events: penalties are told, answers returned.
    pub(crate) fn drain(&self, engine: &mut Engine) -> Vec<(u64, Answer)> {
        let mut answers = Vec::new();
        while let Some(event) = engine.poll_event() {
            match event {
                Event::Answer { id, answer } => answers.push((id, answer)),
                Event::Confirmed { block, by } => {
                    tracing::debug!(block = %block_text(block), by = %crate::counts::short(&by), "a member's penalty borne out by the block's homes");
                }
                Event::Penalised { block, penalty, why } => {
                    if let Some(tell) = self.on_penalised.get() {
                        tell(block, penalty, why);
                    }
                }
            }
        }
        answers
    }

    /// Counts a connection from `block` and judges this node's own rate: a
    /// penalty if it is over.
    pub fn connection(&self, block: SourceBlock, now_ms: u64) -> Option<Penalty> {
        let mut engine = self.engine();
        let penalty = engine.connection(wire_block(block), now_ms);
        self.drain(&mut engine);
        penalty
    }

    /// Counts one event of this node's for `block`.
    pub fn record(&self, block: SourceBlock, kind: Kind, now_ms: u64) {
        self.engine().record(wire_block(block), kind, now_ms);
    }

    /// Reserves `recipients` more for this node's transaction `id`.
    pub fn reserve(&self, block: SourceBlock, id: u32, recipients: u16, now_ms: u64) {
        self.engine().reserve(wire_block(block), id, recipients, now_ms);
    }

    /// Gives back `recipients` of transaction `id` that were refused.
    pub fn release(&self, block: SourceBlock, id: u32, recipients: u16, now_ms: u64) {
        self.engine().release(wire_block(block), id, recipients, now_ms);
    }

    /// Marks the end of DATA of transaction `id`; returns its seal time.
    pub fn seal(&self, block: SourceBlock, id: u32, now_ms: u64) -> u64 {
        self.engine().seal(wire_block(block), id, now_ms)
    }

    /// Closes transaction `id`, its recipients taken or not.
    pub fn settle(&self, block: SourceBlock, id: u32, taken: bool, now_ms: u64) {
        self.engine().settle(wire_block(block), id, taken, now_ms);
    }

    /// Judges `question` here, with what this node holds: a node without a
    /// mesh is the home of every block; a meshed one judges alone when no
    /// home answers.
    pub fn answer_alone(&self, block: SourceBlock, question: Question, now_ms: u64) -> Answer {
        let mut engine = self.engine();
        let answer = engine.answer_alone(wire_block(block), question, now_ms);
        self.drain(&mut engine);
        answer
    }

    /// Every register held for `block`.
    pub fn view(&self, block: SourceBlock, now_ms: u64) -> BlockView {
        self.engine().view(wire_block(block), now_ms)
    }

    /// The taken rates of `block` as held here, each peer's at most `caps`.
    pub fn rate(&self, block: SourceBlock, caps: Caps, now_ms: u64) -> Rates {
        self.engine().rate(wire_block(block), now_ms, caps)
    }

    /// The share of the mesh this node hears.
    pub fn share(&self) -> f64 {
        self.engine().share()
    }

    /// The penalty in force on `block`, if any.
    pub fn penalty(&self, block: SourceBlock, now_ms: u64) -> Option<Penalty> {
        self.engine().penalty(wire_block(block), now_ms)
    }

    /// The last penalty of `block`, in force or remembered after its end.
    pub fn last_penalty(&self, block: SourceBlock) -> Option<Penalty> {
        self.engine().last_penalty(wire_block(block))
    }

    /// Penalises `block` until `until_ms` with `strikes` (joined with what is
    /// held, and told to the mesh); returns the penalty now in force.
    pub fn penalise(&self, block: SourceBlock, until_ms: u64, strikes: u8) -> Penalty {
        self.engine().penalise(wire_block(block), until_ms, strikes)
    }

    /// Penalties in force now.
    pub fn penalties_in_force(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        self.engine().penalties_in_force(now_ms)
    }

    /// Penalties as they should be on disk, with their origins, if they
    /// changed since last asked.
    /// Every penalty held, in force or not, with the member that imposed it.
    pub fn penalties_held(&self, now_ms: u64) -> Vec<StoredPenalty> {
        self.engine().penalties().stored(now_ms)
    }

    pub fn penalties_to_save(&self, now_ms: u64) -> Option<Vec<StoredPenalty>> {
        self.engine().penalties_to_save(now_ms)
    }

    /// Takes in penalties from disk, but none imposed by a `revoked` origin;
    /// how many were taken.
    pub fn restore_penalties(&self, stored: &[StoredPenalty], revoked: &[Fingerprint]) -> usize {
        self.engine().restore_penalties(stored, revoked)
    }

    /// Sets this node's fingerprint in the mesh, the origin of its own
    /// counts and penalties.
    pub fn set_own(&self, own: Fingerprint) {
        self.engine().set_own(own);
    }

    /// Forgets what has decayed; sheds the weakest registers over the budget.
    pub fn sweep(&self, now_ms: u64) {
        self.engine().sweep(now_ms);
    }

    /// The `n` blocks with the highest taken rates held here.
    pub fn top_blocks(&self, n: usize, caps: Caps, now_ms: u64) -> Vec<(String, Rates)> {
        let engine = self.engine();
        let counts = engine.counts();
        let mut rated: Vec<(WireBlock, Rates)> =
            counts.blocks().into_iter().map(|b| (b, counts.rate(b, now_ms, caps))).collect();
        rated.sort_by(|a, b| {
            (b.1.recipients + b.1.connections).total_cmp(&(a.1.recipients + a.1.connections))
        });
        rated.truncate(n);
        rated.into_iter().map(|(b, r)| (block_text(b), r)).collect()
    }

    /// Registers held, and the tables' size in bytes.
    pub fn tracked(&self) -> (usize, usize) {
        let engine = self.engine();
        (engine.counts().len(), engine.table_bytes())
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
