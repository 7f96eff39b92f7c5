//! The sender's domain must be able to take mail (MX or address records):
//! otherwise no bounce could ever reach it, and no honest sender uses it.

use crate::replies::Refusal;
use magicmx_proto::Address;

use super::counted;
use crate::dns::{Dns, Failure};
use crate::stats::Stats;

pub async fn check(dns: &Dns, stats: &Stats, sender: &Address) -> Option<Refusal> {
    let domain = sender.domain.as_str();
    if sender.domain.is_literal() {
        return None;
    }
    match dns.mail_domain(domain).await {
        Ok(true) => counted(stats, "sender_domain", "pass", None),
        Ok(false) => counted(
            stats,
            "sender_domain",
            "fail",
            Some(Refusal::SenderDomain { domain: domain.to_string() }),
        ),
        Err(Failure::Temporary(_)) | Err(Failure::NotFound) => counted(
            stats,
            "sender_domain",
            "temperror",
            Some(Refusal::SenderDomainDns { domain: domain.to_string() }),
        ),
    }
}
