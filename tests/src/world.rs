//! A small Internet of the test's own, in a network namespace: every server
//! listens on port 25 at an address of its own (each 127.a.b.0/24 a block
//! of its own), and names are resolved by a test DNS server at 127.0.0.53,
//! which the namespace's `/etc/resolv.conf` points at (`ip netns exec`
//! bind-mounts `/etc/netns/NAME/resolv.conf` there). Real MTAs started in it
//! look MX records up as on the Internet. Needs root and iproute2; the
//! namespace, its resolver file and every process started in it go when
//! the world is dropped.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::dns::{TestDns, Zone};

/// Where the world's DNS server listens (and its resolver asks).
pub const RESOLVER: &str = "127.0.0.53:53";

pub struct World {
    pub name: String,
    /// Files of the world's servers live under here.
    pub dir: PathBuf,
    dns: Option<TestDns>,
}

fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().expect("iproute2's `ip` is needed by this test (see .ci/run)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl World {
    /// A namespace `mmx-TAG` with loopback up, serving `zones`.
    pub fn create(tag: &str, dir: &Path, zones: &[Zone]) -> World {
        let name = format!("mmx-{tag}");
        let _ = Command::new("ip").args(["netns", "del", &name]).output(); // an interrupted run's
        ip(&["netns", "add", &name]);
        let etc = PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).unwrap();
        let (host, _) = RESOLVER.split_once(':').unwrap();
        std::fs::write(etc.join("resolv.conf"), format!("nameserver {host}\noptions timeout:2 attempts:2\n"))
            .unwrap();
        let mut world = World { name, dir: dir.to_path_buf(), dns: None };
        world.run(&["ip", "link", "set", "lo", "up"]);
        world.dns = Some(TestDns::start_in(zones, &world.netns(), RESOLVER.parse().unwrap()));
        world
    }

    /// The namespace's file, for `setns`.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program` to be run inside the world.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs a command inside the world; fails the test if it fails.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.command(argv[0]).args(&argv[1..]).output().expect("ip netns exec");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{} in {}: {text}", argv.join(" "), self.name);
        text
    }

    /// Runs a Python 3 script inside the world; its standard output.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let mut argv = vec!["python3", "-c", script];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    /// Waits until an SMTP server inside the world answers 220 at `addr`.
    pub fn wait_for_smtp(&self, addr: SocketAddr, timeout: Duration) {
        let script = r#"
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                print("up")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
print("down")
"#;
        let out = self.python(
            script,
            &[&addr.ip().to_string(), &addr.port().to_string(), &timeout.as_secs().to_string()],
        );
        assert!(out.contains("up"), "nothing answers SMTP at {addr} in {}", self.name);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.dns.take();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// Waits until `done` or `timeout`; whether it was done.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_until`] for async tests: polls every 20 ms without blocking the runtime.
pub async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
