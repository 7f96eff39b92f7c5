//! Real mesh nodes on loopback: QUIC with mutual TLS, SWIM membership and
//! the shared counts, several endpoints in one process.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use magicmx_gossip::{pki, Caps, Kind, Mesh, MeshSettings};
use magicmx_proto::SourceBlock;
use time::OffsetDateTime;

const INTERVAL: Duration = Duration::from_millis(500);

/// A mesh CA in `dir`; returns its key PEM (to issue with).
fn make_ca(dir: &Path) -> String {
    let ca = pki::new_ca(10).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    ca.key
}

/// Settings for node `name` with a certificate issued by `ca_key`, valid as given.
fn node_settings(
    dir: &Path,
    ca_key: &str,
    name: &str,
    valid: (OffsetDateTime, OffsetDateTime),
) -> MeshSettings {
    let pem = pki::issue(ca_key, name, valid.0, valid.1).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, pem.cert).unwrap();
    std::fs::write(&key, pem.key).unwrap();
    let mut settings = MeshSettings::new(name, "127.0.0.1:0".parse().unwrap(), dir.join("ca.pem"), cert, key);
    settings.interval = INTERVAL;
    settings
}

fn valid_now() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + time::Duration::days(30))
}

/// Starts `n` nodes, all seeded with the first, and waits until each sees all others.
async fn start_mesh(dir: &Path, ca_key: &str, n: usize) -> Vec<Mesh> {
    let first = Mesh::start(node_settings(dir, ca_key, "node0", valid_now())).await.unwrap();
    let seed = first.local_addr();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut settings = node_settings(dir, ca_key, &format!("node{i}"), valid_now());
        settings.seeds = vec![seed];
        nodes.push(Mesh::start(settings).await.unwrap());
    }
    wait_until(Duration::from_secs(30), || nodes.iter().all(|m| alive(m) == n - 1)).await;
    nodes
}

fn alive(mesh: &Mesh) -> usize {
    mesh.peers().iter().filter(|p| p.alive).count()
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

fn block(n: u8) -> SourceBlock {
    SourceBlock::of_default(format!("198.51.{n}.7").parse().unwrap())
}

/// The nodes that are homes of `b`.
fn homes<'a>(nodes: &'a [Mesh], b: SourceBlock) -> Vec<&'a Mesh> {
    let homes = nodes[0].homes(b);
    nodes.iter().filter(|m| homes.contains(&m.fingerprint())).collect()
}

