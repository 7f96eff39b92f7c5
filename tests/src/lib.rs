//! Shared harness for the cross-crate tests: the real `magicmx` binary run as
//! a child process, an authoritative DNS server (hickory-server) answering
//! test zones, and one that never answers, Postfix's smtp-sink as a real
//! MX, Python's smtplib as the sending client, and a private Internet in a
//! network namespace where real Postfix instances send mail by MX look-ups
//! and act as the real MX.

mod client;
mod cluster;
mod dead_dns;
mod dns;
mod netns;
mod node;
mod ports;
mod postfix;
mod sink;
mod tmpfs;
mod world;

pub use client::{connect_from, python, RawClient};
pub use cluster::{certified_nodes, magicmx, specs, wait_for_mesh, Spec};
pub use dead_dns::DeadDns;
pub use dns::{Rec, TestDns, Zone};
pub use netns::TestHost;
pub use node::{
    magicmx_binary, node_config, wait_for_maildir_files, NodeProcess, CHECKS_OFF, LOOPBACK_ADMIN,
};
pub use ports::claim_port;
pub use postfix::Postfix;
pub use sink::Sink;
pub use tmpfs::Tmpfs;
pub use world::{wait_for, wait_until, World, RESOLVER};
