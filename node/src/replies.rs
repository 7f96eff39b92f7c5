//! Every refusal the node words, in one place: each [`Refusal`] names its
//! reason (the `reason` label of `magicmx_refusals_total`) and its reply.
//! The stages (`gate.rs`, `session/`, the checks) decide and return a
//! `Refusal`; nothing else writes an SMTP reply, so the README's table of
//! replies can be checked against this file. (The session's own replies to
//! bad syntax or sequence live with it, in `proto`.)

use magicmx_proto::smtp::Reply;
use magicmx_proto::SourceBlock;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use crate::clock::Millis;

/// The label of a connection from a penalised block closed without a word
/// (past its polite refusals): counted with the `421`s of [`Refusal::Penalised`].
pub const PENALISED: &str = "penalised";

/// The label of a message the SMTP session refused itself (size, mail
/// loop, a line too long: the replies `proto` words), no stage involved.
pub const MESSAGE_REFUSED: &str = "message_refused";

/// Why the node refuses, with what it needs to say so.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    // ---- at connect (the gate, the listener, the trap) -------------------
    /// A penalised block: `421 4.7.0`, with when to come back.
    Penalised { block: SourceBlock, until_ms: Millis, now_ms: Millis },
    /// Every connection slot, or this address's, is taken: `421 4.7.0`.
    TooManyConnections { hostname: String },
    /// The trap closes on a client that talked to it.
    Trap,
    // ---- at MAIL FROM (the checks) ---------------------------------------
    /// On DNS block lists, with the list's text: `554 5.7.1`.
    Dnsbl { text: String },
    /// A block list could not be asked: `451 4.4.3`.
    DnsblUnreachable { list: String },
    /// Reverse DNS not forward-confirmed: `550 5.7.25` (`451 4.7.25` when
    /// the look-up failed for now).
    ReverseDns { temporary: bool, why: String },
    /// The sender's domain has no MX or address records: `550 5.1.8`.
    SenderDomain { domain: String },
    /// The sender's domain could not be looked up: `451 4.4.3`.
    SenderDomainDns { domain: String },
    /// SPF `fail` (or `softfail`, when configured): `550 5.7.23`.
    Spf { result: &'static str, domain: String },
    /// SPF could not be evaluated for now: `451 4.4.3`.
    SpfDns { domain: String },
    // ---- at RCPT TO --------------------------------------------------------
    /// Mail for a domain not served here: `550 5.7.1`.
    RelayDenied { domain: String },
    /// `%`, `!` or `@` in the local part of a served domain: `550 5.7.1`.
    RoutingCharacters,
    /// The real MX refused the recipient in a call-out: `550 5.1.1`.
    CalloutRecipient { said: String },
    /// The real MX refused the sender in a call-out: `550 5.1.0`.
    CalloutSender { said: String },
    /// The real MX refused the original client at RCPT for a policy
    /// reason in a call-out: `550 5.7.1`.
    CalloutClient { said: String },
    /// The recipient does not fit the block's mesh-wide limit: `451 4.7.1`.
    OverLimit { block: SourceBlock, limit: f64, until_ms: Millis },
    // ---- at the end of DATA -----------------------------------------------
    /// The message does not fit the limit after the hold: `451 4.7.1`.
    OverLimitAfterHold { block: SourceBlock, limit: f64, until_ms: Millis },
    /// The From domain's DMARC policy rejects it (`dmarc = "reject"`): `550 5.7.1`.
    Dmarc { domain: String },
    /// The queue could not take the message: `451 4.3.0`.
    QueueError,
    // ---- at MAIL FROM and during DATA (the disk) ------------------------
    /// Free space below `queue.min_free`: `452 4.3.1`.
    DiskFull,
    /// Bodies in flight at `queue.max_in_flight` (`block: None`) or at the
    /// block's `queue.max_in_flight_per_block`: `452 4.3.1`.
    InFlight { block: Option<SourceBlock> },
}

