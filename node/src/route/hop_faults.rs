//! Faults of a next hop's configuration that the node works around or
//! waits out (XCLIENT not offered, refused, or answered without a new
//! greeting; a reply lost after the final dot): counted every time in
//! `magicmx_next_hop_faults_total{fault}`, logged once per hop and fault
//! an hour, so a misconfigured real MX is visible without a line per message.

use std::sync::Arc;

use crate::bounded::BoundedMap;
use crate::stats::Stats;

/// Every kind of fault, for the metric's labels.
pub const HOP_FAULTS: [&str; 4] =
    ["xclient_not_offered", "xclient_refused", "xclient_no_new_greeting", "reply_lost_after_dot"];

/// How long one warning about a hop and fault stands for the next ones.
const WARN_EVERY_MS: u64 = 3_600_000;
/// (hop, fault) pairs remembered, at most.
const MAX_WARNED: usize = 10_000;

pub struct HopFaults {
    warned: BoundedMap<(String, &'static str), ()>,
    stats: Arc<Stats>,
}

impl HopFaults {
    pub fn new(stats: Arc<Stats>) -> HopFaults {
        HopFaults { warned: BoundedMap::new(MAX_WARNED), stats }
    }

    /// Counts `fault` at `hop`; true when it is to be logged now (the
    /// first time this hour for this hop).
    pub fn count(&self, hop: &str, fault: &'static str, now_ms: u64) -> bool {
        self.stats.hop_fault(fault);
        let key = (hop.to_string(), fault);
        if self.warned.get(&key, now_ms).is_some() {
            return false;
        }
        self.warned.insert(key, (), now_ms + WARN_EVERY_MS, now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_counted_every_time_and_told_once_an_hour_per_hop() {
        let stats = Arc::new(Stats::default());
        let faults = HopFaults::new(stats.clone());
        let told: Vec<bool> = [0, 1_000, 3_599_999, 3_600_000]
            .into_iter()
            .map(|at| faults.count("mx.example.org[192.0.2.1]", "xclient_refused", at))
            .collect();
        assert_eq!(told, vec![true, false, false, true]);
        assert!(faults.count("mx2.example.org[192.0.2.2]", "xclient_refused", 1_000), "another hop is told");
        assert!(
            faults.count("mx.example.org[192.0.2.1]", "xclient_not_offered", 1_000),
            "another fault is told"
        );
        assert_eq!(stats.hop_faults().get("xclient_refused"), Some(&5));
    }
}
