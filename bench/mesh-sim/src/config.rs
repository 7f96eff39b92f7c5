//! What one run simulates: the mesh, the traffic, the faults, the hostile
//! members, and the phases.

use crate::hostile::Behaviour;

/// A run: a warm-up of person-to-person mail only (so the counts are those
/// of a mesh that has been running), then a measured window with the whole
/// mix and the faults, then a drain in which retries finish.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Mesh nodes.
    pub nodes: usize,
    /// Active source blocks.
    pub blocks: usize,
    /// Of them, spraying every node (the rest send person to person).
    pub heavy_share: f64,
    /// Messages a second from each spraying block, to random nodes.
    pub heavy_rate: f64,
    /// Messages an hour from each person-to-person block.
    pub p2p_per_hour: f64,
    /// Blocks that send exactly their limit in the window, spread over the
    /// nodes (a mailing host that uses all it is allowed).
    pub limit_users: usize,
    pub warmup_s: u64,
    pub measure_s: u64,
    pub drain_s: u64,
    /// The gossip interval.
    pub interval_ms: u64,
    /// One-way latency between nodes, uniform in this range.
    pub latency_ms: (u64, u64),
    /// Share of packets lost: a lost frame is sent again after QUIC's probe
    /// time-out (three maximum one-way latencies), and the frames behind it
    /// on the same stream wait for it.
    pub loss: f64,
    /// Bytes of UDP, IP and QUIC headers added to every frame.
    pub frame_overhead: usize,
    /// Share of the nodes that crash in the window and restart empty.
    pub crash_share: f64,
    /// Share of the nodes cut off from the rest for a while in the window.
    pub partition_share: f64,
    /// How long until the others notice a node went down or came back (SWIM).
    pub detect_ms: u64,
    /// Each node notices a membership change after its own further delay,
    /// uniform up to this.
    pub notice_jitter_ms: u64,
    /// Each node's clock is off by a fixed amount, uniform in ± this.
    pub skew_ms: u64,
    /// Hostile members (the last nodes), and what they do.
    pub hostile: usize,
    pub behaviour: Option<Behaviour>,
    /// A node restarts every this many seconds in the window (0: none).
    pub restart_every_s: u64,
    /// A split of `partition_share` of the nodes lasting this long from the
    /// window's start (0: the short split of `partition_share`, if any), and
    /// the `forget_after` by which each side forgets the other.
    pub split_s: u64,
    pub forget_s: u64,
}

impl Config {
    /// The mix for `nodes` and `blocks`: 1 % of the blocks spray at
    /// 10 messages a second (100,000 a second mesh-wide at a million
    /// blocks), the rest send 3 an hour.
    pub fn mix(nodes: usize, blocks: usize) -> Config {
        Config {
            seed: 1,
            nodes,
            blocks,
            heavy_share: 0.01,
            heavy_rate: 10.0,
            p2p_per_hour: 3.0,
            limit_users: (blocks / 1000).clamp(5, 200),
            warmup_s: 3600,
            measure_s: 60,
            drain_s: 1800,
            interval_ms: 500,
            latency_ms: (5, 50),
            loss: 0.01,
            frame_overhead: 48,
            crash_share: 0.01,
            partition_share: 0.0,
            detect_ms: 2_000,
            notice_jitter_ms: 5_000,
            skew_ms: 0,
            hostile: 0,
            behaviour: None,
            restart_every_s: 0,
            split_s: 0,
            forget_s: 3_600,
        }
    }

    pub fn heavy_blocks(&self) -> usize {
        ((self.blocks as f64 * self.heavy_share).round() as usize).max(1)
    }

    /// Milliseconds where the measured window starts and ends, and the run.
    pub fn window(&self) -> (u64, u64, u64) {
        let start = self.warmup_s * 1000;
        let end = start + self.measure_s * 1000;
        (start, end, end + self.drain_s * 1000)
    }
}
