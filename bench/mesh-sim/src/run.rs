//! The driver: every node's engine, the network between them, and each
//! message moved through the node's steps — the gate (a penalty in force,
//! then the connection counted and judged), RCPT (a recipient reserved,
//! then the block's home asked), the hold (the transaction sealed, the home
//! asked again), and the settling — exactly as `node/src/throttle.rs`,
//! `hold.rs` and `gate.rs` do, with the engine's answers arriving over the
//! simulated network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use magicmx_gossip::counts::Fingerprint;
use magicmx_gossip::engine::{Asked, Event as EngineEvent};
use magicmx_gossip::{Answer, Engine, EngineSettings, Question};
use magicmx_node::limits::Limits;
use magicmx_node::settings::ThrottleSettings;
use magicmx_proto::wire::{encode, Frame, WireBlock};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::config::Config;
use crate::hostile::{forged_round, Behaviour, Liar};
use crate::network::{Network, Queue};
use crate::report::{Report, Tracker};
use crate::traffic::{retry_after_ms, Blocks, Message, Sender};

/// When a run starts, on the nodes' clocks (2026-12-01).
const EPOCH_MS: u64 = 1_796_083_200_000;

/// Messages a limit user sends in the window, and recipients in each.
const LIMIT_USER_MESSAGES: u16 = 10;
const LIMIT_USER_RECIPIENTS: u16 = 3;

enum Event {
    Deliver {
        from: usize,
        to: usize,
        frame: Frame,
        bytes: usize,
    },
    Tick(usize),
    /// An attempt to deliver a message to the mesh.
    Send(usize),
    /// The next message of a block sending on its own schedule.
    NextOf(usize),
    WindowStarts,
    WindowEnds,
    Crash(Vec<usize>),
    Restart(Vec<usize>),
    Split(Vec<usize>),
    Heal(Vec<usize>),
    /// The members notice a change (SWIM's detection time later, each
    /// node after its own delay); the pairs that can talk again greet each other.
    Notice(Vec<(usize, usize)>),
    /// One node learns who is reachable now.
    Members(usize),
    Greet(Vec<(usize, usize)>),
    /// A node restarts (the periodic churn).
    Churn,
    /// Every node forgets the members it has not reached for `forget_after`.
    Forget,
}

/// A message's attempt at one node, waiting for a home's answer.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    msg: usize,
    node: usize,
    txn: u32,
    /// Recipients reserved and found to fit so far.
    fitting: u16,
    sealed: bool,
}

struct World {
    cfg: Config,
    rng: SmallRng,
    now: u64,
    queue: Queue<Event>,
    net: Network,
    nodes: Vec<Option<Engine>>,
    fps: Vec<Fingerprint>,
    index: HashMap<Fingerprint, usize>,
    limits: Arc<Limits>,
    blocks: Blocks,
    messages: Vec<Message>,
    waiting: HashMap<(usize, u64), Attempt>,
    next_txn: u32,
    /// Sending new messages (off for the drain).
    sending: bool,
    /// The penalties a crashed node had saved, restored when it restarts.
    saved_penalties: HashMap<usize, Vec<magicmx_gossip::penalties::StoredPenalty>>,
    track: Tracker,
    /// How far each node's clock is off.
    skew: Vec<i64>,
    /// What each hostile node does (`None`: honest).
    hostile: Vec<Option<Behaviour>>,
    honest: Vec<usize>,
    /// The hostile members act from the window's start.
    lying: Arc<std::sync::atomic::AtomicBool>,
}

