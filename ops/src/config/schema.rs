//! The configuration file's schema: every section and key of the design, each
//! with its default. Unknown keys are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use magicmx_node::route::Route;
use magicmx_proto::Domain;
use serde::Deserialize;

use super::values;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub smtp: SmtpSection,
    pub trap: TrapSection,
    pub mesh: MeshSection,
    pub throttle: ThrottleSection,
    pub queue: QueueSection,
    #[serde(rename = "domain")]
    pub domains: Vec<DomainSection>,
    pub trust: TrustSection,
    pub delivery: DeliverySection,
    pub checks: ChecksSection,
    pub admin: AdminSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    pub name: String,
    pub data_dir: PathBuf,
    pub nice: i32,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection { name: "node1".into(), data_dir: "/var/lib/magicmx".into(), nice: 19 }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    Reject,
    Ignore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    pub listen: Vec<SocketAddr>,
    pub hostname: String,
    pub max_message_size: usize,
    /// Octets of buffers all sessions together may hold while reading DATA
    /// (two 64 KiB buffers each; the content goes to disk as it arrives);
    /// past it, DATA gets `452 4.3.1`.
    pub max_data_memory: usize,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    #[serde(deserialize_with = "values::duration")]
    pub greet_pause: Duration,
    pub on_protocol_violation: OnViolation,
    #[serde(deserialize_with = "values::duration")]
    pub command_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub data_timeout: Duration,
    /// NOOP, RSET, VRFY and HELP before each counts as an error.
    pub junk_command_limit: usize,
    #[serde(deserialize_with = "values::duration")]
    pub tls_handshake_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub max_session_duration: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection {
            listen: vec!["0.0.0.0:25".parse().expect("valid address")],
            hostname: system_hostname(),
            max_message_size: 26_214_400,
            max_data_memory: 268_435_456,
            max_recipients: 100,
            max_connections: 2000,
            max_connections_per_ip: 20,
            greet_pause: Duration::from_secs(1),
            on_protocol_violation: OnViolation::Reject,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            junk_command_limit: 100,
            tls_handshake_timeout: Duration::from_secs(120),
            max_session_duration: Duration::from_secs(3600),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The kernel's host name, or `localhost`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrapSection {
    pub listen: Vec<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshSection {
    pub listen: SocketAddr,
    /// The address peers reach this node at; default: `listen`.
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(deserialize_with = "values::duration")]
    pub gossip_interval: Duration,
    pub magic_mx_names: Vec<String>,
    /// SHA-256 fingerprints of revoked node certificates.
    pub revoked: Vec<String>,
    /// Count registers kept at most, over all peers.
    pub max_tracked: usize,
    /// A peer down this long has left for good: forgotten with its counts and penalties.
    #[serde(deserialize_with = "values::duration")]
    pub forget_after: Duration,
    /// New penalties taken from one peer a minute, at most.
    pub peer_penalties_per_minute: u32,
}

