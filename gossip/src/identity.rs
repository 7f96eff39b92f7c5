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
    /// A stand-in for a seed known by address and the certificate its
    /// handshake showed; foca learns the rest from its answer.
    pub fn seed(addr: SocketAddr, fingerprint: Fingerprint) -> NodeId {
        NodeId { name: String::new(), addr, fingerprint, started_ms: 0, bump: 0 }
    }
}

/// SWIM's key for a member: its address *and* its certificate, so that an
/// identity gossiped at a member's address with another certificate is a
/// different member (unproved, never counted), not a rival that wins the
/// address and takes the member down.
impl foca::Identity for NodeId {
    type Addr = (SocketAddr, Fingerprint);

    fn renew(&self) -> Option<Self> {
        Some(NodeId { bump: self.bump + 1, ..self.clone() })
    }

    fn addr(&self) -> (SocketAddr, Fingerprint) {
        (self.addr, self.fingerprint)
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}
