//! The throttle's shell around the `limits` arithmetic: it reads the
//! block's registers from the tally (shared with the mesh), counts, asks
//! `limits` for a verdict, imposes and logs penalties, and words refusals
//! with `replies`. The gate (`gate.rs`), RCPT (here) and the hold
//! (`hold.rs`) use it; none of them does arithmetic of its own.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magicmx_gossip::counts::{BlockView, Fingerprint};
use magicmx_gossip::{Caps, Kind, Mesh, Penalty, Tally};
use magicmx_proto::smtp::Reply;
use magicmx_proto::SourceBlock;
use tokio::sync::Notify;

use crate::limits::{Limits, Verdict};
use crate::replies;
use crate::reservation::Reservation;

pub struct Throttle {
    limits: Limits,
    /// The longest end-of-DATA wait for the mesh's round.
    hold: Duration,
    prefixes: (u8, u8),
    tally: Arc<Tally>,
    mesh: Option<Mesh>,
    /// Woken when a penalty is imposed (to save penalties to disk).
    pub(crate) penalised: Notify,
    next_transaction: AtomicU32,
}

impl Throttle {
    pub fn new(
        limits: Limits,
        hold: Duration,
        prefixes: (u8, u8),
        tally: Arc<Tally>,
        mesh: Option<Mesh>,
    ) -> Throttle {
        Throttle {
            limits,
            hold,
            prefixes,
            tally,
            mesh,
            penalised: Notify::new(),
            next_transaction: AtomicU32::new(1),
        }
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

    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    pub(crate) fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    pub(crate) fn hold_timeout(&self) -> Duration {
        self.hold
    }

    /// This node's fingerprint in the counts (all zeroes without a mesh).
    pub(crate) fn own_fingerprint(&self) -> Fingerprint {
        self.mesh.as_ref().map_or([0; 16], Mesh::fingerprint)
    }

    /// The share of the mesh this node hears: 1 alone or with every peer up.
    pub fn share(&self) -> f64 {
        match &self.mesh {
            Some(mesh) => {
                let (alive, known) = mesh.heard_share();
                (1 + alive) as f64 / (1 + known) as f64
            }
            None => 1.0,
        }
    }

    pub fn view(&self, block: SourceBlock, now_ms: u64) -> BlockView {
        self.tally.view(block, now_ms)
    }

    /// The penalty in force on `block`, if any.
    pub fn penalty(&self, block: SourceBlock, now_ms: u64) -> Option<Penalty> {
        self.tally.penalty(block, now_ms)
    }

    /// Counts a connection from `block`; its verdict on the connection rate.
    pub(crate) fn connection(&self, block: SourceBlock, now_ms: u64) -> Verdict {
        self.tally.record(block, Kind::Connection, now_ms);
        self.limits.connection(&self.view(block, now_ms), self.share())
    }

    /// A new transaction from `ip`: nothing reserved yet.
    pub(crate) fn transaction(&self, ip: IpAddr) -> Reservation {
        let id = self.next_transaction.fetch_add(1, Ordering::Relaxed);
        Reservation::new(self.tally.clone(), self.block_of(ip), id)
    }

    /// RCPT: reserves one more recipient for the transaction if it fits the
    /// block's mesh-wide limit; otherwise the block is penalised (unless it
    /// is already) and the recipient refused, without counting.
    pub(crate) fn recipient(&self, transaction: &mut Reservation, now_ms: u64) -> Option<Reply> {
        let block = transaction.block();
        match self.limits.recipient(&self.view(block, now_ms), self.share()) {
            Verdict::Within => {
                transaction.add(now_ms);
                None
            }
            Verdict::Over => Some(self.over_limit(block, now_ms, "at RCPT")),
        }
    }

    /// The block is over its recipient limit: penalised, and the refusal.
    pub(crate) fn over_limit(&self, block: SourceBlock, now_ms: u64, when: &str) -> Reply {
        let limit = self.limits.recipients(self.share());
        let penalty = self.penalise(block, now_ms, &format!("over {limit:.0} recipients an hour {when}"));
        replies::over_recipient_limit(block, limit, penalty.until_ms)
    }

    /// Penalises `block` for going over a limit (see `limits::penalty`): a
    /// penalty in force is returned as it is.
    pub(crate) fn penalise(&self, block: SourceBlock, now_ms: u64, why: &str) -> Penalty {
        let last = self.tally.last_penalty(block);
        let next = self.limits.next_penalty(last, &self.view(block, now_ms), self.share(), now_ms);
        if last == Some(next) {
            return next;
        }
        self.impose(block, next, why)
    }

    /// Penalises `block` for exactly `length` from now (a trap hit).
    pub(crate) fn penalise_for(
        &self,
        block: SourceBlock,
        now_ms: u64,
        length: Duration,
        why: &str,
    ) -> Penalty {
        let strikes = self.tally.last_penalty(block).map_or(0, |p| p.strikes).saturating_add(1);
        let penalty = Penalty { until_ms: now_ms + length.as_millis() as u64, strikes };
        self.impose(block, penalty, why)
    }

    fn impose(&self, block: SourceBlock, penalty: Penalty, why: &str) -> Penalty {
        let held = self.tally.penalise(block, penalty.until_ms, penalty.strikes);
        tracing::info!(%block, reason = why, until = %replies::when(held.until_ms), strikes = held.strikes, "block penalised");
        self.penalised.notify_one();
        held
    }
}
