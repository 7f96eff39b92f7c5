//! DNS block lists with rblsmtpd's semantics and postscreen's weights: the
//! client's address is looked up in each list (`d.c.b.a.list` for IPv4, the
//! nibbles for IPv6); listed (an A record) adds the list's weight. At the
//! threshold the client is refused with `554 5.7.1` and the list's TXT text;
//! a list that cannot be asked, when it could have made the difference,
//! gives `451 4.4.3` (try later), as `rblsmtpd -b -c` does.

use std::net::IpAddr;

use magicmx_proto::smtp::Reply;

use super::counted;
use crate::dns::{Dns, Failure};
use crate::stats::Stats;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unlisted,
    /// Refused: the lists that listed it and their text.
    Listed(String),
    /// A list could not be asked and the rest did not decide.
    Unreachable(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Unlisted => "unlisted",
            Outcome::Listed(_) => "listed",
            Outcome::Unreachable(_) => "unreachable",
        }
    }

    pub fn reply(&self) -> Option<Reply> {
        match self {
            Outcome::Unlisted => None,
            Outcome::Listed(text) => Some(Reply::new(554, "5.7.1", text.clone())),
            Outcome::Unreachable(list) => Some(Reply::new(
                451,
                "4.4.3",
                format!("Temporary DNS failure checking {list}; try again later"),
            )),
        }
    }
}

/// The name to ask `list` about `ip`.
pub fn query_name(ip: IpAddr, list: &str) -> String {
    format!("{}.{list}", crate::dns::reversed_labels(ip))
}

/// `list.example*2` → (`list.example`, 2); no weight is 1.
pub fn parse_list(entry: &str) -> Option<(String, u32)> {
    match entry.rsplit_once('*') {
        Some((name, weight)) => Some((name.to_string(), weight.parse().ok()?)),
        None => Some((entry.to_string(), 1)),
    }
}

pub async fn check(dns: &Dns, stats: &Stats, ip: IpAddr, lists: &[(String, u32)], threshold: u32) -> Outcome {
    let mut score = 0;
    let mut texts = vec![];
    let mut unreachable = None;
    let mut unknown_weight = 0;
    for (list, weight) in lists {
        let name = query_name(ip, list);
        match dns.addresses(&name).await {
            Ok(_) => {
                score += weight;
                let text = match dns.txt(&name).await {
                    Ok(txt) if !txt.is_empty() => txt.join(" "),
                    _ => format!("{ip} is listed by {list}"),
                };
                texts.push(text);
            }
            Err(Failure::NotFound) => {}
            Err(Failure::Temporary(_)) => {
                unknown_weight += weight;
                unreachable.get_or_insert_with(|| list.clone());
            }
        }
    }
    let threshold = threshold.max(1);
    if score >= threshold {
        return counted(
            stats,
            "dnsbl",
            "listed",
            Outcome::Listed(format!("Service unavailable; client [{ip}] blocked: {}", texts.join("; "))),
        );
    }
    match unreachable {
        Some(list) if score + unknown_weight >= threshold => {
            counted(stats, "dnsbl", "unreachable", Outcome::Unreachable(list))
        }
        _ => counted(stats, "dnsbl", "unlisted", Outcome::Unlisted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_reverse_the_address() {
        assert_eq!(query_name("192.0.2.99".parse().unwrap(), "bl.test"), "99.2.0.192.bl.test");
        let v6 = query_name("2001:db8::1".parse().unwrap(), "bl.test");
        assert!(v6.starts_with("1.0.0.0.0.0.0.0") && v6.ends_with("8.b.d.0.1.0.0.2.bl.test"), "{v6}");
    }

    #[test]
    fn weights_are_read_from_the_list_name() {
        assert_eq!(parse_list("zen.example.net"), Some(("zen.example.net".into(), 1)));
        assert_eq!(parse_list("list.example*2"), Some(("list.example".into(), 2)));
        assert_eq!(parse_list("list.example*x"), None);
    }
}
