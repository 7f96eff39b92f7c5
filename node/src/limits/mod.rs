//! The throttle's arithmetic, with no clock, socket or log of its own: how
//! much of its limits a source block has used mesh-wide, whether one more
//! recipient or connection fits, which of the transactions waiting at the
//! end of DATA are taken (in the same order on every node), how long a
//! penalty lasts, and when a sender told to come back will be taken.
//!
//! Its inputs are a [`BlockView`] (every origin's register for the block, as
//! the block's home holds them), the share of the mesh that node hears, and
//! the time, all from the caller. The mesh's engine applies it at a block's
//! home through [`magicmx_gossip::Judge`] (`judge.rs`); `gate.rs`,
//! `throttle.rs` and `hold.rs` are the thin shells that ask, log, and word
//! the replies. Like governor's GCRA it answers with a verdict, and a
//! penalty's end is its "not until".

mod admission;
mod judge;
mod penalty;
mod usage;

use std::time::Duration;

use magicmx_gossip::counts::{BlockView, Caps, Periods};

pub use admission::TxnId;
pub use usage::Usage;

/// Whether what was asked for fits within the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Within,
    Over,
}

/// The limits of one source block, mesh-wide.
#[derive(Debug, Clone)]
pub struct Limits {
    pub recipients_per_hour: f64,
    pub connections_per_minute: f64,
    /// A first penalty; each one after a penalty has ended doubles, up to `penalty_max`.
    pub penalty: Duration,
    pub penalty_max: Duration,
    /// A penalty lasts at least until a message to this many recipients
    /// fits again (at most half the limit), so that "come back after T" is true.
    pub comeback_recipients: f64,
    /// The most of a limit one peer's counts may make up. Below 1, one
    /// hostile peer cannot lock a block out; a block spraying one node full
    /// and then another gets at most `2 - peer_share` of its limit.
    pub peer_share: f64,
    /// The time constants of the decaying rates (an hour and a minute).
    pub periods: Periods,
}

impl Limits {
    /// The recipient limit at a node that hears `share` of the mesh (1 alone
    /// or with every peer up; a split mesh's parts add up to one limit).
    pub fn recipients(&self, share: f64) -> f64 {
        self.recipients_per_hour * share
    }

    pub fn connections(&self, share: f64) -> f64 {
        self.connections_per_minute * share
    }

    /// The most one peer's counts may add to a block.
    pub fn caps(&self) -> Caps {
        Caps {
            recipients: self.recipients_per_hour * self.peer_share,
            connections: self.connections_per_minute * self.peer_share,
        }
    }

    /// What `view` adds up to: taken and reserved recipients, and connections.
    pub fn usage(&self, view: &BlockView) -> Usage {
        Usage::of(view, self.caps())
    }

    /// May one more recipient be reserved? (The view holds what the
    /// transaction has reserved so far, not the one asked for.)
    pub fn recipient(&self, view: &BlockView, share: f64) -> Verdict {
        within(self.usage(view).recipients + 1.0, self.recipients(share))
    }

    /// Is the block within its connection rate? (The view holds the
    /// connection being judged.)
    pub fn connection(&self, view: &BlockView, share: f64) -> Verdict {
        within(self.usage(view).connections, self.connections(share))
    }
}

impl Limits {
    /// A peer penalised the block; this node, one of its homes, holds every
    /// register for it. Near a limit (80 %), the penalty is borne out. A
    /// block that came through the mesh lately and used less than half of
    /// each limit was not over anything, and no trap penalises a block that
    /// comes through the mesh: the penalty is contradicted. Otherwise (a
    /// trap hit by a block the mesh has not seen) neither.
    pub fn bears_out_penalty(&self, view: &BlockView, share: f64) -> Option<bool> {
        let usage = self.usage(view);
        let (recipients, connections) = (self.recipients(share), self.connections(share));
        if usage.recipients + 1.0 >= recipients * 0.8 || usage.connections + 1.0 >= connections * 0.8 {
            Some(true)
        } else if came_through_the_mesh(view)
            && usage.recipients < recipients / 2.0
            && usage.connections < connections / 2.0
        {
            Some(false)
        } else {
            None
        }
    }
}

/// A connection rate below this is no recent connection (one connection
/// decays to it in about three minutes).
const RECENT_CONNECTIONS: f64 = 0.05;

/// Did the block reach the mesh in the last few minutes (a connection, or a
/// transaction open)? An honest MTA that the mesh throttled falls down the
/// MX list to the trap within seconds; a bot that skips the mesh does not.
pub fn came_through_the_mesh(view: &BlockView) -> bool {
    view.origins.iter().any(|o| o.taken.connections >= RECENT_CONNECTIONS || !o.open.is_empty())
}

/// Rates decay continuously: a hair over a limit is within it.
const SLACK: f64 = 1e-6;

fn within(used: f64, limit: f64) -> Verdict {
    if used <= limit + SLACK {
        Verdict::Within
    } else {
        Verdict::Over
    }
}

#[cfg(test)]
mod tests;
