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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use magicmx_proto::wire::{
    Answer as WireAnswer, Ask, CountEntry, Counts as CountsFrame, Frame, PenaltyEntry, Question, WireBlock,
};

use crate::counts::{BlockView, Counts, Fingerprint, Kind, Merged, Periods, Rates, SELF};
use crate::homes::Ring;
use crate::penalties::{PeerBounds, Penalties, Penalty, StoredPenalty, Taken};

/// Bytes of entries per frame (well under `MAX_FRAME`).
const FRAME_BYTES: usize = 1024 * 1024;

/// Hearing this share of the mesh, a node enforces whole limits.
pub const FULL_SHARE_AT: f64 = 0.95;

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
}

struct Pending {
    block: WireBlock,
    question: Question,
    /// Homes asked so far.
    tried: Vec<Fingerprint>,
    deadline_ms: u64,
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
        }
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
        (self.counts.forget_origin(member), self.penalties.forget_origin(member))
    }

    /// A member went down: what it had open is decided where this node
    /// cannot hear.
    pub fn forget_open(&mut self, member: Fingerprint) {
        self.counts.forget_open(member);
    }

    /// A member restarted: its new process counts afresh, and the counts of
    /// its old one stay (apart) until they decay.
    pub fn restarted(&mut self, member: Fingerprint) {
        self.counts.retire_origin(member);
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
        let view = self.counts.view(block, now_ms);
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

    /// Asks the home of `block`; this node's own register goes with the question.
    pub fn ask(&mut self, block: WireBlock, question: Question, now_ms: u64) -> Asked {
        let warming = now_ms < self.warm_until_ms;
        let homes = self.ring.homes(block);
        match homes.iter().find(|&&h| !(warming && h == self.own)) {
            Some(&home) if home != self.own => {
                let id = self.next_id;
                self.next_id += 1;
                self.send_ask(home, id, block, question, now_ms);
                let deadline_ms = now_ms + self.settings.ask_timeout_ms;
                self.pending.insert(id, Pending { block, question, tried: vec![home], deadline_ms });
                self.stats.asked_away += 1;
                Asked::Later(id)
            }
            _ => {
                self.stats.answered_here += 1;
                Asked::Now(self.decide(self.own, block, question, now_ms))
            }
        }
    }

    /// Judges `question` here, with what this node holds (no mesh, or no
    /// home answering).
    pub fn answer_alone(&mut self, block: WireBlock, question: Question, now_ms: u64) -> Answer {
        self.stats.judged_alone += 1;
        self.decide(self.own, block, question, now_ms)
    }

    /// Asks `home`; the other homes get the register at once too, so that
    /// one of them taking over from a crashed primary knows every
    /// reservation the primary knew.
    fn send_ask(&mut self, home: Fingerprint, id: u64, block: WireBlock, question: Question, now_ms: u64) {
        let entry = self.counts.own_entry(block, now_ms);
        for other in self.ring.homes(block) {
            if other != home && other != self.own {
                let entries = entry.clone().into_iter().collect();
                let copy = CountsFrame { round: self.round, base_ms: now_ms, entries, penalties: vec![] };
                self.transmits.push_back((other, Frame::Counts(copy)));
            }
        }
        let ask = Ask { id, base_ms: now_ms, block, question, entry };
        self.transmits.push_back((home, Frame::Ask(ask)));
    }

    /// Judges `question` about `block` for `asker` with every register held.
    /// Over the limit, this node penalises the block when the question is
    /// its own; a remote asker does so itself on hearing "no" (with its own
    /// register as evidence, bounded by every receiver like any peer's
    /// penalty), so no asker can make a home penalise a block on its word.
    fn decide(&mut self, asker: Fingerprint, block: WireBlock, question: Question, now_ms: u64) -> Answer {
        let view = self.counts.view_as(block, Some(asker), now_ms);
        let share = self.share();
        let yes = match question {
            Question::Recipient => self.judge.recipient(&view, share),
            Question::Sealed { id } => self.judge.sealed(&view, share, asker, id),
            Question::Seen => self.judge.seen(&view),
        };
        let penalty = match (yes, asker == self.own) {
            (false, true) if question != Question::Seen => {
                Some(self.penalise_over(block, &view, now_ms, over_limit(question)))
            }
            _ => self.penalties.active(block, now_ms),
        };
        Answer { yes, penalty }
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
        match frame {
            Frame::Swim(_) => {}
            Frame::Counts(counts) => self.take_counts(from, counts, now_ms),
            Frame::Ask(ask) => {
                if let Some(entry) = &ask.entry {
                    if entry.block != ask.block || !self.merge(from, ask.base_ms, entry) {
                        return;
                    }
                }
                let answer = self.decide(from, ask.block, ask.question, now_ms);
                self.stats.answered_for_others += 1;
                let penalty = answer.penalty.map(|p| PenaltyEntry {
                    block: ask.block,
                    until_ms: p.until_ms,
                    strikes: p.strikes,
                });
                let reply = WireAnswer { id: ask.id, yes: answer.yes, penalty };
                self.transmits.push_back((from, Frame::Answer(reply)));
            }
            Frame::Answer(reply) => {
                // Only the home last asked may answer.
                if !self.pending.get(&reply.id).is_some_and(|p| p.tried.last() == Some(&from)) {
                    return;
                }
                let pending = self.pending.remove(&reply.id).expect("just found");
                let bounds = self.settings.peer_bounds;
                if let Some(penalty) = reply.penalty.filter(|p| p.block == pending.block) {
                    self.penalties.merge_from(from, &penalty, bounds, now_ms);
                }
                if !reply.yes && pending.question != Question::Seen {
                    let view = self.counts.view(pending.block, now_ms);
                    self.penalise_over(pending.block, &view, now_ms, over_limit(pending.question));
                }
                let penalty = self.penalties.active(pending.block, now_ms);
                let answer = Answer { yes: reply.yes, penalty };
                self.events.push_back(Event::Answer { id: reply.id, answer });
            }
        }
    }

    fn take_counts(&mut self, from: Fingerprint, frame: CountsFrame, now_ms: u64) {
        for entry in &frame.entries {
            if !self.merge(from, frame.base_ms, entry) {
                continue;
            }
            // The primary home judges the mesh-wide connection rate.
            let primary = self.ring.homes(entry.block).first() == Some(&self.own);
            if primary && self.penalties.active(entry.block, now_ms).is_none() {
                let view = self.counts.view_as(entry.block, None, now_ms);
                if !self.judge.connection(&view, self.share()) {
                    self.penalise_over(entry.block, &view, now_ms, "over the connection rate, mesh-wide");
                }
            }
        }
        let bounds = self.settings.peer_bounds;
        for penalty in &frame.penalties {
            if self.penalties.merge_from(from, penalty, bounds, now_ms) == Taken::Dropped {
                self.stats.dropped_penalties += 1;
            }
        }
    }

    /// Merges one of `from`'s entries; false if it was nonsense.
    fn merge(&mut self, from: Fingerprint, base_ms: u64, entry: &CountEntry) -> bool {
        let Some(origin) = self.counts.origin(from) else { return false };
        if origin == SELF || self.counts.merge(origin, base_ms, entry) == Merged::Rejected {
            self.stats.rejected_entries += 1;
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
    }

    fn retry_late(&mut self, now_ms: u64) {
        let late: Vec<u64> =
            self.pending.iter().filter(|(_, p)| p.deadline_ms <= now_ms).map(|(&id, _)| id).collect();
        for id in late {
            self.stats.timeouts += 1;
            let mut pending = self.pending.remove(&id).expect("listed");
            let next = self.ring.homes(pending.block).into_iter().find(|h| !pending.tried.contains(h));
            match next {
                Some(home) if home != self.own => {
                    self.send_ask(home, id, pending.block, pending.question, now_ms);
                    pending.tried.push(home);
                    pending.deadline_ms = now_ms + self.settings.ask_timeout_ms;
                    self.pending.insert(id, pending);
                }
                _ => {
                    // No home answers: judge alone with what this node holds.
                    let answer = self.answer_alone(pending.block, pending.question, now_ms);
                    self.events.push_back(Event::Answer { id, answer });
                }
            }
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

fn over_limit(question: Question) -> &'static str {
    match question {
        Question::Sealed { .. } => "over the recipient limit after the hold",
        _ => "over the recipient limit at RCPT",
    }
}

#[cfg(test)]
mod tests;
