//! The stages without a socket: a node's domain table, its throttle alone
//! (no mesh: it is every block's home) and a manual clock. Each test reads
//! as the dialogue it stands for, with the reply's code and enhanced status.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use magicmx_gossip::{EngineSettings, Tally};
use magicmx_proto::{Address, Domain};

use super::{mail, Mail, Rcpt, Transaction};
use crate::checks::Checks;
use crate::clock::{Clock, ManualClock};
use crate::disk::Disk;
use crate::dns::Dns;
use crate::domains::Domains;
use crate::hold::hold;
use crate::replies::Refusal;
use crate::route::smtp::ClientForwarding;
use crate::route::Route;
use crate::settings::{
    CheckMode, CheckSettings, DnsSettings, DomainSettings, OutboundTls, QueueSettings, ThrottleSettings,
};
use crate::stats::Stats;
use crate::throttle::Throttle;

const START: u64 = 1_700_000_000_000;
const HOUR: Duration = Duration::from_secs(3600);

struct Node {
    domains: Domains,
    throttle: Throttle,
    clock: Arc<ManualClock>,
}

fn node() -> Node {
    let served = DomainSettings {
        name: Domain::parse("example.test").unwrap(),
        route: Route::Mx,
        tls: OutboundTls::Opportunistic,
        forwarding: ClientForwarding::default(),
    };
    let limits = Arc::new(ThrottleSettings::default().limits());
    let tally = Arc::new(Tally::new(EngineSettings::default(), limits.clone()));
    let clock = Arc::new(ManualClock::at(START));
    Node {
        domains: Domains::new(&[served], "mx.mesh.test"),
        throttle: Throttle::new(limits, (24, 48), tally, None, clock.clone()),
        clock,
    }
}

impl Node {
    fn stage(&self) -> Rcpt<'_> {
        Rcpt { domains: &self.domains, throttle: &self.throttle, callout: None }
    }

    /// RCPT TO:<to> from `transaction`: the reply's code and enhanced status.
    async fn rcpt(&self, transaction: &mut Transaction, to: &str) -> String {
        let to = Address::parse(to).unwrap();
        match self.stage().verdict(transaction, &to, self.clock.now()).await {
            Ok(()) => "250 2.1.5".into(),
            Err(refusal) => said(&refusal),
        }
    }
}

fn said(refusal: &Refusal) -> String {
    let reply = refusal.reply();
    format!("{} {}", reply.code, reply.status.unwrap_or_default())
}

fn client(ip: &str) -> IpAddr {
    ip.parse().unwrap()
}

#[tokio::test]
async fn mail_for_a_domain_not_served_is_relay_denied() {
    let node = node();
    let mut t = Transaction::new(client("192.0.2.1"), false);
    assert_eq!(node.rcpt(&mut t, "bob@example.test").await, "250 2.1.5");
    assert_eq!(node.rcpt(&mut t, "bob@elsewhere.test").await, "550 5.7.1");
    assert_eq!(node.rcpt(&mut t, "bob%elsewhere.test@example.test").await, "550 5.7.1");
    let refusal = node.stage().verdict(&mut t, &Address::parse("x@elsewhere.test").unwrap(), START).await;
    assert_eq!(refusal.unwrap_err().label(), "relay_denied");
    assert_eq!(t.reserved.as_ref().map(|r| r.recipients()), Some(1), "only the served recipient is counted");
}

#[tokio::test]
async fn the_31st_recipient_in_an_hour_waits_and_is_taken_an_hour_later() {
    let node = node();
    let mut t = Transaction::new(client("192.0.2.1"), false);
    for n in 0..30 {
        assert_eq!(node.rcpt(&mut t, &format!("r{n}@example.test")).await, "250 2.1.5", "recipient {n}");
    }
    // The reservation must be taken to count past this transaction.
    hold(&node.throttle, t.reserved.as_mut().unwrap(), node.clock.now()).await.unwrap();
    t.reserved.take().unwrap().settle(true, node.clock.now());
    let mut next = Transaction::new(client("192.0.2.77"), false);
    assert_eq!(node.rcpt(&mut next, "late@example.test").await, "451 4.7.1", "same /24, over 30 an hour");
    let to = Address::parse("late@example.test").unwrap();
    let refusal = node.stage().verdict(&mut next, &to, node.clock.now()).await.unwrap_err();
    assert_eq!(refusal.label(), "over_limit");
    assert_eq!(next.reserved.as_ref().unwrap().recipients(), 0, "refused recipients are given back");
    // Another block is not held back by this one.
    let mut other = Transaction::new(client("198.51.100.1"), false);
    assert_eq!(node.rcpt(&mut other, "bob@example.test").await, "250 2.1.5");
    // Hours replayed in no time: the block's rate has decayed, it is taken.
    node.clock.advance(2 * HOUR);
    let mut later = Transaction::new(client("192.0.2.77"), false);
    assert_eq!(node.rcpt(&mut later, "late@example.test").await, "250 2.1.5");
}

#[tokio::test]
async fn trusted_clients_and_postmaster_are_not_counted() {
    let node = node();
    let mut trusted = Transaction::new(client("192.0.2.1"), true);
    for n in 0..100 {
        assert_eq!(node.rcpt(&mut trusted, &format!("r{n}@example.test")).await, "250 2.1.5");
    }
    assert!(trusted.reserved.is_none(), "nothing reserved for a trusted client");
    let mut t = Transaction::new(client("192.0.2.2"), false);
    assert_eq!(node.rcpt(&mut t, "postmaster@example.test").await, "250 2.1.5");
    assert!(t.reserved.is_none(), "postmaster@ is not counted");
    // A trusted client still cannot relay.
    assert_eq!(node.rcpt(&mut trusted, "bob@elsewhere.test").await, "550 5.7.1");
}

