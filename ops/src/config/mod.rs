//! Reading the configuration: the TOML file (or the embedded default), its
//! errors reported with file, line and key, and the node settings it yields.

mod schema;
mod values;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use magicmx_gossip::MeshSettings;
use magicmx_node::settings::{
    CheckMode as NodeCheckMode, CheckSettings, DeliverySettings, DnsSettings, DomainSettings, NodeSettings,
    OutboundTls, QueueSettings, SmtpSettings, ThrottleSettings, TlsFiles,
};
use magicmx_proto::smtp::{DataBudget, Limits, SessionConfig, ViolationAction};

pub use schema::Config;
use schema::{CheckMode, OnViolation, OutboundTls as TlsMode};

/// The configuration `magicmx run` uses without `--config`: one node on
/// loopback that delivers `example.test` into a maildir under ./magicmx-data.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// The longest DNS budget of one message (and the longest look-up).
const MAX_DNS_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// A mistake in a configuration file, located as precisely as it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// `section.key`, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse("(embedded default)", EMBEDDED_DEFAULT)
            .expect("the embedded default configuration is valid")
    }

    /// Parses and checks configuration text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            let message = e.message().trim().replace('\n', " ");
            match line.and_then(|line| unknown_table(text, line, &message)) {
                Some(message) => ConfigError { file: file.to_string(), line, key: None, message },
                None => {
                    let key = line.and_then(|line| key_at(text, line));
                    ConfigError { file: file.to_string(), line, key, message }
                }
            }
        })?;
        config.check().map_err(|(key, message)| ConfigError {
            file: file.to_string(),
            line: locate_key(text, &key),
            key: Some(key),
            message,
        })?;
        Ok(config)
    }

    /// Rules that span keys; returns the key at fault and why.
    fn check(&self) -> Result<(), (String, String)> {
        if self.smtp.listen.is_empty() {
            return Err(("smtp.listen".into(), "at least one address is needed".into()));
        }
        if self.smtp.tls_cert.is_some() != self.smtp.tls_key.is_some() {
            let key = if self.smtp.tls_cert.is_some() { "smtp.tls_key" } else { "smtp.tls_cert" };
            return Err((key.into(), "tls_cert and tls_key go together".into()));
        }
        if self.domains.is_empty() {
            return Err(("domain".into(), "no [[domain]] is served; add at least one".into()));
        }
        let mut seen = HashSet::new();
        for domain in &self.domains {
            if !seen.insert(&domain.name) {
                return Err(("domain.name".into(), format!("{} is listed twice", domain.name)));
            }
        }
        if self.delivery.max_per_host == 0 || self.delivery.max_concurrent == 0 {
            return Err(("delivery.max_per_host".into(), "delivery concurrency must be at least 1".into()));
        }
        if self.delivery.retry_first.is_zero() || self.delivery.retry_max < self.delivery.retry_first {
            return Err(("delivery.retry_max".into(), "need 0 < retry_first <= retry_max".into()));
        }
        for name in &self.mesh.magic_mx_names {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if magicmx_proto::Domain::parse(bare).is_err() {
                return Err((
                    "mesh.magic_mx_names".into(),
                    format!("{name:?} is not a host name or *.suffix"),
                ));
            }
        }
        let mesh = &self.mesh;
        match (&mesh.ca_cert, &mesh.cert, &mesh.key) {
            (None, None, None) | (Some(_), Some(_), Some(_)) => {}
            (ca, cert, _) => {
                let missing = if ca.is_none() {
                    "mesh.ca_cert"
                } else if cert.is_none() {
                    "mesh.cert"
                } else {
                    "mesh.key"
                };
                return Err((missing.into(), "ca_cert, cert and key go together (or none: no mesh)".into()));
            }
        }
        for fp in &mesh.revoked {
            if magicmx_gossip::tls::parse_revoked(fp).is_none() {
                return Err((
                    "mesh.revoked".into(),
                    format!("{fp:?} is not a SHA-256 fingerprint (64 hex digits)"),
                ));
            }
        }
        if mesh.gossip_interval.is_zero() {
            return Err(("mesh.gossip_interval".into(), "must be more than zero".into()));
        }
        if !(0.0..=1.0).contains(&self.throttle.peer_share) || self.throttle.peer_share.is_nan() {
            return Err(("throttle.peer_share".into(), "a fraction of the limit, from 0 to 1".into()));
        }
        if self.throttle.penalty.is_zero() || self.throttle.penalty_max < self.throttle.penalty {
            return Err(("throttle.penalty_max".into(), "need 0 < penalty <= penalty_max".into()));
        }
        if self.throttle.hold > std::time::Duration::from_secs(30) {
            return Err((
                "throttle.hold".into(),
                "at most 30s: a transaction waiting longer is taken for abandoned by the other nodes".into(),
            ));
        }
        if let Some(bad) =
            self.checks.dnsbl.iter().find(|l| magicmx_node::checks::dnsbl::parse_list(l).is_none())
        {
            return Err((
                "checks.dnsbl".into(),
                format!("{bad:?}: write \"list.example\", \"list.example*2\" or \"list.example=127.0.0.[2..11]*2\""),
            ));
        }
        let checks = &self.checks;
        let modes = [
            ("checks.fcrdns", checks.fcrdns, "off, header or reject", checks.fcrdns != CheckMode::Strict),
            ("checks.spf", checks.spf, "off, header or strict", checks.spf != CheckMode::Reject),
            (
                "checks.dkim",
                checks.dkim,
                "off or header",
                matches!(checks.dkim, CheckMode::Off | CheckMode::Header),
            ),
            ("checks.dmarc", checks.dmarc, "off, header or reject", checks.dmarc != CheckMode::Strict),
        ];
        for (key, _, allowed, ok) in modes {
            if !ok {
                return Err((key.into(), format!("must be {allowed}")));
            }
        }
        if checks.dmarc != CheckMode::Off && checks.dkim == CheckMode::Off {
            return Err((
                "checks.dmarc".into(),
                "needs checks.dkim = \"header\" (DMARC weighs the DKIM results)".into(),
            ));
        }
        if self.throttle.ipv4_prefix > 32 {
            return Err(("throttle.ipv4_prefix".into(), "must be 0 to 32".into()));
        }
        if self.throttle.ipv6_prefix > 64 {
            // A /64 is one subnet, the least any site is given: a longer
            // prefix would let one host rotate its addresses across blocks.
            // The tally and the wire key IPv6 blocks by their top 64 bits.
            return Err((
                "throttle.ipv6_prefix".into(),
                "must be 0 to 64 (a /64 is one site's subnet)".into(),
            ));
        }
        if self.smtp.max_data_memory < 2 * magicmx_proto::smtp::CHUNK {
            return Err((
                "smtp.max_data_memory".into(),
                format!(
                    "must be at least {} (the buffers of one session in DATA)",
                    2 * magicmx_proto::smtp::CHUNK
                ),
            ));
        }
        let queue = &self.queue;
        if queue.max_in_flight_per_block < self.smtp.max_message_size as u64 {
            return Err((
                "queue.max_in_flight_per_block".into(),
                format!(
                    "must be at least smtp.max_message_size ({}): a message of the largest size must fit",
                    self.smtp.max_message_size
                ),
            ));
        }
        if queue.max_in_flight < queue.max_in_flight_per_block {
            return Err((
                "queue.max_in_flight".into(),
                format!("must be at least queue.max_in_flight_per_block ({})", queue.max_in_flight_per_block),
            ));
        }
        if self.smtp.max_connections == 0 || self.smtp.max_connections_per_ip == 0 {
            return Err(("smtp.max_connections".into(), "connection caps must be at least 1".into()));
        }
        if checks.dns_budget.is_zero() || checks.dns_budget > MAX_DNS_BUDGET {
            return Err((
                "checks.dns_budget".into(),
                "more than zero and at most 60s: the end of DATA waits for it, and so does the client".into(),
            ));
        }
        if checks.dns_timeout > MAX_DNS_BUDGET {
            return Err(("checks.dns_timeout".into(), "at most 60s".into()));
        }
        let admin_is_local = self.admin.listen.ip().is_loopback();
        if !admin_is_local && self.admin.token.is_none() {
            return Err(("admin.token".into(), "an admin API beyond loopback needs a token".into()));
        }
        Ok(())
    }

    /// The node's settings. Relative paths stay relative to the working directory.
    pub fn node_settings(&self) -> NodeSettings {
        let smtp = &self.smtp;
        let limits = Limits {
            max_message_size: smtp.max_message_size,
            max_recipients: smtp.max_recipients,
            command_timeout: smtp.command_timeout,
            data_timeout: smtp.data_timeout,
            junk_commands: smtp.junk_command_limit,
            tls_handshake_timeout: smtp.tls_handshake_timeout,
            session_duration: smtp.max_session_duration,
            ..Limits::default()
        };
        let session = SessionConfig {
            hostname: smtp.hostname.clone(),
            limits,
            starttls: smtp.tls_cert.is_some(),
            on_violation: match smtp.on_protocol_violation {
                OnViolation::Reject => ViolationAction::Reject,
                OnViolation::Ignore => ViolationAction::Ignore,
            },
            data_budget: DataBudget::new(smtp.max_data_memory),
        };
        let tls = match (&smtp.tls_cert, &smtp.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        NodeSettings {
            name: self.node.name.clone(),
            data_dir: self.node.data_dir.clone(),
            smtp: SmtpSettings {
                listen: smtp.listen.clone(),
                session,
                max_connections: smtp.max_connections,
                max_connections_per_ip: smtp.max_connections_per_ip,
                greet_pause: smtp.greet_pause,
                tls,
            },
            domains: self
                .domains
                .iter()
                .map(|d| DomainSettings {
                    name: d.name.clone(),
                    route: d.route.clone(),
                    tls: match d.tls {
                        TlsMode::Opportunistic => OutboundTls::Opportunistic,
                        TlsMode::Require => OutboundTls::Require,
                    },
                    forwarding: magicmx_node::route::smtp::ClientForwarding {
                        xclient: d.xclient,
                        xforward: d.xforward,
                    },
                })
                .collect(),
            delivery: self.delivery_settings(),
            mesh: self.mesh_settings(),
            throttle: self.throttle_settings(),
            queue: QueueSettings {
                min_free: self.queue.min_free,
                max_in_flight: self.queue.max_in_flight,
                max_in_flight_per_block: self.queue.max_in_flight_per_block,
            },
            trusted: self.trust.cidrs.clone(),
            trap_listen: self.trap.listen.clone(),
            max_tracked: self.mesh.max_tracked,
            checks: self.check_settings(),
            dns: DnsSettings {
                nameservers: self.checks.nameservers.clone(),
                timeout: self.checks.dns_timeout,
                budget: self.checks.dns_budget,
            },
            ipv4_prefix: self.throttle.ipv4_prefix,
            ipv6_prefix: self.throttle.ipv6_prefix,
        }
    }

    /// The mesh, when its certificates are configured. Seeds are resolved
    /// now; one that does not resolve is skipped with a warning.
    fn mesh_settings(&self) -> Option<MeshSettings> {
        let m = &self.mesh;
        let (Some(ca), Some(cert), Some(key)) = (&m.ca_cert, &m.cert, &m.key) else { return None };
        let mut settings =
            MeshSettings::new(&self.node.name, m.listen, ca.clone(), cert.clone(), key.clone());
        settings.advertise = m.advertise;
        settings.interval = m.gossip_interval;
        settings.max_tracked = m.max_tracked;
        settings.forget_after = m.forget_after;
        let t = &self.throttle;
        // Strikes past the one whose doubling reaches penalty_max change nothing.
        let doublings = (t.penalty_max.as_secs_f64() / t.penalty.as_secs_f64()).log2().ceil().max(0.0) as u8;
        settings.peer_bounds = magicmx_gossip::penalties::PeerBounds {
            penalty_max_ms: t.penalty_max.as_millis() as u64,
            max_strikes: doublings.saturating_add(1).min(17),
            per_minute: m.peer_penalties_per_minute,
        };
        settings.revoked = m.revoked.iter().filter_map(|fp| magicmx_gossip::tls::parse_revoked(fp)).collect();
        // Revocations the CA signed, as they reached this node (`mesh revoke`).
        settings.revocations_file = Some(self.data_dir().join("mesh-revocations"));
        for seed in &m.seeds {
            match std::net::ToSocketAddrs::to_socket_addrs(seed.as_str()) {
                Ok(addrs) => settings.seeds.extend(addrs),
                Err(error) => tracing::warn!(%seed, %error, "mesh seed does not resolve; skipped"),
            }
        }
        Some(settings)
    }

    fn check_settings(&self) -> CheckSettings {
        let c = &self.checks;
        let mode = |m: CheckMode| match m {
            CheckMode::Off => NodeCheckMode::Off,
            CheckMode::Header => NodeCheckMode::Header,
            CheckMode::Reject | CheckMode::Strict => NodeCheckMode::Reject,
        };
        CheckSettings {
            fcrdns: mode(c.fcrdns),
            spf: mode(c.spf),
            spf_softfail_rejects: c.spf_softfail == CheckMode::Reject,
            dnsbl: c.dnsbl.iter().filter_map(|l| magicmx_node::checks::dnsbl::parse_list(l)).collect(),
            dnsbl_threshold: c.dnsbl_threshold,
            verify_recipients: c.verify_recipients,
            sender_domain: c.sender_domain,
            trusted_hostnames: self.trust.hostnames.clone(),
            dkim: mode(c.dkim),
            dmarc: mode(c.dmarc),
            dkim_max_size: c.dkim_max_size,
        }
    }

    fn throttle_settings(&self) -> ThrottleSettings {
        let t = &self.throttle;
        ThrottleSettings {
            recipients_per_hour: f64::from(t.recipients_per_hour),
            connections_per_minute: f64::from(t.connections_per_minute),
            penalty: t.penalty,
            penalty_max: t.penalty_max,
            hold: t.hold,
            polite_refusals: t.polite_refusals,
            peer_share: t.peer_share,
            comeback_recipients: f64::from(t.comeback_recipients),
            trap_penalty: t.trap_penalty,
        }
    }

    fn delivery_settings(&self) -> DeliverySettings {
        let d = &self.delivery;
        DeliverySettings {
            helo_name: d.helo_name.clone().unwrap_or_else(|| self.smtp.hostname.clone()),
            mx_port: d.port,
            retry_first: d.retry_first,
            retry_max: d.retry_max,
            expire: d.expire,
            connect_timeout: d.connect_timeout,
            command_timeout: d.command_timeout,
            data_timeout: d.data_timeout,
            max_per_host: d.max_per_host,
            max_concurrent: d.max_concurrent,
            idle_connection: d.idle_connection,
            ca_file: d.ca_file.clone(),
            magic_mx_names: self.mesh.magic_mx_names.clone(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.node.data_dir.clone()
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The header on a line, `[name]` or `[[name]]`, and the name.
fn table_header(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    let brackets = if line.starts_with("[[") { 2 } else { 1 };
    let end = line.find(&"]]"[..brackets])? + brackets;
    let header = line.get(..end).filter(|h| h.starts_with('['))?;
    Some((header, header[brackets..end - brackets].trim()))
}

/// "unknown table [name], expected one of …" when the mistake on `line` is
/// a table header the schema does not know: toml reports it as an unknown
/// field of the table above, which is not where the mistake is.
fn unknown_table(text: &str, line: usize, message: &str) -> Option<String> {
    let (header, name) = table_header(text.lines().nth(line - 1)?)?;
    let last = name.rsplit('.').next()?.trim().trim_matches('"');
    let rest = message.strip_prefix(&format!("unknown field `{last}`"))?;
    Some(format!("unknown table {header}{rest}"))
}

/// `section.key` for the key set on a line (the section from the nearest
/// `[header]` above it), or the table a header line opens.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line - 1)?.trim();
    if let Some((_, name)) = table_header(this) {
        return Some(name.to_string());
    }
    let key = this.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string());
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match (section, key) {
        (Some(section), Some(key)) => Some(format!("{section}.{key}")),
        (None, Some(key)) => Some(key),
        _ => None,
    }
}

/// The line where `section.key` is set, if it is.
fn locate_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.').unwrap_or((dotted, ""));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            current = trimmed.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if key.is_empty() && current == section {
                return Some(i + 1);
            }
        } else if current == section && !key.is_empty() {
            if let Some((k, _)) = trimmed.split_once('=') {
                if k.trim() == key {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[domain]]\nname = \"example.org\"\n";

    #[test]
    fn the_embedded_default_is_valid_and_local() {
        let config = Config::embedded();
        let settings = config.node_settings();
        assert_eq!(settings.smtp.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(settings.data_dir, PathBuf::from("./magicmx-data"));
        assert_eq!(settings.domains[0].name.as_str(), "example.test");
        assert_eq!(settings.queue, magicmx_node::settings::QueueSettings::default(), "the disk's defaults");
    }

    #[test]
    fn the_documented_example_config_is_valid() {
        let text = include_str!("../../deploy/magicmx.toml");
        let config = Config::parse("magicmx.toml", text).unwrap();
        let defaults = Config::parse("t.toml", MINIMAL).unwrap();
        // The example states the defaults: it must agree with them.
        assert_eq!(format!("{:?}", config.throttle), format!("{:?}", defaults.throttle));
        assert_eq!(format!("{:?}", config.checks), format!("{:?}", defaults.checks));
        assert_eq!(format!("{:?}", config.admin), format!("{:?}", defaults.admin));
        assert_eq!(format!("{:?}", config.delivery), format!("{:?}", defaults.delivery));
        assert_eq!(format!("{:?}", config.queue), format!("{:?}", defaults.queue));
        assert_eq!(config.smtp.max_connections_per_ip, defaults.smtp.max_connections_per_ip);
        assert_eq!(config.smtp.greet_pause, defaults.smtp.greet_pause);
        assert_eq!(config.smtp.junk_command_limit, defaults.smtp.junk_command_limit);
        assert_eq!(config.smtp.tls_handshake_timeout, defaults.smtp.tls_handshake_timeout);
        assert_eq!(config.smtp.max_session_duration, defaults.smtp.max_session_duration);
    }

    #[test]
    fn every_key_has_a_default() {
        let config = Config::parse("t.toml", MINIMAL).unwrap();
        assert_eq!(config.smtp.max_recipients, 100);
        assert_eq!(config.throttle.recipients_per_hour, 30);
        assert_eq!(config.mesh.gossip_interval, std::time::Duration::from_millis(500));
        assert_eq!(config.domains[0].route, magicmx_node::route::Route::Mx);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = format!("{MINIMAL}\n[smtp]\nhostname = \"mx\"\nmax_mesage_size = 10\n");
        let e = Config::parse("/etc/magicmx.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key.as_deref(), Some("smtp.max_mesage_size"));
        assert!(e.message.contains("unknown field `max_mesage_size`"), "{}", e.message);
        assert!(e.to_string().starts_with("/etc/magicmx.toml:6: smtp.max_mesage_size: "));
    }

    #[test]
    fn unknown_section_is_an_error() {
        let e = Config::parse("c.toml", &format!("{MINIMAL}[smpt]\nlisten = []\n")).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("smpt"), "{}", e.message);
    }

    #[test]
    fn an_unknown_table_is_named_itself_on_its_line() {
        let text = format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:8025\"\n\n[bulk]\nrate = 1\n");
        let e = Config::parse("/etc/magicmx.toml", &text).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(6), None), "{e}");
        assert!(e.message.starts_with("unknown table [bulk]"), "{e}");
        assert!(e.to_string().starts_with("/etc/magicmx.toml:6: unknown table [bulk]"), "{e}");
        assert!(!e.to_string().contains("admin: unknown field"), "another table is not to blame: {e}");
        // An unknown table inside a known one, and one of an array.
        let nested = format!("{MINIMAL}[smtp]\nhostname = \"mx\"\n[smtp.tls]\ncert = \"x\"\n");
        let e = Config::parse("c.toml", &nested).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.starts_with("unknown table [smtp.tls]"), "{e}");
        let array = format!("{MINIMAL}[[relay]]\nname = \"x\"\n");
        let e = Config::parse("c.toml", &array).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.starts_with("unknown table [[relay]]"), "{e}");
        // An unknown key is still blamed on its table.
        let key = format!("{MINIMAL}[admin]\nbulk = 1\n");
        let e = Config::parse("c.toml", &key).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("admin.bulk")), "{e}");
    }

    #[test]
    fn bad_values_are_reported_on_their_line() {
        let e = Config::parse("c.toml", &format!("{MINIMAL}[throttle]\npenalty = \"soon\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("throttle.penalty")));
        let e = Config::parse("c.toml", &format!("{MINIMAL}route = \"lmtp:x\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(3), Some("domain.route")));
        let e = Config::parse("c.toml", &format!("{MINIMAL}[smtp]\nlisten = [\"nowhere\"]\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("smtp.listen"));
        let e =
            Config::parse("c.toml", &format!("{MINIMAL}[trust]\ncidrs = [\"10.0.0.0/99\"]\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("trust.cidrs"));
    }

    #[test]
    fn rules_across_keys_are_checked() {
        let e = Config::parse("c.toml", "[smtp]\nhostname = \"x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("domain"));
        let e = Config::parse("c.toml", &format!("{MINIMAL}[smtp]\ntls_cert = \"a.pem\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (None, Some("smtp.tls_key")));
        let twice = format!("{MINIMAL}{MINIMAL}");
        assert!(Config::parse("c.toml", &twice).unwrap_err().message.contains("twice"));
        let e =
            Config::parse("c.toml", &format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:8025\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("admin.token"));
        let long = format!("{MINIMAL}[throttle]\nipv6_prefix = 96\n");
        let e = Config::parse("c.toml", &long).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("throttle.ipv6_prefix")));
        for budget in ["0s", "61s"] {
            let text = format!("{MINIMAL}[checks]\ndns_budget = \"{budget}\"\n");
            let e = Config::parse("c.toml", &text).unwrap_err();
            assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("checks.dns_budget")), "{budget}");
        }
        let budget = Config::parse("c.toml", &format!("{MINIMAL}[checks]\ndns_budget = \"2s\"\n")).unwrap();
        assert_eq!(budget.node_settings().dns.budget(), std::time::Duration::from_secs(2));
        let small = format!("{MINIMAL}[smtp]\nmax_data_memory = 1000\n");
        let e = Config::parse("c.toml", &small).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("smtp.max_data_memory")));
    }

    #[test]
    fn the_disk_keys_have_defaults_and_are_checked() {
        let settings = Config::parse("t.toml", MINIMAL).unwrap().node_settings();
        assert_eq!(settings.queue.min_free, 64 << 20);
        assert_eq!(settings.queue.max_in_flight, 1 << 30);
        assert_eq!(settings.queue.max_in_flight_per_block, 100 << 20);
        let per_block = format!("{MINIMAL}[queue]\nmin_free = 0\nmax_in_flight_per_block = 1000000\n");
        let e = Config::parse("c.toml", &per_block).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("queue.max_in_flight_per_block")));
        assert!(e.to_string().starts_with("c.toml:5: queue.max_in_flight_per_block: "), "{e}");
        let total = format!("{MINIMAL}[queue]\nmax_in_flight = 30000000\n");
        let e = Config::parse("c.toml", &total).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("queue.max_in_flight")));
        let typo = format!("{MINIMAL}[queue]\nmin_fre = 1\n");
        let e = Config::parse("c.toml", &typo).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("queue.min_fre")));
        let negative = format!("{MINIMAL}[queue]\nmin_free = -1\n");
        let e = Config::parse("c.toml", &negative).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("queue.min_free")));
        let small = format!("{MINIMAL}[smtp]\nmax_message_size = 1000\n[queue]\nmin_free = 0\nmax_in_flight = 5000\nmax_in_flight_per_block = 1000\n");
        let settings = Config::parse("c.toml", &small).unwrap().node_settings();
        assert_eq!((settings.queue.min_free, settings.queue.max_in_flight), (0, 5000));
    }
}
