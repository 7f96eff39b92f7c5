//! Forward-confirmed reverse DNS (`iprev`, RFC 8601 §3): the client's PTR
//! names, and one of them whose addresses include the client's.

use std::net::IpAddr;

use crate::replies::Refusal;

use super::counted;
use crate::dns::{Dns, Failure};
use crate::stats::Stats;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRev {
    /// `pass`, `fail` (no PTR, or no name confirms) or `temperror`.
    pub result: &'static str,
    /// The confirmed name, or the first PTR name when none confirms.
    pub name: Option<String>,
    pub why: String,
}

impl IpRev {
    pub fn refusal(&self) -> Refusal {
        Refusal::ReverseDns { temporary: self.result == "temperror", why: self.why.clone() }
    }
}

/// Names tried at most (RFC 8601 §3 suggests a bound).
const MAX_NAMES: usize = 10;

pub async fn check(dns: &Dns, stats: &Stats, ip: IpAddr) -> IpRev {
    let names = match dns.ptr(ip).await {
        Ok(names) => names,
        Err(Failure::NotFound) => {
            return counted(
                stats,
                "iprev",
                "missing",
                IpRev { result: "fail", name: None, why: format!("no PTR for {ip}") },
            );
        }
        Err(Failure::Temporary(e)) => {
            return counted(stats, "iprev", "temperror", IpRev { result: "temperror", name: None, why: e });
        }
    };
    let mut temporary = None;
    for name in names.iter().take(MAX_NAMES) {
        match dns.addresses(name).await {
            Ok(ips) if ips.contains(&ip) => {
                return counted(
                    stats,
                    "iprev",
                    "pass",
                    IpRev { result: "pass", name: Some(name.clone()), why: String::new() },
                );
            }
            Ok(_) | Err(Failure::NotFound) => {}
            Err(Failure::Temporary(e)) => temporary = Some(e),
        }
    }
    if let Some(e) = temporary {
        return counted(
            stats,
            "iprev",
            "temperror",
            IpRev { result: "temperror", name: names.first().cloned(), why: e },
        );
    }
    let why = format!("{} does not resolve back to {ip}", names[0]);
    counted(stats, "iprev", "mismatch", IpRev { result: "fail", name: names.first().cloned(), why })
}
