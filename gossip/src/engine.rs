//! The mesh's sans-I/O core, as `quinn-proto` is QUIC's: the counts and
//! penalties of one node, where each block lives, and the questions a node
//! asks a block's home. It takes its time and its frames from the caller
//! and hands back frames to send and answers; the tokio shell (`mesh.rs`)
//! moves them over QUIC, and the simulator (`bench/mesh-sim`) over a
//! simulated network, so both run the same code.
//!
//! **Homes.** Every block has [`HOMES`](crate::homes::HOMES) homes among the live members
//! (`homes.rs`). A node sends the registers it changed for a block to that
//! block's homes only, once per round, so a home holds every origin's
//! register for its blocks and nobody else does: per-node state and traffic
//! grow with the blocks a node sees or is home for, not with `N × K`.
//!
//! **Questions.** At RCPT a node reserves the recipient in its own register
//! and asks the block's primary home whether it fits (`Question::Recipient`,
//! the register riding along); at the end of DATA it seals the transaction
//! and asks whether it is taken (`Question::Sealed`). The home judges with
//! every origin's register (the asker's own in full, each other's at most
//! its cap: `Judge`, the node's `limits`), one question after another, so
//! a block spraying every node gets its limit once. Over the limit, the
//! home penalises the block and tells every member in its next round. A
//! home that does not answer within `ask_timeout` is replaced by the next;
//! when none answers, the node judges alone with what it holds.
//!
//! **Connections** are counted where they arrive, judged there against the
//! node's own register, and sent to the homes with the round; the primary
//! home judges the mesh-wide rate as registers arrive.
//!
//! **Strangers.** No member's word is taken alone. Every block has three
//! homes. The end of DATA asks two, a "no" at RCPT is put to a second, and
//! when two disagree the third decides: the side whose words weigh more
//! (by standing) wins, the other is outvoted and loses standing, and "no"
//! wins a tie without penalising anyone. A "yes" over the asker's own
//! register is a lie shown.
//! Registers and penalties are read through each peer's measured clock
//! (`clocks.rs`), capped by its standing (`standing.rs`), and bounded per
//! member; a restart is believed only from the member's own frames.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use magicmx_proto::wire::{
    Answer as WireAnswer, Ask, CountEntry, Counts as CountsFrame, Frame, PenaltyEntry, Question, WireBlock,
};

use crate::clocks::Clocks;
use crate::counts::{BlockView, Counts, Fingerprint, Kind, Merged, Periods, Rates, SELF};
use crate::homes::Ring;
use crate::penalties::{PeerBounds, Penalties, Penalty, StoredPenalty, Taken, STRIKE_MEMORY_MS};
use crate::standing::Standing;

/// Bytes of entries per frame (well under `MAX_FRAME`).
const FRAME_BYTES: usize = 1024 * 1024;

/// Hearing this share of the mesh, a node enforces whole limits.
pub const FULL_SHARE_AT: f64 = 0.95;
/// Blocks remembered as over (or not seen) at most; beyond it the oldest half go.
const MAX_EVIDENCE: usize = 200_000;
/// A member is believed to have restarted at most this often.
const RESTART_EVERY_MS: u64 = 10 * 60 * 1000;

/// The node's rules, applied by a home to a block's registers.
pub trait Judge: Send + Sync {
    /// RCPT: with the recipient just reserved in the view, is the block within its limit?
    fn recipient(&self, view: &BlockView, share: f64) -> bool;
    /// Is the block within its connection rate?
    fn connection(&self, view: &BlockView, share: f64) -> bool;
    /// End of DATA: is the sealed transaction `id` of `origin` taken?
    fn sealed(&self, view: &BlockView, share: f64, origin: Fingerprint, id: u32) -> bool;
    /// Has the block come through the mesh lately (a connection, or a transaction open)?
    fn seen(&self, view: &BlockView) -> bool;
    /// The penalty for a block found over a limit, given its last one.
    fn penalty(&self, last: Option<Penalty>, view: &BlockView, share: f64, now_ms: u64) -> Penalty;
    /// A peer penalised the block and this node is one of its homes: do its
    /// registers here bear the penalty out (`Some(true)`), contradict it
    /// (`Some(false)`), or neither?
    fn penalty_borne_out(&self, _view: &BlockView, _share: f64) -> Option<bool> {
        None
    }
}

/// A judge that lets everything through and penalises nothing: for the
/// transport's own tests and benchmarks, where only the counts' travel matters.
pub struct Lenient;

impl Judge for Lenient {
    fn recipient(&self, _: &BlockView, _: f64) -> bool {
        true
    }
    fn connection(&self, _: &BlockView, _: f64) -> bool {
        true
    }
    fn sealed(&self, _: &BlockView, _: f64, _: Fingerprint, _: u32) -> bool {
        true
    }
    fn seen(&self, view: &BlockView) -> bool {
        !view.origins.is_empty()
    }
    fn penalty(&self, last: Option<Penalty>, _: &BlockView, _: f64, now_ms: u64) -> Penalty {
        last.unwrap_or(Penalty { until_ms: now_ms, strikes: 0 })
    }
    /// Every member's penalty is borne out: only the counts' travel is tested.
    fn penalty_borne_out(&self, _: &BlockView, _: f64) -> Option<bool> {
        Some(true)
    }
}

/// How a node takes part.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub periods: Periods,
    /// Registers kept at most (all origins); beyond it the weakest go.
    pub max_tracked: usize,
    pub peer_bounds: PeerBounds,
    /// A home that has not answered by then is replaced by the next.
    pub ask_timeout_ms: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            periods: Periods::default(),
            max_tracked: 1_000_000,
            peer_bounds: PeerBounds::default(),
            ask_timeout_ms: 1_000,
        }
    }
}

