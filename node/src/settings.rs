//! The node's typed settings. `ops` reads the configuration file and fills
//! these in; nothing in this crate reads a file or the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use magicmx_proto::smtp::SessionConfig;
use magicmx_proto::Domain;

use crate::route::Route;

#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    pub data_dir: PathBuf,
    pub smtp: SmtpSettings,
    pub domains: Vec<DomainSettings>,
    pub delivery: DeliverySettings,
    pub dns: DnsSettings,
    /// The mesh; `None` runs the node alone.
    pub mesh: Option<magicmx_gossip::MeshSettings>,
    pub throttle: ThrottleSettings,
    /// What the disk may be asked to take.
    pub queue: QueueSettings,
    /// Sources that bypass counting, gate and hold, from the configuration.
    pub trusted: Vec<ipnet::IpNet>,
    /// Honeypot listeners: whoever connects is penalised.
    pub trap_listen: Vec<SocketAddr>,
    /// Count registers kept at most.
    pub max_tracked: usize,
    pub checks: CheckSettings,
    /// Prefix lengths of a source block.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub listen: Vec<SocketAddr>,
    /// Hostname, limits, STARTTLS offer and the action on protocol violations.
    pub session: SessionConfig,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// How long the node waits before its greeting, to catch clients that
    /// talk first (postscreen's greet pause). Zero disables the test.
    pub greet_pause: Duration,
    pub tls: Option<TlsFiles>,
}

/// The disk's bounds: a floor of free space, and the octets of message
/// bodies being received (not yet queued), in all and per source block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// Octets kept free on the queue's and the spool's file systems; 0: no floor.
    pub min_free: u64,
    pub max_in_flight: u64,
    /// For the sessions of one untrusted source block.
    pub max_in_flight_per_block: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings { min_free: 64 << 20, max_in_flight: 1 << 30, max_in_flight_per_block: 100 << 20 }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A served domain and where its mail goes.
#[derive(Debug, Clone)]
pub struct DomainSettings {
    pub name: Domain,
    pub route: Route,
    pub tls: OutboundTls,
    /// Whether the original client is handed to the next hop (XCLIENT, XFORWARD).
    pub forwarding: crate::route::smtp::ClientForwarding,
}

/// TLS when delivering by SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutboundTls {
    /// STARTTLS when offered, any certificate; plaintext when not offered or
    /// when the handshake fails.
    #[default]
    Opportunistic,
    /// STARTTLS with a certificate valid for the host name, or no delivery.
    Require,
}

/// How the node delivers by SMTP and how long it keeps trying.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The name this node gives in EHLO.
    pub helo_name: String,
    /// The port of MX hosts (25; tests point it elsewhere).
    pub mx_port: u16,
    /// The first retry comes this long after a failure; each next one twice as long...
    pub retry_first: Duration,
    /// ...up to this.
    pub retry_max: Duration,
    /// A message not delivered after this long is returned to its sender.
    pub expire: Duration,
    pub connect_timeout: Duration,
    /// Waiting for the greeting and the replies to EHLO, MAIL, RCPT, DATA
    /// (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for the reply to the final dot (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
    /// Connections to one destination address at once.
    pub max_per_host: usize,
    /// Messages being delivered at once.
    pub max_concurrent: usize,
    /// How long an idle connection is kept for the next message.
    pub idle_connection: Duration,
    /// Extra trust anchors (PEM) for `tls = "require"`, beside the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// The mesh's own MX names (`mx.mesh.example`, `*.mesh.example`): never delivered to.
    pub magic_mx_names: Vec<String>,
}

/// Where DNS questions go, and how long they may take.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// Servers to ask; empty means the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// One look-up's time-out; zero: hickory's (5 s).
    pub timeout: Duration,
    /// All the check look-ups of one message together (`checks.dns_budget`);
    /// zero: [`DEFAULT_DNS_BUDGET`].
    pub budget: Duration,
}

/// The DNS time of one message when none is configured.
pub const DEFAULT_DNS_BUDGET: Duration = Duration::from_secs(5);

impl DnsSettings {
    /// The DNS time one message may spend on its checks.
    pub fn budget(&self) -> Duration {
        if self.budget.is_zero() {
            DEFAULT_DNS_BUDGET
        } else {
            self.budget
        }
    }
}

/// The throttle's limits, mesh-wide per source block.
#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    pub recipients_per_hour: f64,
    pub connections_per_minute: f64,
    /// A first penalty; each repeat doubles it, up to `penalty_max`.
    pub penalty: Duration,
    pub penalty_max: Duration,
    /// The longest end-of-DATA wait for one gossip round.
    pub hold: Duration,
    /// Connections per penalty answered with a 421 before the rest are closed unanswered.
    pub polite_refusals: u32,
    /// The most of a limit one peer's counts may make up (see `limits::Limits`).
    pub peer_share: f64,
    /// A penalty lasts at least until a message to this many recipients fits again.
    pub comeback_recipients: f64,
    /// How long a trap hit penalises.
    pub trap_penalty: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            recipients_per_hour: 30.0,
            connections_per_minute: 20.0,
            penalty: Duration::from_secs(15 * 60),
            penalty_max: Duration::from_secs(24 * 3600),
            hold: Duration::from_secs(2),
            polite_refusals: 3,
            peer_share: 0.95,
            comeback_recipients: 5.0,
            trap_penalty: Duration::from_secs(24 * 3600),
        }
    }
}

impl ThrottleSettings {
    /// The arithmetic of these limits.
    pub fn limits(&self) -> crate::limits::Limits {
        crate::limits::Limits {
            recipients_per_hour: self.recipients_per_hour,
            connections_per_minute: self.connections_per_minute,
            penalty: self.penalty,
            penalty_max: self.penalty_max,
            comeback_recipients: self.comeback_recipients,
            peer_share: self.peer_share,
            periods: magicmx_gossip::Periods::default(),
        }
    }
}

/// What a check does with its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckMode {
    Off,
    /// Record the result (Authentication-Results), refuse nothing.
    #[default]
    Header,
    /// Refuse what fails.
    Reject,
}

/// The SMTP-time checks: what no honest sender fails.
#[derive(Debug, Clone, Default)]
pub struct CheckSettings {
    /// Forward-confirmed reverse DNS.
    pub fcrdns: CheckMode,
    /// SPF: `Reject` refuses `fail`.
    pub spf: CheckMode,
    /// Refuse SPF `softfail` too (only with `spf = Reject`).
    pub spf_softfail_rejects: bool,
    /// DNS block lists and their weights.
    pub dnsbl: Vec<crate::checks::dnsbl::List>,
    /// The total weight at which a client is refused.
    pub dnsbl_threshold: u32,
    /// Probe the real MX for each recipient (call-out).
    pub verify_recipients: bool,
    /// A non-null sender's domain must have MX or address records.
    pub sender_domain: bool,
    /// Host names trusted when forward-confirmed reverse DNS gives one of them (`*.suffix` allowed).
    pub trusted_hostnames: Vec<String>,
    /// DKIM signatures: verified and recorded (`Header`) or not (`Off`).
    pub dkim: CheckMode,
    /// DMARC: recorded (`Header`), honoured when the policy is reject (`Reject`), or not.
    pub dmarc: CheckMode,
    /// Messages larger than this are not verified for DKIM and DMARC here.
    pub dkim_max_size: usize,
}
