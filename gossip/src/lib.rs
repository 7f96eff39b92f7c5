//! The mesh: QUIC gossip between magicmx nodes and the per-block counts they share.
//!
//! Empty until the mesh issue lands; the crate exists so the dependency order
//! `proto ← gossip ← node ← ops` is fixed from the start.
