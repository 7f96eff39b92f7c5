//! The SMTP-time checks, after the gate and never on the flood path: what no
//! honest sender fails. Each check lives in its own file; this one runs them
//! in order, within the message's DNS budget (`budget.rs`), and turns their
//! outcomes into replies and header text.

pub mod budget;
pub mod callout;
pub mod dkim;
pub mod dnsbl;
pub mod iprev;
pub mod sender;
pub mod spf;

use std::net::IpAddr;
use std::sync::Arc;

use magicmx_proto::Address;

use crate::dns::Dns;
use crate::named_trust::Proof;
use crate::replies::Refusal;
use crate::settings::{CheckMode, CheckSettings};
use crate::stats::Stats;

pub use budget::DnsBudget;
pub use iprev::IpRev;

/// Counts one check outcome (for `/metrics`) and hands it back.
fn counted<T>(stats: &Stats, check: &'static str, result: &'static str, value: T) -> T {
    stats.check(check, result);
    value
}

/// What the checks found about a client and its sender, for the
/// `Authentication-Results:` header and the queue.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub iprev: Option<IpRev>,
    pub dnsbl: Option<&'static str>,
    pub spf: Option<spf::Spf>,
}

impl Findings {
    /// `Authentication-Results:` (RFC 8601), or nothing when no check ran;
    /// `more` (DKIM and DMARC's parts) is appended.
    pub fn header(&self, server: &str, ip: IpAddr, sender: Option<&Address>, more: &str) -> Option<String> {
        let mut parts = vec![];
        if let Some(iprev) = &self.iprev {
            let name = iprev.name.as_deref().map(|n| format!(" ({})", comment(n))).unwrap_or_default();
            parts.push(format!("iprev={} policy.iprev={ip}{name}", iprev.result));
        }
        if let Some(spf) = &self.spf {
            let from = sender.map(ToString::to_string).unwrap_or_else(|| "<>".into());
            parts.push(format!("spf={} smtp.mailfrom={}", spf.as_str(), pvalue(&from)));
        }
        if parts.is_empty() && more.is_empty() {
            return None;
        }
        let mut header = format!("Authentication-Results: {server}");
        for part in parts {
            header.push_str(";\r\n\t");
            header.push_str(&part);
        }
        header.push_str(more);
        header.push_str("\r\n");
        Some(header)
    }

    /// The line for the transaction log.
    pub fn summary(&self) -> String {
        let iprev = self.iprev.as_ref().map_or("-", |i| i.result);
        let spf = self.spf.as_ref().map_or("-", spf::Spf::as_str);
        format!("iprev={iprev} dnsbl={} spf={spf}", self.dnsbl.unwrap_or("-"))
    }
}

pub struct Checks {
    dns: Arc<Dns>,
    stats: Arc<Stats>,
    settings: CheckSettings,
    /// SPF, at MAIL FROM (`checks.spf`) or for DMARC alone.
    spf: Option<spf::SpfChecker>,
    dkim: Option<dkim::DkimChecker>,
    /// Large messages read back for DKIM at once, at most.
    reading: tokio::sync::Semaphore,
    pub callouts: callout::Callouts,
}

/// Large messages read into memory for DKIM at the same time, at most.
const DKIM_READS: usize = 4;

impl Checks {
    pub fn new(dns: Arc<Dns>, settings: CheckSettings, stats: Arc<Stats>) -> Checks {
        let wanted = settings.spf != CheckMode::Off || settings.dkim != CheckMode::Off;
        let authenticator = wanted.then(|| spf::authenticator(dns.settings())).flatten();
        let dmarc = settings.dkim != CheckMode::Off && settings.dmarc != CheckMode::Off;
        let spf =
            (settings.spf != CheckMode::Off || dmarc).then(|| spf::SpfChecker::new(authenticator.clone()));
        let dkim = match (settings.dkim, authenticator) {
            (CheckMode::Off, _) | (_, None) => None,
            (_, Some(authenticator)) => Some(dkim::DkimChecker::new(authenticator, settings.dmarc)),
        };
        let callouts = callout::Callouts::new(stats.clone());
        let reading = tokio::sync::Semaphore::new(DKIM_READS);
        Checks { dns, stats, settings, spf, dkim, reading, callouts }
    }

    /// The DNS time one message may spend on its checks.
    pub fn dns_budget(&self) -> DnsBudget {
        DnsBudget::new(self.dns.settings().budget())
    }

