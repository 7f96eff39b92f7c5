//! DNS block lists with rblsmtpd's semantics and postscreen's weights: the
//! client's address is looked up in each list (`d.c.b.a.list` for IPv4, the
//! nibbles for IPv6); listed adds the list's weight. Listed means an answer
//! the list defines as a listing: by default any address in 127.0.0.0/8 but
//! 127.255.255.0/24 (Spamhaus's error codes, e.g. for queries through a
//! public resolver), or those a per-list filter names, written as Postfix
//! writes it (`zen.example.net=127.0.0.[2..11]*2`). At the threshold the
//! client is refused with `554 5.7.1` and the list's TXT text (one line, at
//! most 200 characters); a list that cannot be asked, when it could have
//! made the difference, gives `451 4.4.3` (try later), as `rblsmtpd -b -c`.

use std::net::IpAddr;

use crate::replies::Refusal;

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

    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Outcome::Unlisted => None,
            Outcome::Listed(text) => Some(Refusal::Dnsbl { text: text.clone() }),
            Outcome::Unreachable(list) => Some(Refusal::DnsblUnreachable { list: list.clone() }),
        }
    }
}

/// The name to ask `list` about `ip`.
pub fn query_name(ip: IpAddr, list: &str) -> String {
    format!("{}.{list}", crate::dns::reversed_labels(ip))
}

/// A block list, with the answers that mean listed and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub name: String,
    /// Each octet's allowed values; `None`: the default (see the module).
    pub filter: Option<[Vec<u8>; 4]>,
    pub weight: u32,
}

/// The longest TXT text put into a reply.
const MAX_TEXT: usize = 200;

impl List {
    /// Whether an answer means the client is listed.
    pub fn lists(&self, answer: IpAddr) -> bool {
        let IpAddr::V4(v4) = answer else { return false };
        let o = v4.octets();
        match &self.filter {
            Some(filter) => filter.iter().zip(o).all(|(allowed, octet)| allowed.contains(&octet)),
            None => o[0] == 127 && !(o[1] == 255 && o[2] == 255),
        }
    }
}

/// `list.example`, `list.example*2`, `list.example=127.0.0.[2..11]*2` or
/// `list.example=127.0.0.[2;4;8]`: the name, an optional filter (each octet a
/// number, `[a..b]` or `[a;b;…]`, as Postfix writes it) and a weight (1).
pub fn parse_list(entry: &str) -> Option<List> {
    let (rest, weight) = match entry.rsplit_once('*') {
        Some((rest, weight)) => (rest, weight.parse().ok()?),
        None => (entry, 1),
    };
    let (name, filter) = match rest.split_once('=') {
        Some((name, filter)) => (name, Some(parse_filter(filter)?)),
        None => (rest, None),
    };
    (!name.is_empty()).then(|| List { name: name.to_string(), filter, weight })
}

fn parse_filter(filter: &str) -> Option<[Vec<u8>; 4]> {
    // The dots between octets, not those of `[a..b]`.
    let mut parts = vec![String::new()];
    let mut inside = false;
    for c in filter.chars() {
        match c {
            '[' => inside = true,
            ']' => inside = false,
            '.' if !inside => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("one part at least").push(c);
    }
    let octets: Vec<Vec<u8>> = parts
        .iter()
        .map(|octet| match octet.strip_prefix('[').and_then(|o| o.strip_suffix(']')) {
            Some(inner) => match inner.split_once("..") {
                Some((low, high)) => Some((low.parse::<u8>().ok()?..=high.parse::<u8>().ok()?).collect()),
                None => inner.split(';').map(|v| v.parse().ok()).collect(),
            },
            None => Some(vec![octet.parse().ok()?]),
        })
        .collect::<Option<_>>()?;
    octets.try_into().ok().filter(|o: &[Vec<u8>; 4]| o.iter().all(|v| !v.is_empty()))
}

/// A list's TXT text, fit for a reply: one line, printable, bounded.
fn one_line(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    clean.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(MAX_TEXT).collect()
}

pub async fn check(dns: &Dns, stats: &Stats, ip: IpAddr, lists: &[List], threshold: u32) -> Outcome {
    let mut score = 0;
    let mut texts = vec![];
    let mut unreachable = None;
    let mut unknown_weight = 0;
    for List { name: list, weight, .. } in lists {
        let name = query_name(ip, list);
        match dns.addresses(&name).await {
            Ok(answers) if !answers.iter().any(|a| lists_by(lists, list, *a)) => {}
            Ok(_) => {
                score += weight;
                let text = match dns.txt(&name).await {
                    Ok(txt) if !txt.is_empty() => one_line(&txt.join(" ")),
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

/// Whether `answer` from `list` is a listing, by that list's filter.
fn lists_by(lists: &[List], list: &str, answer: IpAddr) -> bool {
    lists.iter().find(|l| l.name == list).is_some_and(|l| l.lists(answer))
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
    fn weights_and_filters_are_read_from_the_list_entry() {
        let plain = parse_list("zen.example.net").unwrap();
        assert_eq!((plain.name.as_str(), plain.weight, plain.filter.is_none()), ("zen.example.net", 1, true));
        assert_eq!(parse_list("list.example*2").unwrap().weight, 2);
        assert_eq!(parse_list("list.example*x"), None);
        let filtered = parse_list("zen.example.net=127.0.0.[2..11]*3").unwrap();
        assert_eq!((filtered.name.as_str(), filtered.weight), ("zen.example.net", 3));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(filtered.lists(ip("127.0.0.2")) && filtered.lists(ip("127.0.0.11")));
        assert!(!filtered.lists(ip("127.0.0.12")) && !filtered.lists(ip("127.0.1.2")));
        let set = parse_list("bl.test=127.0.0.[2;4]").unwrap();
        assert!(set.lists(ip("127.0.0.4")) && !set.lists(ip("127.0.0.3")));
        for bad in ["bl.test=127.0.0", "bl.test=127.0.0.[9..x]", "bl.test=1.2.3.256", "=127.0.0.2"] {
            assert_eq!(parse_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn by_default_spamhaus_error_codes_are_no_listing() {
        let list = parse_list("zen.example.net").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(list.lists(ip("127.0.0.2")) && list.lists(ip("127.0.0.10")));
        assert!(!list.lists(ip("127.255.255.254")) && !list.lists(ip("127.255.255.252")));
        assert!(!list.lists(ip("192.0.2.1")), "outside 127.0.0.0/8");
        assert_eq!(one_line("listed\r\nBcc: x\tnow"), "listed Bcc: x now");
        assert_eq!(one_line(&"x".repeat(5000)).len(), MAX_TEXT);
    }
}
