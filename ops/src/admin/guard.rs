//! What every admin request passes before it is served, so that a web page
//! in the operator's browser cannot use the API (DNS rebinding, cross-site
//! requests) and a token cannot be guessed by timing:
//! - the `Host` must be an address the API listens on, `localhost`, or a
//!   name in `admin.hostnames` (a rebinding name is refused);
//! - a request that changes state (anything but GET and HEAD) with an
//!   `Origin` must come from the API's own origin;
//! - with `admin.token`, every request but the status page itself (static,
//!   it sends the token from its address's `#token=`) must bear it,
//!   compared in constant time.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::Admin;

/// Who may be served, beyond the token.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The address the API listens on.
    pub listen: SocketAddr,
    /// Host names the API is reached by, besides `localhost` and addresses.
    pub hostnames: Vec<String>,
}

impl Allowed {
    /// Whether `host` (a `Host` header: `name`, `name:port`, `[v6]:port`) names this API.
    pub fn host(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self.listen.ip().is_unspecified() || ip == self.listen.ip();
        }
        name == "localhost" || self.hostnames.iter().any(|h| h.eq_ignore_ascii_case(&name))
    }

    /// Whether `origin` (`scheme://host[:port]`) is the API's own.
    pub fn origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|h| self.host(h))
    }
}

pub async fn guard(State(admin): State<Admin>, request: Request, next: Next) -> Result<Response, StatusCode> {
    verdict(&admin, &request)?;
    Ok(next.run(request).await)
}

fn verdict(admin: &Admin, request: &Request) -> Result<(), StatusCode> {
    let header_of = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    if !header_of(header::HOST).is_some_and(|host| admin.allowed.host(host)) {
        return Err(StatusCode::MISDIRECTED_REQUEST);
    }
    let changes_state = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes_state && header_of(header::ORIGIN).is_some_and(|origin| !admin.allowed.origin(origin)) {
        return Err(StatusCode::FORBIDDEN);
    }
    let the_page = request.uri().path() == "/" && request.method() == Method::GET;
    if let (Some(token), false) = (&admin.token, the_page) {
        let given = header_of(header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            return Err(StatusCode::UNAUTHORIZED);
        }
    }
    Ok(())
}

/// Equal, in a time that does not tell how much of `given` was right.
fn same(given: &[u8], token: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(given, token).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins_of_the_api_itself_only() {
        let local =
            Allowed { listen: "127.0.0.1:8025".parse().unwrap(), hostnames: vec!["mx1.mesh.example".into()] };
        for good in ["127.0.0.1:8025", "127.0.0.1", "localhost:8025", "LOCALHOST", "mx1.mesh.example:8025"] {
            assert!(local.host(good), "{good}");
        }
        for bad in
            ["evil.example", "evil.example:8025", "127.0.0.2:8025", "[::1]:8025", "localhost.evil.example"]
        {
            assert!(!local.host(bad), "{bad}");
        }
        assert!(local.origin("http://127.0.0.1:8025") && !local.origin("http://evil.example"));
        assert!(!local.origin("null"));
        let any = Allowed { listen: "0.0.0.0:8025".parse().unwrap(), hostnames: vec![] };
        assert!(
            any.host("192.0.2.7:8025") && any.host("[2001:db8::1]:8025") && !any.host("rebind.evil.example")
        );
        assert!(same(b"secret", b"secret") && !same(b"secreT", b"secret") && !same(b"", b"secret"));
    }
}