/// A home's answer, or the node's own when no home answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Within the limit (for `Seen`: seen lately).
    pub yes: bool,
    /// The penalty now on the block, if any.
    pub penalty: Option<Penalty>,
    /// No home was heard: this node judged with what it holds alone.
    pub alone: bool,
}

/// What [`Engine::ask`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// This node is the block's home (or alone): the answer.
    Now(Answer),
    /// Sent to the home; the answer comes as [`Event::Answer`] with this id.
    Later(u64),
}

/// What the engine has to tell its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Answer {
        id: u64,
        answer: Answer,
    },
    /// This node penalised a block, for a reason.
    Penalised {
        block: WireBlock,
        penalty: Penalty,
        why: &'static str,
    },
    /// A member's penalty on a block was borne out by the block's homes: in force here now.
    Confirmed {
        block: WireBlock,
        by: Fingerprint,
    },
}

/// Counters of the engine's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Questions this node answered for itself (its own blocks, or alone).
    pub answered_here: u64,
    /// Questions sent to a home.
    pub asked_away: u64,
    /// Questions this node answered for others.
    pub answered_for_others: u64,
    /// Homes that did not answer in time.
    pub timeouts: u64,
    /// Questions judged alone, no home answering.
    pub judged_alone: u64,
    /// Entries from peers dropped as nonsense.
    pub rejected_entries: u64,
    /// Penalties from peers dropped as over their bounds.
    pub dropped_penalties: u64,
    /// Times the two homes of a block disagreed.
    pub disputes: u64,
    /// Frames refused because their sender's clock is beyond `MAX_SKEW_MS`.
    pub clock_refused: u64,
    /// Restarts a member claimed too often, refused.
    pub restarts_refused: u64,
}

struct Pending {
    block: WireBlock,
    question: Question,
    /// Homes asked so far.
    tried: Vec<Fingerprint>,
    /// Asked and not answered yet.
    waiting: Vec<Fingerprint>,
    /// What the homes that answered said.
    opinions: Vec<(Fingerprint, bool)>,
    deadline_ms: u64,
    /// For a `Penalty` question: the member whose penalty is checked, and
    /// how many times it was put before.
    about: Option<(Fingerprint, u8)>,
}

/// A member's bound was reached, or its word fell to nothing: for the log
/// and the metrics, naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub member: Fingerprint,
    pub what: &'static str,
    /// Its word weighs nothing now.
    pub silenced: bool,
}

pub struct Engine {
    own: Fingerprint,
    settings: EngineSettings,
    judge: Arc<dyn Judge>,
    counts: Counts,
    penalties: Penalties,
    /// This node and the live members that proved who they are.
    ring: Ring,
    /// Members known (live or down) and live, for the share.
    known: usize,
    alive: usize,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    round: u64,
    /// Until then this node has just started and holds no one's registers
    /// yet: it asks another home even for blocks it is the home of.
    warm_until_ms: u64,
    /// Live members, for penalties.
    live: Vec<Fingerprint>,
    transmits: VecDeque<(Fingerprint, Frame)>,
    events: VecDeque<Event>,
    stats: EngineStats,
    standing: Standing,
    clocks: Clocks,
    /// When this node's process started (told to peers in every frame).
    started_ms: u64,
    /// Per member: its process start as it last said, and when a restart of
    /// it was last believed.
    starts: HashMap<Fingerprint, (u64, u64)>,
    faults: VecDeque<Fault>,
    /// Blocks this node, as their home, found over a limit or not seen (for
    /// a trap), and when: what bears out a member's penalty on them.
    evidence: HashMap<WireBlock, u64>,
    /// Peers' new penalties to put to the blocks' homes with the next
    /// round (by then the imposer's registers, sent with its penalty, have
    /// mostly reached the homes), from when, and how many times they were
    /// put already (a penalty no home could tell about is put again, twice).
    to_check: VecDeque<(u64, Fingerprint, WireBlock, u8)>,
}

impl Engine {
    pub fn new(own: Fingerprint, settings: EngineSettings, judge: Arc<dyn Judge>) -> Engine {
        Engine {
            own,
            settings,
            judge,
            counts: Counts::new(own, settings.periods),
            penalties: Penalties::new(own, settings.max_tracked),
            ring: Ring::new([own]),
            known: 0,
            alive: 0,
            pending: HashMap::new(),
            next_id: 1,
            round: 0,
            warm_until_ms: 0,
            live: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: EngineStats::default(),
            standing: Standing::default(),
            clocks: Clocks::default(),
            started_ms: 0,
            starts: HashMap::new(),
            faults: VecDeque::new(),
            evidence: HashMap::new(),
            to_check: VecDeque::new(),
        }
    }

    /// When this node's process started: a new value tells peers it restarted.
    pub fn set_started(&mut self, started_ms: u64) {
        self.started_ms = started_ms;
    }

    pub fn standing(&self) -> &Standing {
        &self.standing
    }

    pub fn clocks(&self) -> &Clocks {
        &self.clocks
    }

    /// `member` passed on a revocation the mesh CA did not sign.
    pub fn forged_revocation(&mut self, member: Fingerprint, now_ms: u64) {
        self.caught(member, "passed on a revocation the CA did not sign", now_ms);
    }

    /// A member's bound reached or its word lost, since the last call.
    pub fn poll_fault(&mut self) -> Option<Fault> {
        self.faults.pop_front()
    }

    /// `member` was caught, for `why`: its standing falls, and with it goes
    /// its voice when it reaches nothing.
    fn caught(&mut self, member: Fingerprint, why: &'static str, now_ms: u64) {
        let silenced = self.standing.contradict(member, why, now_ms);
        if silenced {
            self.penalties.set_silenced(member, true);
        }
        self.faults.push_back(Fault { member, what: why, silenced });
    }

    fn corroborated(&mut self, member: Fingerprint) {
        self.standing.corroborate(member);
        if self.standing.weight(&member) > 0.0 {
            self.penalties.set_silenced(member, false);
        }
    }

