//! IPv6 end to end: senders on IPv6 addresses are throttled by their /48,
//! mesh-wide. In a network namespace of the test's own, two meshed nodes
//! listen on IPv6 addresses (SMTP, QUIC gossip, admin API, policy service),
//! and clients connect from addresses in two /48s. Covers the listener, the
//! gate, the mesh counts and the policy service. Needs root and iproute2.

use std::path::Path;
use std::time::Duration;

use magicmx_tests::CHECKS_OFF;
use magicmx_tests::{certified_nodes, wait_until, NodeProcess, World};

const NODES: [(&str, &str); 2] = [("n1", "fd00::1"), ("n2", "fd00::2")];
/// Two hosts of one /48, and one of another.
const BLOCK_A: [&str; 2] = ["2001:db8:1::10", "2001:db8:1:ffff::11"];
const BLOCK_B: &str = "2001:db8:2::10";
const LIMIT: usize = 6;

fn node_config(name: &str, ip: &str, dir: &Path) -> String {
    let d = dir.display();
    let seeds: Vec<String> =
        NODES.iter().filter(|(n, _)| *n != name).map(|(_, ip)| format!("\"[{ip}]:7946\"")).collect();
    format!(
        r#"[node]
name = "{name}"
data_dir = "{d}/data"
nice = 0

[smtp]
listen = ["[{ip}]:25"]
hostname = "{name}.mesh.test"
greet_pause = "0s"

[mesh]
listen = "[{ip}]:7946"
seeds = [{seeds}]
ca_cert = "{d}/mesh-ca.pem"
cert = "{d}/node.pem"
key = "{d}/node.key"
gossip_interval = "200ms"

[throttle]
recipients_per_hour = {LIMIT}

[checks]
{CHECKS_OFF}
[[domain]]
name = "example.test"
route = "maildir:{d}/data/maildir"

[admin]
listen = "[{ip}]:8025"
token = "v6-token"
policy_listen = "[{ip}]:10040"
policy_clients = ["fd00::/64"]
magic_mx = "mx.mesh.test"
"#,
        seeds = seeds.join(", ")
    )
}

/// One message to one recipient from `source` through the node at `node`:
/// the greeting's code if it is a refusal, else the reply code to RCPT, and
/// to the message if RCPT was taken.
const SEND: &str = r#"
import smtplib, sys
source, node, n = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    s = smtplib.SMTP(node, 25, source_address=(source, 0), timeout=30)
except smtplib.SMTPConnectError as e:
    print(e.smtp_code)
    sys.exit(0)
with s:
    s.ehlo("v6.client.test")
    s.mail("alice@client.test")
    code, _ = s.rcpt("bob%s@example.test" % n)
    if code == 250:
        code, _ = s.data(("Subject: v6 %s\r\nMessage-ID: <v6-%s@client.test>\r\n\r\nHi.\r\n" % (n, n)).encode())
    print(code)
"#;

const POLICY: &str = r#"
import socket, sys
server, client = sys.argv[1], sys.argv[2]
with socket.create_connection((server, 10040), timeout=10) as s:
    s.sendall(("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=%s\n\n" % client).encode())
    answer = b""
    while not answer.endswith(b"\n\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
print(answer.decode().strip())
"#;

const STATUS: &str = r#"
import json, sys, urllib.request
request = urllib.request.Request("http://[%s]:8025/status" % sys.argv[1], headers={"Authorization": "Bearer v6-token"})
with urllib.request.urlopen(request, timeout=10) as r:
    status = json.load(r)
print(" ".join(b["block"] for b in status["top_blocks"]))
"#;

#[test]
fn ipv6_senders_are_throttled_mesh_wide_by_their_slash_48() {
    let root = tempfile::tempdir().unwrap();
    let world = World::create("v6", root.path(), &[]);
    for addr in NODES.iter().map(|(_, ip)| *ip).chain(BLOCK_A).chain([BLOCK_B]) {
        world.run(&["ip", "-6", "addr", "add", &format!("{addr}/128"), "dev", "lo", "nodad"]);
    }
    let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    let dirs = certified_nodes(root.path(), &names);
    let _nodes: Vec<NodeProcess> = NODES
        .iter()
        .zip(&dirs)
        .map(|((name, ip), dir)| {
            let smtp = format!("[{ip}]:25").parse().unwrap();
            NodeProcess::start_in(&world, dir, &node_config(name, ip, dir), smtp)
        })
        .collect();
    let logs =
        || dirs.iter().map(|d| std::fs::read_to_string(d.join("node.log")).unwrap()).collect::<String>();
    let met = wait_until(Duration::from_secs(30), || logs().matches("mesh peer up").count() >= 2);
    assert!(met, "the mesh formed over IPv6:\n{}", logs());

    // Block A sprays both nodes from two of its hosts: the mesh takes its
    // limit, no more, and says 451, then 421 once the block is penalised
    // (never a 5xx), to the rest.
    let mut codes = vec![];
    for n in 0..2 * LIMIT {
        let (source, node) = (BLOCK_A[n % 2], NODES[(n / 2) % 2].1);
        let out = world.python(SEND, &[source, node, &n.to_string()]);
        codes.push(out.trim().parse::<u16>().unwrap());
    }
    let taken = codes.iter().filter(|c| **c == 250).count();
    assert_eq!(taken, LIMIT, "block A got exactly its limit: {codes:?}\n{}", logs());
    assert!(codes.iter().all(|c| [250, 451, 421].contains(c)), "{codes:?}");
    assert!(codes.contains(&421), "the block is penalised on both nodes: {codes:?}");

    // Another /48 is untouched.
    assert_eq!(world.python(SEND, &[BLOCK_B, NODES[1].1, "b"]).trim(), "250");

    // Both nodes count the block as one /48.
    for (_, ip) in NODES {
        let blocks = world.python(STATUS, &[ip]);
        assert!(blocks.contains("2001:db8:1::/48"), "{ip}: {blocks}");
    }

    // The policy service, asked over IPv6 by a real MX in policy_clients:
    // an IPv6 sender that skipped the mesh is deferred, a mesh node waved on.
    let deferred = world.python(POLICY, &[NODES[0].1, BLOCK_A[0]]);
    assert!(deferred.starts_with("action=DEFER_IF_PERMIT 4.7.1"), "{deferred}");
    let node = world.python(POLICY, &[NODES[0].1, NODES[0].1]);
    assert_eq!(node.trim(), "action=DUNNO");
    let delivered = wait_until(Duration::from_secs(10), || {
        dirs.iter()
            .map(|d| {
                std::fs::read_dir(d.join("data/maildir")).map_or(0, |boxes| {
                    boxes
                        .flatten()
                        .map(|b| std::fs::read_dir(b.path().join("new")).map_or(0, |f| f.count()))
                        .sum()
                })
            })
            .sum::<usize>()
            == LIMIT + 1
    });
    assert!(delivered, "every message taken was delivered");
}
