//! Delivery by SMTP to a next hop: a fixed host, or the MX hosts of a domain
//! tried in order, each address of each host in turn, never this node itself.
//! Connections are reused through the pool.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use magicmx_proto::Address;

use super::hop_faults::HopFaults;
use super::mx::{self, Hops};
use super::pool::Pool;
use super::smtp::{
    connector, Broken, ClientForwarding, Connection, NotHandedOver, OriginalClient, Sent, Timeouts,
    TlsPolicy, TransactionError,
};
use super::tls::ClientTls;
use super::Outcome;
use crate::checks::callout::Probe;
use crate::clock::Clock;
use crate::dns::{Dns, Failure};
use crate::error::Result;
use crate::queue::Body;
use crate::settings::{DeliverySettings, OutboundTls};
use crate::stats::Stats;

/// How long a call-out waits for a connection slot to the real MX (under
/// `delivery.max_per_host`, shared with deliveries); then the recipient is
/// taken unprobed, as when the real MX is down.
const PROBE_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where one group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NextHop {
    /// The MX hosts of this domain.
    Mx(String),
    /// This host and port (`smtp://` routes).
    Fixed { host: String, port: u16 },
}

impl NextHop {
    /// Where a served domain's `route` sends its mail by SMTP; `None` for a maildir.
    pub fn for_route(route: &super::Route, domain: &str) -> Option<NextHop> {
        match route {
            super::Route::Mx => Some(NextHop::Mx(domain.to_string())),
            super::Route::Smtp { host, port } => Some(NextHop::Fixed { host: host.clone(), port: *port }),
            super::Route::Maildir(_) => None,
        }
    }
}

pub struct Outbound {
    dns: Arc<Dns>,
    pool: Pool,
    tls: ClientTls,
    settings: DeliverySettings,
    /// This node's own SMTP addresses: never a destination.
    own_addrs: Vec<SocketAddr>,
    faults: HopFaults,
    clock: Arc<dyn Clock>,
}

/// What trying one address came to.
enum Tried {
    /// The host answered for the recipients (some may still be deferred).
    Answered(Vec<Outcome>),
    /// Try the next address or host, for this reason.
    Next(String),
}

