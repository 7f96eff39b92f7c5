//! The gate: the verdict on a connection at accept, on the flood path (no
//! DNS, no disk). Trusted sources pass uncounted; a penalised block is told
//! `421` with when to come back a few times per penalty, then closed without
//! a word; everyone else is counted, and a block over its connection rate is
//! penalised.

use std::net::IpAddr;

use magicmx_gossip::Penalty;
use magicmx_proto::SourceBlock;

use crate::bounded::BoundedMap;
use crate::replies::Refusal;
use crate::throttle::Throttle;
use crate::trust::TrustList;

/// The gate's verdict on a new connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Serve it; nothing counted.
    Trusted,
    /// Serve it; counted.
    Pass,
    /// Answer this and close.
    Refuse(Refusal),
    /// Close without a word.
    Drop,
}

pub(crate) struct Gate {
    /// Connections per penalty answered with a 421 before the rest are closed unanswered.
    polite: u32,
    /// Polite refusals given per block during its current penalty (the
    /// penalty's end, and the count), kept until the penalty ends.
    refusals: BoundedMap<SourceBlock, (u64, u32)>,
}

/// Blocks whose polite refusals are counted at once, at most. Past it the
/// count of some block starts again: it is told when to come back once more.
const MAX_REFUSED_BLOCKS: usize = 100_000;

impl Gate {
    pub(crate) fn new(polite: u32) -> Gate {
        Gate { polite, refusals: BoundedMap::new(MAX_REFUSED_BLOCKS) }
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
        if let Some(penalty) = throttle.connection(block, now_ms) {
            return self.refuse(block, penalty, now_ms);
        }
        Verdict::Pass
    }

    /// A connection from a penalised block: `421` with when to come back,
    /// the first few times per penalty; then a bare close.
    pub(crate) fn refuse(&self, block: SourceBlock, penalty: Penalty, now_ms: u64) -> Verdict {
        let given = self.refusals.update(block, penalty.until_ms, now_ms, |given| {
            if given.0 != penalty.until_ms {
                *given = (penalty.until_ms, 0);
            }
            given.1 += 1;
            given.1
        });
        if given > self.polite {
            return Verdict::Drop;
        }
        Verdict::Refuse(Refusal::Penalised { block, until_ms: penalty.until_ms, now_ms })
    }

    /// Forgets refusal counts of penalties that are over.
    pub(crate) fn sweep(&self, now_ms: u64) {
        self.refusals.sweep(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_penalised_blocks_keep_at_most_the_cap_of_refusal_counts() {
        let gate = Gate::new(3);
        let penalty = Penalty { until_ms: u64::MAX, strikes: 1 };
        for n in 0..1_000_000u32 {
            let block = SourceBlock::of_default(std::net::Ipv4Addr::from(n << 8).into());
            assert!(matches!(gate.refuse(block, penalty, 0), Verdict::Refuse(_)), "the first is polite");
        }
        assert!(gate.refusals.len() <= MAX_REFUSED_BLOCKS);
        // A block still counted is counted on.
        let last = SourceBlock::of_default(std::net::Ipv4Addr::from(999_999u32 << 8).into());
        for _ in 0..2 {
            assert!(matches!(gate.refuse(last, penalty, 0), Verdict::Refuse(_)));
        }
        assert_eq!(gate.refuse(last, penalty, 0), Verdict::Drop);
    }
}
