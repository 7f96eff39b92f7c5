//! Recipient call-outs: before taking a recipient, ask the domain's real MX
//! whether it would (MAIL with the original sender, RCPT, then RSET). A
//! refusal there is refused here (`550 5.1.1`), so nothing is accepted that
//! would bounce later. Answers are cached: known good 7 days, known bad 2
//! hours. The real MX down or answering 4xx: accept (`defer_ok`).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use magicmx_proto::smtp::Reply;
use magicmx_proto::Address;

use std::sync::Arc;

use super::counted;
use crate::stats::Stats;

const KEEP_GOOD: Duration = Duration::from_secs(7 * 24 * 3600);
const KEEP_BAD: Duration = Duration::from_secs(2 * 3600);

/// What the real MX said about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Valid,
    /// Refused for good, with its reply.
    Invalid(String),
    /// No answer worth keeping (down, 4xx, no MX).
    Unknown(String),
}

pub struct Callouts {
    cache: DashMap<String, (bool, String, Instant)>,
    stats: Arc<Stats>,
}

impl Callouts {
    pub fn new(stats: Arc<Stats>) -> Callouts {
        Callouts { cache: DashMap::new(), stats }
    }

    /// The cached verdict on `recipient`, if fresh.
    pub fn cached(&self, recipient: &Address) -> Option<Option<Reply>> {
        let key = recipient.to_string().to_ascii_lowercase();
        let entry = self.cache.get(&key)?;
        let (valid, said, at) = entry.value().clone();
        let keep = if valid { KEEP_GOOD } else { KEEP_BAD };
        (at.elapsed() < keep).then(|| counted(&self.stats, "callout", "cached", verdict(valid, &said)))
    }

    /// Records a probe's answer; the reply to give.
    pub fn record(&self, recipient: &Address, probe: Probe) -> Option<Reply> {
        let key = recipient.to_string().to_ascii_lowercase();
        match probe {
            Probe::Valid => {
                self.cache.insert(key, (true, String::new(), Instant::now()));
                counted(&self.stats, "callout", "valid", None)
            }
            Probe::Invalid(said) => {
                self.cache.insert(key, (false, said.clone(), Instant::now()));
                counted(&self.stats, "callout", "invalid", verdict(false, &said))
            }
            Probe::Unknown(why) => {
                tracing::debug!(%recipient, %why, "call-out inconclusive; recipient accepted");
                counted(&self.stats, "callout", "defer_ok", None)
            }
        }
    }
}

fn verdict(valid: bool, said: &str) -> Option<Reply> {
    (!valid)
        .then(|| Reply::new(550, "5.1.1", format!("Recipient address rejected by its mail server: {said}")))
}