impl Default for MeshSection {
    fn default() -> Self {
        MeshSection {
            listen: "0.0.0.0:7946".parse().expect("valid address"),
            advertise: None,
            seeds: vec![],
            ca_cert: None,
            cert: None,
            key: None,
            gossip_interval: Duration::from_millis(500),
            magic_mx_names: vec![],
            revoked: vec![],
            max_tracked: 1_000_000,
            forget_after: Duration::from_secs(3600),
            peer_penalties_per_minute: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSection {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub recipients_per_hour: u32,
    pub connections_per_minute: u32,
    #[serde(deserialize_with = "values::duration")]
    pub penalty: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub hold: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub penalty_max: Duration,
    pub polite_refusals: u32,
    pub peer_share: f64,
    /// A penalty lasts at least until a message to this many recipients fits again.
    pub comeback_recipients: u32,
    #[serde(deserialize_with = "values::duration")]
    pub trap_penalty: Duration,
}

impl Default for ThrottleSection {
    fn default() -> Self {
        ThrottleSection {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            recipients_per_hour: 30,
            connections_per_minute: 20,
            penalty: Duration::from_secs(15 * 60),
            hold: Duration::from_secs(2),
            penalty_max: Duration::from_secs(24 * 3600),
            polite_refusals: 3,
            peer_share: 0.95,
            comeback_recipients: 5,
            trap_penalty: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the disk under `node.data_dir` may be asked to take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// Octets that must stay free on the file systems of the queue and the
    /// spool (Postfix's `queue_minfree`); below it, MAIL and DATA get
    /// `452 4.3.1`. 0: no floor.
    pub min_free: u64,
    /// Octets of message bodies being received and not yet queued, all
    /// sessions together; past it, `452 4.3.1`.
    pub max_in_flight: u64,
    /// The same for the sessions of one source block (untrusted clients).
    pub max_in_flight_per_block: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            min_free: 64 * 1024 * 1024,
            max_in_flight: 1024 * 1024 * 1024,
            max_in_flight_per_block: 100 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    #[default]
    Opportunistic,
    Require,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSection {
    #[serde(deserialize_with = "values::domain")]
    pub name: Domain,
    #[serde(deserialize_with = "values::route", default = "default_route")]
    pub route: Route,
    #[serde(default)]
    pub tls: OutboundTls,
    /// Hand the original client to the next hop with XCLIENT: `require`
    /// (a hop that does not take it keeps the message queued), `offered`
    /// (where it is offered), `off`.
    #[serde(deserialize_with = "values::xclient", default)]
    pub xclient: magicmx_node::route::smtp::Xclient,
    /// Or with XFORWARD (logs and filters only), where it offers that.
    #[serde(default = "yes")]
    pub xforward: bool,
}

fn yes() -> bool {
    true
}

fn default_route() -> Route {
    Route::Mx
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySection {
    /// Default: `smtp.hostname`.
    pub helo_name: Option<String>,
    pub port: u16,
    #[serde(deserialize_with = "values::duration")]
    pub retry_first: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub retry_max: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub expire: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub command_timeout: Duration,
    #[serde(deserialize_with = "values::duration")]
    pub data_timeout: Duration,
    pub max_per_host: usize,
    pub max_concurrent: usize,
    #[serde(deserialize_with = "values::duration")]
    pub idle_connection: Duration,
    pub ca_file: Option<PathBuf>,
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            helo_name: None,
            port: 25,
            retry_first: Duration::from_secs(5 * 60),
            retry_max: Duration::from_secs(60 * 60),
            expire: Duration::from_secs(5 * 24 * 60 * 60),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_per_host: 20,
            max_concurrent: 100,
            idle_connection: Duration::from_secs(2),
            ca_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSection {
    #[serde(deserialize_with = "values::cidrs")]
    pub cidrs: Vec<ipnet::IpNet>,
    /// Host names trusted when forward-confirmed reverse DNS matches (`*.example.com`).
    pub hostnames: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    Off,
    Header,
    Reject,
    Strict,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksSection {
    pub fcrdns: CheckMode,
    pub spf: CheckMode,
    pub spf_softfail: CheckMode,
    pub dkim: CheckMode,
    pub dmarc: CheckMode,
    pub dkim_max_size: usize,
    pub dnsbl: Vec<String>,
    pub dnsbl_threshold: u32,
    pub verify_recipients: bool,
    pub sender_domain: bool,
    pub nameservers: Vec<SocketAddr>,
    /// One look-up's time-out.
    #[serde(deserialize_with = "values::duration")]
    pub dns_timeout: Duration,
    /// All the check look-ups of one message together, at most.
    #[serde(deserialize_with = "values::duration")]
    pub dns_budget: Duration,
}

impl Default for ChecksSection {
    fn default() -> Self {
        ChecksSection {
            fcrdns: CheckMode::Header,
            spf: CheckMode::Strict,
            spf_softfail: CheckMode::Header,
            dkim: CheckMode::Header,
            dmarc: CheckMode::Header,
            dkim_max_size: 4 * 1024 * 1024,
            dnsbl: vec![],
            dnsbl_threshold: 1,
            verify_recipients: true,
            sender_domain: true,
            nameservers: vec![],
            dns_timeout: Duration::from_secs(5),
            dns_budget: magicmx_node::settings::DEFAULT_DNS_BUDGET,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub listen: SocketAddr,
    pub policy_listen: SocketAddr,
    /// Required when `listen` is not a loopback address.
    pub token: Option<String>,
    /// Names the admin API is reached by (its `Host`), besides its address and `localhost`.
    pub hostnames: Vec<String>,
    /// Addresses the real MX sees mesh nodes connect from, besides the peers'.
    #[serde(deserialize_with = "values::cidrs")]
    pub mesh_clients: Vec<ipnet::IpNet>,
    /// The only clients the policy service serves (the real MX hosts).
    #[serde(deserialize_with = "values::cidrs")]
    pub policy_clients: Vec<ipnet::IpNet>,
    /// Policy service connections at once, at most.
    pub policy_max_connections: usize,
    /// A policy service connection idle this long is closed.
    #[serde(deserialize_with = "values::duration")]
    pub policy_idle_timeout: Duration,
    /// No longer used (the policy service always defers); accepted so that
    /// older configuration files still load, with a warning.
    pub policy_defer_first: Option<u32>,
    /// The magic MX name the policy service's refusals point to.
    pub magic_mx: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:8025".parse().expect("valid address"),
            policy_listen: "127.0.0.1:10040".parse().expect("valid address"),
            token: None,
            hostnames: vec![],
            mesh_clients: vec![],
            policy_clients: vec!["127.0.0.0/8".parse().expect("valid"), "::1/128".parse().expect("valid")],
            policy_max_connections: 256,
            policy_idle_timeout: Duration::from_secs(300),
            policy_defer_first: None,
            magic_mx: "the magic MX".into(),
        }
    }
}
