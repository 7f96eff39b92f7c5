//! A deterministic simulator of the magicmx mesh. It runs the project's own
//! mesh engine (`magicmx_gossip::Engine`: the counts, the homes, the
//! questions, the penalties) with the node's own limits as its judge, for N
//! nodes in one process, over a simulated clock and network — latency,
//! nodes that crash and come back, a partition — and drives a mix of
//! traffic through the same steps as the node's throttle: the gate, RCPT,
//! the hold, the settling. Given a seed, a run is the same every time.
//!
//! - `config.rs`: what a run simulates;
//! - `network.rs`: the event queue, the latency, who can reach whom, bytes;
//! - `traffic.rs`: the senders — person-to-person blocks, spraying blocks,
//!   blocks that use their limit, each message retried as an MTA would;
//! - `hostile.rs`: members that lie (false verdicts, forged penalties,
//!   inflated or future-dated counts, restart claims);
//! - `run.rs`: the driver that moves messages through the engines;
//! - `report.rs`: the figures.

pub mod config;
pub mod hostile;
pub mod network;
pub mod report;
pub mod run;
pub mod traffic;

pub use config::Config;
pub use report::Report;
pub use run::simulate;
