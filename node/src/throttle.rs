//! The throttle's shell around the tally and the `limits` arithmetic: it
//! counts, asks the block's home (through the mesh, or this node itself when
//! alone), imposes and logs penalties, and words refusals with `replies`.
//! The gate (`gate.rs`), RCPT (here), the hold (`hold.rs`) and the trap use
//! it; none of them does arithmetic of its own.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use magicmx_gossip::tally::block_text;
use magicmx_gossip::{Answer, Caps, Mesh, Penalty, Question, Tally};
use magicmx_proto::SourceBlock;
use tokio::sync::Notify;

use crate::clock::{Clock, Millis};
use crate::limits::Limits;
use crate::replies::{self, Refusal};
use crate::reservation::Reservation;

pub struct Throttle {
    limits: Arc<Limits>,
    prefixes: (u8, u8),
    tally: Arc<Tally>,
    mesh: Option<Mesh>,
    /// Woken when a penalty is imposed (to save penalties to disk).
    pub(crate) penalised: Arc<Notify>,
    next_transaction: AtomicU32,
    /// For transactions dropped undecided (a client gone mid-session).
    clock: Arc<dyn Clock>,
}

impl Throttle {
    /// The throttle over `tally`, whose judge is `limits`; penalties the
    /// tally imposes are logged and wake `penalised`.
    pub fn new(
        limits: Arc<Limits>,
        prefixes: (u8, u8),
        tally: Arc<Tally>,
        mesh: Option<Mesh>,
        clock: Arc<dyn Clock>,
    ) -> Throttle {
        let penalised = Arc::new(Notify::new());
        let wake = penalised.clone();
        tally.on_penalised(Box::new(move |block, penalty, why| {
            let block = block_text(block);
            tracing::info!(%block, reason = why, until = %replies::when(penalty.until_ms), strikes = penalty.strikes, "block penalised");
            wake.notify_one();
        }));
        Throttle { limits, prefixes, tally, mesh, penalised, next_transaction: AtomicU32::new(1), clock }
    }

    pub fn block_of(&self, ip: IpAddr) -> SourceBlock {
        SourceBlock::of(ip, self.prefixes.0, self.prefixes.1)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The most one peer's counts may add to a block.
    pub fn caps(&self) -> Caps {
        self.limits.caps()
    }

    /// The mesh, when this node is part of one.
    pub fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// The share of the mesh this node hears: 1 alone or with every peer up.
    pub fn share(&self) -> f64 {
        self.tally.share()
    }

    /// The penalty in force on `block`, if any.
    pub fn penalty(&self, block: SourceBlock, now_ms: u64) -> Option<Penalty> {
        self.tally.penalty(block, now_ms)
    }

    /// Counts a connection from `block`: the penalty if this node finds it
    /// over its connection rate (the block's homes judge the mesh-wide rate).
    pub(crate) fn connection(&self, block: SourceBlock, now_ms: u64) -> Option<Penalty> {
        self.tally.connection(block, now_ms)
    }

    /// Asks the block's home, or this node itself without a mesh.
    pub(crate) async fn ask(&self, block: SourceBlock, question: Question, now_ms: u64) -> Answer {
        match &self.mesh {
            Some(mesh) => mesh.ask(block, question).await,
            // Without a mesh, this node is the whole mesh.
            None => Answer { alone: false, ..self.tally.answer_alone(block, question, now_ms) },
        }
    }

    /// Whether this node's answers can speak for the whole mesh now: no
    /// mesh, or every member it knows (ghosts too) heard lately.
    pub(crate) fn hears_whole_mesh(&self) -> bool {
        self.mesh.as_ref().is_none_or(|mesh| {
            let (alive, known) = mesh.heard_share();
            alive == known
        })
    }

    /// A new transaction from `ip`: nothing reserved yet.
    pub(crate) fn transaction(&self, ip: IpAddr) -> Reservation {
        let id = self.next_transaction.fetch_add(1, Ordering::Relaxed);
        Reservation::new(self.tally.clone(), self.block_of(ip), id, self.clock.clone())
    }

    /// RCPT: reserves one more recipient and asks the block's home whether
    /// it fits the mesh-wide limit; if not, it is given back and refused
    /// (the home has penalised the block, unless it was already).
    pub(crate) async fn recipient(
        &self,
        transaction: &mut Reservation,
        now_ms: Millis,
    ) -> Result<(), Refusal> {
        transaction.add(now_ms);
        let answer = self.ask(transaction.block(), Question::Recipient, now_ms).await;
        if answer.yes {
            return Ok(());
        }
        transaction.give_back_one(now_ms);
        let (limit, until_ms) = self.over_limit(answer, now_ms);
        Err(Refusal::OverLimit { block: transaction.block(), limit, until_ms })
    }

    /// Over the limit: the limit this node enforces, and when to come back.
    pub(crate) fn over_limit(&self, answer: Answer, now_ms: Millis) -> (f64, Millis) {
        let limit = self.limits.recipients(self.share());
        let until_ms = answer.penalty.map_or(now_ms, |p| p.until_ms);
        self.penalised.notify_one();
        (limit, until_ms)
    }

    /// Penalises `block` for exactly `length` from now (a trap hit).
    pub(crate) fn penalise_for(
        &self,
        block: SourceBlock,
        now_ms: u64,
        length: std::time::Duration,
        why: &str,
    ) -> Penalty {
        let strikes = self.tally.last_penalty(block).map_or(0, |p| p.strikes).saturating_add(1);
        let held = self.tally.penalise(block, now_ms + length.as_millis() as u64, strikes);
        tracing::info!(%block, reason = why, until = %replies::when(held.until_ms), strikes = held.strikes, "block penalised");
        self.penalised.notify_one();
        held
    }
}
