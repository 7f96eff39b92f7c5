//! A test host of the project's own: a network namespace joined to this one
//! by a veth pair, on a documentation network (TEST-NET), for the tests that
//! need client addresses outside 127.0.0.0/8 (whose reverse names every
//! resolver answers itself as `localhost`, RFC 6761). Needs root and
//! iproute2's `ip`; removed when dropped.

use std::net::Ipv4Addr;
use std::process::Command;

pub struct TestHost {
    ns: String,
    veth: String,
    /// This side's address on the link (where a node listens).
    pub local: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().expect("iproute2's `ip` is needed by this test (see .ci/run)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl TestHost {
    /// A namespace `mmx-TAG` on `net`.0/24 (`net` like `[192, 0, 2]`): this
    /// side is `.1`, the host has each address in `clients`.
    pub fn create(tag: &str, net: [u8; 3], clients: &[u8]) -> TestHost {
        let ns = format!("mmx-{tag}");
        let veth = format!("mmx{tag}");
        let (here, there) = (format!("{veth}a"), format!("{veth}b"));
        // Leftovers of an interrupted run.
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &here]).output();
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &here, "type", "veth", "peer", "name", &there]);
        ip(&["link", "set", &there, "netns", &ns]);
        let local = Ipv4Addr::new(net[0], net[1], net[2], 1);
        ip(&["addr", "add", &format!("{local}/24"), "dev", &here]);
        ip(&["link", "set", &here, "up"]);
        for c in clients {
            let addr = format!("{}.{}.{}.{c}/24", net[0], net[1], net[2]);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &there]);
        }
        ip(&["netns", "exec", &ns, "ip", "link", "set", &there, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        TestHost { ns, veth, local }
    }

    /// Runs a Python 3 script inside the host; its standard output.
    pub fn python(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", script])
            .args(args)
            .output()
            .expect("ip netns exec python3");
        assert!(
            out.status.success(),
            "python in {} failed: {}{}",
            self.ns,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &format!("{}a", self.veth)]).output();
    }
}
