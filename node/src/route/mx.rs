//! The next hops for a domain by its MX records (RFC 5321 §5.1): most
//! preferred first, every host matching the mesh's magic MX names skipped
//! (those are this mesh, never the destination), the domain itself when it
//! has no MX (the implicit MX), and nothing at all for a null MX (RFC 7505).

use crate::dns::{Dns, Failure};

/// Where a domain's mail may go, or why it may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hops {
    /// Host names to try, in order.
    Hosts(Vec<String>),
    /// The domain says it takes no mail (null MX), or does not exist: final.
    Refuses(String),
    /// DNS trouble, or only magic names left: try later.
    Later(String),
}

/// True when `host` is one of the mesh's own names: an exact name, or a
/// `*.suffix` pattern matching any name below the suffix.
pub fn is_magic(host: &str, patterns: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
            None => host == pattern,
        }
    })
}

pub async fn hops(dns: &Dns, domain: &str, magic: &[String]) -> Hops {
    match dns.mx(domain).await {
        Ok(records) => {
            if records.len() == 1 && records[0].exchange.is_empty() {
                return Hops::Refuses(format!("{domain} publishes a null MX: it accepts no mail"));
            }
            let hosts: Vec<String> = records
                .into_iter()
                .map(|mx| mx.exchange)
                .filter(|host| !host.is_empty() && !is_magic(host, magic))
                .collect();
            if hosts.is_empty() {
                return Hops::Later(format!("every MX of {domain} is a magic MX of this mesh"));
            }
            Hops::Hosts(hosts)
        }
        Err(Failure::NotFound) => match dns.addresses(domain).await {
            Ok(_) => Hops::Hosts(vec![domain.to_string()]),
            Err(Failure::NotFound) => Hops::Refuses(format!("{domain} has no MX and no address records")),
            Err(Failure::Temporary(e)) => Hops::Later(format!("DNS: {e}")),
        },
        Err(Failure::Temporary(e)) => Hops::Later(format!("DNS: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::is_magic;

    #[test]
    fn magic_names_match_exactly_or_below_a_wildcard() {
        let patterns = vec!["mx.mesh.example".to_string(), "*.mesh.test".to_string()];
        assert!(is_magic("mx.mesh.example", &patterns));
        assert!(is_magic("MX.Mesh.Example.", &patterns));
        assert!(is_magic("a.b.mesh.test", &patterns));
        assert!(!is_magic("mesh.test", &patterns));
        assert!(!is_magic("mx2.mesh.example", &patterns));
        assert!(!is_magic("evilmesh.test", &patterns));
    }
}
