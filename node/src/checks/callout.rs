//! Recipient call-outs: before taking a recipient, ask the domain's real MX
//! whether it would (MAIL with the original sender, RCPT, then RSET). A
//! refusal there is refused here (`550 5.1.1`), so nothing is accepted that
//! would bounce later. Answers about recipients are cached, at most
//! [`MAX_CACHED`] of them: known good 7 days, known bad 2 hours. A refusal
//! of the sender is passed on (`550 5.1.0`) and not cached: it is no
//! verdict on the recipient, and one sender must not get a recipient
//! refused for everyone. The real MX down or answering 4xx: accept
//! (`defer_ok`).

use std::sync::Arc;

use magicmx_proto::Address;

use super::counted;
use crate::bounded::BoundedMap;
use crate::replies::Refusal;
use crate::stats::Stats;

const KEEP_GOOD_MS: u64 = 7 * 24 * 3600 * 1000;
const KEEP_BAD_MS: u64 = 2 * 3600 * 1000;
/// Recipients whose verdict is remembered, at most (one forgotten is probed again).
pub const MAX_CACHED: usize = 100_000;

/// What the real MX said about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Valid,
    /// Refused for good, with its reply.
    Invalid(String),
    /// The sender was refused for good (at MAIL), with the reply.
    SenderRefused(String),
    /// No answer worth keeping (down, 4xx, no MX).
    Unknown(String),
}

pub struct Callouts {
    /// By lower-cased address: valid, and what the real MX said.
    cache: BoundedMap<String, (bool, String)>,
    stats: Arc<Stats>,
}

impl Callouts {
    pub fn new(stats: Arc<Stats>) -> Callouts {
        Callouts { cache: BoundedMap::new(MAX_CACHED), stats }
    }

    /// The cached verdict on `recipient` at `now_ms`, if fresh.
    pub fn cached(&self, recipient: &Address, now_ms: u64) -> Option<Option<Refusal>> {
        let key = recipient.to_string().to_ascii_lowercase();
        let (valid, said) = self.cache.get(&key, now_ms)?;
        Some(counted(&self.stats, "callout", "cached", verdict(valid, &said)))
    }

    /// Records a probe's answer at `now_ms`; the reply to give.
    pub fn record(&self, recipient: &Address, probe: Probe, now_ms: u64) -> Option<Refusal> {
        let key = recipient.to_string().to_ascii_lowercase();
        match probe {
            Probe::Valid => {
                self.cache.insert(key, (true, String::new()), now_ms + KEEP_GOOD_MS, now_ms);
                counted(&self.stats, "callout", "valid", None)
            }
            Probe::Invalid(said) => {
                self.cache.insert(key, (false, said.clone()), now_ms + KEEP_BAD_MS, now_ms);
                counted(&self.stats, "callout", "invalid", verdict(false, &said))
            }
            Probe::SenderRefused(said) => {
                counted(&self.stats, "callout", "sender_refused", Some(Refusal::CalloutSender { said }))
            }
            Probe::Unknown(why) => {
                tracing::debug!(%recipient, %why, "call-out inconclusive; recipient accepted");
                counted(&self.stats, "callout", "defer_ok", None)
            }
        }
    }

    /// Forgets verdicts past their time.
    pub fn sweep(&self, now_ms: u64) {
        self.cache.sweep(now_ms);
    }

    /// Recipients whose verdict is remembered.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

fn verdict(valid: bool, said: &str) -> Option<Refusal> {
    (!valid).then(|| Refusal::CalloutRecipient { said: said.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_recipients_probed_keep_at_most_the_cap() {
        let callouts = Callouts::new(Arc::new(Stats::default()));
        for n in 0..1_000_000u32 {
            let rcpt = Address::parse(&format!("r{n}@example.test")).unwrap();
            callouts.record(&rcpt, Probe::Invalid("550 no".into()), 0);
            assert!(callouts.len() <= MAX_CACHED);
        }
        let last = Address::parse("r999999@example.test").unwrap();
        assert!(matches!(callouts.cached(&last, 1), Some(Some(_))));
        assert_eq!(callouts.cached(&last, KEEP_BAD_MS), None, "a refusal is kept two hours");
    }

    #[test]
    fn a_sender_refusal_is_passed_on_and_not_cached() {
        let callouts = Callouts::new(Arc::new(Stats::default()));
        let rcpt = Address::parse("bob@example.test").unwrap();
        let reply =
            callouts.record(&rcpt, Probe::SenderRefused("553 5.7.1 go away".into()), 0).unwrap().reply();
        assert_eq!((reply.code, reply.status.as_deref()), (550, Some("5.1.0")));
        assert_eq!(callouts.cached(&rcpt, 1), None);
    }
}
