//! A node's identity in SWIM (foca): its name, gossip address, certificate
//! fingerprint, the start of its process, and a bump that makes it a new
//! incarnation in SWIM (raised when it rejoins after being declared down).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::counts::Fingerprint;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    /// When the node's process started, in milliseconds: a new value means
    /// a restarted process, whose counts start afresh. It stays the same when
    /// SWIM renews the identity.
    pub started_ms: u64,
    /// The SWIM incarnation: the start time, raised on each renewal (a node
    /// declared down while cut off rejoins with a higher one); the newest wins.
    pub bump: u64,
}

impl NodeId {
    /// A stand-in for a seed known only by address; foca learns the real
    /// identity from its answer.
    pub fn seed(addr: SocketAddr) -> NodeId {
        NodeId { name: String::new(), addr, fingerprint: [0; 16], started_ms: 0, bump: 0 }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId { bump: self.bump + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}
