//! Memory of the maps strangers fill, measured: a million distinct keys
//! driven through the node's real structures, the process's resident memory
//! read from /proc once each map is full and again after the million. Its
//! own test binary, one test, so nothing else moves the figure.

use std::net::Ipv4Addr;
use std::sync::Arc;

use magicmx_node::checks::callout::{Callouts, Probe, MAX_CACHED};
use magicmx_node::named_trust::Proof;
use magicmx_node::stats::Stats;
use magicmx_node::trust::TrustList;
use magicmx_node::Queue;
use magicmx_proto::Address;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
    line.trim().trim_end_matches(" kB").parse().unwrap()
}

#[test]
fn a_million_strangers_grow_no_map_past_its_cap() {
    const MILLION: u32 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let trust = TrustList::load(&[], Queue::open(dir.path()).unwrap()).unwrap();
    let callouts = Callouts::new(Arc::new(Stats::default()));
    let drive = |from: u32, to: u32| {
        for n in from..to {
            let rcpt = Address::parse(&format!("stranger{n}@example.test")).unwrap();
            callouts.record(&rcpt, Probe::Invalid("550 5.1.1 no such user".into()), 0);
            trust.by_name().record(Ipv4Addr::from(n).into(), Proof::Proved, 0);
        }
    };
    // Full twice over first, so that the maps have been through their
    // evictions; then the peak of each half of the rest, sampled every
    // 10,000 keys (a map swings between 7/8 of its cap and the cap).
    drive(0, 2 * MAX_CACHED as u32);
    let (mut first_half, mut second_half) = (0, 0);
    for step in (2 * MAX_CACHED as u32..MILLION).step_by(10_000) {
        drive(step, step + 10_000);
        let peak = if step < 600_000 { &mut first_half } else { &mut second_half };
        *peak = (*peak).max(rss_kib());
    }
    println!(
        "resident peak: {first_half} KiB over keys 200,000-600,000, {second_half} KiB over 600,000-1,000,000"
    );
    assert!(
        second_half <= first_half + 2 * 1024,
        "memory grew {} KiB over the second half of the million keys",
        second_half.saturating_sub(first_half)
    );
    assert!(callouts.len() <= MAX_CACHED);
}
