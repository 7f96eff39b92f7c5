//! The figures of a run: what each node holds, what it sends, how much the
//! spraying blocks got, how fast they were stopped everywhere, and whether
//! every legitimate message arrived.

use std::collections::HashSet;
use std::time::Duration;

use magicmx_gossip::counts::Fingerprint;
use magicmx_gossip::Engine;
use magicmx_proto::wire::WireBlock;

use crate::config::Config;
use crate::hostile::Behaviour;
use crate::network::Network;
use crate::traffic::{Message, Sender};

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub nodes: usize,
    pub blocks: usize,
    /// Messages offered a second in the measured window, mesh-wide.
    pub offered_per_s: f64,
    /// Count and penalty tables per node at the window's end: largest, mean.
    pub memory_max: usize,
    pub memory_mean: usize,
    /// Gossip sent plus received per honest node, bits a second: largest, mean.
    pub gossip_max_bps: f64,
    pub gossip_mean_bps: f64,
    /// Recipients a spraying block got, over its limit: largest, mean.
    pub leak_max: f64,
    pub leak_mean: f64,
    /// Recipients a block using its limit got, over its limit: smallest.
    pub limit_user_min: f64,
    /// Gossip intervals from a spraying block's first penalty to a penalty at
    /// every live node: median, 99th percentile, largest.
    pub rounds_p50: f64,
    pub rounds_p99: f64,
    pub rounds_max: f64,
    /// Spraying blocks penalised but not at every node by the end.
    pub not_everywhere: usize,
    /// Legitimate recipients delivered of those offered in the window.
    pub legit_delivered: u64,
    pub legit_offered: u64,
    pub legit_deferred_once: u64,
    /// Questions to homes that timed out, and judged alone, mesh-wide.
    pub timeouts: u64,
    pub judged_alone: u64,
    pub wall: Duration,
    /// Hostile members, what they did, how many every honest node came to
    /// weigh at nothing, and how long after the window's start that took
    /// (median and largest of those silenced everywhere).
    pub hostile: usize,
    pub behaviour: Option<Behaviour>,
    pub silenced_everywhere: usize,
    pub silenced_p50_s: f64,
    pub silenced_max_s: f64,
    /// Disputes between homes, mesh-wide.
    pub disputes: u64,
    /// The lowest weight any honest node gives any honest member at the end
    /// (1: no honest member lost standing anywhere).
    pub honest_weight_min: f64,
}

impl Report {
    pub const HOSTILE_HEADER: &'static str = "| N | K | hostile f | behaviour | legit delivered | legit deferred at least once | leak, spraying max | limit users, min | counts per node, max | gossip per node, max | silenced at every honest node | time until silenced everywhere, p50 / max | disputes | honest members' weight, min |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

    /// The figures of a run with hostile members.
    pub fn hostile_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {}/{} | {} | {:.3} | {:.3} | {:.1} MiB | {:.3} Mbit/s | {} of {} | {:.0} s / {:.0} s | {} | {:.2} |",
            self.nodes,
            self.blocks,
            self.hostile,
            self.behaviour.map_or("none", Behaviour::name),
            self.legit_delivered,
            self.legit_offered,
            self.legit_deferred_once,
            self.leak_max,
            self.limit_user_min,
            self.memory_max as f64 / 1048576.0,
            self.gossip_max_bps / 1e6,
            self.silenced_everywhere,
            self.hostile,
            self.silenced_p50_s,
            self.silenced_max_s,
            self.disputes,
            self.honest_weight_min,
        )
    }

    pub const HEADER: &'static str = "| N | K | offered msg/s | counts per node, max (mean) | gossip per node, max (mean) | leak, spraying max (mean) | limit users, min | rounds to every node p50 / p99 / max | legit delivered | time-outs / judged alone | wall |\n|---|---|---|---|---|---|---|---|---|---|---|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.1} MiB ({:.1}) | {:.3} Mbit/s ({:.3}) | {:.3} ({:.3}) | {:.3} | {:.1} / {:.1} / {:.1}{} | {}/{} ({:.2} %) | {} / {} | {:.0} s |",
            self.nodes,
            self.blocks,
            self.offered_per_s,
            self.memory_max as f64 / 1048576.0,
            self.memory_mean as f64 / 1048576.0,
            self.gossip_max_bps / 1e6,
            self.gossip_mean_bps / 1e6,
            self.leak_max,
            self.leak_mean,
            self.limit_user_min,
            self.rounds_p50,
            self.rounds_p99,
            self.rounds_max,
            if self.not_everywhere > 0 { format!(" ({} not everywhere)", self.not_everywhere) } else { String::new() },
            self.legit_delivered,
            self.legit_offered,
            100.0 * self.legit_delivered as f64 / self.legit_offered.max(1) as f64,
            self.timeouts,
            self.judged_alone,
            self.wall.as_secs_f64(),
        )
    }
}

