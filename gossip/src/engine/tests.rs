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
    fn penalty_borne_out(&self, view: &BlockView, share: f64) -> Option<bool> {
        let used = used(view, recipients);
        if used + 1.0 >= LIMIT * share * 0.8 {
            Some(true)
        } else if self.seen(view) && used < LIMIT * share / 2.0 {
            Some(false)
        } else {
            None
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

/// A hostile member's judge: every verdict is `yes` (or `no`), whatever
/// the counts, and every penalty it is asked to bear out is borne out.
struct Liar {
    yes: bool,
}

impl Judge for Liar {
    fn recipient(&self, _: &BlockView, _: f64) -> bool {
        self.yes
    }
    fn connection(&self, _: &BlockView, _: f64) -> bool {
        true
    }
    fn sealed(&self, _: &BlockView, _: f64, _: Fingerprint, _: u32) -> bool {
        self.yes
    }
    fn seen(&self, _: &BlockView) -> bool {
        true
    }
    fn penalty(&self, last: Option<Penalty>, view: &BlockView, share: f64, now_ms: u64) -> Penalty {
        Plain.penalty(last, view, share, now_ms)
    }
    fn penalty_borne_out(&self, _: &BlockView, _: f64) -> Option<bool> {
        Some(true)
    }
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
        Net::with_judges(n, |_| Arc::new(Plain))
    }

    /// A net whose node `i` judges with `judge(i)` (a hostile member's lies).
    fn with_judges(n: u8, judge: impl Fn(u8) -> Arc<dyn Judge>) -> Net {
        let settings = EngineSettings { ask_timeout_ms: 100, ..EngineSettings::default() };
        let mut nodes: Vec<Engine> = (0..n).map(|i| Engine::new(fp(i), settings, judge(i))).collect();
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
                        Event::Confirmed { .. } => {}
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

    /// The answer to node `i`'s question, once the net settled.
    fn answer(&mut self, i: usize, asked: Asked, now_ms: u64) -> Answer {
        match asked {
            Asked::Now(answer) => answer,
            Asked::Later(id) => {
                self.settle(now_ms);
                let at = self.answers.iter().position(|(n, a, _)| *n == i && *a == id).expect("answered");
                self.answers.remove(at).2
            }
        }
    }

    /// A message to one recipient at node `i`: RCPT, then the end of DATA
    /// (both homes asked); whether it was taken.
    fn message(&mut self, i: usize, block: WireBlock, txn: u32, now_ms: u64) -> bool {
        if !self.rcpt(i, block, txn, now_ms) {
            return false;
        }
        self.nodes[i].seal(block, txn, now_ms);
        let asked = self.nodes[i].ask(block, Question::Sealed { id: txn }, now_ms);
        let taken = self.answer(i, asked, now_ms).yes;
        self.nodes[i].settle(block, txn, taken, now_ms);
        taken
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
        assert_eq!(
            alone.ask(b, Question::Recipient, 1_000),
            Asked::Now(Answer { yes: true, penalty: None, alone: false })
        );
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
    let mut net = Net::new(4);
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

// ---- strangers: members that lie ------------------------------------------

#[test]
fn a_home_that_says_yes_to_everything_opens_no_block() {
    let mut net =
        Net::with_judges(5, |i| if i == 4 { Arc::new(Liar { yes: true }) } else { Arc::new(Plain) });
    let b = homed_at(&net, 4);
    let mut taken = 0;
    for n in 0..60u32 {
        if net.message((n % 3) as usize, b, n + 1, 1_000 + u64::from(n)) {
            taken += 1;
        }
    }
    assert!(taken <= LIMIT as u32, "{taken} taken: the honest home's no wins over the liar's yes");
    assert!(net.nodes.iter().map(|n| n.stats().disputes).sum::<u64>() > 0, "the liar was outvoted");
    assert!((0..3).all(|i| net.nodes[i].standing().weight(&fp(4)) < 1.0), "and every asker marked it");
}

#[test]
fn a_home_that_says_no_to_everything_is_outvoted_and_defers_nothing() {
    let mut net =
        Net::with_judges(5, |i| if i == 4 { Arc::new(Liar { yes: false }) } else { Arc::new(Plain) });
    let liar = fp(4);
    let b = homed_at(&net, 4);
    let others: Vec<WireBlock> =
        (0..).map(block).filter(|x| !net.nodes[0].homes(*x).contains(&liar)).take(20).collect();
    let mut deferred = 0;
    let mut txn = 1;
    // Person-to-person mail: one message a block, now and then, through
    // node 0 (half the block's limit).
    for round in 0..5u64 {
        let now = 1_000 + round * 60_000;
        for &other in &others[..2] {
            assert!(net.message(0, other, txn, now), "blocks the liar is no home of are untouched");
            txn += 1;
        }
        if !net.message(0, b, txn, now) {
            deferred += 1;
        }
        txn += 1;
    }
    assert_eq!(deferred, 0, "the third home outvotes the liar every time");
    assert_eq!(net.nodes[0].standing().weight(&liar), 0.0, "and its word soon weighs nothing");
    assert_eq!(net.nodes[0].standing().weight(&fp(3)), 1.0);
    assert!(net.penalised.iter().all(|(n, x)| *x != b || *n == 4), "no honest node penalised it");
    // The liar penalised it as a home; the other homes contradict that.
    net.tick(400_000);
    net.tick(400_200);
    assert!((0..4).all(|i| net.nodes[i].penalty(b, 400_200).is_none()), "its penalty is in force nowhere");
}

#[test]
fn a_forged_penalty_is_contradicted_by_the_blocks_home_and_its_imposer_silenced() {
    let mut net = Net::new(5);
    let liar = fp(4);
    // A block of person-to-person mail whose homes the liar is not.
    let b = (0..).map(block).find(|x| !net.nodes[0].homes(*x).contains(&liar)).unwrap();
    net.nodes[0].record(b, Kind::Connection, 1_000);
    assert!(net.message(0, b, 1, 1_000));
    net.tick(1_000);
    for n in 0..10u64 {
        let now = 2_000 + n * 1_000;
        let forged = PenaltyEntry { block: b, until_ms: 9_000_000 + n, strikes: 1 };
        let frame =
            CountsFrame { round: 1, started_ms: 1, base_ms: now, entries: vec![], penalties: vec![forged] };
        for i in 0..4 {
            net.nodes[i].handle(liar, Frame::Counts(frame.clone()), now);
            assert!(net.nodes[i].penalty(b, now).is_none(), "held, not in force, until a home bears it out");
        }
        // The next round puts it to the block's homes, which contradict it.
        net.tick(now + 100);
        assert!((0..4).all(|i| net.nodes[i].penalties().stored(now).iter().all(|p| p.entry.block != b)));
    }
    for i in 0..4 {
        let weight = net.nodes[i].standing().weight(&liar);
        assert_eq!(weight, 0.0, "node {i} weighs the forger's word at nothing");
        let m = net.nodes[i].standing().get(&liar).unwrap();
        assert!(m.last_fault.is_some());
    }
    // Silenced, its next penalty is not even taken.
    let next = PenaltyEntry { block: block(77), until_ms: 9_000_000, strikes: 1 };
    let frame =
        CountsFrame { round: 2, started_ms: 1, base_ms: 2_100, entries: vec![], penalties: vec![next] };
    net.nodes[0].handle(liar, Frame::Counts(frame), 2_100);
    assert!(net.nodes[0].penalty(block(77), 2_100).is_none());
}

#[test]
fn clocks_minutes_off_either_way_neither_starve_nor_open_a_block() {
    // Node 1 runs ten minutes fast, node 2 ninety seconds slow: each reads
    // its own clock; the others measure and correct.
    let skew: [i64; 4] = [0, 600_000, -90_000, 0];
    let mut net = Net::new(4);
    let at = |i: usize, now: u64| now.saturating_add_signed(skew[i]);
    // Frames go at the sender's clock and arrive at the receiver's.
    let deliver = |net: &mut Net, now: u64| loop {
        let mut moved = false;
        for i in 0..4 {
            while let Some(event) = net.nodes[i].poll_event() {
                if let Event::Answer { id, answer } = event {
                    net.answers.push((i, id, answer));
                }
            }
            while let Some((to, frame)) = net.nodes[i].poll_transmit() {
                moved = true;
                let j = net.index(to);
                let from = net.nodes[i].own();
                net.nodes[j].handle(from, frame, at(j, now) + 20);
            }
        }
        if !moved {
            break;
        }
    };
    for i in 0..4 {
        net.nodes[i].tick(at(i, 500));
    }
    deliver(&mut net, 500);
    // Twenty person-to-person senders, one message each, through every node.
    let mut taken = 0;
    for s in 0..20u32 {
        let (i, b, now) = ((s % 4) as usize, block(u64::from(s) + 100), 10_000 + u64::from(s) * 1_000);
        net.nodes[i].reserve(b, s + 1, 1, at(i, now));
        let asked = net.nodes[i].ask(b, Question::Recipient, at(i, now));
        deliver(&mut net, now);
        let yes = match asked {
            Asked::Now(a) => a.yes,
            Asked::Later(id) => net.answers.iter().find(|(n, a, _)| *n == i && *a == id).unwrap().2.yes,
        };
        assert!(yes, "sender {s} at node {i} refused at RCPT");
        net.nodes[i].seal(b, s + 1, at(i, now + 5_000));
        let asked = net.nodes[i].ask(b, Question::Sealed { id: s + 1 }, at(i, now + 5_000));
        deliver(&mut net, now + 5_000);
        let yes = match asked {
            Asked::Now(a) => a.yes,
            Asked::Later(id) => net.answers.iter().find(|(n, a, _)| *n == i && *a == id).unwrap().2.yes,
        };
        taken += usize::from(yes);
    }
    assert_eq!(taken, 20, "every legitimate sender taken");
    // And a block spraying every node still gets its limit, not more.
    let spray = block(999);
    let mut sprayed = 0;
    for n in 0..40u32 {
        let (i, now) = ((n % 4) as usize, 100_000 + u64::from(n) * 10);
        let txn = 1_000 + n;
        net.nodes[i].reserve(spray, txn, 1, at(i, now));
        let asked = net.nodes[i].ask(spray, Question::Recipient, at(i, now));
        deliver(&mut net, now);
        let yes = match asked {
            Asked::Now(a) => a.yes,
            Asked::Later(id) => net.answers.iter().find(|(m, a, _)| *m == i && *a == id).unwrap().2.yes,
        };
        if !yes {
            net.nodes[i].release(spray, txn, 1, at(i, now));
            continue;
        }
        net.nodes[i].seal(spray, txn, at(i, now));
        let asked = net.nodes[i].ask(spray, Question::Sealed { id: txn }, at(i, now));
        deliver(&mut net, now);
        let yes = match asked {
            Asked::Now(a) => a.yes,
            Asked::Later(id) => net.answers.iter().find(|(m, a, _)| *m == i && *a == id).unwrap().2.yes,
        };
        net.nodes[i].settle(spray, txn, yes, at(i, now));
        sprayed += usize::from(yes);
    }
    assert!(sprayed <= LIMIT as usize, "{sprayed} taken of a spraying block");
    assert!(sprayed >= LIMIT as usize - 1, "{sprayed} taken: the limit is not starved either");
    let offset = net.nodes[0].clocks().offset(&fp(1));
    assert!((599_000..=600_000).contains(&offset), "node 0 measured node 1 {offset} ms ahead");
}

#[test]
fn a_restart_is_believed_from_the_member_itself_and_not_every_minute() {
    let mut net = Net::new(2);
    let b = block(5);
    let peer = fp(1);
    let entry = CountEntry { block: b, recipients: 5.0, connections: 1.0, age_ms: 0, seq: 0, open: vec![] };
    let frame = |started_ms: u64, base_ms: u64| {
        Frame::Counts(CountsFrame {
            round: 1,
            started_ms,
            base_ms,
            entries: vec![entry.clone()],
            penalties: vec![],
        })
    };
    net.nodes[0].handle(peer, frame(1, 1_000), 1_000);
    net.nodes[0].handle(peer, frame(2, 2_000), 2_000);
    assert_eq!(
        net.nodes[0].counts().retired(),
        1,
        "its new process counts afresh, the old counts kept apart"
    );
    net.nodes[0].handle(peer, frame(3, 3_000), 3_000);
    assert_eq!(net.nodes[0].counts().retired(), 1, "a second restart within ten minutes is refused");
    assert_eq!(net.nodes[0].stats().restarts_refused, 1);
    net.nodes[0].handle(peer, frame(3, 2_000 + RESTART_EVERY_MS), 2_000 + RESTART_EVERY_MS);
    assert_eq!(net.nodes[0].counts().retired(), 2);
}

#[test]
fn a_register_from_the_future_or_a_flood_of_open_ones_is_refused_and_counted_against_its_member() {
    let mut net = Net::new(2);
    let peer = fp(1);
    let open = magicmx_proto::wire::OpenEntry { id: 1, recipients: 1, opened_age_ms: 0, sealed_age_ms: None };
    let entry = |n: u64| CountEntry {
        block: block(n),
        recipients: 1.0,
        connections: 1.0,
        age_ms: 0,
        seq: 0,
        open: vec![open],
    };
    // Open transactions on ever more blocks: bounded per member.
    let entries: Vec<CountEntry> = (0..crate::counts::MAX_OPEN_REGISTERS as u64 + 500).map(entry).collect();
    let frame = CountsFrame { round: 1, started_ms: 1, base_ms: 1_000, entries, penalties: vec![] };
    net.nodes[0].handle(peer, Frame::Counts(frame), 1_000);
    assert_eq!(net.nodes[0].stats().rejected_entries, 500);
    assert_eq!(net.nodes[0].standing().weight(&peer), 0.0, "caught");
    // Its word weighs nothing: its counts add nothing to a block's use.
    let view = net.nodes[0].weighed(net.nodes[0].view(block(3), 1_000));
    assert_eq!(view.origins[0].weight, 0.0);
    // A register stamped an hour ahead of the sender's measured clock is refused.
    let mut fresh = Net::new(2);
    let base =
        CountsFrame { round: 1, started_ms: 1, base_ms: 10_000, entries: vec![entry(1)], penalties: vec![] };
    fresh.nodes[0].handle(peer, Frame::Counts(base), 10_000);
    let ahead = CountEntry { age_ms: 0, ..entry(2) };
    let future = CountsFrame {
        round: 2,
        started_ms: 1,
        base_ms: 10_000 + 3_700_000,
        entries: vec![ahead],
        penalties: vec![],
    };
    fresh.nodes[0].handle(peer, Frame::Counts(future), 10_100);
    assert_eq!(fresh.nodes[0].stats().clock_refused, 1);
    assert!(fresh.nodes[0].view(block(2), 10_100).origins.is_empty());
}

#[test]
fn a_home_that_has_just_started_sends_the_asker_to_the_other_home() {
    let mut net = Net::new(3);
    let b = homed_at(&net, 2);
    net.nodes[2].warm_until(5_000);
    net.nodes[0].reserve(b, 1, 1, 1_000);
    let asked = net.nodes[0].ask(b, Question::Recipient, 1_000);
    let answer = net.answer(0, asked, 1_000);
    assert!(answer.yes);
    assert_eq!(net.nodes[0].stats().timeouts, 0, "no time-out: the warming home said it was unsure");
}
