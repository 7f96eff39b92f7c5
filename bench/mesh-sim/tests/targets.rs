//! The simulator as a test: a small mesh with the traffic mix, a
//! crashed node and a partition, must keep the mesh's promises — spraying
//! blocks get at most their limit, a block using its limit gets it, every
//! legitimate message is delivered, a spraying block is refused everywhere
//! within three gossip intervals, and the gossip stays far below 1 Mbit/s;
//! also on a lossy network.
//! Runs are deterministic: the same seed gives the same figures.

use magicmx_mesh_sim::{simulate, Config};

fn small() -> Config {
    let mut cfg = Config::mix(30, 5_000);
    cfg.warmup_s = 600;
    cfg.crash_share = 0.07;
    cfg
}

#[test]
fn a_small_mesh_keeps_its_promises_through_a_crash() {
    let report = simulate(&small());
    println!("{}\n{}", magicmx_mesh_sim::Report::HEADER, report.row());
    assert!(report.leak_max <= 1.05, "a spraying block got {:.3} of its limit", report.leak_max);
    assert!(report.limit_user_min >= 0.9, "a block using its limit got {:.3}", report.limit_user_min);
    assert_eq!(report.legit_delivered, report.legit_offered, "every legitimate recipient delivered");
    // A member's penalty is in force at a node once the block's homes bear
    // it out: one round after it arrives, plus a question.
    assert!(report.rounds_p99 <= 3.0, "refused everywhere after {:.1} intervals", report.rounds_p99);
    assert_eq!(report.not_everywhere, 0);
    assert!(report.gossip_max_bps < 1e6, "{:.0} bit/s", report.gossip_max_bps);
    assert!(report.timeouts > 0, "the crash was felt: questions to the crashed homes timed out");
}

#[test]
fn a_split_mesh_delays_but_delivers_every_legitimate_message() {
    for seed in 1..=3 {
        let mut cfg = small();
        cfg.seed = seed;
        cfg.crash_share = 0.0;
        cfg.partition_share = 0.2;
        let report = simulate(&cfg);
        println!("{}", report.row());
        assert_eq!(report.legit_delivered, report.legit_offered, "seed {seed}");
        assert!(report.leak_max <= 1.05, "seed {seed}: {:.3}", report.leak_max);
        // A block using its limit is penalised on the small side; the penalty
        // lasts its plain length, and the block gets its whole limit after.
        assert!(report.limit_user_min >= 0.9, "seed {seed}: {:.3}", report.limit_user_min);
    }
}

#[test]
fn a_lossy_network_keeps_the_limits_and_the_mail() {
    let mut cfg = small();
    cfg.crash_share = 0.0;
    cfg.loss = 0.05;
    let report = simulate(&cfg);
    println!("{}", report.row());
    assert_eq!(report.legit_delivered, report.legit_offered);
    assert!(report.leak_max <= 1.05, "{:.3}", report.leak_max);
    assert!(report.limit_user_min >= 0.9, "{:.3}", report.limit_user_min);
    // A member's penalty is in force at a node once the block's homes bear
    // it out: one round after it arrives, plus a question.
    assert!(report.rounds_p99 <= 3.0, "refused everywhere after {:.1} intervals", report.rounds_p99);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let mut cfg = Config::mix(10, 1_000);
    cfg.warmup_s = 120;
    cfg.drain_s = 300;
    let (a, b) = (simulate(&cfg), simulate(&cfg));
    assert_eq!(
        (a.memory_max, a.gossip_max_bps.to_bits(), a.legit_delivered),
        (b.memory_max, b.gossip_max_bps.to_bits(), b.legit_delivered)
    );
    cfg.seed = 2;
    let c = simulate(&cfg);
    assert_ne!(a.gossip_max_bps.to_bits(), c.gossip_max_bps.to_bits(), "another seed, another run");
}

#[test]
fn hostile_members_neither_open_nor_starve_a_block() {
    use magicmx_mesh_sim::hostile::Behaviour;
    for behaviour in [Behaviour::SaysYes, Behaviour::SaysNo, Behaviour::ForgesPenalties, Behaviour::Restarts]
    {
        let mut cfg = Config::mix(30, 3_000);
        cfg.warmup_s = 600;
        cfg.crash_share = 0.0;
        cfg.hostile = 3;
        cfg.behaviour = Some(behaviour);
        cfg.skew_ms = 600_000;
        cfg.restart_every_s = 20;
        let report = simulate(&cfg);
        println!("{}", report.hostile_row());
        assert_eq!(report.legit_delivered, report.legit_offered, "{behaviour:?}: every legitimate recipient");
        assert!(report.leak_max <= 1.1, "{behaviour:?}: a spraying block got {:.3}", report.leak_max);
        assert!(report.limit_user_min >= 0.9, "{behaviour:?}: a limit user got {:.3}", report.limit_user_min);
    }
}
