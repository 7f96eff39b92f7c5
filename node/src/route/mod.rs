//! Where a served domain's mail goes: `mx` (the domain's real MX, skipping
//! the magic names), `smtp://host:port` (a fixed next hop) or
//! `maildir:/path` (local files).

pub mod hop_faults;
pub mod maildir;
pub mod mx;
pub mod outbound;
pub mod pool;
pub mod sizes;
pub mod smtp;
pub mod tls;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// What became of one recipient at one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken by the next hop (or written to the maildir); what it said.
    Delivered(String),
    /// Try again later; why.
    Transient(String),
    /// Never: the recipient fails; why.
    Permanent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Mx,
    Smtp { host: String, port: u16 },
    Maildir(PathBuf),
}

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Route, String> {
        if s == "mx" {
            return Ok(Route::Mx);
        }
        if let Some(path) = s.strip_prefix("maildir:") {
            if path.is_empty() {
                return Err("maildir: needs a path, as in \"maildir:/var/mail/example\"".into());
            }
            return Ok(Route::Maildir(PathBuf::from(path)));
        }
        if let Some(hostport) = s.strip_prefix("smtp://") {
            let hostport = hostport.trim_end_matches('/');
            let (host, port) = match hostport.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                    let port = port.parse().map_err(|_| format!("bad port in {s:?}"))?;
                    (host, port)
                }
                _ => (hostport, 25),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("no host in {s:?}"));
            }
            return Ok(Route::Smtp { host: host.to_string(), port });
        }
        Err(format!("unknown route {s:?}: use \"mx\", \"smtp://host:port\" or \"maildir:/path\""))
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Mx => f.write_str("mx"),
            Route::Smtp { host, port } => write!(f, "smtp://{host}:{port}"),
            Route::Maildir(path) => write!(f, "maildir:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_from_their_config_form() {
        assert_eq!("mx".parse(), Ok(Route::Mx));
        assert_eq!("maildir:/var/mail".parse(), Ok(Route::Maildir("/var/mail".into())));
        assert_eq!(
            "smtp://mail.example.org:2525".parse(),
            Ok(Route::Smtp { host: "mail.example.org".into(), port: 2525 })
        );
        assert_eq!("smtp://[::1]:25".parse(), Ok(Route::Smtp { host: "::1".into(), port: 25 }));
        assert_eq!(
            "smtp://mail.example.org".parse(),
            Ok(Route::Smtp { host: "mail.example.org".into(), port: 25 })
        );
        assert!("maildir:".parse::<Route>().is_err());
        assert!("lmtp:x".parse::<Route>().is_err());
    }
}
