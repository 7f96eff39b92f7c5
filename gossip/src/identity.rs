//! A node's identity in SWIM (foca): its name, gossip address, certificate
//! fingerprint, and a bump that makes a restarted node a new incarnation.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::counts::Fingerprint;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    /// Start time in milliseconds, raised on renewal: the newest wins.
    pub bump: u64,
}

impl NodeId {
    /// A stand-in for a seed known only by address; foca learns the real
    /// identity from its answer.
    pub fn seed(addr: SocketAddr) -> NodeId {
        NodeId { name: String::new(), addr, fingerprint: [0; 16], bump: 0 }
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