impl Refusal {
    /// The `reason` label of `magicmx_refusals_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Penalised { .. } => PENALISED,
            Refusal::TooManyConnections { .. } => "too_many_connections",
            Refusal::Trap => "trap",
            Refusal::Dnsbl { .. } => "dnsbl",
            Refusal::DnsblUnreachable { .. } | Refusal::SenderDomainDns { .. } | Refusal::SpfDns { .. } => {
                "dns_temporary"
            }
            Refusal::ReverseDns { .. } => "fcrdns",
            Refusal::SenderDomain { .. } => "sender_domain",
            Refusal::Spf { .. } => "spf",
            Refusal::RelayDenied { .. } | Refusal::RoutingCharacters => "relay_denied",
            Refusal::CalloutRecipient { .. } => "callout",
            Refusal::CalloutSender { .. } => "callout_sender",
            Refusal::CalloutClient { .. } => "callout_client",
            Refusal::OverLimit { .. } => "over_limit",
            Refusal::OverLimitAfterHold { .. } => "over_limit_after_hold",
            Refusal::Dmarc { .. } => "dmarc",
            Refusal::QueueError => "queue_error",
            Refusal::DiskFull => "disk_full",
            Refusal::InFlight { block: None } => "in_flight",
            Refusal::InFlight { block: Some(_) } => "in_flight_block",
        }
    }

    /// The reply the client hears.
    pub fn reply(&self) -> Reply {
        match self {
            Refusal::Penalised { block, until_ms, now_ms } => {
                let minutes = until_ms.saturating_sub(*now_ms).div_ceil(60_000);
                let text = format!(
                    "Too much mail from your network {block}; come back after {} (in {minutes} min)",
                    when(*until_ms)
                );
                Reply::new(421, "4.7.0", text)
            }
            Refusal::TooManyConnections { hostname } => {
                Reply::new(421, "4.7.0", format!("{hostname} Error: too many connections, try again later"))
            }
            Refusal::Trap => Reply::new(421, "4.7.0", "Service not available, closing transmission channel"),
            Refusal::Dnsbl { text } => Reply::new(554, "5.7.1", text.clone()),
            Refusal::DnsblUnreachable { list } => {
                Reply::new(451, "4.4.3", format!("Temporary DNS failure checking {list}; try again later"))
            }
            Refusal::ReverseDns { temporary: true, why } => Reply::new(
                451,
                "4.7.25",
                format!("Reverse DNS lookup failed for now ({why}); try again later"),
            ),
            Refusal::ReverseDns { temporary: false, why } => {
                Reply::new(550, "5.7.25", format!("Reverse DNS validation failed: {why}"))
            }
            Refusal::SenderDomain { domain } => Reply::new(
                550,
                "5.1.8",
                format!("Sender address rejected: domain {domain} has no MX or address records"),
            ),
            Refusal::SenderDomainDns { domain } => Reply::new(
                451,
                "4.4.3",
                format!("Sender domain {domain}: temporary DNS failure; try again later"),
            ),
            Refusal::Spf { result, domain } => Reply::new(
                550,
                "5.7.23",
                format!("SPF {result} for {domain}: this client may not send its mail"),
            ),
            Refusal::SpfDns { domain } => {
                Reply::new(451, "4.4.3", format!("SPF check of {domain} failed for now; try again later"))
            }
            Refusal::RelayDenied { domain } => {
                Reply::new(550, "5.7.1", format!("Relay access denied: {domain} is not served here"))
            }
            Refusal::RoutingCharacters => {
                Reply::new(550, "5.7.1", "Relay access denied: routing characters in the local part")
            }
            Refusal::CalloutRecipient { said } => {
                Reply::new(550, "5.1.1", format!("Recipient address rejected by its mail server: {said}"))
            }
            Refusal::CalloutSender { said } => Reply::new(
                550,
                "5.1.0",
                format!("Sender address rejected by the recipient's mail server: {said}"),
            ),
            Refusal::CalloutClient { said } => {
                Reply::new(550, "5.7.1", format!("Refused by the recipient's mail server: {said}"))
            }
            Refusal::OverLimit { block, limit, until_ms }
            | Refusal::OverLimitAfterHold { block, limit, until_ms } => {
                let text = format!(
                    "Too much mail from your network {block}: over {limit:.0} recipients an hour across this mesh; try again after {}",
                    when(*until_ms)
                );
                Reply::new(451, "4.7.1", text)
            }
            Refusal::Dmarc { domain } => {
                Reply::new(550, "5.7.1", format!("DMARC policy of {domain} rejects this message"))
            }
            Refusal::QueueError => {
                Reply::new(451, "4.3.0", "Temporary failure writing the queue; please try again later")
            }
            Refusal::DiskFull => {
                Reply::new(452, "4.3.1", "Insufficient system storage: the disk is nearly full; try again later")
            }
            Refusal::InFlight { block: None } => Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage: too much mail being received; try again later",
            ),
            Refusal::InFlight { block: Some(block) } => Reply::new(
                452,
                "4.3.1",
                format!("Insufficient system storage: too much mail being received from your network {block}; try again later"),
            ),
        }
    }

    /// The disk has no room (`crate::disk`, which logs these once a minute).
    pub fn is_disk(&self) -> bool {
        matches!(self, Refusal::DiskFull | Refusal::InFlight { .. })
    }

    /// True when the sender keeps the message and tries again (4xx).
    pub fn is_transient(&self) -> bool {
        self.reply().is_transient()
    }
}