/// What the driver tells as it goes.
pub struct Tracker {
    /// Blocks tracked: the spraying ones, then the limit users.
    heavy: usize,
    tracked: usize,
    limit: f64,
    up: usize,
    taken: Vec<u32>,
    first_penalty: Vec<Option<u64>>,
    holders: Vec<Vec<u64>>,
    holder_count: Vec<usize>,
    everywhere: Vec<Option<u64>>,
    offered: u64,
    memory: Vec<usize>,
    /// (honest node, hostile node) pairs where the hostile one's word
    /// weighs nothing, and when each hostile one reached every honest node.
    silenced: HashSet<(usize, usize)>,
    silenced_count: Vec<usize>,
    silenced_everywhere: Vec<Option<u64>>,
    honest: usize,
    window_start: u64,
}

impl Tracker {
    pub fn new(cfg: &Config, tracked: usize, limit: f64) -> Tracker {
        let heavy = cfg.heavy_blocks();
        let words = cfg.nodes.div_ceil(64);
        Tracker {
            heavy,
            tracked,
            limit,
            up: cfg.nodes,
            taken: vec![0; tracked],
            first_penalty: vec![None; heavy],
            holders: vec![vec![0; words]; heavy],
            holder_count: vec![0; heavy],
            everywhere: vec![None; heavy],
            offered: 0,
            memory: Vec::new(),
            silenced: HashSet::new(),
            silenced_count: vec![0; cfg.nodes],
            silenced_everywhere: vec![None; cfg.nodes],
            honest: cfg.nodes - cfg.hostile.min(cfg.nodes - 1),
            window_start: cfg.warmup_s * 1000,
        }
    }

    fn index(block: WireBlock) -> usize {
        ((block.net - 0x0A00_0000) >> 8) as usize
    }

    pub fn window_starts(&mut self, _nodes: &[Option<Engine>], _now: u64) {}

    pub fn window_ends(&mut self, nodes: &[Option<Engine>], _now: u64) {
        self.memory = nodes.iter().flatten().map(Engine::table_bytes).collect();
    }

    pub fn offered(&mut self, _sender: Sender, _recipients: u16, measured: bool) {
        if measured {
            self.offered += 1;
        }
    }

    pub fn refused_at_gate(&mut self, _sender: Sender) {}

    pub fn taken(&mut self, block: usize, _sender: Sender, recipients: u16, measured: bool) {
        if measured && block < self.tracked {
            self.taken[block] += u32::from(recipients);
        }
    }

    /// What honest node `node` thinks of the hostile members now.
    pub fn standing(
        &mut self,
        node: usize,
        engine: Option<&Engine>,
        hostile: &[Option<Behaviour>],
        fps: &[Fingerprint],
        now: u64,
    ) {
        let Some(engine) = engine else { return };
        for (h, behaviour) in hostile.iter().enumerate() {
            if behaviour.is_none() || self.silenced.contains(&(node, h)) {
                continue;
            }
            if engine.standing().weight(&fps[h]) == 0.0 {
                self.silenced.insert((node, h));
                self.silenced_count[h] += 1;
                if self.silenced_count[h] >= self.honest {
                    self.silenced_everywhere[h] = Some(now);
                }
            }
        }
    }

    pub fn crashed(&mut self, count: usize) {
        self.up = self.up.saturating_sub(count);
    }

    /// Node `node` holds a penalty on `block` (imposed or learnt).
    pub fn penalised(&mut self, node: usize, block: WireBlock, now: u64) {
        let b = Tracker::index(block);
        if b >= self.heavy {
            return;
        }
        self.first_penalty[b].get_or_insert(now);
        let (word, bit) = (node / 64, 1u64 << (node % 64));
        if self.holders[b][word] & bit == 0 {
            self.holders[b][word] |= bit;
            self.holder_count[b] += 1;
        }
        if self.holder_count[b] >= self.up && self.everywhere[b].is_none() {
            self.everywhere[b] = Some(now);
        }
    }

