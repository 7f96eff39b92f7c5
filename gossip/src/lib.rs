//! The mesh: QUIC gossip between magicmx nodes and the per-block counts they share.

pub mod counts;
