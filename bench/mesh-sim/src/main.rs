//! `mesh-sim`: runs the mesh simulator for each (N, K) asked and prints a
//! Markdown table of the figures (see `BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release -p magicmx-mesh-sim -- [--nodes 10,100,1000] [--blocks 10000,100000,1000000]
//!     [--seed 1] [--warmup-s 3600] [--measure-s 60] [--drain-s 1800]
//!     [--crash-share 0.01] [--partition-share 0] [--loss 0.01]
//!     [--hostile F] [--behaviour yes|no|penalties|inflate|restarts|mixed]
//!     [--skew-ms 0] [--restart-every-s 0] [--split-s 0] [--forget-s 3600]
//!     [--notice-jitter-ms 5000]
//! ```
//!
//! With `--behaviour`, the table is the hostile members' one; `--hostile`
//! takes a count, or a share of N when it has a point (`0.05`).

use magicmx_mesh_sim::hostile::Behaviour;
use magicmx_mesh_sim::{simulate, Config, Report};

fn list(value: &str) -> Vec<usize> {
    value.split(',').map(|v| v.trim().parse().expect("a number")).collect()
}

/// The setting a fraction flag sets.
fn fraction<'a>(cfg: &'a mut Config, flag: &str) -> Option<&'a mut f64> {
    match flag {
        "--partition-share" => Some(&mut cfg.partition_share),
        "--crash-share" => Some(&mut cfg.crash_share),
        "--loss" => Some(&mut cfg.loss),
        _ => None,
    }
}

fn main() {
    let mut nodes = vec![10, 100, 1000];
    let mut blocks = vec![10_000, 100_000, 1_000_000];
    let mut tweaks: Vec<(String, String)> = Vec::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else { panic!("flags come with a value: {pair:?}") };
        match flag.as_str() {
            "--nodes" => nodes = list(value),
            "--blocks" => blocks = list(value),
            _ => tweaks.push((flag.clone(), value.clone())),
        }
    }
    let hostile_table = tweaks.iter().any(|(flag, _)| flag == "--behaviour");
    println!("{}", if hostile_table { Report::HOSTILE_HEADER } else { Report::HEADER });
    for &n in &nodes {
        for &k in &blocks {
            let mut cfg = Config::mix(n, k);
            for (flag, value) in &tweaks {
                if let Some(share) = fraction(&mut cfg, flag) {
                    *share = value.parse().expect("a fraction");
                    continue;
                }
                if flag == "--behaviour" {
                    cfg.behaviour = Behaviour::parse(value);
                    assert!(cfg.behaviour.is_some() || value == "none", "unknown behaviour {value}");
                    continue;
                }
                if flag == "--hostile" {
                    cfg.hostile = if value.contains('.') {
                        (n as f64 * value.parse::<f64>().expect("a share")).round() as usize
                    } else {
                        value.parse().expect("a count")
                    };
                    continue;
                }
                let v: u64 = value.parse().expect("a number");
                match flag.as_str() {
                    "--seed" => cfg.seed = v,
                    "--warmup-s" => cfg.warmup_s = v,
                    "--measure-s" => cfg.measure_s = v,
                    "--drain-s" => cfg.drain_s = v,
                    "--skew-ms" => cfg.skew_ms = v,
                    "--restart-every-s" => cfg.restart_every_s = v,
                    "--split-s" => cfg.split_s = v,
                    "--forget-s" => cfg.forget_s = v,
                    "--notice-jitter-ms" => cfg.notice_jitter_ms = v,
                    other => panic!("unknown flag {other}"),
                }
            }
            let report = simulate(&cfg);
            println!("{}", if hostile_table { report.hostile_row() } else { report.row() });
        }
    }
}
