//! Standing: how much each member's word counts at this node, from what
//! this node can check itself. A member starts at [`NEW`]; each time what
//! it says is borne out (a verdict the other home agrees with, a penalty the
//! block's counts here corroborate) it gains a little of what it lacks, and
//! each time it is caught (a frame refused as implausible, a verdict the
//! other homes outvote, a penalty the counts here contradict, a "yes" over
//! the asker's own evidence) it loses a lot at once. Built slowly, lost
//! fast, as the trust levels of Trustic's seed.
//!
//! The weight (whole at [`NEW`] and above, less below it) is what the
//! rest of the engine multiplies by: how much of a
//! peer's counts may count (`peer_share` × weight), how long its penalties
//! may last (`penalty_max` × weight), and whose verdict wins when the two
//! homes of a block disagree. Below [`FLOOR`] a member's word counts for
//! nothing. Standing is local: every node keeps its own, from its own
//! checks, and no member's opinion of another is taken.

use std::collections::{BTreeMap, HashMap};

use crate::counts::Fingerprint;

/// Where a member that has just proved its certificate starts.
pub const NEW: f64 = 0.5;
/// Below this a member's word weighs nothing.
pub const FLOOR: f64 = 0.1;
/// What one corroboration earns, of what is still missing to 1.
const GAIN: f64 = 0.02;
/// What a certain contradiction costs (a frame refused, a lie shown).
const LOSS: f64 = 0.25;
/// What being outvoted costs: the other homes of a block, holding the
/// same registers, said otherwise (an honest home is outvoted now and then
/// by registers still on their way; a liar every time its lie matters).
const OUTVOTED_LOSS: f64 = 0.05;
/// Members remembered at most (members are certificate holders; a node
/// forgets the standing of one that left with its other state).
const MAX_MEMBERS: usize = 65_536;

/// One member's standing and why.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberStanding {
    pub score: f64,
    pub corroborated: u64,
    pub outvoted: u64,
    /// Certain contradictions, by reason.
    pub contradicted: BTreeMap<&'static str, u64>,
    /// The last thing that lowered it, and when (Unix ms).
    pub last_fault: Option<(&'static str, u64)>,
}

impl MemberStanding {
    fn new() -> MemberStanding {
        MemberStanding {
            score: NEW,
            corroborated: 0,
            outvoted: 0,
            contradicted: BTreeMap::new(),
            last_fault: None,
        }
    }

    /// What this member's word weighs: whole at [`NEW`] and above, less as
    /// it falls, and nothing below [`FLOOR`].
    pub fn weight(&self) -> f64 {
        if self.score < FLOOR {
            0.0
        } else {
            (self.score / NEW).min(1.0)
        }
    }
}

/// What this node has seen of each member.
#[derive(Debug, Default)]
pub struct Standing {
    members: HashMap<Fingerprint, MemberStanding>,
}

impl Standing {
    /// The weight of `member`'s word (whole for one not caught yet).
    pub fn weight(&self, member: &Fingerprint) -> f64 {
        self.members.get(member).map_or(1.0, MemberStanding::weight)
    }

    pub fn score(&self, member: &Fingerprint) -> f64 {
        self.members.get(member).map_or(NEW, |m| m.score)
    }

    fn entry(&mut self, member: Fingerprint) -> &mut MemberStanding {
        if !self.members.contains_key(&member) && self.members.len() >= MAX_MEMBERS {
            // Forget the best-standing one: a stranger gains nothing by it.
            if let Some(best) =
                self.members.iter().max_by(|a, b| a.1.score.total_cmp(&b.1.score)).map(|(fp, _)| *fp)
            {
                self.members.remove(&best);
            }
        }
        self.members.entry(member).or_insert_with(MemberStanding::new)
    }

    /// What `member` said was borne out.
    pub fn corroborate(&mut self, member: Fingerprint) {
        let m = self.entry(member);
        m.corroborated += 1;
        m.score += GAIN * (1.0 - m.score);
    }

    /// `member` was caught, certainly, for `why`, at `now_ms`. Returns
    /// whether its word fell to nothing with this (for the log).
    pub fn contradict(&mut self, member: Fingerprint, why: &'static str, now_ms: u64) -> bool {
        let m = self.entry(member);
        let before = m.weight();
        *m.contradicted.entry(why).or_default() += 1;
        m.score = (m.score - LOSS).max(0.0);
        m.last_fault = Some((why, now_ms));
        before > 0.0 && m.weight() == 0.0
    }

    /// `member` was outvoted by the other homes of a block.
    pub fn outvoted(&mut self, member: Fingerprint, now_ms: u64) {
        let m = self.entry(member);
        m.outvoted += 1;
        m.score = (m.score - OUTVOTED_LOSS).max(0.0);
        m.last_fault = Some(("verdict outvoted by the other homes", now_ms));
    }

    /// A member that left for good, or was revoked.
    pub fn forget(&mut self, member: &Fingerprint) {
        self.members.remove(member);
    }

    /// Every member's standing, for operators.
    pub fn all(&self) -> Vec<(Fingerprint, MemberStanding)> {
        let mut all: Vec<_> = self.members.iter().map(|(fp, m)| (*fp, m.clone())).collect();
        all.sort_by_key(|(fp, _)| *fp);
        all
    }

    /// The standing of a member not seen yet.
    pub fn fresh(&self) -> MemberStanding {
        MemberStanding::new()
    }

    pub fn get(&self, member: &Fingerprint) -> Option<&MemberStanding> {
        self.members.get(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_is_built_slowly_and_lost_fast() {
        let mut standing = Standing::default();
        let peer = [7; 16];
        assert_eq!(standing.weight(&peer), 1.0, "a new member's word counts until it is caught");
        for _ in 0..10 {
            standing.corroborate(peer);
        }
        let built = standing.score(&peer);
        assert!(built > NEW && built < 0.6, "ten corroborations earn a little: {built}");
        assert!(!standing.contradict(peer, "implausible count", 5));
        assert!(standing.score(&peer) < NEW, "one contradiction undoes more than ten corroborations");
        assert!(standing.contradict(peer, "implausible count", 6), "the second takes its word away");
        assert_eq!(standing.weight(&peer), 0.0);
        let m = standing.get(&peer).unwrap();
        assert_eq!(m.contradicted["implausible count"], 2);
        assert_eq!(m.last_fault, Some(("implausible count", 6)));
        // Earning it back takes far longer than losing it.
        let mut back = 0;
        while standing.weight(&peer) < 1.0 {
            standing.corroborate(peer);
            back += 1;
        }
        assert!(back > 20, "{back} corroborations to earn back what two faults lost");
    }

    #[test]
    fn a_member_outvoted_now_and_then_keeps_its_word_and_a_liar_loses_it() {
        let mut standing = Standing::default();
        let (honest, liar) = ([1; 16], [2; 16]);
        for round in 0..200 {
            // The honest home is outvoted once in twenty (registers on their
            // way); the liar every time its lie matters, one answer in two.
            if round % 20 == 0 {
                standing.outvoted(honest, round);
            } else {
                standing.corroborate(honest);
            }
            if round % 2 == 0 {
                standing.outvoted(liar, round);
            } else {
                standing.corroborate(liar);
            }
        }
        assert_eq!(standing.weight(&liar), 0.0, "{}", standing.score(&liar));
        assert!(standing.weight(&honest) > 0.9, "{}", standing.score(&honest));
    }
}
