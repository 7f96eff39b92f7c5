//! Hostile members: nodes with a valid certificate that lie. Each runs the
//! real engine (it is a member: a home of its share of the blocks, asked
//! and answering) and, as its behaviour says, judges falsely or sends
//! forged frames in the real wire format with every round. Senders do not
//! use them as their MX: what a compromised node relays itself is the
//! operators' matter (revoke it); what is measured is what it can make the
//! honest nodes do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use magicmx_gossip::counts::{BlockView, Fingerprint};
use magicmx_gossip::{Judge, Penalty};
use magicmx_proto::wire::{CountEntry, Counts, Frame, OpenEntry, PenaltyEntry, WireBlock};

/// What a hostile member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers "yes" to every question it is home for (opens blocks).
    SaysYes,
    /// Answers "no" to every question it is home for (starves blocks).
    SaysNo,
    /// Penalises legitimate blocks, as many a minute as a peer may.
    ForgesPenalties,
    /// Claims most of every legitimate block's limit for itself, stamps
    /// registers an hour ahead, and opens transactions without end.
    InflatesCounts,
    /// Claims a restart in every frame (to retire its counts, or fill the
    /// origin table).
    Restarts,
    /// Each hostile member one of the above, in turn.
    Mixed,
}

impl Behaviour {
    pub fn parse(name: &str) -> Option<Behaviour> {
        Some(match name {
            "yes" => Behaviour::SaysYes,
            "no" => Behaviour::SaysNo,
            "penalties" => Behaviour::ForgesPenalties,
            "inflate" => Behaviour::InflatesCounts,
            "restarts" => Behaviour::Restarts,
            "mixed" => Behaviour::Mixed,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::SaysYes => "says yes",
            Behaviour::SaysNo => "says no",
            Behaviour::ForgesPenalties => "forges penalties",
            Behaviour::InflatesCounts => "inflates counts",
            Behaviour::Restarts => "restarts",
            Behaviour::Mixed => "mixed",
        }
    }

    /// The behaviour of the `nth` hostile member.
    pub fn of(self, nth: usize) -> Behaviour {
        const ALL: [Behaviour; 5] = [
            Behaviour::SaysYes,
            Behaviour::SaysNo,
            Behaviour::ForgesPenalties,
            Behaviour::InflatesCounts,
            Behaviour::Restarts,
        ];
        match self {
            Behaviour::Mixed => ALL[nth % ALL.len()],
            other => other,
        }
    }
}

/// A judge whose every verdict is `yes` (or `no`) once `active`, wrapping
/// the honest one for what it does not lie about (and until then).
pub struct Liar<J> {
    pub yes: bool,
    pub honest: J,
    pub active: Arc<AtomicBool>,
}

impl<J: Judge> Liar<J> {
    fn lying(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

impl<J: Judge> Judge for Liar<J> {
    fn recipient(&self, view: &BlockView, share: f64) -> bool {
        if !self.lying() {
            return self.honest.recipient(view, share);
        }
        self.yes
    }
    fn connection(&self, view: &BlockView, share: f64) -> bool {
        self.honest.connection(view, share)
    }
    fn sealed(&self, view: &BlockView, share: f64, origin: Fingerprint, id: u32) -> bool {
        if !self.lying() {
            return self.honest.sealed(view, share, origin, id);
        }
        self.yes
    }
    fn seen(&self, view: &BlockView) -> bool {
        self.honest.seen(view)
    }
    fn penalty(&self, last: Option<Penalty>, view: &BlockView, share: f64, now_ms: u64) -> Penalty {
        self.honest.penalty(last, view, share, now_ms)
    }
    fn penalty_borne_out(&self, view: &BlockView, share: f64) -> Option<bool> {
        if !self.lying() {
            return self.honest.penalty_borne_out(view, share);
        }
        Some(!self.yes)
    }
}

/// Forged frames for one round of a hostile member, to each member they go
/// to. `victims` are legitimate blocks; `homes_of` names a block's homes.
pub fn forged_round(
    behaviour: Behaviour,
    round: u64,
    now_ms: u64,
    victims: &[WireBlock],
    members: &[Fingerprint],
    homes_of: impl Fn(WireBlock) -> Vec<Fingerprint>,
) -> Vec<(Fingerprint, Frame)> {
    let frame = |entries: Vec<CountEntry>, penalties: Vec<PenaltyEntry>, base_ms: u64| {
        Frame::Counts(Counts { round, started_ms: 1, base_ms, entries, penalties })
    };
    match behaviour {
        Behaviour::ForgesPenalties => {
            // A day's penalty on each victim, to every member.
            let penalties: Vec<PenaltyEntry> = victims
                .iter()
                .map(|&block| PenaltyEntry { block, until_ms: now_ms + 24 * 3600 * 1000, strikes: 8 })
                .collect();
            members.iter().map(|&m| (m, frame(vec![], penalties.clone(), now_ms))).collect()
        }
        Behaviour::Restarts => {
            // Small, plausible registers, each frame from a "new process".
            let mut out = Vec::new();
            for &block in victims {
                let entry =
                    CountEntry { block, recipients: 1.0, connections: 1.0, age_ms: 0, seq: 0, open: vec![] };
                let restart = Frame::Counts(Counts {
                    round,
                    started_ms: now_ms,
                    base_ms: now_ms,
                    entries: vec![entry],
                    penalties: vec![],
                });
                for home in homes_of(block) {
                    out.push((home, restart.clone()));
                }
            }
            out
        }
        Behaviour::InflatesCounts => {
            let mut out = Vec::new();
            for (n, &block) in victims.iter().enumerate() {
                let open = (0..64)
                    .map(|id| OpenEntry { id, recipients: 1, opened_age_ms: 0, sealed_age_ms: None })
                    .collect();
                let entry = CountEntry {
                    block,
                    recipients: 28.5,
                    connections: 19.0,
                    age_ms: 0,
                    seq: (round & 0xFFFF) as u16,
                    open,
                };
                // Every other one stamped an hour ahead of its clock.
                let base = if n % 2 == 0 { now_ms } else { now_ms + 3_600_000 };
                for home in homes_of(block) {
                    out.push((home, frame(vec![entry.clone()], vec![], base)));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}