impl Outbound {
    pub fn new(
        dns: Arc<Dns>,
        settings: DeliverySettings,
        own_addrs: Vec<SocketAddr>,
        stats: Arc<Stats>,
        clock: Arc<dyn Clock>,
    ) -> Result<Outbound> {
        Ok(Outbound {
            dns,
            pool: Pool::new(settings.max_per_host, settings.idle_connection),
            tls: ClientTls::new(settings.ca_file.as_deref())?,
            settings,
            own_addrs,
            faults: HopFaults::new(stats),
            clock,
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Asks the next hop whether it would take `recipient` (a call-out),
    /// handing over the original `client` as a delivery would.
    pub async fn probe(
        &self,
        hop: &NextHop,
        sender: Option<&Address>,
        recipient: &Address,
        client: Option<(&OriginalClient, ClientForwarding)>,
    ) -> Probe {
        let (hosts, port) = match self.next_hosts(hop).await {
            Ok(found) => found,
            Err(outcome) => return Probe::Unknown(format!("{outcome:?}")),
        };
        let Some(host) = hosts.first() else { return Probe::Unknown("no next hop".into()) };
        let Ok(ips) = self.dns.addresses(host).await else {
            return Probe::Unknown(format!("{host} does not resolve"));
        };
        let Some(addr) = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).find(|a| !self.is_own(*a))
        else {
            return Probe::Unknown("the next hop is this node".into());
        };
        // A probe is a connection like a delivery's: it waits for a slot
        // under the per-host limit, but not longer than a client would.
        let Ok(slot) = tokio::time::timeout(PROBE_SLOT_WAIT, self.pool.slot(addr)).await else {
            return Probe::Unknown(format!("{host} has no free connection slot"));
        };
        let mut conn = match self.open(addr, host, OutboundTls::Opportunistic).await {
            Ok(conn) => conn,
            Err(broken) => return Probe::Unknown(broken.to_string()),
        };
        let answer = conn.probe(sender, recipient, client).await;
        // The slot is held until the connection is closed.
        tokio::spawn(async move {
            conn.quit().await;
            drop(slot);
        });
        match answer {
            Ok((probed, handed_over)) => Probe::judge(probed, handed_over),
            Err(broken) => Probe::Unknown(broken.to_string()),
        }
    }

    /// The SIZE `hop` offers in its EHLO (`None`: no limit), or `None`
    /// when no host of it could be asked.
    pub async fn size_of(&self, hop: &NextHop) -> Option<Option<u64>> {
        let (hosts, port) = self.next_hosts(hop).await.ok()?;
        for host in hosts {
            let Ok(ips) = self.dns.addresses(&host).await else { continue };
            for addr in ips.into_iter().map(|ip| SocketAddr::new(ip, port)).filter(|a| !self.is_own(*a)) {
                let Ok(conn) = self.open(addr, &host, OutboundTls::Opportunistic).await else { continue };
                let size = conn.size_limit();
                tokio::spawn(conn.quit());
                return Some(size);
            }
        }
        None
    }

    /// The hosts to try for `hop` and their port, or the outcome for all
    /// recipients when there are none.
    async fn next_hosts(&self, hop: &NextHop) -> std::result::Result<(Vec<String>, u16), Outcome> {
        match hop {
            NextHop::Fixed { host, port } => Ok((vec![host.clone()], *port)),
            NextHop::Mx(domain) => match mx::hops(&self.dns, domain, &self.settings.magic_mx_names).await {
                Hops::Hosts(hosts) => Ok((hosts, self.settings.mx_port)),
                Hops::Refuses(why) => Err(Outcome::Permanent(why)),
                Hops::Later(why) => Err(Outcome::Transient(why)),
            },
        }
    }

    /// Delivers one message to `recipients` through `hop`; one outcome per recipient.
    pub async fn deliver(
        &self,
        hop: &NextHop,
        tls: OutboundTls,
        sender: Option<&Address>,
        recipients: &[Address],
        body: &Body,
        client: Option<(&OriginalClient, ClientForwarding)>,
    ) -> Vec<Outcome> {
        let all = |outcome: Outcome| vec![outcome; recipients.len()];
        let (hosts, port) = match self.next_hosts(hop).await {
            Ok(found) => found,
            Err(outcome) => return all(outcome),
        };
        let mut last = String::from("no next hop could be reached");
        for host in hosts {
            let ips = match self.dns.addresses(&host).await {
                Ok(ips) => ips,
                Err(Failure::NotFound) => {
                    last = format!("{host} has no address records");
                    continue;
                }
                Err(Failure::Temporary(e)) => {
                    last = format!("DNS for {host}: {e}");
                    continue;
                }
            };
            for ip in ips {
                let addr = SocketAddr::new(ip, port);
                if self.is_own(addr) {
                    last = format!("{host} [{ip}] is this node: mail loops back");
                    continue;
                }
                match self.try_address(addr, &host, tls, sender, recipients, body, client).await {
                    Tried::Answered(outcomes) => return outcomes,
                    Tried::Next(why) => last = why,
                }
            }
        }
        all(Outcome::Transient(last))
    }

    async fn try_address(
        &self,
        addr: SocketAddr,
        host: &str,
        tls: OutboundTls,
        sender: Option<&Address>,
        recipients: &[Address],
        body: &Body,
        client: Option<(&OriginalClient, ClientForwarding)>,
    ) -> Tried {
        let _slot = self.pool.slot(addr).await;
        let verified = tls == OutboundTls::Require;
        let hop = format!("{host}[{}]", addr.ip());
        // A pooled connection may have been closed by the server meanwhile:
        // if it broke before the final dot, one more try on a fresh connection.
        if let Some(mut conn) = self.pool.take(addr, verified) {
            match conn.send(sender, recipients, body, client).await {
                Err(TransactionError::Broken(_)) => {}
                result => return self.answered(conn, verified, &hop, result),
            }
        }
        match self.open(addr, host, tls).await {
            Ok(mut conn) => {
                let result = conn.send(sender, recipients, body, client).await;
                self.answered(conn, verified, &hop, result)
            }
            Err(broken) => Tried::Next(format!("{hop}: {broken}")),
        }
    }

    /// What one transaction on `conn` came to; the connection is kept for
    /// the next message or closed, and the hop's faults are counted.
    fn answered(
        &self,
        conn: Connection,
        verified: bool,
        hop: &str,
        result: std::result::Result<Sent, TransactionError>,
    ) -> Tried {
        let now = self.clock.now();
        match result {
            Ok(sent) => {
                if let Some(why) = &sent.as_node {
                    if self.faults.count(hop, why.label(), now) {
                        tracing::warn!(%hop, %why, "the message goes as from this node (xclient = \"offered\"); said once an hour per hop");
                    }
                }
                if sent.reply_lost && self.faults.count(hop, "reply_lost_after_dot", now) {
                    tracing::warn!(%hop, "no reply after the final dot: the message may have been taken; tried again later");
                }
                self.keep_or_close(conn, verified, sent.reusable);
                Tried::Answered(sent.outcomes)
            }
            Err(TransactionError::SenderDeferred(reply)) => {
                tokio::spawn(conn.quit());
                Tried::Next(format!("{hop} deferred the sender: {}", reply.to_string().trim_end()))
            }
            Err(TransactionError::NotHandedOver(why)) => {
                tokio::spawn(conn.quit());
                self.not_handed_over(hop, &why, now)
            }
            Err(TransactionError::Broken(broken)) => Tried::Next(format!("{hop}: {broken}")),
        }
    }

    /// `xclient = "require"` and the hop did not take it: a configuration
    /// fault. The message stays queued (never sent as from this node,
    /// never returned for it).
    fn not_handed_over(&self, hop: &str, why: &NotHandedOver, now: u64) -> Tried {
        if self.faults.count(hop, why.label(), now) {
            tracing::warn!(%hop, %why, "xclient = \"require\": messages for this hop wait in the queue until it takes XCLIENT from this node; said once an hour per hop");
        }
        Tried::Next(format!("{hop}: {why}; xclient = \"require\", so the message waits"))
    }

    /// Keeps a connection for the next message, or closes it (one that
    /// carried XCLIENT belongs to that message's client).
    fn keep_or_close(&self, conn: Connection, verified: bool, reusable: bool) {
        match reusable {
            true => self.pool.give_back(conn, verified),
            false => {
                tokio::spawn(conn.quit());
            }
        }
    }

    /// A new connection; for opportunistic TLS, a failed handshake is retried in plaintext.
    async fn open(
        &self,
        addr: SocketAddr,
        host: &str,
        tls: OutboundTls,
    ) -> std::result::Result<Connection, Broken> {
        let timeouts = Timeouts {
            connect: self.settings.connect_timeout,
            command: self.settings.command_timeout,
            data: self.settings.data_timeout,
        };
        let helo = &self.settings.helo_name;
        match tls {
            OutboundTls::Require => {
                let policy = TlsPolicy::Require(connector(&self.tls.verified));
                Connection::open(addr, host, helo, &policy, timeouts).await
            }
            OutboundTls::Opportunistic => {
                let policy = TlsPolicy::Opportunistic(connector(&self.tls.opportunistic));
                match Connection::open(addr, host, helo, &policy, timeouts).await {
                    Err(Broken::Tls(why)) => {
                        tracing::info!(host, %addr, %why, "TLS handshake failed; delivering in plaintext");
                        Connection::open(addr, host, helo, &TlsPolicy::Off, timeouts).await
                    }
                    other => other,
                }
            }
        }
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own_addrs.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip() || (own.ip().is_unspecified() && is_local(addr.ip())))
        })
    }
}

/// Loopback addresses are this machine; other local addresses are not known
/// without asking the OS, and are caught by the Received-header loop limit.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}
