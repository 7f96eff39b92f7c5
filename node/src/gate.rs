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
    use crate::named_trust::{Proof, PROOF_LIFE_MS};

    /// A provider's host, trusted by name at 0, sends a burst of 40
    /// connections in 80 ms every ten minutes for three hours. A connection
    /// the gate does not trust proves the name itself (answered 200 ms
    /// later, as `connection.rs` does); with `renew`, a trusted one past
    /// half its proof's life renews it in the background. All the gate's
    /// verdicts, and whether the block was ever penalised.
    fn bursts_for_hours(renew: bool) -> (Vec<Verdict>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let trust = TrustList::load(&[], crate::queue::Queue::open(dir.path()).unwrap()).unwrap();
        let limits = std::sync::Arc::new(crate::settings::ThrottleSettings::default().limits());
        let settings = magicmx_gossip::EngineSettings::default();
        let tally = std::sync::Arc::new(magicmx_gossip::Tally::new(settings, limits.clone()));
        let clock = std::sync::Arc::new(crate::clock::ManualClock::at(0));
        let throttle = Throttle::new(limits, (24, 48), tally, None, clock);
        let gate = Gate::new(3);
        let host: IpAddr = "192.0.2.25".parse().unwrap();
        trust.by_name().record(host, Proof::Proved, 0);
        let (mut verdicts, mut penalised, mut answer_at) = (vec![], false, None::<u64>);
        for burst in 0..18 {
            for n in 0..40 {
                let now = burst * PROOF_LIFE_MS / 6 + n * 2;
                if let Some(at) = answer_at.filter(|at| *at <= now) {
                    trust.by_name().record(host, Proof::Proved, at);
                    answer_at = None;
                }
                let verdict = gate.judge(&throttle, &trust, host, now);
                let prove = match verdict {
                    Verdict::Trusted => renew && trust.by_name().begin_refresh(host, now),
                    _ => answer_at.is_none(),
                };
                if prove {
                    answer_at = Some(now + 200);
                }
                verdicts.push(verdict);
                penalised |= throttle.penalty(throttle.block_of(host), now).is_some();
            }
        }
        (verdicts, penalised)
    }

    #[test]
    fn a_provider_trusted_by_name_is_never_penalised_when_its_proof_would_lapse() {
        let (verdicts, penalised) = bursts_for_hours(true);
        assert_eq!(verdicts.len(), 18 * 40);
        assert!(verdicts.iter().all(|v| *v == Verdict::Trusted), "{verdicts:?}");
        assert!(!penalised);
        // Without the renewal (as before): the proof lapses at the hour, and
        // the burst then is counted and penalised.
        let (verdicts, penalised) = bursts_for_hours(false);
        assert!(verdicts.iter().any(|v| matches!(v, Verdict::Refuse(_))), "{verdicts:?}");
        assert!(penalised);
    }

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
