//! A transaction's recipients, reserved in this node's register from its
//! first accepted RCPT until the hold's verdict: while open they count
//! against the block at its homes, and once settled they are taken (250) or
//! forgotten (refused, or the client left). Dropped undecided, it is forgotten.

use std::sync::Arc;

use magicmx_gossip::Tally;
use magicmx_proto::SourceBlock;

use crate::clock::Clock;

pub(crate) struct Reservation {
    tally: Arc<Tally>,
    block: SourceBlock,
    id: u32,
    recipients: u16,
    settled: bool,
    /// For a transaction dropped undecided.
    clock: Arc<dyn Clock>,
}

impl Reservation {
    pub(crate) fn new(tally: Arc<Tally>, block: SourceBlock, id: u32, clock: Arc<dyn Clock>) -> Reservation {
        Reservation { tally, block, id, recipients: 0, settled: false, clock }
    }

    pub(crate) fn block(&self) -> SourceBlock {
        self.block
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Recipients reserved so far.
    pub(crate) fn recipients(&self) -> u16 {
        self.recipients
    }

    /// Reserves one more recipient.
    pub(crate) fn add(&mut self, now_ms: u64) {
        self.tally.reserve(self.block, self.id, 1, now_ms);
        self.recipients += 1;
    }

    /// Gives back the recipient just reserved (it was refused).
    pub(crate) fn give_back_one(&mut self, now_ms: u64) {
        if self.recipients > 0 {
            self.tally.release(self.block, self.id, 1, now_ms);
            self.recipients -= 1;
        }
    }

    /// The end of DATA: from now on the transaction waits for its verdict,
    /// ordered by the returned time.
    pub(crate) fn seal(&mut self, now_ms: u64) -> u64 {
        self.tally.seal(self.block, self.id, now_ms)
    }

    /// The verdict: its recipients taken, or not.
    pub(crate) fn settle(mut self, taken: bool, now_ms: u64) {
        self.close(taken, now_ms);
    }

    fn close(&mut self, taken: bool, now_ms: u64) {
        if !self.settled && self.recipients > 0 {
            self.tally.settle(self.block, self.id, taken, now_ms);
        }
        self.settled = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.close(false, self.clock.now());
    }
}