    /// `member` was on the losing side of a disagreement between homes.
    fn outvoted(&mut self, member: Fingerprint, now_ms: u64) {
        let before = self.standing.weight(&member);
        self.standing.outvoted(member, now_ms);
        if before > 0.0 && self.standing.weight(&member) == 0.0 {
            self.penalties.set_silenced(member, true);
            self.faults.push_back(Fault {
                member,
                what: "verdicts outvoted by the other homes",
                silenced: true,
            });
        }
    }

    /// `view` with every peer's weight set from its standing.
    fn weighed(&self, mut view: BlockView) -> BlockView {
        for origin in view.origins.iter_mut().filter(|o| !o.is_self) {
            origin.weight = self.standing.weight(&origin.fingerprint);
        }
        view
    }

    /// Sets this node's fingerprint (known once the mesh's certificate is
    /// loaded): the origin of its own registers and penalties.
    pub fn set_own(&mut self, own: Fingerprint) {
        self.own = own;
        self.counts.set_own(own);
        self.penalties.set_own(own);
        self.ring = Ring::new(std::iter::once(own).chain(self.live.iter().copied()));
    }

    pub fn own(&self) -> Fingerprint {
        self.own
    }

    /// This node has just started: until `until_ms` (long enough for the
    /// members to notice it and send it their registers) it answers none of
    /// its own questions as a home while another home can.
    pub fn warm_until(&mut self, until_ms: u64) {
        self.warm_until_ms = until_ms;
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The share of each limit this node enforces: the share of the mesh it
    /// hears, `(1 + alive) / (1 + known)`, or all of it when it hears at
    /// least [`FULL_SHARE_AT`] — so a few nodes down do not cut every
    /// block's limit, and the parts of a split mesh still add up to at most
    /// 1.05 limits (1 on the side that hears 95 %, at most 0.05 on the other).
    pub fn share(&self) -> f64 {
        let heard = (1 + self.alive) as f64 / (1 + self.known) as f64;
        if heard >= FULL_SHARE_AT {
            1.0
        } else {
            heard
        }
    }

    /// The members that proved who they are, each live or not. Registers
    /// whose homes changed go to their new homes at once.
    pub fn set_members(&mut self, members: &[(Fingerprint, bool)], now_ms: u64) {
        self.known = members.len();
        self.live = members.iter().filter(|(_, alive)| *alive).map(|(fp, _)| *fp).collect();
        self.alive = self.live.len();
        let ring = Ring::new(std::iter::once(self.own).chain(self.live.iter().copied()));
        let old = std::mem::replace(&mut self.ring, ring);
        let mut rehomed: BTreeMap<Fingerprint, Vec<CountEntry>> = BTreeMap::new();
        for block in self.counts.own_blocks() {
            let before = old.homes(block);
            for home in self.ring.homes(block) {
                if home != self.own && !before.contains(&home) {
                    if let Some(entry) = self.counts.own_entry(block, now_ms) {
                        rehomed.entry(home).or_default().push(entry);
                    }
                }
            }
        }
        // At once, ahead of any question this node asks the new homes.
        for (home, entries) in rehomed {
            for frame in self.frames(now_ms, entries, vec![]) {
                self.transmits.push_back((home, frame));
            }
        }
    }

    /// A member left for good: its registers and penalties go.
    pub fn forget(&mut self, member: Fingerprint) -> (usize, usize) {
        self.clocks.forget(&member);
        self.starts.remove(&member);
        (self.counts.forget_origin(member), self.penalties.forget_origin(member))
    }

    /// A member was revoked: everything it said goes, and its standing with it.
    pub fn revoke(&mut self, member: Fingerprint) -> (usize, usize) {
        self.standing.forget(&member);
        self.forget(member)
    }

    /// A member went down: what it had open is decided where this node
    /// cannot hear.
    pub fn forget_open(&mut self, member: Fingerprint) {
        self.counts.forget_open(member);
    }

    /// The homes of `block`, primary first.
    pub fn homes(&self, block: WireBlock) -> Vec<Fingerprint> {
        self.ring.homes(block)
    }

    // ---- what the node does --------------------------------------------

    /// Counts a connection from `block`, and judges this node's own rate
    /// (the homes judge the mesh-wide one): a penalty if it is over.
    pub fn connection(&mut self, block: WireBlock, now_ms: u64) -> Option<Penalty> {
        self.counts.record(block, Kind::Connection, now_ms);
        let view = self.weighed(self.counts.view(block, now_ms));
        if self.judge.connection(&view, self.share()) {
            return None;
        }
        Some(self.penalise_over(block, &view, now_ms, "over the connection rate"))
    }

    /// Counts a recipient taken outside any transaction.
    pub fn record(&mut self, block: WireBlock, kind: Kind, now_ms: u64) {
        self.counts.record(block, kind, now_ms);
    }

    /// Reserves `recipients` more for this node's transaction `id`.
    pub fn reserve(&mut self, block: WireBlock, id: u32, recipients: u16, now_ms: u64) {
        self.counts.reserve(block, id, recipients, now_ms);
    }

    /// Gives back `recipients` reserved for transaction `id` (refused).
    pub fn release(&mut self, block: WireBlock, id: u32, recipients: u16, now_ms: u64) {
        self.counts.release(block, id, recipients, now_ms);
    }

    /// The end of DATA of transaction `id`; returns its seal time.
    pub fn seal(&mut self, block: WireBlock, id: u32, now_ms: u64) -> u64 {
        self.counts.seal(block, id, now_ms)
    }

    /// Closes transaction `id`, its recipients taken or not.
    pub fn settle(&mut self, block: WireBlock, id: u32, taken: bool, now_ms: u64) {
        self.counts.settle(block, id, taken, now_ms);
    }

    /// Asks the homes of `block`; this node's own register goes with the
    /// question. The end of DATA asks both homes; RCPT and `Seen` the
    /// primary (a "no" at RCPT is put to the other home too).
    pub fn ask(&mut self, block: WireBlock, question: Question, now_ms: u64) -> Asked {
        let warming = now_ms < self.warm_until_ms;
        let homes: Vec<Fingerprint> =
            self.ring.homes(block).into_iter().filter(|&h| !(warming && h == self.own)).collect();
        let wanted = if matches!(question, Question::Sealed { .. }) { 2 } else { 1 };
        let id = self.next_id;
        self.next_id += 1;
        let mut pending = Pending {
            block,
            question,
            tried: vec![],
            waiting: vec![],
            opinions: vec![],
            deadline_ms: now_ms + self.settings.ask_timeout_ms,
            about: None,
        };
        let asked: Vec<Fingerprint> = homes.iter().take(wanted).copied().collect();
        for &home in &asked {
            self.put_to(&mut pending, id, home, now_ms);
        }
        // The homes not asked get the register at once too, so that one of
        // them taking over from a crashed primary, or deciding between two
        // that disagree, knows every reservation the others knew.
        self.spread_register(block, &asked, now_ms);
        if pending.waiting.is_empty() {
            self.stats.answered_here += 1;
            return Asked::Now(self.conclude(pending, now_ms));
        }
        self.stats.asked_away += 1;
        self.pending.insert(id, pending);
        Asked::Later(id)
    }

    /// Puts question `id` to `home`: judged at once when it is this node.
    fn put_to(&mut self, pending: &mut Pending, id: u64, home: Fingerprint, now_ms: u64) {
        pending.tried.push(home);
        if home == self.own {
            let yes = self.verdict(self.own, pending.block, pending.question, now_ms);
            if !yes {
                self.remember(pending.block, now_ms);
            }
            pending.opinions.push((home, yes));
        } else {
            self.send_ask(home, id, pending.block, pending.question, now_ms);
            pending.waiting.push(home);
        }
    }

    /// Judges `question` here, with what this node holds (no mesh, or no
    /// home answering).
    pub fn answer_alone(&mut self, block: WireBlock, question: Question, now_ms: u64) -> Answer {
        self.stats.judged_alone += 1;
        let yes = self.verdict(self.own, block, question, now_ms);
        Answer { alone: true, ..self.settle_verdict(block, question, yes, true, now_ms) }
    }

    /// The asker's own answer from what the homes said. All agreeing: so
    /// be it, and each is borne out. Disagreeing (every home asked): the
    /// side whose words weigh more wins, the other is outvoted, and "no"
    /// wins a tie; only a "no" from more than one home, or from the one
    /// home heard, penalises the block. A "yes" while this node's own
    /// register alone is over is a lie shown.
    fn conclude(&mut self, pending: Pending, now_ms: u64) -> Answer {
        let Pending { block, question, opinions, .. } = pending;
        let heard = opinions.iter().any(|(fp, _)| *fp == self.own || self.standing.weight(fp) > 0.0);
        if !heard {
            return self.answer_alone(block, question, now_ms);
        }
        let (for_yes, for_no) = self.tally_votes(&opinions);
        let noes = opinions.iter().filter(|(_, y)| !*y).count();
        let mut yes = for_yes > for_no;
        let unanimous = noes == 0 || noes == opinions.len();
        if unanimous {
            if opinions.len() > 1 {
                for (fp, _) in &opinions {
                    if *fp != self.own {
                        self.corroborated(*fp);
                    }
                }
            }
        } else {
            self.stats.disputes += 1;
            for (fp, said) in &opinions {
                if *fp == self.own {
                    continue;
                }
                if *said == yes {
                    self.corroborated(*fp);
                } else {
                    self.outvoted(*fp, now_ms);
                }
            }
        }
        let corroborated = !yes && for_no > 0.0 && (noes > 1 || opinions.len() == 1);
        if yes && question != Question::Seen && !self.own_register_within(block, question, now_ms) {
            for (fp, said) in &opinions {
                if *said && *fp != self.own {
                    self.caught(*fp, "said yes over the asker's own count", now_ms);
                }
            }
            yes = false;
        }
        self.settle_verdict(block, question, yes, corroborated, now_ms)
    }

    /// The weight of the homes that said yes, and of those that said no
    /// (this node's own word whole, each member's by its standing).
    fn tally_votes(&self, opinions: &[(Fingerprint, bool)]) -> (f64, f64) {
        let weight = |fp: &Fingerprint| if *fp == self.own { 1.0 } else { self.standing.weight(fp) };
        let side = |said: bool| opinions.iter().filter(|(_, y)| *y == said).map(|(fp, _)| weight(fp)).sum();
        (side(true), side(false))
    }

    /// The answer to give the node: over the limit, the block is penalised
    /// on this node's own evidence when the "no" was not disputed.
    fn settle_verdict(
        &mut self,
        block: WireBlock,
        question: Question,
        yes: bool,
        corroborated: bool,
        now_ms: u64,
    ) -> Answer {
        if !yes && corroborated && question != Question::Seen {
            let view = self.weighed(self.counts.view(block, now_ms));
            self.penalise_over(block, &view, now_ms, over_limit(question));
        }
        Answer { yes, penalty: self.penalties.active(block, now_ms), alone: false }
    }

    /// Does what this node holds, as a home of `block`, bear out a penalty
    /// on it (`Some(true)`: it found the block over a limit or unseen at a
    /// trap lately, or the counts are near a limit), contradict one
    /// (`Some(false)`: the block came through lately, well within), or
    /// neither?
    fn penalty_evidence(&self, block: WireBlock, now_ms: u64) -> Option<bool> {
        let remembered = self.evidence.get(&block).is_some_and(|at| at + STRIKE_MEMORY_MS > now_ms);
        if remembered {
            return Some(true);
        }
        let view = self.weighed(self.counts.view_as(block, None, now_ms));
        self.judge.penalty_borne_out(&view, self.share())
    }

    /// Remembers that this node, as a home, found `block` over a limit (or unseen).
    fn remember(&mut self, block: WireBlock, now_ms: u64) {
        if self.evidence.len() >= MAX_EVIDENCE && !self.evidence.contains_key(&block) {
            let mut times: Vec<u64> = self.evidence.values().copied().collect();
            let middle = times.len() / 2;
            let cut = *times.select_nth_unstable(middle).1;
            self.evidence.retain(|_, at| *at > cut);
        }
        self.evidence.insert(block, now_ms);
    }

    /// Is this node's own register for `block`, alone, within the whole limit?
    fn own_register_within(&self, block: WireBlock, question: Question, now_ms: u64) -> bool {
        let mut view = self.counts.view(block, now_ms);
        view.origins.retain(|o| o.is_self);
        match question {
            Question::Recipient => self.judge.recipient(&view, 1.0),
            Question::Sealed { id } => self.judge.sealed(&view, 1.0, self.own, id),
            Question::Seen | Question::Penalty => true,
        }
    }

    /// Asks `home`, this node's register for the block riding along.
    fn send_ask(&mut self, home: Fingerprint, id: u64, block: WireBlock, question: Question, now_ms: u64) {
        let entry = self.counts.own_entry(block, now_ms);
        let ask = Ask { id, base_ms: now_ms, block, question, entry };
        self.transmits.push_back((home, Frame::Ask(ask)));
    }

    /// Sends this node's register for `block` to its homes other than
    /// `asked` (whose question carries it) and this node.
    fn spread_register(&mut self, block: WireBlock, asked: &[Fingerprint], now_ms: u64) {
        let entry = self.counts.own_entry(block, now_ms);
        for other in self.ring.homes(block) {
            if !asked.contains(&other) && other != self.own {
                let entries = entry.clone().into_iter().collect();
                let copy = CountsFrame {
                    round: self.round,
                    started_ms: self.started_ms,
                    base_ms: now_ms,
                    entries,
                    penalties: vec![],
                };
                self.transmits.push_back((other, Frame::Counts(copy)));
            }
        }
    }

    /// Judges `question` about `block` for `asker` with every register
    /// held, each peer's weighed by its standing. It penalises nothing: the
    /// asker does, on its own evidence, once the homes have said "no".
    fn verdict(&mut self, asker: Fingerprint, block: WireBlock, question: Question, now_ms: u64) -> bool {
        let view = self.weighed(self.counts.view_as(block, Some(asker), now_ms));
        let share = self.share();
        match question {
            Question::Recipient => self.judge.recipient(&view, share),
            Question::Sealed { id } => self.judge.sealed(&view, share, asker, id),
            Question::Seen => self.judge.seen(&view),
            Question::Penalty => self.penalty_evidence(block, now_ms) == Some(true),
        }
    }

    /// Penalises a block found over a limit (a penalty in force stays as it
    /// is), for at most `penalty_max` from now.
    fn penalise_over(
        &mut self,
        block: WireBlock,
        view: &BlockView,
        now_ms: u64,
        why: &'static str,
    ) -> Penalty {
        let last = self.penalties.last(block);
        let mut next = self.judge.penalty(last, view, self.share(), now_ms);
        if last == Some(next) {
            return next;
        }
        next.until_ms = next.until_ms.min(now_ms.saturating_add(self.settings.peer_bounds.penalty_max_ms));
        let held = self.penalties.extend(block, next.until_ms, next.strikes);
        self.events.push_back(Event::Penalised { block, penalty: held, why });
        held
    }

    /// Penalises `block` until at least `until_ms` (a trap hit), as this
    /// node's own; told to every member with the next round.
    pub fn penalise(&mut self, block: WireBlock, until_ms: u64, strikes: u8) -> Penalty {
        self.penalties.extend(block, until_ms, strikes)
    }

    pub fn penalty(&self, block: WireBlock, now_ms: u64) -> Option<Penalty> {
        self.penalties.active(block, now_ms)
    }

    pub fn last_penalty(&self, block: WireBlock) -> Option<Penalty> {
        self.penalties.last(block)
    }

    // ---- what peers send -----------------------------------------------

    /// Takes in a frame from `from` (authenticated by its certificate).
    pub fn handle(&mut self, from: Fingerprint, frame: Frame, now_ms: u64) {
        let their_ms = match &frame {
            Frame::Swim(_) | Frame::Revoked(_) => return,
            Frame::Counts(counts) => counts.base_ms,
            Frame::Ask(ask) => ask.base_ms,
            Frame::Answer(answer) => answer.at_ms,
        };
        let Some(offset) = self.clocks.sample(from, their_ms, now_ms) else {
            self.stats.clock_refused += 1;
            self.caught(from, "clock over an hour off", now_ms);
            return;
        };
        if self.counts.origin(from).is_some() {
            self.counts.set_offset(from, offset);
        }
        match frame {
            Frame::Swim(_) | Frame::Revoked(_) => {}
            Frame::Counts(counts) => self.take_counts(from, counts, now_ms),
            Frame::Ask(ask) => self.answer_for(from, ask, now_ms),
            Frame::Answer(reply) => self.take_answer(from, reply, now_ms),
        }
    }

    /// A member's question about a block this node is a home of.
    fn answer_for(&mut self, from: Fingerprint, ask: Ask, now_ms: u64) {
        if let Some(entry) = &ask.entry {
            if entry.block != ask.block || !self.merge(from, ask.base_ms, entry, now_ms) {
                return;
            }
        }
        self.stats.answered_for_others += 1;
        // Just started, this node holds too little to judge: the next home will.
        let mut unsure = now_ms < self.warm_until_ms && ask.question != Question::Seen;
        let yes = if ask.question == Question::Penalty {
            let evidence = self.penalty_evidence(ask.block, now_ms);
            unsure = evidence.is_none();
            evidence == Some(true)
        } else {
            !unsure && self.verdict(from, ask.block, ask.question, now_ms)
        };
        if !yes && !unsure {
            self.home_found_over(ask.block, ask.question, now_ms);
        }
        // (A penalty check's answer carries none: it would start a check of its own.)
        let carried =
            (ask.question != Question::Penalty).then(|| self.penalties.active(ask.block, now_ms)).flatten();
        let penalty =
            carried.map(|p| PenaltyEntry { block: ask.block, until_ms: p.until_ms, strikes: p.strikes });
        let reply = WireAnswer { id: ask.id, at_ms: now_ms, yes, unsure, penalty };
        self.transmits.push_back((from, Frame::Answer(reply)));
    }

    /// As a home, this node said "no" (or "not seen"): it remembers, and
    /// penalises the block itself when it is over with every origin capped
    /// (so one home that tells the truth stops a block whose other homes lie).
    fn home_found_over(&mut self, block: WireBlock, question: Question, now_ms: u64) {
        match question {
            Question::Seen => self.remember(block, now_ms),
            Question::Recipient | Question::Sealed { .. } => {
                self.remember(block, now_ms);
                let view = self.weighed(self.counts.view_as(block, None, now_ms));
                if self.penalties.active(block, now_ms).is_none()
                    && !self.judge.recipient(&view, self.share())
                {
                    self.penalise_over(block, &view, now_ms, "over the recipient limit, as a home");
                }
            }
            Question::Penalty => {}
        }
    }

    /// A home's answer to one of this node's questions.
    fn take_answer(&mut self, from: Fingerprint, reply: WireAnswer, now_ms: u64) {
        // Only a home asked and not yet heard may answer.
        let Some(pending) = self.pending.get_mut(&reply.id) else { return };
        let Some(at) = pending.waiting.iter().position(|h| *h == from) else { return };
        pending.waiting.swap_remove(at);
        let block = pending.block;
        if reply.unsure && pending.about.is_some() {
            // A home that can neither bear out nor contradict a penalty.
        } else if reply.unsure {
            self.next_home(reply.id, now_ms);
        } else {
            pending.opinions.push((from, reply.yes));
            if let Some(penalty) = reply.penalty.filter(|p| p.block == block) {
                self.take_penalty(from, &penalty, now_ms);
            }
        }
        self.advance(reply.id, now_ms);
    }

    /// Asks the next home not asked yet for question `id`, if there is one.
    fn next_home(&mut self, id: u64, now_ms: u64) -> bool {
        let Some(mut pending) = self.pending.remove(&id) else { return false };
        let next = self.ring.homes(pending.block).into_iter().find(|h| !pending.tried.contains(h));
        let asked = match next {
            Some(home) => {
                pending.deadline_ms = now_ms + self.settings.ask_timeout_ms;
                self.put_to(&mut pending, id, home, now_ms);
                true
            }
            None => false,
        };
        self.pending.insert(id, pending);
        asked
    }

    /// Once every home asked has answered (or timed out): no answer at
    /// all, a lone "no" at RCPT, or homes that disagree send the question
    /// to the next home; then the answers are concluded.
    fn advance(&mut self, id: u64, now_ms: u64) {
        loop {
            let Some(pending) = self.pending.get(&id) else { return };
            if !pending.waiting.is_empty() {
                return;
            }
            if let Some((imposer, tries)) = pending.about {
                // (A home too slow to check a penalty counts as one that cannot tell.)
                let pending = self.pending.remove(&id).expect("still pending");
                self.penalty_checked(imposer, &pending, tries, now_ms);
                return;
            }
            let yes = pending.opinions.iter().any(|(_, y)| *y);
            let no = pending.opinions.iter().any(|(_, y)| !*y);
            let lone_no = pending.question == Question::Recipient
                && pending.opinions.len() == 1
                && no
                && pending.opinions[0].0 != self.own;
            // Words that weigh nothing are no answer.
            let heard =
                pending.opinions.iter().any(|(fp, _)| *fp == self.own || self.standing.weight(fp) > 0.0);
            let more = !heard || lone_no || (yes && no);
            if more && self.next_home(id, now_ms) {
                continue;
            }
            let pending = self.pending.remove(&id).expect("still pending");
            let answer = self.conclude(pending, now_ms);
            self.events.push_back(Event::Answer { id, answer });
            return;
        }
    }

    /// The homes of a block said whether `imposer`'s penalty on it is borne
    /// out: the side whose words weigh more wins. Borne out, it is in
    /// force; contradicted, it goes and the imposer is outvoted; neither
    /// (no home can tell), it is held but not in force.
    fn penalty_checked(&mut self, imposer: Fingerprint, pending: &Pending, tries: u8, now_ms: u64) {
        let (borne, contra) = self.tally_votes(&pending.opinions);
        if borne > contra {
            self.penalties.confirm(imposer, pending.block);
            self.events.push_back(Event::Confirmed { block: pending.block, by: imposer });
            if imposer != self.own && !pending.opinions.iter().all(|(fp, _)| *fp == imposer) {
                self.corroborated(imposer);
            }
        } else if contra > borne {
            // The homes' views differ by what each has heard and whom it
            // believes, so a contradiction by them is a vote, not a proof.
            self.penalties.withdraw(imposer, pending.block);
            self.outvoted(imposer, now_ms);
        } else {
            // No home could tell: put it to them again a little later.
            if tries < 2 {
                let later = now_ms + 2 * self.settings.ask_timeout_ms;
                let at = self.to_check.partition_point(|c| c.0 <= later);
                self.to_check.insert(at, (later, imposer, pending.block, tries + 1));
            }
            return;
        }
        let won = borne > contra;
        for (fp, said) in &pending.opinions {
            if *said != won && *fp != self.own && *fp != imposer {
                self.outvoted(*fp, now_ms);
            }
        }
    }

    /// Puts `imposer`'s new penalty on `block` to the block's other homes:
    /// this node's own evidence when it is one, and the others are asked
    /// (the imposer's word, when it is a home, is what is checked).
    fn check_penalty(&mut self, imposer: Fingerprint, block: WireBlock, tries: u8, now_ms: u64) {
        let id = self.next_id;
        self.next_id += 1;
        let mut pending = Pending {
            block,
            question: Question::Penalty,
            tried: vec![],
            waiting: vec![],
            opinions: vec![],
            deadline_ms: now_ms + self.settings.ask_timeout_ms,
            about: Some((imposer, tries)),
        };
        for home in self.ring.homes(block) {
            pending.tried.push(home);
            if home == imposer {
                // Its own word is what is being checked.
                continue;
            } else if home == self.own {
                if let Some(borne) = self.penalty_evidence(block, now_ms) {
                    pending.opinions.push((home, borne));
                }
            } else {
                self.send_ask(home, id, block, Question::Penalty, now_ms);
                pending.waiting.push(home);
            }
        }
        if pending.waiting.is_empty() {
            self.penalty_checked(imposer, &pending, tries, now_ms);
        } else {
            self.pending.insert(id, pending);
        }
    }

    /// A penalty `from` imposed (its end on its clock): taken as far as
    /// its standing goes, and checked against the block's registers when
    /// this node is one of the block's homes.
    fn take_penalty(&mut self, from: Fingerprint, entry: &PenaltyEntry, now_ms: u64) {
        let local = PenaltyEntry { until_ms: self.clocks.local(&from, entry.until_ms), ..*entry };
        let weight = self.standing.weight(&from);
        match self.penalties.merge_from(from, &local, self.settings.peer_bounds, weight, now_ms) {
            Taken::Dropped => self.stats.dropped_penalties += 1,
            Taken::OverQuota => {
                self.stats.dropped_penalties += 1;
                self.faults.push_back(Fault {
                    member: from,
                    what: "penalties over its share of the table",
                    silenced: false,
                });
            }
            Taken::Changed => {
                self.to_check.push_back((now_ms, from, entry.block, 0));
            }
            Taken::Unchanged => {}
        }
    }

    fn take_counts(&mut self, from: Fingerprint, frame: CountsFrame, now_ms: u64) {
        if !self.believe_start(from, frame.started_ms, now_ms) {
            return;
        }
        for entry in &frame.entries {
            if !self.merge(from, frame.base_ms, entry, now_ms) {
                continue;
            }
            self.judge_as_home(entry.block, now_ms);
        }
        for penalty in &frame.penalties {
            self.take_penalty(from, penalty, now_ms);
        }
    }

    /// A register arrived at one of the block's homes: the home judges the
    /// mesh-wide rates with every origin capped, and penalises the block on
    /// its own counts when it is over without its largest contributor — so
    /// a block is stopped while any one of its homes tells the truth,
    /// whatever the others answer, and no one member's claim stops it.
    fn judge_as_home(&mut self, block: WireBlock, now_ms: u64) {
        if now_ms < self.warm_until_ms
            || self.penalties.active(block, now_ms).is_some()
            || !self.ring.homes(block).contains(&self.own)
        {
            return;
        }
        // Over even without its largest contributor: one member's claim
        // alone (true or inflated) does not make a home penalise a block.
        let view = without_largest(self.weighed(self.counts.view_as(block, None, now_ms)));
        let share = self.share();
        if !self.judge.connection(&view, share) {
            self.remember(block, now_ms);
            self.penalise_over(block, &view, now_ms, "over the connection rate, mesh-wide");
        } else if !self.judge.recipient(&view, share) {
            self.remember(block, now_ms);
            self.penalise_over(block, &view, now_ms, "over the recipient limit, as a home");
        }
    }

    /// A member's own word on when its process started: a new start retires
    /// its registers (its new process counts afresh), at most once per
    /// [`RESTART_EVERY_MS`]; a member claiming more is refused meanwhile.
    fn believe_start(&mut self, from: Fingerprint, started_ms: u64, now_ms: u64) -> bool {
        match self.starts.get(&from).copied() {
            None => {
                self.starts.insert(from, (started_ms, 0));
                true
            }
            Some((known, _)) if known == started_ms => true,
            Some((_, believed_ms)) if believed_ms > 0 && now_ms < believed_ms + RESTART_EVERY_MS => {
                self.stats.restarts_refused += 1;
                self.caught(from, "restarts too often", now_ms);
                false
            }
            Some(_) => {
                self.starts.insert(from, (started_ms, now_ms));
                self.counts.retire_origin(from);
                true
            }
        }
    }

    /// Merges one of `from`'s entries; false if it was nonsense.
    fn merge(&mut self, from: Fingerprint, base_ms: u64, entry: &CountEntry, now_ms: u64) -> bool {
        let Some(origin) = self.counts.origin(from) else { return false };
        if origin == SELF {
            return false;
        }
        self.counts.set_offset(from, self.clocks.offset(&from));
        if self.counts.merge(origin, base_ms, entry, now_ms) == Merged::Rejected {
            self.stats.rejected_entries += 1;
            self.caught(from, "implausible count", now_ms);
            return false;
        }
        true
    }

    // ---- rounds -----------------------------------------------------------

    /// One round: registers changed since the last go to their homes, new
    /// penalties to every live member; homes late to answer are replaced.
    pub fn tick(&mut self, now_ms: u64) {
        // In a fixed order (of members), so that runs of the simulator repeat.
        let mut to: BTreeMap<Fingerprint, Vec<CountEntry>> = BTreeMap::new();
        for entry in self.counts.take_changes(now_ms) {
            for home in self.ring.homes(entry.block) {
                if home != self.own {
                    to.entry(home).or_default().push(entry.clone());
                }
            }
        }
        let penalties = self.penalties.take_changes();
        if !penalties.is_empty() {
            for member in self.live.clone() {
                to.entry(member).or_default();
            }
        }
        for (member, entries) in to {
            for frame in self.frames(now_ms, entries, penalties.clone()) {
                self.transmits.push_back((member, frame));
            }
        }
        self.retry_late(now_ms);
        let due = self.to_check.iter().take_while(|c| c.0 <= now_ms).count();
        for (_, imposer, block, tries) in self.to_check.drain(..due).collect::<Vec<_>>() {
            self.check_penalty(imposer, block, tries, now_ms);
        }
    }

    /// Homes late to answer are given up on: the next home is asked, or
    /// the answers there are concluded, or this node judges alone.
    fn retry_late(&mut self, now_ms: u64) {
        let mut late: Vec<u64> =
            self.pending.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(&id, _)| id).collect();
        late.sort_unstable();
        for id in late {
            self.stats.timeouts += 1;
            let pending = self.pending.get_mut(&id).expect("listed");
            pending.waiting.clear();
            pending.deadline_ms = now_ms + self.settings.ask_timeout_ms;
            self.advance(id, now_ms);
        }
    }