#[tokio::test]
async fn a_message_over_what_is_left_is_refused_after_the_hold_and_its_retry_taken() {
    let node = node();
    let now = node.clock.now();
    // Two transactions from one block, 20 recipients each, both past RCPT
    // before either ends DATA (two connections at once).
    let (mut first, mut second) =
        (Transaction::new(client("192.0.2.1"), false), Transaction::new(client("192.0.2.2"), false));
    for n in 0..20 {
        assert_eq!(node.rcpt(&mut first, &format!("a{n}@example.test")).await, "250 2.1.5");
    }
    for n in 0..10 {
        assert_eq!(node.rcpt(&mut second, &format!("b{n}@example.test")).await, "250 2.1.5");
    }
    assert_eq!(node.rcpt(&mut second, "b10@example.test").await, "451 4.7.1", "the 31st waits");
    let a = first.reserved.as_mut().unwrap();
    assert_eq!(hold(&node.throttle, a, now).await, Ok(()), "the first to end DATA fits");
    first.reserved.take().unwrap().settle(true, now);
    // The second fits too: its ten were reserved within the limit.
    let b = second.reserved.as_mut().unwrap();
    assert_eq!(hold(&node.throttle, b, now).await, Ok(()));
    second.reserved.take().unwrap().settle(true, now);
    // A third message now: over, refused after the hold as well as at RCPT.
    let mut third = Transaction::new(client("192.0.2.3"), false);
    assert_eq!(node.rcpt(&mut third, "c@example.test").await, "451 4.7.1");
}

#[tokio::test]
async fn the_hold_refuses_a_message_that_no_longer_fits() {
    let node = node();
    let now = node.clock.now();
    let mut late = Transaction::new(client("192.0.2.9"), false);
    assert_eq!(node.rcpt(&mut late, "x@example.test").await, "250 2.1.5");
    // Meanwhile the block's other sessions used the whole limit.
    for n in 0..30 {
        let mut t = Transaction::new(client("192.0.2.1"), false);
        if node.rcpt(&mut t, &format!("r{n}@example.test")).await == "250 2.1.5" {
            hold(&node.throttle, t.reserved.as_mut().unwrap(), now).await.ok();
            t.reserved.take().unwrap().settle(true, now);
        }
    }
    // The late one's recipient was reserved before the others filled the
    // limit (they were refused at RCPT past it), so it still fits.
    let verdict = hold(&node.throttle, late.reserved.as_mut().unwrap(), now).await;
    assert_eq!(verdict, Ok(()));
    late.reserved.take().unwrap().settle(true, now);
    // One more, sealed now: over, refused after the hold.
    let mut more = Transaction::new(client("192.0.2.10"), false);
    let block = node.throttle.block_of(more.client);
    let mut reservation = node.throttle.transaction(more.client);
    reservation.add(now);
    more.reserved = Some(reservation);
    let refusal = hold(&node.throttle, more.reserved.as_mut().unwrap(), now).await.unwrap_err();
    assert_eq!(said(&refusal), "451 4.7.1");
    assert_eq!(refusal.label(), "over_limit_after_hold");
    assert!(matches!(refusal, Refusal::OverLimitAfterHold { block: b, .. } if b == block));
}

#[tokio::test]
async fn mail_from_starts_afresh_and_trusted_clients_skip_the_checks() {
    let dns = Arc::new(Dns::new(&DnsSettings::default()).unwrap());
    let stats = Arc::new(Stats::default());
    // SPF on: a check that would ask DNS.
    let settings = CheckSettings { spf: CheckMode::Reject, ..CheckSettings::default() };
    let checks = Checks::new(dns.clone(), settings, stats.clone());
    let node = node();
    let mut trusted = Transaction::new(client("192.0.2.1"), true);
    assert_eq!(node.rcpt(&mut trusted, "bob@example.test").await, "250 2.1.5");
    let sender = Address::parse("alice@client.test").ok();
    let disk = Disk::new(&QueueSettings::default(), vec![]);
    let stage = |checks| Mail { checks, disk: &disk, prefixes: (24, 48) };
    let now = node.clock.now();
    let verdict =
        mail(stage(&checks), trusted.client, "client.test", sender.clone(), &mut trusted, now).await;
    assert_eq!(verdict, Ok(()));
    assert_eq!(trusted.sender, sender, "the new transaction's sender");
    assert!(trusted.findings.spf.is_none(), "no check ran for a trusted client");
    // Nothing configured: nothing asked, for anyone.
    let off = CheckSettings {
        spf: CheckMode::Off,
        dkim: CheckMode::Off,
        fcrdns: CheckMode::Off,
        ..CheckSettings::default()
    };
    let idle = Checks::new(dns, off, stats);
    let mut t = Transaction::new(client("192.0.2.2"), false);
    assert_eq!(node.rcpt(&mut t, "bob@example.test").await, "250 2.1.5");
    assert_eq!(mail(stage(&idle), t.client, "client.test", None, &mut t, now).await, Ok(()));
    assert!(t.reserved.is_none(), "MAIL FROM forgets the last transaction's reservation");
}
