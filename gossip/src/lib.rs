//! magicmx-gossip: the mesh. Nodes authenticate each other with mutual TLS
//! inside QUIC, keep membership with SWIM (foca), and gather each block's
//! counts (a CRDT) at the block's homes, which answer for it, so that the
//! whole mesh throttles a source block as one.
//! `README.md` beside this crate says why it is built this way.

pub mod clocks;
pub mod counts;
pub mod engine;
pub mod homes;
pub mod identity;
mod mesh;
pub mod penalties;
pub mod pki;
pub mod revocation;
pub mod standing;
mod swim;
pub mod tally;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;

pub use counts::{Caps, Kind, Periods, Rates};
pub use engine::{Answer, Engine, EngineSettings, Judge};
pub use magicmx_proto::wire::Question;
pub use mesh::{MemberReport, Mesh, MeshSettings, PeerStatus};
pub use penalties::Penalty;
pub use tally::Tally;
pub use transport::Stats;

/// Why the mesh could not start. Nothing is running after any of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mesh TLS: {0}")]
    Tls(String),
    #[error("cannot bind the gossip port {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}