/// Records `events` recipients for `b` at `from` and returns how long until
/// the block's homes hold them.
async fn propagation(nodes: &[Mesh], from: usize, b: SourceBlock, events: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..events {
        nodes[from].record(b, Kind::Recipient);
    }
    let homes = homes(nodes, b);
    let seen = wait_until(Duration::from_secs(10), || {
        homes.iter().all(|m| m.rate(b, Caps::NONE).recipients >= events as f64 - 0.01)
    })
    .await;
    assert!(seen, "the block's homes hold the count");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_reaches_its_homes_within_two_intervals_and_a_penalty_every_node_within_three() {
    for n in [3, 10] {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path());
        let nodes = start_mesh(dir.path(), &ca, n).await;
        for (i, from) in [0, n - 1, n / 2].into_iter().enumerate() {
            let took = propagation(&nodes, from, block(i as u8), 5).await;
            assert!(took <= INTERVAL * 2, "{n} nodes: at the homes after {took:?}");
            let b = block(100 + i as u8);
            let start = Instant::now();
            let until = magicmx_gossip::tally::now_ms() + 60_000;
            nodes[from].tally().penalise(b, until, 1);
            let now = || magicmx_gossip::tally::now_ms();
            let everywhere = wait_until(Duration::from_secs(10), || {
                nodes.iter().all(|m| m.tally().penalty(b, now()).is_some())
            })
            .await;
            // In force at a node once the block's homes bear it out: the
            // round that carries it, the next round's check, a question.
            assert!(
                everywhere && start.elapsed() <= INTERVAL * 3,
                "{n} nodes: penalty everywhere after {:?}",
                start.elapsed()
            );
        }
        for node in &nodes {
            node.shutdown();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_that_restarts_rejoins_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let mut nodes = start_mesh(dir.path(), &ca, 3).await;
    let addr = nodes[2].local_addr();
    // A block node2 is a home of.
    let node2 = nodes[2].fingerprint();
    let b = (0..=255).map(block).find(|&b| nodes[0].homes(b).contains(&node2)).unwrap();
    nodes.pop().unwrap().shutdown();
    // While node2 is away, node0 counts; the others declare node2 down.
    assert!(
        wait_until(Duration::from_secs(30), || nodes.iter().all(|m| alive(m) == 1)).await,
        "node2 is seen down"
    );
    propagation(&nodes, 0, b, 7).await;
    // node2 comes back with the same certificate and address.
    let mut settings = MeshSettings::new(
        "node2",
        addr,
        dir.path().join("ca.pem"),
        dir.path().join("node2.pem"),
        dir.path().join("node2.key"),
    );
    settings.interval = INTERVAL;
    settings.seeds = vec![nodes[0].local_addr()];
    let back = Mesh::start(settings).await.unwrap();
    nodes.push(back);
    assert!(wait_until(Duration::from_secs(30), || nodes.iter().all(|m| alive(m) == 2)).await, "rejoined");
    assert!(
        wait_until(Duration::from_secs(5), || nodes[2].rate(b, Caps::NONE).recipients >= 6.5).await,
        "the returning node, home of the block again, gets the counts it missed"
    );
    propagation(&nodes, 2, block(2), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_expired_or_revoked_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = make_ca(other_dir.path());
    let now = OffsetDateTime::now_utc();

    // node0 knows the revoked certificate's fingerprint.
    let revoked_settings = node_settings(dir.path(), &ca, "revoked", valid_now());
    let revoked_der = std::fs::read_to_string(&revoked_settings.cert).unwrap();
    let revoked_fp = sha256_of_pem(&revoked_der);
    let mut settings = node_settings(dir.path(), &ca, "node0", valid_now());
    settings.revoked = vec![revoked_fp];
    let node0 = Mesh::start(settings).await.unwrap();

    let mut strangers = vec![];
    // Signed by another CA (which trusts node0's CA, so only node0's check can refuse it).
    let mut foreign = node_settings(other_dir.path(), &other_ca, "foreign", valid_now());
    foreign.ca_cert = dir.path().join("ca.pem");
    strangers.push(foreign);
    strangers.push(node_settings(
        dir.path(),
        &ca,
        "expired",
        (now - time::Duration::days(30), now - time::Duration::days(1)),
    ));
    strangers.push(revoked_settings);
    let mut started = vec![];
    for mut settings in strangers {
        settings.seeds = vec![node0.local_addr()];
        started.push(Mesh::start(settings).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(node0.peers().len(), 0, "no stranger became a peer: {:?}", node0.peers());
    let refused = node0.stats().handshakes_refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!(refused >= 3, "each stranger was refused at the handshake ({refused})");
    for mesh in started.iter().chain([&node0]) {
        mesh.shutdown();
    }
}

fn sha256_of_pem(pem: &str) -> [u8; 32] {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    magicmx_gossip::tls::sha256(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_at_the_gossip_port_neither_crash_nor_stall_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let nodes = start_mesh(dir.path(), &ca, 2).await;
    let target: SocketAddr = nodes[0].local_addr();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..20_000u32 {
        // xorshift: cheap, reproducible noise; every 8th packet looks like a QUIC long header.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed % 1400) as usize;
        let mut packet: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8 ^ j as u8).collect();
        if i % 8 == 0 {
            packet[0] = 0xC0 | (packet[0] & 0x0F);
        }
        let _ = socket.send_to(&packet, target);
    }
    let took = propagation(&nodes, 1, block(9), 4).await;
    assert!(took <= INTERVAL * 4, "still converging after the noise: {took:?}");
    assert_eq!(alive(&nodes[0]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_by_the_home_or_alone_when_the_homes_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_ca(dir.path());
    let nodes = start_mesh(dir.path(), &ca, 3).await;
    let node1 = nodes[1].fingerprint();
    let b = (0..=255).map(block).find(|&b| nodes[0].homes(b)[0] == node1).unwrap();
    nodes[0].record(b, Kind::Connection);
    let since = Instant::now();
    let answer = nodes[0].ask(b, magicmx_gossip::Question::Seen).await;
    assert!(answer.yes, "the home holds node0's connection (it came with the question)");
    assert!(since.elapsed() <= INTERVAL, "one round trip: {:?}", since.elapsed());
    assert_eq!(nodes[1].engine_stats().answered_for_others, 1);
    // Every other node gone, before SWIM has noticed: the homes are asked in
    // turn, and then node0 judges alone.
    nodes[1].shutdown();
    nodes[2].shutdown();
    let answer = nodes[0].ask(b, magicmx_gossip::Question::Seen).await;
    assert!(answer.yes, "node0 holds its own connection");
    assert!(nodes[0].engine_stats().timeouts >= 1);
}
