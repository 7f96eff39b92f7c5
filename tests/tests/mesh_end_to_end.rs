//! The mesh as an operator sets it up: certificates made with the CLI, real
//! node processes that find each other, and counts that cross between nodes.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use magicmx::config::Config;
use magicmx_gossip::Caps;
use magicmx_node::Node;
use magicmx_proto::SourceBlock;
use magicmx_tests::{free_port, magicmx_binary, NodeProcess};

fn magicmx(args: &[&str]) -> (bool, String) {
    let out = Command::new(magicmx_binary()).args(args).output().unwrap();
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_cli_makes_a_ca_node_certificates_and_a_checkable_node_directory() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let (ok, out) = magicmx(&["mesh", "ca-init", "--dir", ca.to_str().unwrap()]);
    assert!(ok, "{out}");
    let mode = std::fs::metadata(ca.join("mesh-ca.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the CA key is private");
    let (ok, out) = magicmx(&["mesh", "ca-init", "--dir", ca.to_str().unwrap()]);
    assert!(!ok && out.contains("exists already"), "a second CA over the first is refused: {out}");

    let node = dir.path().join("node1");
    let (ok, out) =
        magicmx(&["init", "--dir", node.to_str().unwrap(), "--name", "node1", "--ca", ca.to_str().unwrap()]);
    assert!(ok, "{out}");
    for file in ["magicmx.toml", "node.pem", "node.key", "mesh-ca.pem"] {
        assert!(node.join(file).exists(), "{file} made");
    }
    let config = node.join("magicmx.toml");
    let (ok, out) = magicmx(&["check-config", "--config", config.to_str().unwrap()]);
    assert!(ok, "the starter configuration is valid: {out}");
    assert!(Config::load(&config).unwrap().node_settings().mesh.is_some(), "and joins a mesh");
}

fn mesh_config(dir: &Path, name: &str, smtp: u16, gossip: u16, seed: Option<u16>) -> String {
    let seeds = seed.map(|p| format!("\"127.0.0.1:{p}\"")).unwrap_or_default();
    format!(
        r#"[node]
name = "{name}"
data_dir = "{data}"
[smtp]
listen = ["127.0.0.1:{smtp}"]
hostname = "{name}.mesh.test"
greet_pause = "0s"
[mesh]
listen = "127.0.0.1:{gossip}"
seeds = [{seeds}]
ca_cert = "{certs}/mesh-ca.pem"
cert = "{certs}/node.pem"
key = "{certs}/node.key"
[[domain]]
name = "example.test"
route = "maildir:{data}/maildir"
"#,
        data = dir.join("data").display(),
        certs = dir.display(),
    )
}

/// Two node directories with certificates from one CA made by the CLI.
fn two_nodes(root: &Path) -> [std::path::PathBuf; 2] {
    let ca = root.join("ca");
    assert!(magicmx(&["mesh", "ca-init", "--dir", ca.to_str().unwrap()]).0);
    ["a", "b"].map(|name| {
        let dir = root.join(name);
        let (ok, out) = magicmx(&[
            "mesh",
            "issue",
            "--ca",
            ca.to_str().unwrap(),
            "--name",
            name,
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(ok, "{out}");
        dir
    })
}

#[test]
fn two_node_processes_find_each_other_through_a_seed() {
    let root = tempfile::tempdir().unwrap();
    let [a, b] = two_nodes(root.path());
    let (gossip_a, gossip_b) = (free_udp_port(), free_udp_port());
    let (smtp_a, smtp_b) = (free_port(), free_port());
    let addr = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let node_a = NodeProcess::start(&a, &mesh_config(&a, "a", smtp_a, gossip_a, None), addr(smtp_a));
    let node_b =
        NodeProcess::start(&b, &mesh_config(&b, "b", smtp_b, gossip_b, Some(gossip_a)), addr(smtp_b));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !(node_a.log_text().contains("mesh peer up peer=b")
            && node_b.log_text().contains("mesh peer up peer=a"))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node_a.log_text().contains("mesh peer up peer=b"), "a sees b:\n{}", node_a.log_text());
    assert!(node_b.log_text().contains("mesh peer up peer=a"), "b sees a:\n{}", node_b.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_one_node_is_counted_at_the_other() {
    let root = tempfile::tempdir().unwrap();
    let [a, b] = two_nodes(root.path());
    let (gossip_a, gossip_b) = (free_udp_port(), free_udp_port());
    let start = |dir: &Path, name: &str, gossip: u16, seed: Option<u16>| {
        let text = mesh_config(dir, name, free_port(), gossip, seed);
        Config::parse("test.toml", &text).unwrap().node_settings()
    };
    let node_a = Node::start(start(&a, "a", gossip_a, None)).await.unwrap();
    let node_b = Node::start(start(&b, "b", gossip_b, Some(gossip_a))).await.unwrap();
    let (mesh_a, mesh_b) = (node_a.mesh().unwrap().clone(), node_b.mesh().unwrap().clone());
    let joined =
        wait(Duration::from_secs(20), || !mesh_a.peers().is_empty() && !mesh_b.peers().is_empty()).await;
    assert!(joined, "the two nodes meshed");

    // A client from 127.0.77.9 connects to node A three times (connection
    // rates decay with a one-minute time constant: about 3 soon after).
    let smtp_a = node_a.smtp_addrs()[0];
    for _ in 0..3 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.77.9:0".parse().unwrap()).unwrap();
        let _stream = socket.connect(smtp_a).await.unwrap();
    }
    let block = SourceBlock::of_default("127.0.77.9".parse().unwrap());
    let counted = wait(Duration::from_secs(5), || mesh_b.rate(block, Caps::NONE).connections >= 2.5).await;
    assert!(counted, "node B counts the connections made at node A: {:?}", mesh_b.rate(block, Caps::NONE));
    let other = SourceBlock::of_default("127.0.78.9".parse().unwrap());
    assert_eq!(mesh_b.rate(other, Caps::NONE).connections, 0.0, "and nothing for another block");
    node_a.shutdown();
    node_b.shutdown();
}

async fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}
