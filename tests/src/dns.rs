//! An authoritative DNS server for tests: hickory-server with in-memory
//! zones, on UDP and TCP on a loopback port, in a thread of its own —
//! optionally inside a network namespace (the thread enters it before it
//! binds, so that the namespace's resolver configuration can point at it).

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{MX, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use tokio::sync::oneshot;

/// One record's data.
#[derive(Debug, Clone)]
pub enum Rec {
    Mx(u16, String),
    A(Ipv4Addr),
    Txt(String),
    Ptr(String),
}

/// A zone to serve: its origin and records, built up by name.
#[derive(Debug, Clone)]
pub struct Zone {
    origin: String,
    records: Vec<(String, Rec)>,
}

impl Zone {
    pub fn new(origin: &str) -> Zone {
        Zone { origin: origin.to_string(), records: vec![] }
    }

    /// An MX record of the origin.
    pub fn mx(mut self, preference: u16, host: &str) -> Zone {
        self.records.push((self.origin.clone(), Rec::Mx(preference, host.to_string())));
        self
    }

    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Zone {
        self.records.push((name.to_string(), Rec::A(ip)));
        self
    }

    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        self.records.push((name.to_string(), Rec::Txt(text.to_string())));
        self
    }

    /// A PTR record for `ip` (the zone must be a reverse zone, e.g. `127.in-addr.arpa`).
    pub fn ptr(mut self, ip: Ipv4Addr, name: &str) -> Zone {
        let o = ip.octets();
        let reverse = format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]);
        self.records.push((reverse, Rec::Ptr(name.to_string())));
        self
    }

    /// `domain` whose one MX, `mail.<domain>`, is at `ip`.
    pub fn with_mx_at(domain: &str, ip: Ipv4Addr) -> Zone {
        let host = format!("mail.{domain}");
        Zone::new(domain).mx(10, &host).a(&host, ip)
    }
}

/// A running server; stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDns {
    /// Serves `zones` on a loopback port of the system's choosing; an SOA is added to each.
    pub fn start(zones: &[Zone]) -> TestDns {
        TestDns::serve(zones, None, "127.0.0.1:0".parse().unwrap())
    }

    /// Serves `zones` on `addr` inside the network namespace `netns`
    /// (`/run/netns/NAME`, as `ip netns add` makes it).
    pub fn start_in(zones: &[Zone], netns: &std::path::Path, addr: SocketAddr) -> TestDns {
        TestDns::serve(zones, Some(netns.to_path_buf()), addr)
    }

    fn serve(zones: &[Zone], netns: Option<std::path::PathBuf>, addr: SocketAddr) -> TestDns {
        let mut catalog = Catalog::new();
        for Zone { origin, records } in zones {
            let origin = Name::from_str(&format!("{origin}.")).unwrap();
            let mut zone: InMemoryZoneHandler =
                InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            let soa = SOA::new(
                Name::from_str("ns.test.").unwrap(),
                Name::from_str("hostmaster.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                60,
            );
            zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
            for (name, rec) in records {
                let name = Name::from_str(&format!("{name}.")).unwrap();
                let data = match rec {
                    Rec::Mx(pref, host) => {
                        let host = if host.is_empty() {
                            Name::root()
                        } else {
                            Name::from_str(&format!("{host}.")).unwrap()
                        };
                        RData::MX(MX::new(*pref, host))
                    }
                    Rec::A(ip) => RData::A((*ip).into()),
                    // A TXT string holds 255 octets: longer text (a DKIM key) is cut into several.
                    Rec::Txt(text) => RData::TXT(TXT::new(
                        text.as_bytes()
                            .chunks(255)
                            .map(|c| String::from_utf8_lossy(c).into_owned())
                            .collect(),
                    )),
                    Rec::Ptr(host) => RData::PTR(PTR(Name::from_str(&format!("{host}.")).unwrap())),
                };
                zone.upsert_mut(Record::from_rdata(name, 60, data), 1);
            }
            catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        }
        let (stop, stopped) = oneshot::channel();
        let (bound_tx, bound) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            if let Some(netns) = &netns {
                enter_netns(netns);
            }
            let udp = std::net::UdpSocket::bind(addr).unwrap();
            let addr = udp.local_addr().unwrap();
            let tcp = std::net::TcpListener::bind(addr).unwrap();
            udp.set_nonblocking(true).unwrap();
            tcp.set_nonblocking(true).unwrap();
            bound_tx.send(addr).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut server = Server::new(catalog);
                server.register_socket(tokio::net::UdpSocket::from_std(udp).unwrap());
                server.register_listener(
                    tokio::net::TcpListener::from_std(tcp).unwrap(),
                    std::time::Duration::from_secs(5),
                    65535,
                );
                let _ = stopped.await;
                let _ = server.shutdown_gracefully().await;
            });
        });
        let addr = bound.recv().expect("the DNS server bound its sockets");
        TestDns { addr, stop: Some(stop), thread: Some(thread) }
    }
}

/// Moves the calling thread into a network namespace (sockets it opens from
/// then on live there).
fn enter_netns(netns: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
    // SAFETY: setns on a namespace file descriptor we own; it affects only this thread.
    let done = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "setns {}: {}", netns.display(), std::io::Error::last_os_error());
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
