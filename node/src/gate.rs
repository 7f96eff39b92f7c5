//! The gate: the verdict on a connection at accept, on the flood path (no
//! DNS, no disk). Trusted sources pass uncounted; a penalised block is told
//! `421` with when to come back a few times per penalty, then closed without
//! a word; everyone else is counted, and a block over its connection rate is
//! penalised.

use std::net::IpAddr;

use dashmap::DashMap;
use magicmx_gossip::Penalty;
use magicmx_proto::smtp::Reply;
use magicmx_proto::SourceBlock;

use crate::limits::Verdict as Limit;
use crate::replies;
use crate::throttle::Throttle;
use crate::trust::TrustList;

/// The gate's verdict on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; nothing counted.
    Trusted,
    /// Serve it; counted.
    Pass,
    /// Answer this and close.
    Refuse(Reply),
    /// Close without a word.
    Drop,
}

pub(crate) struct Gate {
    /// Connections per penalty answered with a 421 before the rest are closed unanswered.
    polite: u32,
    /// Polite refusals given per block during its current penalty (keyed by its end).
    refusals: DashMap<SourceBlock, (u64, u32)>,
}

impl Gate {
    pub(crate) fn new(polite: u32) -> Gate {
        Gate { polite, refusals: DashMap::new() }
    }

    /// The verdict on a connection from `ip` at `now_ms`.
    pub(crate) fn judge(&self, throttle: &Throttle, trust: &TrustList, ip: IpAddr, now_ms: u64) -> Verdict {
        if trust.is_trusted(ip, now_ms) {
            return Verdict::Trusted;
        }
        let block = throttle.block_of(ip);
        if let Some(penalty) = throttle.penalty(block, now_ms) {
            return self.refuse(block, penalty, now_ms);
        }
        if throttle.connection(block, now_ms) == Limit::Over {
            let limit = throttle.limits().connections(throttle.share());
            let penalty = throttle.penalise(block, now_ms, &format!("over {limit:.0} connections a minute"));
            return self.refuse(block, penalty, now_ms);
        }
        Verdict::Pass
    }

    /// A connection from a penalised block: `421` with when to come back,
    /// the first few times per penalty; then a bare close.
    pub(crate) fn refuse(&self, block: SourceBlock, penalty: Penalty, now_ms: u64) -> Verdict {
        let mut given = self.refusals.entry(block).or_insert((penalty.until_ms, 0));
        if given.0 != penalty.until_ms {
            *given = (penalty.until_ms, 0);
        }
        given.1 += 1;
        if given.1 > self.polite {
            return Verdict::Drop;
        }
        Verdict::Refuse(replies::penalised(block, penalty.until_ms, now_ms))
    }

    /// Forgets refusal counts of penalties that are over.
    pub(crate) fn sweep(&self, now_ms: u64) {
        self.refusals.retain(|_, (until, _)| *until > now_ms);
    }
}
