//! The engine between engines, frames handed over in the test itself: who
//! answers for a block, exact limits under a spray, homes that stay silent,
//! members that come and go.

use super::*;
use crate::counts::OriginView;

const LIMIT: f64 = 10.0;

/// A judge with a plain limit: the asker's register in full, every other at
/// most `LIMIT * 0.95`, open transactions counted as taken.
struct Plain;

fn used(view: &BlockView, of: impl Fn(&OriginView) -> f64) -> f64 {
    view.origins.iter().map(|o| if o.is_self { of(o) } else { of(o).min(LIMIT * 0.95) }).sum()
}

fn recipients(o: &OriginView) -> f64 {
    o.taken.recipients + o.open.iter().map(|t| f64::from(t.recipients)).sum::<f64>()
}

impl Judge for Plain {
    fn recipient(&self, view: &BlockView, share: f64) -> bool {
        used(view, recipients) <= LIMIT * share + 1e-9
    }
    fn connection(&self, view: &BlockView, share: f64) -> bool {
        used(view, |o| o.taken.connections) <= 20.0 * share + 1e-9
    }
    fn sealed(&self, view: &BlockView, share: f64, _: Fingerprint, _: u32) -> bool {
        self.recipient(view, share)
    }
    fn seen(&self, view: &BlockView) -> bool {
        view.origins.iter().any(|o| o.taken.connections > 0.05 || !o.open.is_empty())
    }
    fn penalty(&self, last: Option<Penalty>, _: &BlockView, _: f64, now_ms: u64) -> Penalty {
        match last.filter(|p| p.until_ms > now_ms) {
            Some(p) => p,
            None => Penalty { until_ms: now_ms + 60_000, strikes: last.map_or(1, |p| p.strikes + 1) },
        }
    }
}

fn fp(n: u8) -> Fingerprint {
    let mut fp = [n; 16];
    fp[1] = n.wrapping_mul(77);
    fp
}

fn engine(n: u8) -> Engine {
    let settings = EngineSettings { ask_timeout_ms: 100, ..EngineSettings::default() };
    Engine::new(fp(n), settings, Arc::new(Plain))
}

/// Engines that hear each other, frames delivered at once unless cut.
struct Net {
    nodes: Vec<Engine>,
    /// Frames to these are lost.
    cut: Vec<Fingerprint>,
    answers: Vec<(usize, u64, Answer)>,
    penalised: Vec<(usize, WireBlock)>,
}

impl Net {
    fn new(n: u8) -> Net {
        let mut nodes: Vec<Engine> = (0..n).map(engine).collect();
        let all: Vec<Fingerprint> = (0..n).map(fp).collect();
        for node in nodes.iter_mut() {
            let members: Vec<(Fingerprint, bool)> =
                all.iter().filter(|m| **m != node.own()).map(|m| (*m, true)).collect();
            node.set_members(&members, 0);
        }
        Net { nodes, cut: vec![], answers: vec![], penalised: vec![] }
    }

    fn index(&self, member: Fingerprint) -> usize {
        self.nodes.iter().position(|n| n.own() == member).expect("a member")
    }

