//! The trust list: sources that bypass counting, the gate and the hold. It
//! is the configuration's `[trust] cidrs` plus what operators add at run
//! time (persisted beside the queue), and addresses whose reverse DNS
//! proved a trusted host name lately (`named_trust.rs`: the gate cannot ask
//! DNS, so it remembers them, and keeps the proofs fresh). Checked on every
//! connection, so a read lock and a short scan.

use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::error::Result;
use crate::named_trust::NamedTrust;
use crate::queue::{Queue, TrustRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    pub net: IpNet,
    pub reason: String,
    /// From the configuration file (not removable at run time).
    pub from_config: bool,
    /// Unix seconds it was added (0 for the configuration's).
    pub added: u64,
}

/// What `remove` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Removed,
    /// It is in the configuration file; edit the file to remove it.
    FromConfig,
    NotFound,
}

pub struct TrustList {
    entries: RwLock<Vec<Trusted>>,
    /// Addresses trusted by forward-confirmed host name.
    named: NamedTrust,
    queue: Queue,
}

/// Addresses remembered by trusted host name, at most (one lost is asked
/// of DNS again at its next connection).
const MAX_NAMED: usize = 100_000;

impl TrustList {
    pub fn load(configured: &[IpNet], queue: Queue) -> Result<TrustList> {
        let mut entries: Vec<Trusted> = configured
            .iter()
            .map(|net| Trusted {
                net: net.trunc(),
                reason: "configuration".into(),
                from_config: true,
                added: 0,
            })
            .collect();
        for (cidr, record) in queue.list_trust()? {
            if let Ok(net) = cidr.parse::<IpNet>() {
                entries.push(Trusted { net, reason: record.reason, from_config: false, added: record.added });
            }
        }
        Ok(TrustList { entries: RwLock::new(entries), named: NamedTrust::new(MAX_NAMED), queue })
    }

    /// Is `ip` in a trusted network (configured or added)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.entries.read().unwrap().iter().any(|t| t.net.contains(&ip))
    }

    /// Is `ip` trusted at `now_ms`: in a trusted network, or lately proved
    /// to be a trusted host name?
    pub fn is_trusted(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.contains(ip) || self.named.is_trusted(ip, now_ms)
    }

    /// Addresses trusted by host name, and their proofs.
    pub fn by_name(&self) -> &NamedTrust {
        &self.named
    }

    /// Forgets host names proved too long ago.
    pub fn sweep(&self, now_ms: u64) {
        self.named.sweep(now_ms);
    }

    pub fn list(&self) -> Vec<Trusted> {
        self.entries.read().unwrap().clone()
    }

    /// Trusts `net` from now on, and across restarts.
    pub async fn add(&self, net: IpNet, reason: String) -> Result<()> {
        let net = net.trunc();
        let added = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let record = TrustRecord { reason: reason.clone(), added };
        let queue = self.queue.clone();
        let key = net.to_string();
        tokio::task::spawn_blocking(move || queue.put_trust(&key, &record)).await??;
        let mut entries = self.entries.write().unwrap();
        entries.retain(|t| t.from_config || t.net != net);
        entries.push(Trusted { net, reason, from_config: false, added });
        Ok(())
    }

    pub async fn remove(&self, net: IpNet) -> Result<Removed> {
        let net = net.trunc();
        {
            let entries = self.entries.read().unwrap();
            if entries.iter().any(|t| t.net == net && t.from_config) {
                return Ok(Removed::FromConfig);
            }
            if !entries.iter().any(|t| t.net == net) {
                return Ok(Removed::NotFound);
            }
        }
        let queue = self.queue.clone();
        let key = net.to_string();
        tokio::task::spawn_blocking(move || queue.remove_trust(&key)).await??;
        self.entries.write().unwrap().retain(|t| t.from_config || t.net != net);
        Ok(Removed::Removed)
    }
}
