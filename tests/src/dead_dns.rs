//! A DNS server that never answers, as a resolver that has died or is cut
//! off looks to the node: UDP and TCP on one loopback port of the system's
//! choosing, every query read (and counted by name) and none answered.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct DeadDns {
    pub addr: SocketAddr,
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

impl DeadDns {
    pub fn start() -> DeadDns {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(HashMap::new()));
        let counts = asked.clone();
        // Threads of a test process: they end with it.
        std::thread::spawn(move || {
            let mut packet = [0u8; 4096];
            while let Ok((n, _)) = udp.recv_from(&mut packet) {
                if let Some(name) = query_name(&packet[..n]) {
                    *counts.lock().unwrap().entry(name).or_insert(0) += 1;
                }
            }
        });
        std::thread::spawn(move || {
            // Held open, never read from or answered.
            let mut held: Vec<TcpStream> = vec![];
            for stream in tcp.incoming().flatten() {
                held.push(stream);
            }
        });
        DeadDns { addr, asked }
    }

    /// How many UDP queries each name got so far.
    pub fn asked(&self) -> HashMap<String, usize> {
        self.asked.lock().unwrap().clone()
    }
}

/// A UDP socket on port 0 and a TCP listener on the same port (tried again
/// in the rare case that TCP's side of the port is taken).
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(None).unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// The question's name of a DNS query (RFC 1035 §4.1.2), lower-case,
/// without the trailing dot.
fn query_name(packet: &[u8]) -> Option<String> {
    let mut labels = vec![];
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        if len == 0 {
            return Some(labels.join(".").to_ascii_lowercase());
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + len;
    }
}