fn fingerprint(node: usize) -> Fingerprint {
    let mut x = node as u64 ^ 0x5DEE_CE66_D1CE_4E5B;
    let mut fp = [0u8; 16];
    for chunk in fp.chunks_mut(8) {
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ 0xBF58_476D_1CE4_E5B9;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    fp
}

/// Runs `cfg` to the end; its figures.
pub fn simulate(cfg: &Config) -> Report {
    let started = Instant::now();
    let mut world = World::new(cfg.clone());
    world.run();
    if std::env::var_os("SIM_DEBUG").is_some() {
        for (i, m) in world.messages.iter().enumerate() {
            if m.measured && m.left > 0 && world.blocks.sender(m.block as usize).is_legitimate() {
                eprintln!("undelivered {i}: {m:?} sender {:?}", world.blocks.sender(m.block as usize));
            }
        }
    }
    world.track.report(&world.cfg, &world.nodes, &world.net, &world.messages, started.elapsed())
}

impl World {
    fn new(cfg: Config) -> World {
        let throttle = ThrottleSettings::default();
        let limits = Arc::new(throttle.limits());
        let fps: Vec<Fingerprint> = (0..cfg.nodes).map(fingerprint).collect();
        let index = fps.iter().enumerate().map(|(i, fp)| (*fp, i)).collect();
        let blocks = Blocks::new(cfg.blocks, cfg.heavy_blocks(), cfg.limit_users);
        let track = Tracker::new(&cfg, blocks.heavy + blocks.limit_users, limits.recipients_per_hour);
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let skew: Vec<i64> = (0..cfg.nodes)
            .map(|_| {
                if cfg.skew_ms == 0 {
                    0
                } else {
                    rng.random_range(-(cfg.skew_ms as i64)..=cfg.skew_ms as i64)
                }
            })
            .collect();
        let first_hostile = cfg.nodes - cfg.hostile.min(cfg.nodes - 1);
        let hostile: Vec<Option<Behaviour>> = (0..cfg.nodes)
            .map(|n| cfg.behaviour.filter(|_| n >= first_hostile).map(|b| b.of(n - first_hostile)))
            .collect();
        let honest = (0..cfg.nodes).filter(|&n| hostile[n].is_none()).collect();
        let mut world = World {
            rng,
            skew,
            hostile,
            honest,
            lying: Default::default(),
            now: 0,
            queue: Queue::default(),
            net: Network::new(cfg.nodes, cfg.latency_ms, cfg.loss, cfg.frame_overhead),
            nodes: Vec::new(),
            fps,
            index,
            limits,
            blocks,
            messages: Vec::new(),
            waiting: HashMap::new(),
            next_txn: 1,
            sending: true,
            saved_penalties: HashMap::new(),
            track,
            cfg,
        };
        for node in 0..world.cfg.nodes {
            let engine = world.engine(node);
            world.nodes.push(Some(engine));
            let offset = world.rng.random_range(0..world.cfg.interval_ms);
            world.queue.at(offset, Event::Tick(node));
        }
        for block in world.blocks.heavy + world.blocks.limit_users..world.blocks.total {
            let first = world.exponential_ms(world.cfg.p2p_per_hour / 3600.0);
            world.queue.at(first, Event::NextOf(block));
        }
        let (start, end, _) = world.cfg.window();
        world.queue.at(start, Event::WindowStarts);
        world.queue.at(end, Event::WindowEnds);
        world
    }

    /// A node's engine, knowing the members it can reach now; a hostile
    /// one that lies about verdicts judges with a liar.
    fn engine(&self, node: usize) -> Engine {
        let settings = EngineSettings {
            ask_timeout_ms: ThrottleSettings::default().hold.as_millis() as u64,
            ..EngineSettings::default()
        };
        let judge: Arc<dyn magicmx_gossip::Judge> = match self.hostile[node] {
            Some(Behaviour::SaysYes) => {
                Arc::new(Liar { yes: true, honest: (*self.limits).clone(), active: self.lying.clone() })
            }
            Some(Behaviour::SaysNo) => {
                Arc::new(Liar { yes: false, honest: (*self.limits).clone(), active: self.lying.clone() })
            }
            _ => self.limits.clone(),
        };
        let mut engine = Engine::new(self.fps[node], settings, judge);
        engine.set_started(self.at(node));
        engine.set_members(&self.members_of(node), self.at(node));
        engine
    }

    /// The time on node `node`'s clock: Unix milliseconds of a day in 2026
    /// (so a clock behind is not clamped at zero), plus its skew.
    fn at(&self, node: usize) -> u64 {
        (EPOCH_MS + self.now).saturating_add_signed(self.skew[node])
    }

    fn members_of(&self, node: usize) -> Vec<(Fingerprint, bool)> {
        (0..self.cfg.nodes)
            .filter(|&m| m != node)
            .map(|m| (self.fps[m], self.net.reachable(node, m)))
            .collect()
    }

    /// Milliseconds until the next event of a Poisson process at `per_s` a second.
    fn exponential_ms(&mut self, per_s: f64) -> u64 {
        let u: f64 = self.rng.random::<f64>().max(1e-12);
        (-u.ln() / per_s * 1000.0) as u64
    }

    fn run(&mut self) {
        let (_, _, stop) = self.cfg.window();
        while let Some((at, event)) = self.queue.next() {
            if at > stop {
                break;
            }
            self.now = at;
            match event {
                Event::Deliver { from, to, frame, bytes } => self.deliver(from, to, frame, bytes),
                Event::Tick(node) => self.tick(node),
                Event::Send(msg) => self.attempt(msg),
                Event::NextOf(block) => self.next_of(block),
                Event::WindowStarts => self.window_starts(),
                Event::WindowEnds => {
                    self.track.window_ends(&self.nodes, self.now);
                    self.net.counting = false;
                    self.sending = false;
                }
                Event::Crash(nodes) => self.crash(nodes),
                Event::Restart(nodes) => self.restart(nodes),
                Event::Split(nodes) => {
                    for &n in &nodes {
                        self.net.side[n] = 1;
                    }
                    self.queue.at(self.now + self.cfg.detect_ms, Event::Notice(vec![]));
                }
                Event::Heal(nodes) => {
                    for &n in &nodes {
                        self.net.side[n] = 0;
                    }
                    let pairs =
                        nodes.iter().flat_map(|&a| (0..self.cfg.nodes).map(move |b| (a, b))).collect();
                    self.queue.at(self.now + self.cfg.detect_ms, Event::Notice(pairs));
                }
                Event::Notice(pairs) => self.notice(pairs),
                Event::Members(node) => self.members(node),
                Event::Greet(pairs) => self.greet(pairs),
                Event::Churn => self.churn(),
                Event::Forget => self.forget(),
            }
        }
    }

    fn window_starts(&mut self) {
        self.net.counting = true;
        self.lying.store(true, std::sync::atomic::Ordering::Relaxed);
        self.track.window_starts(&self.nodes, self.now);
        let start = self.now;
        let measure = self.cfg.measure_s * 1000;
        for block in 0..self.blocks.heavy {
            let first = start + self.exponential_ms(self.cfg.heavy_rate);
            self.queue.at(first, Event::NextOf(block));
        }
        for block in self.blocks.heavy..self.blocks.heavy + self.blocks.limit_users {
            for k in 0..LIMIT_USER_MESSAGES {
                let msg = self.new_message(block, LIMIT_USER_RECIPIENTS);
                let at = start + u64::from(k) * (measure * 2 / 3) / u64::from(LIMIT_USER_MESSAGES);
                let jitter = self.rng.random_range(0..1000);
                self.queue.at(at + jitter, Event::Send(msg));
            }
        }
        // Faults: a few nodes crash a third of the way in and come back
        // empty two thirds in; a few are cut off in between.
        let pick = |world: &mut World, share: f64| -> Vec<usize> {
            let count = (world.cfg.nodes as f64 * share).round() as usize;
            let mut picked = Vec::new();
            while picked.len() < count.min(world.cfg.nodes / 3) {
                let n = world.rng.random_range(1..world.cfg.nodes);
                if !picked.contains(&n) {
                    picked.push(n);
                }
            }
            picked
        };
        let crashed = pick(self, self.cfg.crash_share);
        let cut: Vec<usize> =
            pick(self, self.cfg.partition_share).into_iter().filter(|n| !crashed.contains(n)).collect();
        if !crashed.is_empty() {
            self.queue.at(start + measure / 3, Event::Crash(crashed.clone()));
            self.queue.at(start + measure * 2 / 3, Event::Restart(crashed));
        }
        if !cut.is_empty() && self.cfg.split_s > 0 {
            // A split outlasting forget_after: each side forgets the other.
            self.queue.at(start, Event::Split(cut.clone()));
            self.queue.at(start + self.cfg.forget_s * 1000, Event::Forget);
            self.queue.at(start + self.cfg.split_s * 1000, Event::Heal(cut));
        } else if !cut.is_empty() {
            self.queue.at(start + measure / 6, Event::Split(cut.clone()));
            self.queue.at(start + measure / 2, Event::Heal(cut));
        }
        if self.cfg.restart_every_s > 0 {
            let every = self.cfg.restart_every_s * 1000;
            for k in 1..=(measure / every) {
                self.queue.at(start + k * every, Event::Churn);
            }
        }
    }

    /// One honest node (not the first) restarts: it crashes and comes back empty a second later.
    fn churn(&mut self) {
        let n = self.honest[self.rng.random_range(1..self.honest.len().max(2))];
        if self.nodes[n].is_none() {
            return;
        }
        self.crash(vec![n]);
        self.queue.at(self.now + 1_000, Event::Restart(vec![n]));
    }

    /// `forget_after` has passed: every node forgets the members it cannot
    /// reach (their counts and penalties); they stay members known, down.
    fn forget(&mut self) {
        for node in 0..self.cfg.nodes {
            for member in 0..self.cfg.nodes {
                if member != node && !self.net.reachable(node, member) {
                    let fp = self.fps[member];
                    if let Some(engine) = self.nodes[node].as_mut() {
                        engine.forget(fp);
                    }
                }
            }
        }
    }

    fn new_message(&mut self, block: usize, recipients: u16) -> usize {
        let measured = self.net.counting;
        self.messages.push(Message {
            block: block as u32,
            left: recipients,
            delivered: 0,
            attempts: 0,
            measured,
        });
        self.track.offered(self.blocks.sender(block), recipients, measured);
        self.messages.len() - 1
    }

    /// A block sending on its own schedule sends its next message.
    fn next_of(&mut self, block: usize) {
        if !self.sending {
            return;
        }
        let msg = self.new_message(block, 1);
        self.attempt(msg);
        let rate = match self.blocks.sender(block) {
            Sender::Spraying => self.cfg.heavy_rate,
            _ => self.cfg.p2p_per_hour / 3600.0,
        };
        let next = self.now + self.exponential_ms(rate).max(1);
        self.queue.at(next, Event::NextOf(block));
    }

    // ---- one message at one node ------------------------------------------

    /// The sender connects to a node of the mesh (the MX host it resolved;
    /// one that does not answer sends it on to the next, as MTAs do).
    fn attempt(&mut self, msg: usize) {
        self.messages[msg].attempts += 1;
        let pick = |world: &mut World| world.honest[world.rng.random_range(0..world.honest.len())];
        let mut node = pick(self);
        for _ in 0..3 {
            if self.nodes[node].is_some() {
                break;
            }
            node = pick(self);
        }
        if self.nodes[node].is_none() {
            return self.defer(msg);
        }
        let block = self.wire(msg);
        let now = self.at(node);
        let engine = self.nodes[node].as_mut().expect("up");
        if engine.penalty(block, now).is_some() || engine.connection(block, now).is_some() {
            self.track.refused_at_gate(self.blocks.sender(self.messages[msg].block as usize));
            self.flush(node);
            return self.defer(msg);
        }
        let txn = self.next_txn;
        self.next_txn += 1;
        self.rcpt(Attempt { msg, node, txn, fitting: 0, sealed: false });
    }

    fn wire(&self, msg: usize) -> WireBlock {
        self.blocks.wire(self.messages[msg].block as usize)
    }

    /// RCPT: one more recipient reserved, the home asked.
    fn rcpt(&mut self, attempt: Attempt) {
        let block = self.wire(attempt.msg);
        let now = self.at(attempt.node);
        let engine = self.nodes[attempt.node].as_mut().expect("up");
        engine.reserve(block, attempt.txn, 1, now);
        let asked = engine.ask(block, Question::Recipient, now);
        self.after_ask(attempt, asked);
    }

    /// The end of DATA: sealed, and the home asked again.
    fn seal(&mut self, mut attempt: Attempt) {
        let block = self.wire(attempt.msg);
        let now = self.at(attempt.node);
        let engine = self.nodes[attempt.node].as_mut().expect("up");
        engine.seal(block, attempt.txn, now);
        attempt.sealed = true;
        let asked = engine.ask(block, Question::Sealed { id: attempt.txn }, now);
        self.after_ask(attempt, asked);
    }

    fn after_ask(&mut self, attempt: Attempt, asked: Asked) {
        match asked {
            Asked::Now(answer) => {
                self.flush(attempt.node);
                self.answered(attempt, answer);
            }
            Asked::Later(id) => {
                self.waiting.insert((attempt.node, id), attempt);
                self.flush(attempt.node);
            }
        }
    }

    fn answered(&mut self, mut attempt: Attempt, answer: Answer) {
        let now = self.at(attempt.node);
        let Some(engine) = self.nodes[attempt.node].as_mut() else { return };
        let block = self.blocks.wire(self.messages[attempt.msg].block as usize);
        if attempt.sealed {
            engine.settle(block, attempt.txn, answer.yes, now);
            if answer.yes {
                let m = &mut self.messages[attempt.msg];
                m.left -= attempt.fitting;
                m.delivered += attempt.fitting;
                let (sender, measured) = (self.blocks.sender(m.block as usize), m.measured);
                self.track.taken(m.block as usize, sender, attempt.fitting, measured);
            }
            if self.messages[attempt.msg].left > 0 {
                self.defer(attempt.msg);
            }
            return;
        }
        if answer.yes {
            attempt.fitting += 1;
        } else {
            engine.release(block, attempt.txn, 1, now);
        }
        let more = answer.yes && attempt.fitting < self.messages[attempt.msg].left;
        match (more, attempt.fitting) {
            (true, _) => self.rcpt(attempt),
            (false, 0) => {
                engine.settle(block, attempt.txn, false, now);
                self.defer(attempt.msg);
            }
            (false, _) => self.seal(attempt),
        }
    }

    /// The sender keeps the message and tries again later (spam does not).
    fn defer(&mut self, msg: usize) {
        let m = &self.messages[msg];
        if !self.blocks.sender(m.block as usize).is_legitimate() {
            return;
        }
        let retry = self.now + retry_after_ms(m.attempts) + self.rng.random_range(0..5_000);
        self.queue.at(retry, Event::Send(msg));
    }

    // ---- the engines and the network ----------------------------------------

    /// Sends what node `node`'s engine has for others and takes its events.
    fn flush(&mut self, node: usize) {
        let mut answers = Vec::new();
        {
            let Some(engine) = self.nodes[node].as_mut() else { return };
            while let Some((to, frame)) = engine.poll_transmit() {
                let to = self.index[&to];
                let bytes = encode(&frame).len();
                if let Some(at) = self.net.send(&mut self.rng, self.now, node, to, bytes) {
                    self.queue.at(at, Event::Deliver { from: node, to, frame, bytes });
                }
            }
            // The faults are the node's log; the report reads standing directly.
            while engine.poll_fault().is_some() {}
            while let Some(event) = engine.poll_event() {
                match event {
                    EngineEvent::Answer { id, answer } => answers.push((id, answer)),
                    EngineEvent::Penalised { block, .. } | EngineEvent::Confirmed { block, .. } => {
                        self.track.penalised(node, block, self.now)
                    }
                }
            }
        }
        for (id, answer) in answers {
            if let Some(attempt) = self.waiting.remove(&(node, id)) {
                self.answered(attempt, answer);
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, frame: Frame, bytes: usize) {
        if !self.net.arrive(from, to, bytes) {
            return;
        }
        let now = self.at(to);
        let Some(engine) = self.nodes[to].as_mut() else { return };
        let penalties: Vec<WireBlock> = match &frame {
            Frame::Counts(c) => c.penalties.iter().map(|p| p.block).collect(),
            _ => Vec::new(),
        };
        engine.handle(self.fps[from], frame, now);
        for block in penalties {
            if engine.penalty(block, now).is_some() {
                self.track.penalised(to, block, self.now);
            }
        }
        self.flush(to);
    }

    fn tick(&mut self, node: usize) {
        self.queue.at(self.now + self.cfg.interval_ms, Event::Tick(node));
        let now = self.at(node);
        let Some(engine) = self.nodes[node].as_mut() else { return };
        if self.hostile[node] == Some(Behaviour::Restarts)
            && self.lying.load(std::sync::atomic::Ordering::Relaxed)
        {
            engine.set_started(now);
        }
        engine.tick(now);
        // Housekeeping sweeps every few seconds, as the node's does.
        if (self.now / self.cfg.interval_ms) % 10 == (node as u64 % 10) {
            engine.sweep(now);
        }
        self.flush(node);
        match self.hostile[node] {
            Some(behaviour) if self.lying.load(std::sync::atomic::Ordering::Relaxed) => {
                self.forge(node, behaviour)
            }
            None => self.track.standing(node, self.nodes[node].as_ref(), &self.hostile, &self.fps, self.now),
            _ => {}
        }
    }

    /// A hostile member's forged frames for this round, sent as any frame.
    fn forge(&mut self, node: usize, behaviour: Behaviour) {
        let legit = self.blocks.heavy + self.blocks.limit_users..self.blocks.total;
        if legit.is_empty() {
            return;
        }
        let victims: Vec<WireBlock> =
            (0..20).map(|_| self.blocks.wire(self.rng.random_range(legit.clone()))).collect();
        let members: Vec<Fingerprint> =
            (0..self.cfg.nodes).filter(|&m| m != node).map(|m| self.fps[m]).collect();
        let Some(engine) = self.nodes[node].as_ref() else { return };
        let round = self.now / self.cfg.interval_ms;
        let forged = forged_round(behaviour, round, self.at(node), &victims, &members, |b| engine.homes(b));
        for (to, frame) in forged {
            let to = self.index[&to];
            if to == node {
                continue;
            }
            let bytes = encode(&frame).len();
            if let Some(at) = self.net.send(&mut self.rng, self.now, node, to, bytes) {
                self.queue.at(at, Event::Deliver { from: node, to, frame, bytes });
            }
        }
    }

    fn crash(&mut self, nodes: Vec<usize>) {
        for &n in &nodes {
            // What the node has on disk: its penalties (counts are not kept).
            let at = self.at(n);
            let saved = self.nodes[n].as_ref().map(|e| e.penalties().stored(at)).unwrap_or_default();
            self.saved_penalties.insert(n, saved);
            self.nodes[n] = None;
            self.net.up[n] = false;
        }
        // Sessions open at a crashed node break: their senders try again.
        let mut broken: Vec<(usize, u64)> =
            self.waiting.keys().filter(|(n, _)| nodes.contains(n)).copied().collect();
        broken.sort_unstable();
        for key in broken {
            let attempt = self.waiting.remove(&key).expect("listed");
            self.defer(attempt.msg);
        }
        self.track.crashed(nodes.len());
        self.queue.at(self.now + self.cfg.detect_ms, Event::Notice(vec![]));
    }

    fn restart(&mut self, nodes: Vec<usize>) {
        for &n in &nodes {
            self.net.up[n] = true;
            let mut engine = self.engine(n);
            engine.restore_penalties(&self.saved_penalties.remove(&n).unwrap_or_default(), &[]);
            let warm = self.cfg.detect_ms + self.cfg.notice_jitter_ms + 2 * self.cfg.interval_ms;
            engine.warm_until(self.at(n) + warm);
            self.nodes[n] = Some(engine);
        }
        let pairs = nodes.iter().flat_map(|&a| (0..self.cfg.nodes).map(move |b| (a, b))).collect();
        self.queue.at(self.now + self.cfg.detect_ms, Event::Notice(pairs));
    }

    /// The members learn who is reachable now, each after its own delay;
    /// then the pairs that can talk again greet each other (a new
    /// connection starts with the greeting).
    fn notice(&mut self, pairs: Vec<(usize, usize)>) {
        let jitter = self.cfg.notice_jitter_ms;
        for node in 0..self.cfg.nodes {
            let delay = if jitter == 0 { 0 } else { self.rng.random_range(0..=jitter) };
            self.queue.at(self.now + delay, Event::Members(node));
        }
        self.queue.at(self.now + jitter, Event::Greet(pairs));
    }

    fn members(&mut self, node: usize) {
        if self.nodes[node].is_some() {
            let members = self.members_of(node);
            let now = self.at(node);
            self.nodes[node].as_mut().expect("up").set_members(&members, now);
            self.flush(node);
        }
    }

    fn greet(&mut self, pairs: Vec<(usize, usize)>) {
        for (a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                if from == to || !self.net.reachable(from, to) {
                    continue;
                }
                let now = self.at(from);
                let Some(engine) = self.nodes[from].as_ref() else { continue };
                for frame in engine.greeting(self.fps[to], now) {
                    let bytes = encode(&frame).len();
                    if let Some(at) = self.net.send(&mut self.rng, self.now, from, to, bytes) {
                        self.queue.at(at, Event::Deliver { from, to, frame, bytes });
                    }
                }
            }
        }
    }
}
