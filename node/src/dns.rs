//! DNS look-ups for delivery and the checks, through hickory-resolver with
//! its cache. Answers are reduced to what mail routing needs: records, "no
//! such records" (final), or a temporary failure (try again later). Each
//! name is asked once per look-up (one try of `checks.dns_timeout`, within
//! which UDP resends its datagram at most twice); a view made with
//! [`Dns::until`] also gives up at a deadline (a message's DNS budget).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::error::{Error, Result};
use crate::settings::DnsSettings;

/// Why a look-up gave no records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The name does not exist or has no records of that type: final.
    NotFound,
    /// Time-out, SERVFAIL, network trouble: ask again later.
    Temporary(String),
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    /// Lower-case, without the trailing dot.
    pub exchange: String,
}

#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    settings: DnsSettings,
    /// Look-ups still running then are temporary failures.
    deadline: Option<tokio::time::Instant>,
}

/// Why a look-up cut short by its deadline failed.
pub const SPENT: &str = "the DNS time of this message is spent";

impl Dns {
    pub fn new(settings: &DnsSettings) -> Result<Dns> {
        let (config, options) = resolver_config(settings).map_err(|e| Error::Dns(Box::new(e)))?;
        let builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        Ok(Dns {
            resolver: builder.with_options(options).build().map_err(|e| Error::Dns(Box::new(e)))?,
            settings: settings.clone(),
            deadline: None,
        })
    }

    /// The same resolver (and cache), giving up at `deadline`.
    pub fn until(&self, deadline: tokio::time::Instant) -> Dns {
        Dns { deadline: Some(deadline), ..self.clone() }
    }

    /// Runs one look-up, bounded by the deadline if there is one.
    async fn ask<T>(
        &self,
        lookup: impl Future<Output = std::result::Result<T, NetError>>,
    ) -> std::result::Result<T, Failure> {
        match self.deadline {
            None => lookup.await.map_err(failure),
            Some(deadline) => match tokio::time::timeout_at(deadline, lookup).await {
                Ok(answer) => answer.map_err(failure),
                Err(_elapsed) => Err(Failure::Temporary(SPENT.into())),
            },
        }
    }

    /// The MX records of `domain`, most preferred first.
    pub async fn mx(&self, domain: &str) -> std::result::Result<Vec<Mx>, Failure> {
        let lookup = self.ask(self.resolver.mx_lookup(fqdn(domain))).await?;
        let mut records: Vec<Mx> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::MX(mx) => Some(Mx {
                    preference: mx.preference,
                    exchange: mx.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(Failure::NotFound);
        }
        records.sort_by_key(|mx| mx.preference);
        Ok(records)
    }

    /// The addresses of `host` (A and AAAA); an IP literal is its own answer.
    pub async fn addresses(&self, host: &str) -> std::result::Result<Vec<IpAddr>, Failure> {
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = self.ask(self.resolver.lookup_ip(fqdn(host))).await?;
        let ips: Vec<IpAddr> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(Failure::NotFound);
        }
        Ok(ips)
    }

    /// True when `domain` can receive mail: it has MX records, or addresses.
    /// A temporary failure counts as no.
    pub async fn accepts_mail(&self, domain: &str) -> bool {
        self.mail_domain(domain).await == Ok(true)
    }

    /// Whether `domain` takes mail (MX records, or addresses), or a temporary failure.
    pub async fn mail_domain(&self, domain: &str) -> std::result::Result<bool, Failure> {
        match self.mx(domain).await {
            Ok(records) => Ok(records.iter().any(|mx| !mx.exchange.is_empty())),
            Err(Failure::NotFound) => match self.addresses(domain).await {
                Ok(_) => Ok(true),
                Err(Failure::NotFound) => Ok(false),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The names a PTR look-up gives for `ip`, without trailing dots.
    pub async fn ptr(&self, ip: IpAddr) -> std::result::Result<Vec<String>, Failure> {
        let lookup = self.ask(self.resolver.lookup(reverse_name(ip), RecordType::PTR)).await?;
        let names: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(name) => Some(name.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return Err(Failure::NotFound);
        }
        Ok(names)
    }

    /// The TXT strings at `name`, each record's strings joined.
    pub async fn txt(&self, name: &str) -> std::result::Result<Vec<String>, Failure> {
        let lookup = self.ask(self.resolver.txt_lookup(fqdn(name))).await?;
        Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => {
                    Some(txt.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// The settings this resolver was made with (for libraries that make their own).
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }
}

/// The labels of `ip` reversed, as DNS writes addresses: `d.c.b.a` for
/// IPv4, the 32 nibbles for IPv6 (PTR names, DNS block list names).
pub fn reversed_labels(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [format!("{:x}", b & 0xF), format!("{:x}", b >> 4)])
                .collect();
            nibbles.join(".")
        }
    }
}

/// `d.c.b.a.in-addr.arpa.` or the nibbles under `ip6.arpa.`.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{}.in-addr.arpa.", reversed_labels(ip)),
        IpAddr::V6(_) => format!("{}.ip6.arpa.", reversed_labels(ip)),
    }
}

/// Builds a resolver configuration for `settings` (the same servers and
/// options as [`Dns`] uses), for libraries that make their own resolver:
/// the configured servers, or the system's (with the node's options, not
/// the system's tries and time-outs).
pub fn resolver_config(
    settings: &DnsSettings,
) -> std::result::Result<(ResolverConfig, ResolverOpts), NetError> {
    let (config, mut options) = if settings.nameservers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()?
    } else {
        let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
        for server in &settings.nameservers {
            config.add_name_server(name_server(*server));
        }
        (config, ResolverOpts::default())
    };
    tune(&mut options, settings);
    Ok((config, options))
}

/// The options every resolver of the node uses: the configured time-out,
/// one try (no retries after it: hickory's default of two more tries, each
/// with UDP's own resends, asked a dead server 9 times a name and took 3
/// time-outs), and names always asked as written.
fn tune(options: &mut ResolverOpts, settings: &DnsSettings) {
    if !settings.timeout.is_zero() {
        options.timeout = settings.timeout;
    }
    options.attempts = 0;
    options.ndots = 0;
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// Names are asked for as written, never with a search domain.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn failure(error: NetError) -> Failure {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(_)) => Failure::NotFound,
        other => Failure::Temporary(other.to_string()),
    }
}
