//! magicmx-proto: the pure formats of magicmx, with no sockets and no clock.
//!
//! Callers feed bytes and instants in and take replies and events out (the
//! `quinn-proto` pattern), so whole SMTP dialogues can be replayed in tests
//! and fuzzed.

pub mod address;
pub mod block;
pub mod policy;
pub mod smtp;
pub mod wire;

pub use address::{Address, AddressError, Domain};
pub use block::SourceBlock;
