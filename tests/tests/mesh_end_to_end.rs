//! The mesh as an operator sets it up: certificates made with the CLI, real
//! node processes that find each other, and counts that cross between nodes.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use magicmx::config::Config;
use magicmx_gossip::Caps;
use magicmx_node::Node;
use magicmx_proto::SourceBlock;
use magicmx_tests::{magicmx, specs, wait_for, wait_for_mesh, wait_until, NodeProcess, Spec};

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

#[test]
fn two_node_processes_find_each_other_through_a_seed() {
    let root = tempfile::tempdir().unwrap();
    let specs = specs(root.path(), 2, true, "");
    let nodes: Vec<NodeProcess> = specs.iter().map(Spec::start).collect();
    assert!(
        wait_for_mesh(&nodes, Duration::from_secs(20)),
        "a:\n{}\nb:\n{}",
        nodes[0].log_text(),
        nodes[1].log_text()
    );
    assert!(nodes[0].log_text().contains("mesh peer up peer=n1"));
    assert!(nodes[1].log_text().contains("mesh peer up peer=n0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_at_one_node_is_counted_at_the_other() {
    let root = tempfile::tempdir().unwrap();
    let specs = specs(root.path(), 2, true, "");
    let start = |spec: &Spec| Config::parse("test.toml", &spec.config()).unwrap().node_settings();
    let node_a = Node::start(start(&specs[0])).await.unwrap();
    let node_b = Node::start(start(&specs[1])).await.unwrap();
    let (mesh_a, mesh_b) = (node_a.mesh().unwrap().clone(), node_b.mesh().unwrap().clone());
    let joined =
        wait_for(Duration::from_secs(20), || !mesh_a.peers().is_empty() && !mesh_b.peers().is_empty()).await;
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
    let counted =
        wait_for(Duration::from_secs(5), || mesh_b.rate(block, Caps::NONE).connections >= 2.5).await;
    assert!(counted, "node B counts the connections made at node A: {:?}", mesh_b.rate(block, Caps::NONE));
    let other = SourceBlock::of_default("127.0.78.9".parse().unwrap());
    assert_eq!(mesh_b.rate(other, Caps::NONE).connections, 0.0, "and nothing for another block");
    node_a.shutdown();
    node_b.shutdown();
}

/// The first reply line a client from `source` gets at `node`.
fn greeting_from(source: &str, node: std::net::SocketAddr) -> String {
    let stream = magicmx_tests::connect_from(source, node);
    magicmx_tests::RawClient::from_stream(stream).reply()
}

#[test]
fn restarting_the_nodes_after_revoking_one_leaves_none_of_its_penalties() {
    let root = tempfile::tempdir().unwrap();
    let specs = specs(root.path(), 3, true, "recipients_per_hour = 3");
    let nodes: Vec<NodeProcess> = specs.iter().map(Spec::start).collect();
    assert!(wait_for_mesh(&nodes, Duration::from_secs(30)), "the mesh formed");

    // A sender from 127.0.91.0/24 goes over its limit at n2 until n2 penalises the block.
    let spammer = "127.0.91.1";
    let penalised = (0..20).any(|n| {
        let out = magicmx_tests::python(SEND_ONE, &[&specs[2].smtp.to_string(), spammer, &n.to_string()]);
        out.starts_with("421")
    });
    assert!(penalised, "n2 penalised the block");
    // n0 and n1 learn the penalty, and save it with its origin.
    for spec in &specs[..2] {
        let refused = wait_until(Duration::from_secs(10), || {
            greeting_from(spammer, spec.smtp_addr()).starts_with("421")
        });
        assert!(refused, "{} refuses the block n2 penalised", spec.name);
    }
    std::thread::sleep(Duration::from_secs(6));

    // n2's certificate is revoked; every node restarts, n0 without the revocation (the control).
    let (ok, fingerprint) =
        magicmx(&["mesh", "fingerprint", "--cert", specs[2].dir.join("node.pem").to_str().unwrap()]);
    assert!(ok && fingerprint.trim().len() == 95, "{fingerprint}");
    for node in nodes {
        node.stop();
    }
    let revoked = format!("gossip_interval = \"200ms\"\nrevoked = [\"{}\"]\n", fingerprint.trim());
    let config = specs[1].config().replace("gossip_interval = \"200ms\"\n", &revoked);
    let n1 = NodeProcess::start(&specs[1].dir, &config, specs[1].smtp_addr());
    let n0 = specs[0].start();
    assert!(greeting_from(spammer, specs[0].smtp_addr()).starts_with("421"), "kept across a restart");
    assert!(
        greeting_from(spammer, specs[1].smtp_addr()).starts_with("220"),
        "none of n2's penalties is left"
    );
    assert!(n1.log_text().contains("penalties imposed by revoked nodes dropped"), "{}", n1.log_text());
    drop(n0);
}

/// One message to one recipient from SOURCE at the node on PORT: the reply
/// code that ended it (the greeting's refusal, RCPT's, or the message's).
const SEND_ONE: &str = r#"
import smtplib, sys
port, source, n = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    s = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30)
except smtplib.SMTPConnectError as e:
    print(e.smtp_code)
    sys.exit(0)
s.ehlo("spam.test")
s.mail("spam@spam.test")
code, _ = s.rcpt("bob%s@example.test" % n)
if code == 250:
    code, _ = s.data(b"Subject: spam\r\n\r\nbuy\r\n")
print(code)
s.quit()
"#;