    /// What a member that has just connected is told first: this node's
    /// registers it is home for, and this node's penalties.
    pub fn greeting(&self, to: Fingerprint, now_ms: u64) -> Vec<Frame> {
        let entries: Vec<CountEntry> = self
            .counts
            .own_blocks()
            .into_iter()
            .filter(|&block| self.ring.homes(block).contains(&to))
            .filter_map(|block| self.counts.own_entry(block, now_ms))
            .collect();
        let mut frames = self.frames_of(0, now_ms, entries, self.penalties.own(now_ms));
        frames.retain(|f| matches!(f, Frame::Counts(c) if !c.entries.is_empty() || !c.penalties.is_empty()));
        frames
    }

    /// `entries` and `penalties` in frames of about [`FRAME_BYTES`].
    fn frames(&mut self, now_ms: u64, entries: Vec<CountEntry>, penalties: Vec<PenaltyEntry>) -> Vec<Frame> {
        self.round += 1;
        self.frames_of(self.round, now_ms, entries, penalties)
    }

    fn frames_of(
        &self,
        round: u64,
        base_ms: u64,
        entries: Vec<CountEntry>,
        penalties: Vec<PenaltyEntry>,
    ) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut entries = entries.into_iter().peekable();
        let mut penalties = penalties.into_iter().peekable();
        loop {
            let (mut chunk, mut size) = (Vec::new(), 0);
            while let Some(entry) = entries.next_if(|_| size < FRAME_BYTES) {
                size += 32 + 16 * entry.open.len();
                chunk.push(entry);
            }
            let mut chunk_penalties = Vec::new();
            while let Some(penalty) = penalties.next_if(|_| size < FRAME_BYTES) {
                size += 24;
                chunk_penalties.push(penalty);
            }
            frames.push(Frame::Counts(CountsFrame {
                round,
                started_ms: self.started_ms,
                base_ms,
                entries: chunk,
                penalties: chunk_penalties,
            }));
            if entries.peek().is_none() && penalties.peek().is_none() {
                return frames;
            }
        }
    }

    /// The next frame to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(Fingerprint, Frame)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- state, for the node and its operators -----------------------------

    /// Every register held for `block`, this node's own uncapped.
    pub fn view(&self, block: WireBlock, now_ms: u64) -> BlockView {
        self.counts.view(block, now_ms)
    }

    /// The taken rates of `block` as this node holds them, each peer's at most `caps`.
    pub fn rate(&self, block: WireBlock, now_ms: u64, caps: crate::Caps) -> Rates {
        self.counts.rate(block, now_ms, caps)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn penalties(&self) -> &Penalties {
        &self.penalties
    }

    pub fn penalties_in_force(&self, now_ms: u64) -> Vec<PenaltyEntry> {
        self.penalties.in_force(now_ms)
    }

    pub fn penalties_to_save(&mut self, now_ms: u64) -> Option<Vec<StoredPenalty>> {
        self.penalties.unsaved(now_ms)
    }

    pub fn restore_penalties(&mut self, stored: &[StoredPenalty], revoked: &[Fingerprint]) -> usize {
        // (Restored penalties are this node's own record; their origins'
        // standing is measured afresh.)
        stored.iter().filter(|s| self.penalties.restore(s, revoked)).count()
    }

    /// Forgets what has decayed; sheds the weakest registers over the budget.
    pub fn sweep(&mut self, now_ms: u64) {
        self.counts.sweep(now_ms);
        while self.counts.len() > self.settings.max_tracked && self.counts.shed(now_ms) > 0 {}
        self.penalties.sweep(now_ms);
    }

    /// Bytes of the count and penalty tables (their allocations' size).
    pub fn table_bytes(&self) -> usize {
        self.counts.table_bytes() + self.penalties.table_bytes()
    }
}

/// `view` less the origin that adds the most to it (recipients, then connections).
fn without_largest(mut view: BlockView) -> BlockView {
    let load = |o: &crate::counts::OriginView| {
        o.taken.recipients
            + o.open.iter().map(|t| f64::from(t.recipients)).sum::<f64>()
            + o.taken.connections / 1e3
    };
    if let Some(at) =
        (0..view.origins.len()).max_by(|&a, &b| load(&view.origins[a]).total_cmp(&load(&view.origins[b])))
    {
        view.origins.swap_remove(at);
    }
    view
}

fn over_limit(question: Question) -> &'static str {
    match question {
        Question::Sealed { .. } => "over the recipient limit after the hold",
        _ => "over the recipient limit at RCPT",
    }
}

#[cfg(test)]
mod tests;
