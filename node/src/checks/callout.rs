//! Recipient call-outs: before taking a recipient, ask the domain's real MX
//! whether it would (XCLIENT with the original client, as a delivery hands
//! it over; MAIL with the original sender, RCPT, then RSET). A refusal of
//! the recipient there (an addressing status, `5.1.x`) is refused here
//! (`550 5.1.1`), so nothing is accepted that would bounce later. Answers
//! about recipients are cached, at most [`MAX_CACHED`] of them: known good
//! 7 days, known bad 2 hours.
//!
//! A refusal of the sender (at MAIL), or a policy refusal at RCPT, is about
//! this client, not the recipient: passed on (`550 5.1.0`, `550 5.7.1`) and
//! not cached, so one sender never gets a recipient refused for everyone.
//! And only when the original client was handed over: otherwise the real MX
//! judged this node, which is not the sender's fault, and the recipient is
//! taken. The real MX down or answering 4xx: accept (`defer_ok`).

use std::sync::Arc;

use magicmx_proto::smtp::Reply;
use magicmx_proto::Address;

use super::counted;
use crate::bounded::BoundedMap;
use crate::replies::Refusal;
use crate::route::smtp::Probed;
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
    /// This client was refused for good at RCPT, for a policy (not an
    /// addressing) reason, with the reply.
    ClientRefused(String),
    /// No answer worth keeping (down, 4xx, no MX, or a refusal of this
    /// node rather than of the original client).
    Unknown(String),
}

impl Probe {
    /// What a call-out's replies mean; `handed_over`: the real MX judged
    /// the original client (XCLIENT took), not this node.
    pub fn judge(probed: Probed, handed_over: bool) -> Probe {
        let said = |reply: &Reply| reply.to_string().trim_end().replace("\r\n", " ");
        match probed {
            Probed::Recipient(reply) if reply.is_positive() => Probe::Valid,
            Probed::Recipient(reply) if reply.code >= 500 && is_about_the_address(&reply) => {
                Probe::Invalid(said(&reply))
            }
            Probed::Recipient(reply) if reply.code >= 500 && handed_over => {
                Probe::ClientRefused(said(&reply))
            }
            Probed::Sender(reply) if reply.code >= 500 && handed_over => Probe::SenderRefused(said(&reply)),
            Probed::Recipient(reply) | Probed::Sender(reply) if reply.code >= 500 => {
                Probe::Unknown(format!("{} (said to this node, not to the original client)", said(&reply)))
            }
            Probed::Recipient(reply) | Probed::Sender(reply) => Probe::Unknown(said(&reply)),
        }
    }
}

/// A refusal about the recipient address itself: an addressing status
/// (`5.1.x`, RFC 3463), or no enhanced status at all (an MTA without them
/// says nothing more, and RCPT is where it refuses unknown users).
fn is_about_the_address(reply: &Reply) -> bool {
    reply.status.as_deref().is_none_or(|s| s.starts_with("5.1."))
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
            Probe::ClientRefused(said) => {
                counted(&self.stats, "callout", "client_refused", Some(Refusal::CalloutClient { said }))
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

    fn reply(code: u16, status: Option<&str>) -> Reply {
        Reply { code, status: status.map(String::from), lines: vec!["no".into()] }
    }

    #[test]
    fn a_refusal_said_to_this_node_is_nobody_s_verdict_on_the_sender() {
        let judged = |probed, handed_over| std::mem::discriminant(&Probe::judge(probed, handed_over));
        let d = std::mem::discriminant;
        let unknown = d(&Probe::Unknown(String::new()));
        // Not handed over: a refusal of the sender or a policy refusal at
        // RCPT judged this node; the recipient is taken.
        assert_eq!(judged(Probed::Sender(reply(550, Some("5.7.1"))), false), unknown);
        assert_eq!(judged(Probed::Recipient(reply(554, Some("5.7.1"))), false), unknown);
        // Handed over: the real MX judged the original client.
        assert_eq!(
            judged(Probed::Sender(reply(550, Some("5.7.1"))), true),
            d(&Probe::SenderRefused(String::new()))
        );
        assert_eq!(
            judged(Probed::Recipient(reply(554, Some("5.7.1"))), true),
            d(&Probe::ClientRefused(String::new()))
        );
        // An unknown user is one, whoever asks.
        for handed_over in [false, true] {
            let invalid = d(&Probe::Invalid(String::new()));
            assert_eq!(judged(Probed::Recipient(reply(550, Some("5.1.1"))), handed_over), invalid);
            assert_eq!(judged(Probed::Recipient(reply(550, None)), handed_over), invalid);
            assert_eq!(judged(Probed::Sender(reply(451, Some("4.3.0"))), handed_over), unknown);
        }
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
