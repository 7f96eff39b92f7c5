//! How large a message each served domain's next hop takes (the SIZE its
//! EHLO offers, RFC 1870), learned at start and again every hour. The node
//! advertises and enforces the smallest of them and its own
//! `smtp.max_message_size`, so a message the destination cannot take is
//! refused at MAIL (`552 5.3.4`, when the client declares its size) or at
//! the end of DATA, before the 250, and never returned after it.
//!
//! Only the served domains' hops are ever learned: the set is fixed at
//! start, so nothing a stranger sends makes it grow.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use magicmx_proto::smtp::SessionConfig;

use super::outbound::NextHop;

/// A hop's size is asked again after this long.
const REFRESH_MS: u64 = 3_600_000;
/// A hop that could not be asked is asked again after this long.
const RETRY_MS: u64 = 15_000;

pub struct NextHopSizes {
    hops: Mutex<BTreeMap<NextHop, Learned>>,
    /// The configured session, with the node's own size limit.
    base: Arc<SessionConfig>,
    /// The session as advertised now, when a hop takes less than the node.
    current: Mutex<Arc<SessionConfig>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Learned {
    /// The hop's SIZE; `None`: no limit offered (or not learned yet).
    limit: Option<u64>,
    /// When to ask it (again).
    next_ms: u64,
}

impl NextHopSizes {
    /// For the served domains' `hops`, under the configured session.
    pub fn new(hops: impl IntoIterator<Item = NextHop>, base: Arc<SessionConfig>) -> NextHopSizes {
        let hops = hops.into_iter().map(|hop| (hop, Learned::default())).collect();
        NextHopSizes { hops: Mutex::new(hops), current: Mutex::new(base.clone()), base }
    }

    /// The hops to ask now; each is not due again until [`RETRY_MS`]
    /// later, unless its answer comes first.
    pub fn due(&self, now_ms: u64) -> Vec<NextHop> {
        let mut hops = self.hops.lock().unwrap();
        hops.iter_mut()
            .filter(|(_, learned)| learned.next_ms <= now_ms)
            .map(|(hop, learned)| {
                learned.next_ms = now_ms + RETRY_MS;
                hop.clone()
            })
            .collect()
    }

    /// `hop` offers `limit` (`None` or 0: no limit). Returns the size the
    /// node now takes, when that changed.
    pub fn learned(&self, hop: &NextHop, limit: Option<u64>, now_ms: u64) -> Option<usize> {
        let smallest = {
            let mut hops = self.hops.lock().unwrap();
            let learned = hops.get_mut(hop)?;
            *learned = Learned { limit: limit.filter(|&n| n > 0), next_ms: now_ms + REFRESH_MS };
            hops.values().filter_map(|l| l.limit).min()
        };
        let own = self.base.limits.max_message_size;
        let take = smallest.map_or(own, |n| own.min(usize::try_from(n).unwrap_or(usize::MAX)));
        let mut current = self.current.lock().unwrap();
        if current.limits.max_message_size == take {
            return None;
        }
        let mut config = (*self.base).clone();
        config.limits.max_message_size = take;
        *current = Arc::new(config);
        Some(take)
    }

    /// The session settings for a new connection, with the size the node takes now.
    pub fn session_config(&self) -> Arc<SessionConfig> {
        self.current.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(name: &str) -> NextHop {
        NextHop::Mx(name.to_string())
    }

    #[test]
    fn the_node_takes_the_smallest_size_any_served_hop_takes() {
        let mut base = SessionConfig::new("mx.mesh.test");
        base.limits.max_message_size = 25 << 20;
        let sizes = NextHopSizes::new([hop("a.test"), hop("b.test")], Arc::new(base));
        assert_eq!(sizes.due(0).len(), 2, "every hop is asked at start");
        assert!(sizes.due(1).is_empty(), "not again while asked");
        assert_eq!(sizes.learned(&hop("a.test"), Some(10 << 20), 10), Some(10 << 20));
        assert_eq!(sizes.session_config().limits.max_message_size, 10 << 20);
        assert_eq!(sizes.learned(&hop("b.test"), None, 10), None, "no limit changes nothing");
        assert_eq!(sizes.learned(&hop("b.test"), Some(0), 10), None, "SIZE 0 is no limit");
        // A hop that raises its limit, or one larger than the node's own.
        assert_eq!(sizes.learned(&hop("a.test"), Some(100 << 20), 20), Some(25 << 20));
        assert_eq!(sizes.session_config().limits.max_message_size, 25 << 20);
        // A stranger's domain is never learned.
        assert_eq!(sizes.learned(&hop("stranger.test"), Some(1), 30), None);
        assert_eq!(sizes.session_config().limits.max_message_size, 25 << 20);
        // Asked again after a minute if unanswered, after an hour if answered.
        assert!(sizes.due(RETRY_MS).is_empty());
        assert_eq!(sizes.due(20 + REFRESH_MS), vec![hop("a.test"), hop("b.test")]);
    }
}