    /// DKIM and DMARC of a message in (see `dkim.rs`), from `origin`, within
    /// what is left of its DNS `budget`; `None` when they are off or the
    /// message is larger than `checks.dkim_max_size`.
    pub async fn authenticity(
        &self,
        body: &crate::queue::Source,
        origin: Origin<'_>,
        findings: &Findings,
        budget: &mut DnsBudget,
    ) -> Option<dkim::Authenticity> {
        let checker = self.dkim.as_ref()?;
        let content = match body {
            crate::queue::Source::InMemory(content) if content.len() <= self.settings.dkim_max_size => {
                content.clone()
            }
            crate::queue::Source::InMemory(_) => return None,
            spooled => {
                let _reading = self.reading.acquire().await.ok()?;
                let (spooled, limit) = (spooled.clone(), self.settings.dkim_max_size);
                let read = tokio::task::spawn_blocking(move || spooled.read_at_most(limit)).await;
                match read {
                    Ok(Ok(Some(content))) => content,
                    Ok(Ok(None)) => return None,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot read a message back for DKIM");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
        };
        let Origin { ip, helo, sender } = origin;
        let mail_from = sender.map(|s| s.domain.to_string()).unwrap_or_else(|| helo.to_string());
        // DMARC weighs SPF: asked now when MAIL FROM did not (`spf = "off"`).
        let for_dmarc = match (&findings.spf, &self.spf, self.settings.dmarc) {
            (None, Some(spf), CheckMode::Header | CheckMode::Reject) => {
                Some(spf.check(&self.stats, ip, helo, sender, budget).await)
            }
            _ => None,
        };
        let spf = findings.spf.as_ref().or(for_dmarc.as_ref());
        Some(checker.check(&self.stats, &content, &mail_from, spf, budget).await)
    }

    /// True when nothing needs asking at MAIL FROM.
    pub fn idle_at_mail(&self) -> bool {
        let s = &self.settings;
        s.dnsbl.is_empty() && s.fcrdns == CheckMode::Off && !s.sender_domain && s.spf == CheckMode::Off
    }

    pub fn settings(&self) -> &CheckSettings {
        &self.settings
    }

    /// Whether `ip`'s forward-confirmed name is a trusted host name (asked
    /// within a DNS budget of its own).
    pub async fn prove_name(&self, ip: IpAddr) -> Proof {
        if self.settings.trusted_hostnames.is_empty() {
            return Proof::Refuted;
        }
        let mut budget = self.dns_budget();
        let iprev = budget
            .run(|deadline| async move { iprev::check(&self.dns.until(deadline), &self.stats, ip).await })
            .await;
        let trusted = |name: &str| self.settings.trusted_hostnames.iter().any(|p| host_matches(name, p));
        match (iprev.result, iprev.name.as_deref()) {
            ("pass", Some(name)) if trusted(name) => Proof::Proved,
            ("temperror", _) => Proof::Unknown,
            _ => Proof::Refuted,
        }
    }

    /// The checks at MAIL FROM: the client (block lists, reverse DNS), then
    /// the sender (its domain, SPF), within the message's DNS `budget`. A
    /// refusal, or the findings.
    pub async fn mail(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: Option<&Address>,
        findings: &mut Findings,
        budget: &mut DnsBudget,
    ) -> Option<Refusal> {
        let s = &self.settings;
        if !s.dnsbl.is_empty() {
            let outcome = budget
                .run(|deadline| async move {
                    dnsbl::check(&self.dns.until(deadline), &self.stats, ip, &s.dnsbl, s.dnsbl_threshold)
                        .await
                })
                .await;
            findings.dnsbl = Some(outcome.label());
            if let Some(refusal) = outcome.refusal() {
                return Some(refusal);
            }
        }
        if self.settings.fcrdns != CheckMode::Off {
            let iprev = budget
                .run(|deadline| async move { iprev::check(&self.dns.until(deadline), &self.stats, ip).await })
                .await;
            let refuse = self.settings.fcrdns == CheckMode::Reject && iprev.result != "pass";
            findings.iprev = Some(iprev.clone());
            if refuse {
                return Some(iprev.refusal());
            }
        }
        if let (Some(sender), true) = (sender, self.settings.sender_domain) {
            let checked = budget.run(|deadline| async move {
                sender::check(&self.dns.until(deadline), &self.stats, sender).await
            });
            if let Some(refusal) = checked.await {
                return Some(refusal);
            }
        }
        if let (Some(checker), false) = (&self.spf, self.settings.spf == CheckMode::Off) {
            let spf = checker.check(&self.stats, ip, helo, sender, budget).await;
            let refusal = spf.refusal(&self.settings);
            findings.spf = Some(spf);
            if refusal.is_some() {
                return refusal;
            }
        }
        None
    }
}

/// Who sent a message: the client's address, its HELO name and the
/// envelope sender (`None`: the null sender).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    pub sender: Option<&'a Address>,
}

/// A property value of `Authentication-Results:` (RFC 8601 §2.2): as it is
/// when it is a token (or an address made of token characters), otherwise a
/// quoted-string — a sender's quoted local part cannot end the field or
/// forge another property.
fn pvalue(value: &str) -> String {
    const SPECIALS: &str = "()<>,;:\\\"/[]?=";
    let plain = !value.is_empty() && value.chars().all(|c| c.is_ascii_graphic() && !SPECIALS.contains(c));
    if plain {
        return value.to_string();
    }
    let escaped: String = value
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
        .collect();
    format!("\"{escaped}\"")
}

/// Text for a header comment: no control characters, parentheses escaped.
fn comment(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| if matches!(c, '(' | ')' | '\\') { vec!['\\', c] } else { vec![c] })
        .collect()
}

/// `name` is `pattern`, or below it when the pattern is `*.suffix`.
pub fn host_matches(name: &str, pattern: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.ends_with(&format!(".{suffix}")),
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_local_part_or_an_odd_name_cannot_forge_a_property() {
        let findings = Findings {
            iprev: Some(IpRev {
                result: "pass",
                name: Some("host) dkim=pass (x".into()),
                why: String::new(),
            }),
            dnsbl: None,
            spf: Some(spf::Spf { result: mail_auth::SpfResult::Pass, domain: "bank.test".into() }),
        };
        let ip = "192.0.2.1".parse().unwrap();
        let sender = Address::parse("\"ceo; dkim=pass\"@bank.test").unwrap();
        let header = findings.header("mx.mesh.test", ip, Some(&sender), "").unwrap();
        assert!(header.contains("smtp.mailfrom=\"\\\"ceo; dkim=pass\\\"@bank.test\""), "{header}");
        assert!(header.contains("(host\\) dkim=pass \\(x)"), "{header}");
        let plain = Address::parse("alice@client.test").unwrap();
        let header = findings.header("mx.mesh.test", ip, Some(&plain), "").unwrap();
        assert!(header.contains("smtp.mailfrom=alice@client.test"), "{header}");
    }
}
