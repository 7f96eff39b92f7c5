//! Ports for the servers tests start, claimed so that no two tests — in
//! this process or in another test binary running beside it — ever get the
//! same one, and no other socket takes it in between.
//!
//! Handing a port that was free a moment ago to another process races with
//! everything else that binds (seen: "Address already in use" for a node's
//! admin port). Servers that can report what they bound use port 0; the
//! others (smtp-sink, Postfix, a node restarted on its old ports) get a
//! claimed port: one below the kernel's ephemeral range (so no port-0 bind
//! or outgoing connection is ever given it), recorded in a file created
//! exclusively under the system's temporary directory, holding the
//! claimant's PID. A claim lasts as long as its process; a later run
//! takes over the claims of processes that are gone.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range are used for claims.
const SPAN: u32 = 12_000;

/// A port on 127.0.0.1, TCP and UDP, for this process alone.
pub fn claim_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, span) = claim_range();
    let dir = std::env::temp_dir().join("magicmx-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    // Start each process somewhere else, so that processes rarely contend.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = (low + offset) as u16;
        if claim(&dir.join(port.to_string())) && bindable(port) {
            return port;
        }
    }
    panic!("no port left to claim in {low}..{} ({})", low + span, dir.display());
}

/// The ports below the kernel's ephemeral range.
fn claim_range() -> (u32, u32) {
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    assert!(
        ephemeral_low > SPAN + 1024,
        "the ephemeral port range starts at {ephemeral_low}: too low to keep test ports out of it"
    );
    (ephemeral_low - SPAN, SPAN)
}

/// Takes the claim file, or one whose process is gone.
fn claim(path: &Path) -> bool {
    for _ in 0..2 {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(mut file) => {
                let _ = write!(file, "{}", std::process::id());
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !is_stale(path) {
                    return false;
                }
                let _ = std::fs::remove_file(path);
            }
            Err(e) => panic!("claiming {}: {e}", path.display()),
        }
    }
    false
}

fn is_stale(path: &Path) -> bool {
    let owner = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u32>().ok());
    match owner {
        Some(pid) => !PathBuf::from(format!("/proc/{pid}")).exists(),
        // Being written this very moment, or garbage: leave it.
        None => false,
    }
}

/// Nothing outside the tests holds it.
fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}
