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
fn a_node_joins_by_request_its_key_never_leaving_its_directory() {
    let root = tempfile::tempdir().unwrap();
    let specs = specs(root.path(), 2, true, "");
    let (ca, joining) = (root.path().join("ca"), root.path().join("joining"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // On the joining node: its key and a request.
    let (ok, out) = magicmx(&["mesh", "request", "--dir", &path(&joining), "--name", "n1"]);
    assert!(ok, "{out}");
    let key = std::fs::read_to_string(joining.join("node.key")).unwrap();
    let mode = std::fs::metadata(joining.join("node.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is private");
    // Only the request travels to the CA holder, who signs it.
    let carried = root.path().join("carried");
    std::fs::create_dir_all(&carried).unwrap();
    std::fs::copy(joining.join("node.csr"), carried.join("node.csr")).unwrap();
    let (ok, out) = magicmx(&["mesh", "sign", &path(&carried.join("node.csr")), "--ca", &path(&ca)]);
    assert!(ok, "{out}");
    let signed = carried.join("n1.pem");
    assert!(signed.exists(), "{out}");
    // A request whose contents were changed after signing is refused.
    let request = std::fs::read_to_string(carried.join("node.csr")).unwrap();
    let lines: Vec<&str> = request.lines().collect();
    let mut tampered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let middle = lines.len() / 2;
    tampered[middle] = tampered[middle].chars().rev().collect();
    std::fs::write(carried.join("bad.csr"), tampered.join("\n")).unwrap();
    let (ok, out) = magicmx(&["mesh", "sign", &path(&carried.join("bad.csr")), "--ca", &path(&ca)]);
    assert!(!ok, "a damaged request is refused: {out}");
    // A certificate for another key is refused at install.
    let other = root.path().join("other");
    assert!(magicmx(&["mesh", "request", "--dir", &path(&other), "--name", "n1"]).0);
    let (ok, out) = magicmx(&["mesh", "install", &path(&signed), "--dir", &path(&other)]);
    assert!(!ok && out.contains("not for this node's key"), "{out}");
    // Back on the joining node: installed beside its key.
    let (ok, out) = magicmx(&["mesh", "install", &path(&signed), "--dir", &path(&joining)]);
    assert!(ok && out.contains("mesh CA fingerprint"), "{out}");
    // The key never left: nothing the CA holder saw or made holds it.
    let secret: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for dir in [&ca, &carried] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            assert!(!text.replace('\n', "").contains(&secret), "the key is not in {}", dir.display());
        }
    }
    assert_eq!(std::fs::read_to_string(joining.join("node.key")).unwrap(), key, "the key is unchanged");
    // The joined node meshes with a node issued the other way.
    for file in ["node.key", "node.pem", "mesh-ca.pem"] {
        std::fs::copy(joining.join(file), specs[1].dir.join(file)).unwrap();
    }
    let nodes: Vec<NodeProcess> = specs.iter().map(Spec::start).collect();
    assert!(wait_for_mesh(&nodes, Duration::from_secs(20)), "{}", nodes[1].log_text());
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

#[test]
fn a_revocation_signed_by_the_ca_reaches_every_node_at_once_and_is_kept_on_disk() {
    let root = tempfile::tempdir().unwrap();
    let specs = specs(root.path(), 4, true, "recipients_per_hour = 3");
    let mut nodes: Vec<Option<NodeProcess>> = specs.iter().map(|s| Some(s.start())).collect();
    let running = |nodes: &[Option<NodeProcess>]| nodes.iter().flatten().count();
    let all: Vec<&NodeProcess> = nodes.iter().flatten().collect();
    let formed = wait_until(Duration::from_secs(30), || {
        all.iter().all(|n| n.log_text().matches("mesh peer up").count() >= 3)
    });
    assert!(formed, "the mesh formed");
    // n2 penalises a block; the others take the penalty in.
    let spammer = "127.0.93.1";
    let penalised = (0..20).any(|n| {
        let out = magicmx_tests::python(SEND_ONE, &[&specs[2].smtp.to_string(), spammer, &n.to_string()]);
        out.starts_with("421")
    });
    assert!(penalised, "n2 penalised the block");
    for spec in [&specs[0], &specs[1], &specs[3]] {
        let refused = wait_until(Duration::from_secs(10), || {
            greeting_from(spammer, spec.smtp_addr()).starts_with("421")
        });
        assert!(refused, "{} refuses the block n2 penalised", spec.name);
    }
    // n3 is down while n2 is revoked (it kept the penalty on disk).
    std::thread::sleep(Duration::from_secs(6));
    nodes[3].take().unwrap().stop();
    assert_eq!(running(&nodes), 3);
    let (ok, fingerprint) =
        magicmx(&["mesh", "fingerprint", "--cert", specs[2].dir.join("node.pem").to_str().unwrap()]);
    assert!(ok, "{fingerprint}");
    // A member's word revokes no one: a line signed by another CA is refused.
    let stranger_ca = root.path().join("stranger-ca");
    assert!(magicmx(&["mesh", "ca-init", "--dir", stranger_ca.to_str().unwrap()]).0);
    let admin0 = format!("127.0.0.1:{}", specs[0].admin);
    let stranger =
        ["mesh", "revoke", fingerprint.trim(), "--ca", stranger_ca.to_str().unwrap(), "--admin", &admin0];
    let (ok, out) = magicmx(&stranger);
    assert!(!ok && out.contains("not signed by this mesh's CA"), "{out}");
    // The CA's holder revokes n2 through n0 alone.
    let ca = root.path().join("ca");
    let (ok, out) =
        magicmx(&["mesh", "revoke", fingerprint.trim(), "--ca", ca.to_str().unwrap(), "--admin", &admin0]);
    assert!(ok && out.starts_with("magicmx-revocation:v1:"), "{out}");
    let revoked_at = std::time::Instant::now();
    // n1 has it within a gossip interval (200 ms; slack for a loaded
    // machine): n2's penalties are gone at n0 and n1.
    let n1 = nodes[1].as_ref().unwrap();
    let reached =
        wait_until(Duration::from_secs(5), || n1.log_text().contains("mesh member revoked by the CA"));
    let took = revoked_at.elapsed();
    assert!(reached, "{}", n1.log_text());
    eprintln!("the revocation reached n1 within {took:?}");
    for spec in &specs[..2] {
        let spared = wait_until(Duration::from_secs(5), || {
            greeting_from(spammer, spec.smtp_addr()).starts_with("220")
        });
        assert!(spared, "{}: none of n2's penalties is left", spec.name);
    }
    let n0 = nodes[0].as_ref().unwrap();
    let refused = wait_until(Duration::from_secs(10), || {
        n0.log_text().contains("invalid peer certificate: Revoked")
            || n1.log_text().contains("invalid peer certificate: Revoked")
    });
    assert!(refused, "n2's connections are refused:\n{}", n0.log_text());
    // n3 comes back: the first thing a member tells it is the revocation.
    let n3 = specs[3].start();
    let learned =
        wait_until(Duration::from_secs(20), || n3.log_text().contains("mesh member revoked by the CA"));
    assert!(learned, "n3 learns the revocation when it comes back:\n{}", n3.log_text());
    let spared = wait_until(Duration::from_secs(5), || {
        greeting_from(spammer, specs[3].smtp_addr()).starts_with("220")
    });
    assert!(spared, "n3 dropped the penalty n2 imposed");
    // Kept on disk: n1 restarts (its configuration never named n2) and keeps n2 out.
    nodes[1].take().unwrap().stop();
    let kept = std::fs::read_to_string(specs[1].dir.join("data/mesh-revocations")).unwrap_or_default();
    assert!(kept.starts_with("magicmx-revocation:v1:"), "n1 kept the revocation: {kept:?}");
    // The restarted node appends to the same log.
    let logged_before = std::fs::read_to_string(specs[1].dir.join("node.log")).unwrap().len();
    let n1 = specs[1].start();
    let since_restart = || n1.log_text()[logged_before..].to_string();
    let up_again = wait_until(Duration::from_secs(20), || since_restart().contains("mesh peer up peer=n0"));
    assert!(up_again, "{}", since_restart());
    std::thread::sleep(Duration::from_secs(2));
    let after = since_restart();
    assert!(!after.contains("mesh peer up peer=n2"), "n2 stays out after a restart:\n{after}");
    drop(n3);
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
