//! The senders of a run and their messages. Three kinds of source block:
//! person-to-person (most: a few messages an hour, each to one recipient,
//! to whichever node DNS names), spraying (spam: many messages a second,
//! each to a random node, never retried), and blocks that use their limit
//! (a mailing host: exactly its hourly limit in the window, spread over the
//! nodes). Every message of a legitimate sender that is deferred is tried
//! again as a sending MTA does, after a backoff, at a node picked anew.

use magicmx_proto::wire::WireBlock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    PersonToPerson,
    Spraying,
    LimitUser,
}

impl Sender {
    pub fn is_legitimate(self) -> bool {
        self != Sender::Spraying
    }
}

/// The blocks of a run: spraying ones first, then the limit users, then the
/// person-to-person ones.
pub struct Blocks {
    pub heavy: usize,
    pub limit_users: usize,
    pub total: usize,
}

impl Blocks {
    pub fn new(total: usize, heavy: usize, limit_users: usize) -> Blocks {
        Blocks { heavy, limit_users, total }
    }

    pub fn sender(&self, block: usize) -> Sender {
        if block < self.heavy {
            Sender::Spraying
        } else if block < self.heavy + self.limit_users {
            Sender::LimitUser
        } else {
            Sender::PersonToPerson
        }
    }

    /// Block `n` as the wire names it: 10.0.0.0/24, 10.0.1.0/24, ... (then
    /// 11.0.0.0/24 past 65,536 blocks, and so on).
    pub fn wire(&self, block: usize) -> WireBlock {
        WireBlock { net: 0x0A00_0000 + ((block as u64) << 8), prefix: 24 }
    }
}

/// One message and what became of it.
#[derive(Debug, Clone)]
pub struct Message {
    pub block: u32,
    /// Recipients still to deliver.
    pub left: u16,
    pub delivered: u16,
    pub attempts: u16,
    /// Sent in the measured window (counted in the report).
    pub measured: bool,
}

/// When a sending MTA tries a deferred message again: a minute, then
/// doubling, at most five (Postfix's backoff, shortened to fit the drain).
pub fn retry_after_ms(attempts: u16) -> u64 {
    60_000u64.saturating_mul(1 << attempts.min(3).saturating_sub(1)).min(300_000)
}
