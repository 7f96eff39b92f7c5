//! The gossip wire format: frames between mesh nodes, encoded with postcard
//! behind a version byte. A frame that is too large, of another version or
//! undecodable is an error for the caller to drop and count.

use serde::{Deserialize, Serialize};

/// The first byte of every frame. Version 2 added a register's `seq` and
/// its open transactions; version 3 sent only the sender's own penalties;
/// version 4 sends registers to their blocks' homes only, and asks a home
/// for verdicts (`Ask`, `Answer`); version 5 carries the sender's process
/// start in its counts (a restart is believed only from the member itself)
/// and the home's clock and doubt in its answers. Nodes of different
/// versions do not understand each other (upgrade the whole mesh together).
pub const VERSION: u8 = 5;
/// Largest frame accepted.
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A SWIM membership packet (foca's own encoding).
    Swim(Vec<u8>),
    /// The sender's own per-block counters that changed (to the blocks'
    /// homes), and penalties it imposed (to every member).
    Counts(Counts),
    /// A question to a block's home.
    Ask(Ask),
    /// The home's answer.
    Answer(Answer),
    /// Members revoked by the mesh CA, passed on to every member at once
    /// (a release without this frame drops it, and nothing else).
    Revoked(Vec<Revocation>),
}

/// "The certificate with this SHA-256 is revoked", signed with the mesh
/// CA's key (`magicmx mesh revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub cert_sha256: [u8; 32],
    /// When the CA's holder signed it (Unix milliseconds).
    pub at_ms: u64,
    /// The CA key's signature over [`Revocation::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Revocation {
    /// What the CA signs: a context string, the certificate's SHA-256 and the time.
    pub fn signed_bytes(cert_sha256: &[u8; 32], at_ms: u64) -> Vec<u8> {
        let mut out = b"magicmx revocation v1\0".to_vec();
        out.extend_from_slice(cert_sha256);
        out.extend_from_slice(&at_ms.to_be_bytes());
        out
    }
}

/// A question to the home of a block, with the asker's register for it (so
/// the home judges with it in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// The asker's id for the question, echoed in the answer.
    pub id: u64,
    /// Unix milliseconds; the entry's times are offsets below it.
    pub base_ms: u64,
    pub block: WireBlock,
    pub question: Question,
    /// The asker's register for the block, if it has one.
    pub entry: Option<CountEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    /// RCPT: does the recipient just reserved (in the entry) fit?
    Recipient,
    /// End of DATA: is transaction `id` (sealed, in the entry) taken?
    Sealed { id: u32 },
    /// Has the block come through the mesh lately?
    Seen,
    /// A member penalised the block: do the registers at its home bear the
    /// penalty out (yes), or contradict it (no)?
    Penalty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: u64,
    /// The home's clock when it answered (Unix milliseconds).
    pub at_ms: u64,
    /// Within the limit (or, for `Seen`, seen).
    pub yes: bool,
    /// The home cannot judge yet (it has just started and holds too little):
    /// ask the next home.
    pub unsure: bool,
    /// The penalty the home imposed or holds on the block, if any.
    pub penalty: Option<PenaltyEntry>,
}

/// One round of an origin's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// The sender's round number, increasing.
    pub round: u64,
    /// When the sender's process started (Unix milliseconds): a new value
    /// means it restarted and counts afresh. Only the member's own frames
    /// say so; what SWIM gossips about it is not taken for a restart.
    pub started_ms: u64,
    /// Unix milliseconds; entry times are offsets below it.
    pub base_ms: u64,
    pub entries: Vec<CountEntry>,
    /// Penalties the sender imposed since its last round (all of them, to a new peer).
    pub penalties: Vec<PenaltyEntry>,
}

/// A block refused at connect until `until_ms` (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PenaltyEntry {
    pub block: WireBlock,
    pub until_ms: u64,
    /// How many penalties the block has had lately (the next one doubles).
    pub strikes: u8,
}

/// One block's counters at its origin: decaying rates as of `base_ms - age_ms`,
/// and the transactions in progress there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountEntry {
    pub block: WireBlock,
    /// Recipients taken (250 after the hold), a decaying rate.
    pub recipients: f32,
    pub connections: f32,
    /// How long before `base_ms` the counters were last updated.
    pub age_ms: u32,
    /// Orders the origin's updates within one millisecond.
    pub seq: u16,
    /// The origin's transactions from this block not yet decided.
    pub open: Vec<OpenEntry>,
}

/// A transaction at its origin: recipients reserved at RCPT, waiting for the
/// end of DATA and the hold's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenEntry {
    /// The origin's id for it, unique while it is open.
    pub id: u32,
    pub recipients: u16,
    /// How long before `base_ms` it was opened.
    pub opened_age_ms: u32,
    /// How long before `base_ms` its DATA ended, once it has.
    pub sealed_age_ms: Option<u32>,
}

/// A source block, compactly: the network's top 64 bits (IPv4 in the low
/// 32) and the prefix length, with 0x80 set for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireBlock {
    pub net: u64,
    pub prefix: u8,
}

/// Why a frame was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty frame")]
    Empty,
    #[error("frame of {0} octets is over the limit")]
    TooLarge(usize),
    #[error("unknown wire version {0}")]
    Version(u8),
    #[error("undecodable frame: {0}")]
    Decode(String),
}

pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = vec![VERSION];
    postcard::to_io(frame, &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if bytes.len() > MAX_FRAME {
        return Err(WireError::TooLarge(bytes.len()));
    }
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    postcard::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_entries_are_small() {
        let entry = CountEntry {
            block: WireBlock { net: 0xC000_0200, prefix: 24 },
            recipients: 12.5,
            connections: 3.0,
            age_ms: 250,
            seq: 0,
            open: vec![],
        };
        let frame = Frame::Counts(Counts {
            round: 7,
            started_ms: 1_794_000_000_000,
            base_ms: 1_795_000_000_000,
            entries: vec![entry.clone(); 100],
            penalties: vec![],
        });
        let bytes = encode(&frame);
        assert_eq!(decode(&bytes), Ok(frame));
        let per_entry = (bytes.len() - 16) / 100;
        assert!(per_entry <= 32, "{per_entry} bytes per entry");
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(decode(&[VERSION, 0xFF, 0xFF]), Err(WireError::Decode(_))));
        assert!(matches!(decode(&vec![VERSION; MAX_FRAME + 1]), Err(WireError::TooLarge(_))));
    }
}
