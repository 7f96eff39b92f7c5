//! Faults in the mesh: a hostile peer with a valid certificate, and a node
//! cut off from its peers and healed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magicmx_gossip::transport::{Delivery, Transport};
use magicmx_gossip::{pki, tls, Caps, Kind, Mesh, MeshSettings};
use magicmx_proto::wire::{encode, CountEntry, Counts, Frame};
use magicmx_proto::SourceBlock;

const INTERVAL: Duration = Duration::from_millis(200);

fn settings(dir: &Path, ca_key: &str, name: &str) -> MeshSettings {
    let pem = pki::issue_for_days(ca_key, name, 30).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, pem.cert).unwrap();
    std::fs::write(&key, pem.key).unwrap();
    let mut s = MeshSettings::new(name, "127.0.0.1:0".parse().unwrap(), dir.join("ca.pem"), cert, key);
    s.interval = INTERVAL;
    s
}

async fn mesh(dir: &Path, n: usize) -> (String, Vec<Mesh>) {
    let ca = pki::new_ca(1).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    let first = Mesh::start(settings(dir, &ca.key, "n0")).await.unwrap();
    let seed = first.local_addr();
    let mut nodes = vec![first];
    for i in 1..n {
        let mut s = settings(dir, &ca.key, &format!("n{i}"));
        s.seeds = vec![seed];
        nodes.push(Mesh::start(s).await.unwrap());
    }
    assert!(wait(Duration::from_secs(30), || nodes.iter().all(|m| alive(m) == n - 1)).await, "mesh formed");
    (ca.key, nodes)
}

fn alive(m: &Mesh) -> usize {
    m.peers().iter().filter(|p| p.alive).count()
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

fn block(n: u8) -> SourceBlock {
    SourceBlock::of_default(format!("203.0.113.{n}").parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_is_capped_or_dropped_and_honest_nodes_keep_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, nodes) = mesh(dir.path(), 2).await;
    // A peer with a valid certificate of the mesh, speaking the wire format.
    let bad = settings(dir.path(), &ca_key, "hostile");
    let config = tls::load(&bad.ca_cert, &bad.cert, &bad.key, vec![], Duration::from_secs(10)).unwrap();
    let (inbox, _frames) = tokio::sync::mpsc::channel(16);
    let hostile = Transport::bind("127.0.0.1:0".parse().unwrap(), config, inbox).unwrap();
    let target = nodes[0].local_addr();
    let victim = block(7);
    let wire_block = magicmx_gossip::tally::wire_block(victim);
    let entry = |r: f32| CountEntry {
        block: wire_block,
        recipients: r,
        connections: r,
        age_ms: 0,
        seq: 0,
        open: vec![],
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Inflated (a valid number, huge), then nonsense, then bytes that are no frame at all.
    let inflated = Frame::Counts(Counts {
        round: 1,
        full: false,
        base_ms: now,
        entries: vec![entry(1.0e6)],
        penalties: vec![],
    });
    let nonsense = Frame::Counts(Counts {
        round: 2,
        full: false,
        base_ms: now,
        entries: vec![entry(f32::NAN), entry(-3.0), entry(f32::INFINITY)],
        penalties: vec![],
    });
    for frame in [encode(&inflated), encode(&nonsense), vec![1, 0xFF, 0xFF, 0xFF], vec![7, 1, 2, 3]] {
        hostile.send(target, Arc::new(frame), Delivery::Stream).await;
    }
    let caps = Caps { recipients: 15.0, connections: 10.0 };
    let dropped = || nodes[0].stats().frames_dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        wait(Duration::from_secs(5), || nodes[0].rejected_entries() >= 3 && dropped() >= 2).await,
        "nonsense entries rejected ({}) and broken frames dropped ({})",
        nodes[0].rejected_entries(),
        dropped()
    );
    let seen = nodes[0].rate(victim, caps);
    assert!(seen.recipients <= 15.0 + 1e-9, "the inflated claim is capped at the peer's share: {seen:?}");
    assert!(seen.recipients > 14.0, "but it does count, up to the cap: {seen:?}");
    // The honest mesh still works, and the block is not locked out by the
    // hostile peer alone: 15 < a limit of 30.
    nodes[1].record(block(8), Kind::Recipient);
    assert!(wait(Duration::from_secs(5), || nodes[0].rate(block(8), Caps::NONE).recipients > 0.9).await);
    hostile.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_keeps_its_share_and_converges_after_the_heal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, nodes) = mesh(dir.path(), 3).await;
    nodes[2].set_isolated(true);
    let split = wait(Duration::from_secs(60), || {
        alive(&nodes[2]) == 0 && alive(&nodes[0]) == 1 && alive(&nodes[1]) == 1
    })
    .await;
    assert!(split, "the split is seen on both sides: {:?} / {:?}", nodes[0].peers(), nodes[2].peers());
    // The documented partition rule's inputs: the cut-off node hears 0 of 2
    // peers (it enforces 1/3 of each limit), the others 1 of 2 (2/3): the
    // parts add up to one limit.
    assert_eq!(nodes[2].heard_share(), (0, 2));
    assert_eq!(nodes[0].heard_share(), (1, 2));
    // Both sides keep counting.
    let b = block(9);
    for _ in 0..4 {
        nodes[2].record(b, Kind::Recipient);
    }
    for _ in 0..5 {
        nodes[0].record(b, Kind::Recipient);
    }
    tokio::time::sleep(INTERVAL * 3).await;
    assert!(nodes[0].rate(b, Caps::NONE).recipients < 5.5, "nothing crosses the cut");
    // Heal: the node rejoins and the counts of both sides converge everywhere.
    nodes[2].set_isolated(false);
    assert!(
        wait(Duration::from_secs(60), || nodes.iter().all(|m| alive(m) == 2)).await,
        "rejoined: {:?}",
        nodes[2].peers()
    );
    let converged = wait(Duration::from_secs(10), || {
        nodes.iter().all(|m| (m.rate(b, Caps::NONE).recipients - 9.0).abs() < 0.1)
    })
    .await;
    let rates: Vec<f64> = nodes.iter().map(|m| m.rate(b, Caps::NONE).recipients).collect();
    assert!(converged, "every node sees both sides' counts after the heal: {rates:?}");
    assert_eq!(nodes[2].heard_share(), (2, 2));
}