    /// Delivers every frame, and what those cause, until all is quiet.
    fn settle(&mut self, now_ms: u64) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(event) = self.nodes[i].poll_event() {
                    match event {
                        Event::Answer { id, answer } => self.answers.push((i, id, answer)),
                        Event::Penalised { block, .. } => self.penalised.push((i, block)),
                    }
                }
                while let Some((to, frame)) = self.nodes[i].poll_transmit() {
                    moved = true;
                    if self.cut.contains(&to) {
                        continue;
                    }
                    let from = self.nodes[i].own();
                    let j = self.index(to);
                    self.nodes[j].handle(from, frame, now_ms);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn tick(&mut self, now_ms: u64) {
        for node in self.nodes.iter_mut() {
            node.tick(now_ms);
        }
        self.settle(now_ms);
    }

    /// RCPT at node `i`: reserve, ask, and the answer once the net settled.
    fn rcpt(&mut self, i: usize, block: WireBlock, txn: u32, now_ms: u64) -> bool {
        self.nodes[i].reserve(block, txn, 1, now_ms);
        let yes = match self.nodes[i].ask(block, Question::Recipient, now_ms) {
            Asked::Now(answer) => answer.yes,
            Asked::Later(id) => {
                self.settle(now_ms);
                let at = self.answers.iter().position(|(n, a, _)| *n == i && *a == id).expect("answered");
                self.answers.remove(at).2.yes
            }
        };
        if !yes {
            self.nodes[i].release(block, txn, 1, now_ms);
        }
        yes
    }
}

fn block(n: u64) -> WireBlock {
    WireBlock { net: 0xC000_0000 + (n << 8), prefix: 24 }
}

/// A block whose primary home is node `home` of `net`.
fn homed_at(net: &Net, home: usize) -> WireBlock {
    (0..).map(block).find(|&b| net.nodes[0].homes(b)[0] == net.nodes[home].own()).unwrap()
}

#[test]
fn a_lone_node_answers_its_own_questions_and_penalises_over_the_limit() {
    let mut alone = engine(1);
    let b = block(1);
    for txn in 1..=10 {
        alone.reserve(b, txn, 1, 1_000);
        assert_eq!(alone.ask(b, Question::Recipient, 1_000), Asked::Now(Answer { yes: true, penalty: None }));
    }
    alone.reserve(b, 11, 1, 1_000);
    let Asked::Now(over) = alone.ask(b, Question::Recipient, 1_000) else { panic!("alone") };
    assert!(!over.yes && over.penalty.is_some());
    assert!(matches!(alone.poll_event(), Some(Event::Penalised { .. })));
    assert_eq!(alone.stats().answered_here, 11);
}

#[test]
fn a_node_asks_the_blocks_home_and_the_home_answers() {
    let mut net = Net::new(3);
    let b = homed_at(&net, 2);
    assert!(net.rcpt(0, b, 1, 1_000));
    assert_eq!(net.nodes[0].stats().asked_away, 1);
    assert_eq!(net.nodes[2].stats().answered_for_others, 1);
    // The home holds node 0's register (it came with the question); node 1 holds nothing.
    assert_eq!(net.nodes[2].view(b, 1_000).origins.len(), 1);
    assert!(net.nodes[1].view(b, 1_000).origins.is_empty() || net.nodes[1].homes(b).contains(&fp(1)));
}

#[test]
fn a_block_spraying_every_node_gets_its_limit_once() {
    let mut net = Net::new(5);
    let b = homed_at(&net, 4);
    let mut taken = 0;
    for n in 0..40u32 {
        if net.rcpt((n % 5) as usize, b, n + 1, 1_000) {
            taken += 1;
        }
    }
    assert_eq!(taken, 10, "exactly the limit, mesh-wide");
    // The home penalised it; with the next round every node refuses it.
    assert!(net.nodes[4].penalty(b, 1_000).is_some());
    net.tick(1_100);
    assert!(net.nodes.iter().all(|n| n.penalty(b, 1_100).is_some()), "penalty everywhere within a round");
}

#[test]
fn a_silent_home_is_replaced_by_the_next_and_then_the_node_judges_alone() {
    let mut net = Net::new(3);
    let b = homed_at(&net, 1);
    let homes = net.nodes[0].homes(b);
    net.cut = vec![homes[0]];
    net.nodes[0].reserve(b, 1, 1, 1_000);
    let Asked::Later(id) = net.nodes[0].ask(b, Question::Recipient, 1_000) else { panic!("asked away") };
    net.settle(1_000);
    assert!(net.answers.is_empty(), "the primary is silent");
    net.tick(1_100);
    let answered_by_next = homes[1] != fp(0) && net.answers.iter().any(|(n, a, _)| *n == 0 && *a == id);
    if !answered_by_next {
        // The second home was this node itself, or silent too.
        net.tick(1_300);
    }
    assert!(net.answers.iter().any(|(n, a, ans)| *n == 0 && *a == id && ans.yes));
    assert_eq!(net.nodes[0].stats().timeouts, 1, "{:?} homes {homes:?}", net.nodes[0].stats());
    // Every home silent: judged alone.
    net.cut = homes.clone();
    net.nodes[0].reserve(b, 2, 1, 2_000);
    if let Asked::Later(id) = net.nodes[0].ask(b, Question::Recipient, 2_000) {
        for t in 1..=4 {
            net.tick(2_000 + t * 150);
        }
        assert!(net.answers.iter().any(|(n, a, _)| *n == 0 && *a == id));
        // (When this node is the block's second home it answers as a home.)
        assert!(net.nodes[0].stats().judged_alone >= 1 || homes.contains(&fp(0)));
    }
}

#[test]
fn registers_go_to_their_homes_with_the_round_and_follow_a_new_home() {
    let mut net = Net::new(4);
    let b = homed_at(&net, 3);
    net.nodes[0].record(b, Kind::Connection, 1_000);
    net.tick(1_000);
    for home in net.nodes[0].homes(b) {
        let j = net.index(home);
        assert_eq!(net.nodes[j].view(b, 1_000).origins.len(), 1, "home {j} holds node 0's register");
    }
    // Node 3 leaves: the block gets a new home, which is sent the register.
    let gone = fp(3);
    let members: Vec<(Fingerprint, bool)> =
        (0..4).map(fp).filter(|m| *m != fp(0)).map(|m| (m, m != gone)).collect();
    let before = net.nodes[0].homes(b);
    net.nodes[0].set_members(&members, 2_000);
    let after = net.nodes[0].homes(b);
    assert!(!after.contains(&gone));
    net.cut = vec![gone];
    net.tick(2_000);
    for home in after.iter().filter(|h| !before.contains(h) && **h != fp(0)) {
        let j = net.index(*home);
        assert_eq!(net.nodes[j].view(b, 2_000).origins.len(), 1, "the new home {j} was told");
    }
}

#[test]
fn a_new_member_is_greeted_with_its_registers_and_the_penalties() {
    let mut net = Net::new(3);
    let b = homed_at(&net, 1);
    net.nodes[0].record(b, Kind::Connection, 1_000);
    net.nodes[0].penalise(block(99), 90_000, 1);
    let greeting = net.nodes[0].greeting(fp(1), 1_000);
    let entries: usize =
        greeting.iter().map(|f| if let Frame::Counts(c) = f { c.entries.len() } else { 0 }).sum();
    let penalties: usize =
        greeting.iter().map(|f| if let Frame::Counts(c) = f { c.penalties.len() } else { 0 }).sum();
    assert_eq!((entries, penalties), (1, 1));
    let other = (0..).map(block).find(|&x| !net.nodes[0].homes(x).contains(&fp(2))).unwrap();
    net.nodes[0].record(other, Kind::Connection, 1_000);
    let to_2: usize =
        net.nodes[0]
            .greeting(fp(2), 1_000)
            .iter()
            .map(|f| {
                if let Frame::Counts(c) = f {
                    c.entries.iter().filter(|e| e.block == other).count()
                } else {
                    0
                }
            })
            .sum();
    assert_eq!(to_2, 0, "a member is told only the registers it is home for");
}

#[test]
fn an_answer_from_anyone_but_the_home_asked_is_ignored() {
    let mut net = Net::new(3);
    let b = homed_at(&net, 2);
    net.nodes[0].reserve(b, 1, 1, 1_000);
    let Asked::Later(id) = net.nodes[0].ask(b, Question::Recipient, 1_000) else { panic!() };
    let forged = Frame::Answer(WireAnswer { id, at_ms: 1_000, yes: false, unsure: false, penalty: None });
    net.nodes[0].handle(fp(1), forged, 1_000);
    assert!(net.nodes[0].poll_event().is_none(), "node 1 was not asked");
    net.settle(1_000);
    assert!(net.answers.iter().any(|(_, a, ans)| *a == id && ans.yes));
}
