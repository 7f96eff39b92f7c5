//! The domains this node serves, and the RCPT verdict that keeps it from ever
//! being an open relay: only served domains, no routing tricks in the local
//! part, and `postmaster` always (RFC 5321 §4.5.1).

use std::collections::HashMap;

use crate::replies::Refusal;
use magicmx_proto::{Address, Domain};

use crate::route::outbound::NextHop;
use crate::route::smtp::ClientForwarding;
use crate::route::Route;
use crate::settings::{DomainSettings, OutboundTls};

pub struct Domains {
    served: HashMap<Domain, DomainSettings>,
    /// Where the bare `<postmaster>` (addressed to the node's own hostname) goes.
    postmaster: Option<Address>,
    hostname: Option<Domain>,
}

impl Domains {
    pub fn new(domains: &[DomainSettings], hostname: &str) -> Domains {
        let served = domains.iter().map(|d| (d.name.clone(), d.clone())).collect();
        let postmaster =
            domains.first().map(|d| Address { local: "postmaster".into(), domain: d.name.clone() });
        Domains { served, postmaster, hostname: Domain::parse(hostname).ok() }
    }

    /// Whether this node takes mail for `recipient` at all.
    pub fn verdict(&self, recipient: &Address) -> Result<(), Refusal> {
        let Some((_, address)) = self.route_for(recipient) else {
            return Err(Refusal::RelayDenied { domain: recipient.domain.to_string() });
        };
        if address.has_routing_characters() {
            return Err(Refusal::RoutingCharacters);
        }
        Ok(())
    }

    /// The TLS policy for delivering to a served domain's recipient.
    pub fn tls_for(&self, recipient: &Address) -> OutboundTls {
        self.served.get(&recipient.domain).map(|d| d.tls).unwrap_or_default()
    }

    /// How a served domain's next hop may be told the original client.
    pub fn forwarding_for(&self, recipient: &Address) -> ClientForwarding {
        self.served.get(&recipient.domain).map(|d| d.forwarding).unwrap_or_default()
    }

    /// The next hops of the served domains that leave by SMTP.
    pub fn next_hops(&self) -> Vec<NextHop> {
        self.served.values().filter_map(|d| NextHop::for_route(&d.route, d.name.as_str())).collect()
    }

    /// The route for a recipient and the address to deliver to (the bare
    /// postmaster is rewritten to the first served domain's postmaster).
    pub fn route_for(&self, recipient: &Address) -> Option<(&Route, Address)> {
        if recipient.is_postmaster() && Some(&recipient.domain) == self.hostname.as_ref() {
            if let Some(postmaster) = &self.postmaster {
                return self.served.get(&postmaster.domain).map(|d| (&d.route, postmaster.clone()));
            }
        }
        self.served.get(&recipient.domain).map(|d| (&d.route, recipient.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Domains {
        let d = DomainSettings {
            name: Domain::parse("example.test").unwrap(),
            route: Route::Mx,
            tls: OutboundTls::Opportunistic,
            forwarding: ClientForwarding::default(),
        };
        Domains::new(&[d], "mx.mesh.test")
    }

    fn code(d: &Domains, rcpt: &str) -> u16 {
        d.verdict(&Address::parse(rcpt).unwrap()).map_or_else(|r| r.reply().code, |()| 250)
    }

    #[test]
    fn only_served_domains_are_accepted() {
        let d = domains();
        assert_eq!(code(&d, "bob@example.test"), 250);
        assert_eq!(code(&d, "bob@EXAMPLE.test."), 250);
        assert_eq!(code(&d, "bob@other.test"), 550);
        assert_eq!(code(&d, "bob@sub.example.test"), 550);
        assert_eq!(code(&d, "bob@[127.0.0.1]"), 550);
    }

    #[test]
    fn routing_tricks_in_the_local_part_are_refused() {
        let d = domains();
        assert_eq!(code(&d, "bob%other.test@example.test"), 550);
        assert_eq!(code(&d, "other.test!bob@example.test"), 550);
        assert_eq!(code(&d, "\"bob@other.test\"@example.test"), 550);
    }

    #[test]
    fn postmaster_of_the_node_goes_to_the_first_domain() {
        let d = domains();
        assert_eq!(code(&d, "postmaster@mx.mesh.test"), 250);
        let (_, to) = d.route_for(&Address::parse("PostMaster@mx.mesh.test").unwrap()).unwrap();
        assert_eq!(to.to_string(), "postmaster@example.test");
    }
}
