//! Mesh benchmarks (`cargo bench -p magicmx-gossip`), real QUIC endpoints on
//! loopback in one process:
//! - convergence: time from a count recorded at one node until the block's
//!   homes hold it, and from a penalty imposed at one node until every node
//!   holds it, p50/p99, for N = 3, 10, 30;
//! - wire cost: bytes per changed block per home it is sent to, and bytes
//!   per second per node, with 1,000 and 100,000 blocks changing every round;
//! - memory: heap bytes per tracked (origin, block), by a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use magicmx_gossip::counts::{Counts, Periods};
use magicmx_gossip::{pki, Caps, Kind, Mesh, MeshSettings};
use magicmx_proto::wire::{CountEntry, WireBlock};
use magicmx_proto::SourceBlock;

struct Counting;
static HEAP: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INTERVAL: Duration = Duration::from_millis(500);

fn block(n: u32) -> SourceBlock {
    let ip = std::net::Ipv4Addr::from(0x0A00_0000 | (n << 8));
    SourceBlock::of_default(ip.into())
}

async fn start(dir: &Path, n: usize) -> Vec<Mesh> {
    let ca = pki::new_ca(1).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    let mut nodes: Vec<Mesh> = Vec::new();
    for i in 0..n {
        let pem = pki::issue_for_days(&ca.key, &format!("n{i}"), 2).unwrap();
        let (cert, key) = (dir.join(format!("n{i}.pem")), dir.join(format!("n{i}.key")));
        std::fs::write(&cert, pem.cert).unwrap();
        std::fs::write(&key, pem.key).unwrap();
        let mut s = MeshSettings::new(
            &format!("n{i}"),
            "127.0.0.1:0".parse().unwrap(),
            dir.join("ca.pem"),
            cert,
            key,
        );
        s.interval = INTERVAL;
        s.seeds = nodes.first().map(|m| vec![m.local_addr()]).unwrap_or_default();
        nodes.push(Mesh::start(s).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nodes.iter().all(|m| m.peers().iter().filter(|p| p.alive).count() == n - 1) {
        assert!(Instant::now() < deadline, "mesh of {n} did not form");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn convergence(n: usize, samples: u32) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(dir.path(), n).await;
    let (mut times, mut penalties) = (Vec::new(), Vec::new());
    for s in 0..samples {
        let from = (s as usize * 7) % n;
        let b = block(1_000_000 + s);
        // Record at a random moment within the round.
        tokio::time::sleep(Duration::from_millis(u64::from(s * 37 % 500))).await;
        let homes = nodes[from].homes(b);
        let t0 = Instant::now();
        nodes[from].record(b, Kind::Recipient);
        let at_homes = || nodes.iter().filter(|m| homes.contains(&m.fingerprint()));
        while !at_homes().all(|m| m.rate(b, Caps::NONE).recipients > 0.5) {
            tokio::time::sleep(Duration::from_micros(500)).await;
            assert!(t0.elapsed() < Duration::from_secs(10), "no convergence");
        }
        times.push(t0.elapsed());
        let t1 = Instant::now();
        let now = magicmx_gossip::tally::now_ms;
        nodes[from].tally().penalise(b, now() + 600_000, 1);
        while !nodes.iter().all(|m| m.tally().penalty(b, now()).is_some()) {
            tokio::time::sleep(Duration::from_micros(500)).await;
            assert!(t1.elapsed() < Duration::from_secs(10), "the penalty did not spread");
        }
        penalties.push(t1.elapsed());
    }
    for (what, times) in [("count at its homes ", &mut times), ("penalty everywhere", &mut penalties)] {
        times.sort();
        println!(
            "convergence  N={n:<3} {what} samples={samples}  p50={:>4} ms  p99={:>4} ms  max={:>4} ms  (interval {} ms; target p99 <= {} ms)",
            percentile(times, 0.5).as_millis(),
            percentile(times, 0.99).as_millis(),
            times.last().unwrap().as_millis(),
            INTERVAL.as_millis(),
            (INTERVAL + Duration::from_millis(50)).as_millis(),
        );
    }
    for m in &nodes {
        m.shutdown();
    }
}

async fn wire_cost(active: u32) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(dir.path(), 3).await;
    // Each change goes to the block's homes other than node 0.
    let own = nodes[0].fingerprint();
    let sends_per_round: u64 =
        (0..active).map(|i| nodes[0].homes(block(i)).iter().filter(|h| **h != own).count() as u64).sum();
    // Every active block changes once per round at node 0, for 5 seconds.
    let rounds = 10u32;
    let sent_before = nodes[0].stats().bytes_sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for _ in 0..rounds {
        let round_start = Instant::now();
        for i in 0..active {
            nodes[0].record(block(i), Kind::Recipient);
        }
        tokio::time::sleep(INTERVAL.saturating_sub(round_start.elapsed())).await;
    }
    tokio::time::sleep(INTERVAL * 2).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let sent = nodes[0].stats().bytes_sent.load(Ordering::Relaxed) - sent_before;
    let changed_sends = sends_per_round * u64::from(rounds);
    let last = block(active - 1);
    let home = nodes[0].homes(last).into_iter().find(|h| *h != own).unwrap();
    let last_seen = nodes.iter().find(|m| m.fingerprint() == home).unwrap().rate(last, Caps::NONE).recipients;
    println!(
        "wire cost    active={active:<7} node 0 sent {:>9.0} B/s  = {:>5.1} B per changed block per home  (target <= 32; last block at its home: {last_seen:.1})",
        sent as f64 / elapsed,
        sent as f64 / changed_sends as f64,
    );
    for m in &nodes {
        m.shutdown();
    }
}

fn memory() {
    let periods = Periods::default();
    let before = HEAP.load(Ordering::Relaxed);
    let mut counts = Counts::new([0; 16], periods);
    let origins: Vec<u16> = (1..=3u8).map(|o| counts.origin([o; 16]).unwrap()).collect();
    let blocks = 100_000u32;
    for i in 0..blocks {
        let b = WireBlock { net: u64::from(0x0A00_0000 | (i << 8)), prefix: 24 };
        counts.record(b, Kind::Recipient, 1_000);
        for &o in &origins {
            counts.merge(
                o,
                2_000,
                &CountEntry { block: b, recipients: 5.0, connections: 1.0, age_ms: 10, seq: 0, open: vec![] },
            );
        }
    }
    let _ = counts.take_changes(3_000);
    let used = HEAP.load(Ordering::Relaxed) - before;
    let tracked = counts.len();
    println!(
        "memory       {tracked} registers (100,000 blocks x 4 origins): {used} heap bytes = {:.1} B per (origin, block)  (target <= 64)",
        used as f64 / tracked as f64
    );
}

fn main() {
    // `cargo test --benches` runs benches with --test: keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    memory();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        for n in [3, 10, 30] {
            convergence(n, 100).await;
        }
        for active in [1_000, 100_000] {
            wire_cost(active).await;
        }
    });
}