    pub fn report(
        &self,
        cfg: &Config,
        nodes: &[Option<Engine>],
        net: &Network,
        messages: &[Message],
        wall: Duration,
    ) -> Report {
        let measure_s = cfg.measure_s as f64;
        // Per honest node: what a hostile member sends itself is its own affair.
        let gossip: Vec<f64> =
            (0..self.honest).map(|n| (net.sent[n] + net.received[n]) as f64 * 8.0 / measure_s).collect();
        let leaks: Vec<f64> = self.taken[..self.heavy].iter().map(|&t| f64::from(t) / self.limit).collect();
        let users = &self.taken[self.heavy..self.tracked];
        let mut rounds: Vec<f64> = (0..self.heavy)
            .filter_map(|b| {
                Some((self.everywhere[b]? - self.first_penalty[b]?) as f64 / cfg.interval_ms as f64)
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            rounds.get(((rounds.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0)
        };
        let legit = messages.iter().filter(|m| m.measured && is_legit(m, self.heavy));
        let (mut delivered, mut offered, mut deferred) = (0, 0, 0);
        for m in legit {
            delivered += u64::from(m.delivered);
            offered += u64::from(m.delivered + m.left);
            deferred += u64::from(m.attempts > 1);
        }
        let stats: Vec<_> = nodes.iter().flatten().map(Engine::stats).collect();
        let mut silenced: Vec<f64> = self
            .silenced_everywhere
            .iter()
            .flatten()
            .map(|&at| at.saturating_sub(self.window_start) as f64 / 1000.0)
            .collect();
        silenced.sort_by(f64::total_cmp);
        Report {
            nodes: cfg.nodes,
            blocks: cfg.blocks,
            offered_per_s: self.offered as f64 / measure_s,
            memory_max: self.memory.iter().copied().max().unwrap_or(0),
            memory_mean: self.memory.iter().sum::<usize>() / self.memory.len().max(1),
            gossip_max_bps: gossip.iter().copied().fold(0.0, f64::max),
            gossip_mean_bps: gossip.iter().sum::<f64>() / gossip.len().max(1) as f64,
            leak_max: leaks.iter().copied().fold(0.0, f64::max),
            leak_mean: leaks.iter().sum::<f64>() / leaks.len().max(1) as f64,
            limit_user_min: users.iter().map(|&t| f64::from(t) / self.limit).fold(f64::INFINITY, f64::min),
            rounds_p50: pct(0.5),
            rounds_p99: pct(0.99),
            rounds_max: rounds.last().copied().unwrap_or(0.0),
            not_everywhere: (0..self.heavy)
                .filter(|&b| self.first_penalty[b].is_some() && self.everywhere[b].is_none())
                .count(),
            legit_delivered: delivered,
            legit_offered: offered,
            legit_deferred_once: deferred,
            timeouts: stats.iter().map(|s| s.timeouts).sum(),
            judged_alone: stats.iter().map(|s| s.judged_alone).sum(),
            wall,
            hostile: cfg.hostile,
            behaviour: cfg.behaviour,
            silenced_everywhere: silenced.len(),
            silenced_p50_s: silenced.get(silenced.len() / 2).copied().unwrap_or(f64::NAN),
            silenced_max_s: silenced.last().copied().unwrap_or(f64::NAN),
            disputes: stats.iter().map(|s| s.disputes).sum(),
            honest_weight_min: self.honest_weight_min(nodes),
        }
    }
}

impl Tracker {
    fn honest_weight_min(&self, nodes: &[Option<Engine>]) -> f64 {
        let honest: Vec<Fingerprint> = nodes.iter().take(self.honest).flatten().map(Engine::own).collect();
        nodes
            .iter()
            .take(self.honest)
            .flatten()
            .flat_map(|e| honest.iter().map(move |fp| e.standing().weight(fp)))
            .fold(1.0, f64::min)
    }
}

fn is_legit(message: &Message, heavy: usize) -> bool {
    message.block as usize >= heavy
}
