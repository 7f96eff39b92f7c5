//! The node's side of an SMTP session, one stage per file, in the order a
//! message meets them: `mail.rs` (MAIL FROM: the sender checks), `rcpt.rs`
//! (RCPT TO: the domain table, the call-out, the throttle), `data.rs` (the
//! end of DATA: the hold, then the queue). Each stage takes what it uses,
//! and the time from its caller, and returns a verdict: `Ok`, or the
//! [`Refusal`] that says why (the reply and the metric label both come from
//! it). `connection.rs` only moves bytes and events between the socket,
//! the `proto` session and these stages.

mod data;
mod mail;
mod rcpt;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use magicmx_proto::{Address, SourceBlock};

use crate::checks::{DnsBudget, Findings};
use crate::clock::Millis;
use crate::intake;
use crate::replies::Refusal;
use crate::reservation::Reservation;
use crate::stats::Stats;

pub(crate) use data::{end_of_data, Data};
pub(crate) use mail::{mail, Mail};
pub(crate) use rcpt::{Callout, Rcpt};

/// What the node keeps about the client's current transaction.
pub(crate) struct Transaction {
    pub client: IpAddr,
    /// The client bypasses the throttle and the checks.
    pub trusted: bool,
    /// Its recipients reserved against the block's limit (untrusted clients,
    /// from the first recipient the throttle let through).
    pub reserved: Option<Reservation>,
    /// What the checks found, for the queue and the headers.
    pub findings: Findings,
    /// The DNS time the checks of this message have left.
    pub dns_budget: DnsBudget,
    pub sender: Option<Address>,
    /// The message being read, on its way to the spool.
    pub body: intake::Receiving,
}

impl Transaction {
    pub(crate) fn new(client: IpAddr, trusted: bool) -> Transaction {
        Transaction {
            client,
            trusted,
            reserved: None,
            findings: Findings::default(),
            dns_budget: DnsBudget::default(),
            sender: None,
            body: intake::Receiving::default(),
        }
    }

    /// The block the disk's bounds hold this client to; `None` for a
    /// trusted client (held to the total only).
    pub(crate) fn disk_block(&self, prefixes: (u8, u8)) -> Option<SourceBlock> {
        (!self.trusted).then(|| SourceBlock::of(self.client, prefixes.0, prefixes.1))
    }

    /// The next piece of the message being read, at `now`.
    pub(crate) async fn content(&mut self, intake: &intake::Intake, piece: Vec<u8>, now: Millis) {
        let block = self.disk_block(intake.prefixes);
        self.body.piece(intake, block, piece, now).await;
    }

    /// MAIL FROM starts a new transaction, with a DNS budget of its own:
    /// what the last one kept goes.
    pub(crate) fn restart(&mut self, sender: Option<Address>, dns_budget: DnsBudget) {
        self.reserved = None;
        self.body.discard();
        self.findings = Findings::default();
        self.dns_budget = dns_budget;
        self.sender = sender;
    }
}

/// Counts the refusal of a message (at the end of DATA).
pub(crate) fn count_refused_message(stats: &Stats, refusal: &Refusal) {
    Stats::add(if refusal.is_transient() { &stats.tempfailed } else { &stats.rejected });
    stats.refusal(refusal.label());
}
