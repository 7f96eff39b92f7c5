//! Small state kept beside the queue in the same database: the penalties in
//! force (so they survive restarts) and the trust list added at run time.
//! These writes are rare and never on the flood path.

use magicmx_gossip::penalties::StoredPenalty;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::store::Queue;
use crate::error::Result;

/// All penalties, as one postcard-encoded list under key 0.
const PENALTIES: TableDefinition<u8, &[u8]> = TableDefinition::new("penalties");
/// Trusted CIDRs added at run time, by their text form.
const TRUST: TableDefinition<&str, &[u8]> = TableDefinition::new("trust");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRecord {
    pub reason: String,
    /// Unix seconds.
    pub added: u64,
}

impl Queue {
    /// Replaces the stored penalties, each with its origin (blocking: call
    /// from a blocking task).
    pub fn save_penalties(&self, penalties: &[StoredPenalty]) -> Result<()> {
        let bytes = postcard::to_stdvec(penalties)?;
        self.write_now(|txn| {
            txn.open_table(PENALTIES)?.insert(0, bytes.as_slice())?;
            Ok(())
        })
    }

    /// The stored penalties. Those of an earlier release, kept without their
    /// origins, are dropped (the mesh imposes them again if still due).
    pub fn load_penalties(&self) -> Result<Vec<StoredPenalty>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(PENALTIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let Some(value) = table.get(0)? else { return Ok(vec![]) };
        Ok(postcard::from_bytes(value.value()).unwrap_or_else(|error| {
            tracing::warn!(%error, "stored penalties of an earlier release dropped");
            vec![]
        }))
    }

    pub fn put_trust(&self, cidr: &str, record: &TrustRecord) -> Result<()> {
        let bytes = postcard::to_stdvec(record)?;
        self.write_now(|txn| {
            txn.open_table(TRUST)?.insert(cidr, bytes.as_slice())?;
            Ok(())
        })
    }

    /// True if it was there.
    pub fn remove_trust(&self, cidr: &str) -> Result<bool> {
        self.write_now(|txn| Ok(txn.open_table(TRUST)?.remove(cidr)?.is_some()))
    }

    pub fn list_trust(&self) -> Result<Vec<(String, TrustRecord)>> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(TRUST) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![];
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), postcard::from_bytes(v.value())?));
        }
        Ok(out)
    }
}