/// Recipient accepted.
pub(crate) fn recipient_ok() -> Reply {
    Reply::new(250, "2.1.5", "Recipient OK")
}

/// Sender accepted.
pub(crate) fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0", "Sender OK")
}

/// A message taken: queued (or, sent a second time, already queued) as `id`.
pub(crate) fn queued(id: impl std::fmt::Display) -> Reply {
    Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
}

/// A time for a reply or a log: RFC 2822 date, UTC.
pub(crate) fn when(ms: Millis) -> String {
    OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "later".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_refusal() -> Vec<Refusal> {
        let block = SourceBlock::of_default("192.0.2.1".parse().unwrap());
        vec![
            Refusal::Penalised { block, until_ms: 120_000, now_ms: 0 },
            Refusal::TooManyConnections { hostname: "mx".into() },
            Refusal::Trap,
            Refusal::Dnsbl { text: "listed".into() },
            Refusal::DnsblUnreachable { list: "bl.test".into() },
            Refusal::ReverseDns { temporary: true, why: "timeout".into() },
            Refusal::ReverseDns { temporary: false, why: "no PTR".into() },
            Refusal::SenderDomain { domain: "x.test".into() },
            Refusal::SenderDomainDns { domain: "x.test".into() },
            Refusal::Spf { result: "fail", domain: "x.test".into() },
            Refusal::SpfDns { domain: "x.test".into() },
            Refusal::RelayDenied { domain: "x.test".into() },
            Refusal::RoutingCharacters,
            Refusal::CalloutRecipient { said: "550 no".into() },
            Refusal::CalloutSender { said: "553 no".into() },
            Refusal::CalloutClient { said: "554 no".into() },
            Refusal::OverLimit { block, limit: 30.0, until_ms: 0 },
            Refusal::OverLimitAfterHold { block, limit: 30.0, until_ms: 0 },
            Refusal::Dmarc { domain: "x.test".into() },
            Refusal::QueueError,
            Refusal::DiskFull,
            Refusal::InFlight { block: None },
            Refusal::InFlight { block: Some(block) },
        ]
    }

    /// Every refusal is a 4xx or 5xx with an enhanced status, and its class
    /// matches the status's (a 4xx never says 5.x.x).
    #[test]
    fn every_refusal_has_a_consistent_code_and_status() {
        let all = every_refusal();
        for refusal in &all {
            let reply = refusal.reply();
            let status = reply.status.clone().unwrap_or_default();
            assert!(reply.code >= 400, "{refusal:?}");
            assert_eq!(status.chars().next(), reply.code.to_string().chars().next(), "{refusal:?}: {reply}");
            assert!(!refusal.label().is_empty());
        }
        assert_eq!(all[0].reply().to_string().lines().next().unwrap().get(..10), Some("421 4.7.0 "));
    }

    /// The README's table of replies the world sees lists every reply
    /// written here.
    #[test]
    fn the_readme_lists_every_refusal() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let start = readme.find("### Replies the world sees").expect("the table's heading");
        let table = &readme[start..];
        let table = &table[..table[4..].find("\n#").map_or(table.len(), |end| end + 4)];
        for refusal in every_refusal() {
            let reply = refusal.reply();
            let said = format!("`{} {}", reply.code, reply.status.unwrap_or_default());
            assert!(table.contains(&said), "{refusal:?}: {said}` is not in the README's table of replies");
        }
    }
}
