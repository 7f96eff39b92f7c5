//! Faults in the mesh: a hostile peer with a valid certificate, and a node
//! cut off from its peers and healed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magicmx_gossip::transport::{Delivery, Transport};
use magicmx_gossip::{pki, tls, Caps, Kind, Mesh, MeshSettings};
use magicmx_proto::wire::{encode, CountEntry, Counts, Frame, PenaltyEntry, WireBlock};
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
    mesh_with(dir, n, |_| {}).await
}

/// A mesh of `n` whose first node's settings `tweak` changes.
async fn mesh_with(dir: &Path, n: usize, tweak: impl FnOnce(&mut MeshSettings)) -> (String, Vec<Mesh>) {
    let ca = pki::new_ca(1).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    let mut first = settings(dir, &ca.key, "n0");
    tweak(&mut first);
    let first = Mesh::start(first).await.unwrap();
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

fn now_ms() -> u64 {
    magicmx_gossip::tally::now_ms()
}

/// A transport holding a valid certificate of the mesh, speaking the wire
/// format, but no member.
fn hostile(dir: &Path, ca_key: &str, name: &str) -> Arc<Transport> {
    transport_for(&settings(dir, ca_key, name))
}

/// A transport with the certificate of `bad`.
fn transport_for(bad: &MeshSettings) -> Arc<Transport> {
    let config =
        tls::load(&bad.ca_cert, &bad.cert, &bad.key, Default::default(), Duration::from_secs(10)).unwrap();
    let (inbox, frames) = tokio::sync::mpsc::channel(16);
    // What comes back is read and thrown away.
    tokio::spawn(async move {
        let mut frames = frames;
        while frames.recv().await.is_some() {}
    });
    Transport::bind("127.0.0.1:0".parse().unwrap(), config, inbox).unwrap()
}

fn counts_frame(entries: Vec<CountEntry>, penalties: Vec<PenaltyEntry>) -> Arc<Vec<u8>> {
    let frame = Counts { round: 1, started_ms: 1, base_ms: now_ms(), entries, penalties };
    Arc::new(encode(&Frame::Counts(frame)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_is_capped_or_dropped_and_honest_nodes_keep_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, nodes) = mesh(dir.path(), 2).await;
    // A peer with a valid certificate of the mesh, speaking the wire format.
    let bad = settings(dir.path(), &ca_key, "hostile");
    let config =
        tls::load(&bad.ca_cert, &bad.cert, &bad.key, Default::default(), Duration::from_secs(10)).unwrap();
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
        started_ms: 1,
        base_ms: now,
        entries: vec![entry(1.0e6)],
        penalties: vec![],
    });
    let nonsense = Frame::Counts(Counts {
        started_ms: 1,
        round: 2,
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
    // Heal: the node rejoins and the counts of both sides meet at the block's homes.
    nodes[2].set_isolated(false);
    assert!(
        wait(Duration::from_secs(60), || nodes.iter().all(|m| alive(m) == 2)).await,
        "rejoined: {:?}",
        nodes[2].peers()
    );
    let homes = nodes[0].homes(b);
    let at_homes = || nodes.iter().filter(|m| homes.contains(&m.fingerprint()));
    let converged = wait(Duration::from_secs(10), || {
        at_homes().all(|m| (m.rate(b, Caps::NONE).recipients - 9.0).abs() < 0.1)
    })
    .await;
    let rates: Vec<f64> = at_homes().map(|m| m.rate(b, Caps::NONE).recipients).collect();
    assert!(converged, "the block's homes hold both sides' counts after the heal: {rates:?}");
    assert_eq!(nodes[2].heard_share(), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_prove_its_address_counts_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, nodes) = mesh(dir.path(), 2).await;
    // A node with a valid certificate claiming an address where nobody
    // answers (as SWIM gossip naming a ghost would).
    let mut ghost = settings(dir.path(), &ca_key, "ghost");
    ghost.seeds = vec![nodes[0].local_addr()];
    ghost.advertise = Some("127.0.0.99:9".parse().unwrap());
    let ghost = Mesh::start(ghost).await.unwrap();
    assert!(
        wait(Duration::from_secs(20), || nodes[0].unverified() >= 1).await,
        "SWIM names the ghost to node 0"
    );
    tokio::time::sleep(INTERVAL * 10).await;
    assert_eq!(nodes[0].heard_share(), (1, 1), "the share counts the proved member only");
    assert!(
        nodes[0].peers().iter().all(|p| p.addr.ip().to_string() != "127.0.0.99"),
        "the ghost's address is no mesh address: {:?}",
        nodes[0].peers()
    );
    ghost.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_imposes_penalties_only_within_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, nodes) = mesh(dir.path(), 2).await;
    let hostile = hostile(dir.path(), &ca_key, "hostile");
    let victim = magicmx_gossip::tally::wire_block(block(7));
    let forever = PenaltyEntry { block: victim, until_ms: u64::MAX, strikes: 200 };
    let mut penalties = vec![forever];
    penalties.extend((1..=10_500u64).map(|n| PenaltyEntry {
        block: WireBlock { net: 0x0A00_0000 + (n << 8), prefix: 24 },
        until_ms: now_ms() + 60_000,
        strikes: 1,
    }));
    hostile.send(nodes[0].local_addr(), counts_frame(vec![], penalties), Delivery::Stream).await;
    assert!(
        wait(Duration::from_secs(10), || nodes[0].dropped_penalties() >= 501).await,
        "past 10,000 a minute the peer's penalties are dropped: {}",
        nodes[0].dropped_penalties()
    );
    let now = now_ms();
    let held = nodes[0].tally().penalties_held(now);
    let held = held.iter().find(|p| p.entry.block == victim).expect("held, within bounds").entry;
    assert!(held.until_ms <= now + 24 * 3600 * 1000, "cut to penalty_max: {held:?}");
    assert!(held.strikes <= 8, "strikes cut: {held:?}");
    // In force once the block's homes bear it out (this mesh's lenient
    // judge bears out every penalty), still within the bounds.
    assert!(wait(Duration::from_secs(5), || nodes[0].tally().penalty(block(7), now_ms()).is_some()).await);
    let in_force = nodes[0].tally().penalty(block(7), now_ms()).unwrap();
    assert!(in_force.until_ms <= now + 24 * 3600 * 1000 && in_force.strikes <= 8, "{in_force:?}");
    hostile.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalties_leave_with_a_member_gone_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let (_, nodes) = mesh_with(dir.path(), 2, |s| s.forget_after = Duration::from_secs(2)).await;
    let now = now_ms();
    nodes[1].tally().penalise(block(9), now + 3_600_000, 1);
    assert!(
        wait(Duration::from_secs(10), || nodes[0].tally().penalty(block(9), now_ms()).is_some()).await,
        "node 0 learns node 1's penalty"
    );
    nodes[1].shutdown();
    let forgotten = wait(Duration::from_secs(60), || {
        nodes[0].peers().is_empty() && nodes[0].tally().penalty(block(9), now_ms()).is_none()
    })
    .await;
    assert!(forgotten, "node 1 is forgotten with its penalty: {:?}", nodes[0].peers());
    // ...but it is still one of the members known, so forgetting it raised
    // no one's share of a limit (a split outlasting forget_after stays split).
    assert_eq!(nodes[0].heard_share(), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_tracking_a_million_blocks_brings_a_new_peer_up_to_date() {
    const BLOCKS: u32 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, nodes) = mesh_with(dir.path(), 1, |s| s.max_tracked = 3_000_000).await;
    let now = now_ms();
    for n in 0..BLOCKS {
        let block = SourceBlock::of_default(std::net::Ipv4Addr::from(n << 8).into());
        nodes[0].tally().record(block, Kind::Recipient, now);
    }
    let mut late = settings(dir.path(), &ca_key, "late");
    late.seeds = vec![nodes[0].local_addr()];
    late.max_tracked = 3_000_000;
    let late = Mesh::start(late).await.unwrap();
    let caught_up = wait(Duration::from_secs(120), || late.tally().tracked().0 >= BLOCKS as usize).await;
    assert!(caught_up, "the newcomer holds {} of {BLOCKS} blocks", late.tally().tracked().0);
    assert_eq!(late.stats().frames_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    late.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_held_to_its_connections_and_the_inbox_to_its_bytes() {
    use magicmx_gossip::transport::{CONNECTIONS_PER_PEER, INBOX_BYTES};
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, nodes) = mesh(dir.path(), 2).await;
    let target = nodes[0].local_addr();
    // Frames of 100,000 entries (about 3 MiB), each slow to merge.
    let entries: Vec<CountEntry> = (0..100_000u64)
        .map(|n| CountEntry {
            block: WireBlock { net: 0x0B00_0000 + (n << 8), prefix: 24 },
            recipients: 1.0,
            connections: 1.0,
            age_ms: 0,
            seq: 0,
            open: vec![],
        })
        .collect();
    let frame = counts_frame(entries, vec![]);
    // One certificate, six connections, ten frames each.
    let flooder = settings(dir.path(), &ca_key, "flooder");
    let floods: Vec<_> = (0..CONNECTIONS_PER_PEER + 2)
        .map(|_| {
            let (transport, frame) = (transport_for(&flooder), frame.clone());
            tokio::spawn(async move {
                for _ in 0..10 {
                    transport.send(target, frame.clone(), Delivery::Stream).await;
                }
                transport
            })
        })
        .collect();
    let _ = floods;
    let stats = nodes[0].stats();
    let _ = wait(Duration::from_secs(30), || stats.frames_received.load(Relaxed) >= 40).await;
    assert!(stats.inbox_peak_bytes.load(Relaxed) <= INBOX_BYTES as u64);
    assert!(
        wait(Duration::from_secs(10), || stats.connections_refused.load(Relaxed) >= 2).await,
        "connections past {CONNECTIONS_PER_PEER} for one certificate are closed"
    );
    // The honest peer is still heard.
    nodes[1].record(block(3), Kind::Recipient);
    assert!(wait(Duration::from_secs(30), || nodes[0].rate(block(3), Caps::NONE).recipients > 0.9).await);
}
