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
}
