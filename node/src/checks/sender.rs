//! The sender's domain must be able to take mail (MX or address records):
//! otherwise no bounce could ever reach it, and no honest sender uses it.

use magicmx_proto::smtp::Reply;
use magicmx_proto::Address;

use super::counted;
use crate::dns::{Dns, Failure};
use crate::stats::Stats;

pub async fn check(dns: &Dns, stats: &Stats, sender: &Address) -> Option<Reply> {
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
            Some(Reply::new(
                550,
                "5.1.8",
                format!("Sender address rejected: domain {domain} has no MX or address records"),
            )),
        ),
        Err(Failure::Temporary(_)) | Err(Failure::NotFound) => counted(
            stats,
            "sender_domain",
            "temperror",
            Some(Reply::new(
                451,
                "4.4.3",
                format!("Sender domain {domain}: temporary DNS failure; try again later"),
            )),
        ),
    }
}
