//! The queue's records: a message's identity, envelope, provenance and the
//! state of each recipient.

use std::fmt;
use std::net::IpAddr;

use magicmx_proto::Address;
use serde::{Deserialize, Serialize};

/// A queued message's identity: unique for the life of a node's data
/// directory, increasing with arrival, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl std::str::FromStr for QueueId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(QueueId)
    }
}

/// Where one recipient stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecipientStatus {
    /// Not yet delivered; try at or after `next_attempt_ms` (Unix milliseconds).
    Pending {
        attempts: u32,
        next_attempt_ms: u64,
        last_error: Option<String>,
    },
    Delivered,
    /// Given up for good, with the reason.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    pub address: Address,
    pub status: RecipientStatus,
}

/// Everything about a queued message but its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub sender: Option<Address>,
    pub recipients: Vec<RecipientState>,
    /// Unix seconds at which the node accepted it.
    pub arrived: u64,
    pub client_ip: IpAddr,
    /// The client's source block, as text (`192.0.2.0/24`).
    pub block: String,
    pub helo: String,
    pub tls: bool,
    pub size: u64,
    /// For a DSN made by this node: the message it reports on.
    pub dsn_for: Option<QueueId>,
    /// The SPF result of the sender at intake (`pass`, `fail`, …), when checked.
    pub spf: Option<String>,
}

impl Envelope {
    /// When the next pending recipient is due (Unix milliseconds).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.recipients
            .iter()
            .filter_map(|r| match r.status {
                RecipientStatus::Pending { next_attempt_ms, .. } => Some(next_attempt_ms),
                _ => None,
            })
            .min()
    }

    /// True when no recipient is left to try.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| !matches!(r.status, RecipientStatus::Pending { .. }))
    }
}
