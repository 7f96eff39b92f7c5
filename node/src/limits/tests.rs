//! The limits replayed without a clock or a socket: simulated nodes, each
//! with a real count CRDT, exchanging their registers as the mesh does, with
//! hours of traffic run in microseconds.

use std::time::Duration;

use magicmx_gossip::counts::{Counts, Fingerprint, Kind, Periods};
use magicmx_gossip::Penalty;
use magicmx_proto::wire::WireBlock;

use super::{Limits, TxnId, Verdict};

const BLOCK: WireBlock = WireBlock { net: 0xC633_6400, prefix: 24 };
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn limits(recipients_per_hour: f64) -> Limits {
    Limits {
        recipients_per_hour,
        connections_per_minute: 20.0,
        penalty: Duration::from_secs(15 * 60),
        penalty_max: Duration::from_secs(24 * 3600),
        comeback_recipients: 5.0,
        peer_share: 0.95,
        periods: Periods::default(),
    }
}

/// Nodes of a simulated mesh, each with its own counts.
struct Mesh {
    nodes: Vec<Counts>,
    next_id: u32,
}

fn fingerprint(node: usize) -> Fingerprint {
    [node as u8 + 1; 16]
}

impl Mesh {
    fn new(n: usize) -> Mesh {
        let mut nodes: Vec<Counts> =
            (0..n).map(|i| Counts::new(fingerprint(i), Periods::default())).collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            for j in (0..n).filter(|&j| j != i) {
                node.origin(fingerprint(j));
            }
        }
        Mesh { nodes, next_id: 1 }
    }

    /// One gossip round: every node's whole state to every other.
    fn round(&mut self, now: u64) {
        let states: Vec<_> = self.nodes.iter().map(|n| n.own_state(now)).collect();
        for (i, entries) in states.iter().enumerate() {
            for (j, node) in self.nodes.iter_mut().enumerate() {
                if i != j {
                    let origin = node.origin(fingerprint(i)).unwrap();
                    for entry in entries {
                        node.merge(origin, now, entry, now);
                    }
                }
            }
        }
    }

    /// A transaction at `node` offering `recipients` at `now`: reserves what
    /// fits, one by one as RCPT does; returns its id and how many fitted.
    fn rcpts(&mut self, limits: &Limits, node: usize, recipients: u16, now: u64) -> (u32, u16) {
        let id = self.next_id;
        self.next_id += 1;
        let mut fitted = 0;
        for _ in 0..recipients {
            if limits.recipient(&self.nodes[node].view(BLOCK, now), 1.0) == Verdict::Within {
                self.nodes[node].reserve(BLOCK, id, 1, now);
                fitted += 1;
            }
        }
        (id, fitted)
    }

    /// The hold's verdict on transaction `id` at `node`; it is settled accordingly.
    fn hold(&mut self, limits: &Limits, node: usize, id: u32, now: u64) -> Verdict {
        let mine = TxnId { origin: fingerprint(node), id };
        let verdict = limits.admit(&self.nodes[node].view(BLOCK, now), 1.0, mine);
        self.nodes[node].settle(BLOCK, id, verdict == Verdict::Within, now);
        verdict
    }
}

/// A whole transaction alone at one node: RCPTs, seal, hold.
fn send(mesh: &mut Mesh, limits: &Limits, node: usize, recipients: u16, now: u64) -> u16 {
    let (id, fitted) = mesh.rcpts(limits, node, recipients, now);
    if fitted == 0 {
        mesh.nodes[node].settle(BLOCK, id, false, now);
        return 0;
    }
    mesh.nodes[node].seal(BLOCK, id, now);
    match mesh.hold(limits, node, id, now) {
        Verdict::Within => fitted,
        Verdict::Over => 0,
    }
}

#[test]
fn a_burst_sprayed_over_three_nodes_at_once_gets_the_limit_once() {
    let limits = limits(10.0);
    let mut mesh = Mesh::new(3);
    // Twelve one-recipient messages, four at each node, all in one round:
    // every RCPT fits by its node's own view.
    let mut txns = vec![];
    for k in 0..12 {
        let node = k % 3;
        let (id, fitted) = mesh.rcpts(&limits, node, 1, 1_000);
        assert_eq!(fitted, 1);
        txns.push((node, id));
    }
    for (k, &(node, id)) in txns.iter().enumerate() {
        mesh.nodes[node].seal(BLOCK, id, 1_100 + k as u64 % 5);
    }
    // The hold: one round after the last seal, then each node decides its own.
    mesh.round(1_200);
    let taken =
        txns.iter().filter(|&&(node, id)| mesh.hold(&limits, node, id, 1_200) == Verdict::Within).count();
    assert_eq!(taken, 10, "the limit, not zero and not three limits");
    mesh.round(1_400);
    let seen: Vec<f64> = mesh.nodes.iter().map(|n| limits.usage(&n.view(BLOCK, 1_400)).recipients).collect();
    assert!(seen.iter().all(|&s| (s - 10.0).abs() < 0.01), "every node counts the same ten: {seen:?}");
}

#[test]
fn every_node_orders_transactions_alike_so_a_big_one_does_not_starve_a_small_one() {
    let limits = limits(10.0);
    let mut mesh = Mesh::new(3);
    let (a, _) = mesh.rcpts(&limits, 0, 5, 0);
    let (b, _) = mesh.rcpts(&limits, 1, 8, 0);
    let (c, _) = mesh.rcpts(&limits, 2, 2, 0);
    mesh.nodes[0].seal(BLOCK, a, 10);
    mesh.nodes[1].seal(BLOCK, b, 11);
    mesh.nodes[2].seal(BLOCK, c, 12);
    mesh.round(100);
    let verdicts =
        [mesh.hold(&limits, 0, a, 100), mesh.hold(&limits, 1, b, 100), mesh.hold(&limits, 2, c, 100)];
    assert_eq!(verdicts, [Verdict::Within, Verdict::Over, Verdict::Within], "5 + 2 taken, the 8 did not fit");
}

#[test]
fn a_block_within_its_limit_over_a_day_is_never_refused() {
    // A person-to-person sender: three recipients every ten minutes, for a
    // day, over three nodes in turn — 18 an hour against a limit of 30.
    let limits = limits(30.0);
    let mut mesh = Mesh::new(3);
    let mut now = 0;
    for k in 0..144 {
        mesh.round(now);
        assert_eq!(send(&mut mesh, &limits, k % 3, 3, now), 3, "message {k} at {} min", now / MIN);
        now += 10 * MIN;
    }
}

#[test]
fn over_a_window_a_block_gets_its_limit_however_it_sprays() {
    let limits = limits(30.0);
    // One node, many small messages.
    let mut one = Mesh::new(3);
    let alone: u16 = (0..60).map(|k| send(&mut one, &limits, 0, 1, k * 1_000)).sum();
    // Sequentially: one node until refused, then the next, with rounds between.
    let mut sequential = Mesh::new(3);
    let mut taken = 0;
    for node in 0..3 {
        for k in 0..40 {
            taken += send(&mut sequential, &limits, node, 1, node as u64 * 60_000 + k * 1_000);
        }
        sequential.round(node as u64 * 60_000 + 50_000);
    }
    // Concurrently: ten-recipient messages on every node in the same rounds.
    let mut burst = Mesh::new(3);
    let mut txns = vec![];
    for node in 0..3 {
        for _ in 0..4 {
            let (id, fitted) = burst.rcpts(&limits, node, 10, 0);
            txns.push((node, id, fitted));
        }
    }
    for &(node, id, _) in &txns {
        burst.nodes[node].seal(BLOCK, id, 5);
    }
    burst.round(100);
    let concurrent: u16 = txns
        .iter()
        .filter(|&&(_, _, fitted)| fitted > 0)
        .filter(|&&(node, id, _)| burst.hold(&limits, node, id, 100) == Verdict::Within)
        .map(|&(_, _, fitted)| fitted)
        .sum();
    for (how, got) in [("one node", alone), ("sequential", taken), ("concurrent", concurrent)] {
        let factor = f64::from(got) / 30.0;
        assert!((0.9..=1.05).contains(&factor), "{how}: {got} of 30 ({factor:.2})");
    }
}

#[test]
fn refused_recipients_do_not_use_up_the_allowance() {
    let limits = limits(30.0);
    let mut mesh = Mesh::new(1);
    assert_eq!(send(&mut mesh, &limits, 0, 30, 0), 30);
    // A thousand more asked for in the next minute: none fit, none count.
    for k in 0..1000 {
        assert_eq!(send(&mut mesh, &limits, 0, 1, k * 60), 0);
    }
    let used = limits.usage(&mesh.nodes[0].view(BLOCK, MIN)).recipients;
    assert!(used <= 30.0, "only what was taken counts: {used}");
}

#[test]
fn a_message_over_what_is_left_gets_what_fits_and_its_retry_the_rest() {
    let limits = limits(30.0);
    let mut mesh = Mesh::new(1);
    assert_eq!(send(&mut mesh, &limits, 0, 25, 0), 25);
    // Eight recipients, five left: five are taken now.
    assert_eq!(send(&mut mesh, &limits, 0, 8, 1_000), 5);
    // The sender is told to come back after the penalty; the other three fit then.
    let view = mesh.nodes[0].view(BLOCK, 1_000);
    let penalty = limits.next_penalty(None, &view, 1.0, 1_000);
    assert_eq!(
        send(&mut mesh, &limits, 0, 3, penalty.until_ms),
        3,
        "the retry after {} s",
        penalty.until_ms / 1000
    );
}

#[test]
fn a_penalty_imposed_under_part_of_the_mesh_lasts_its_plain_length() {
    let limits = limits(30.0);
    let mut mesh = Mesh::new(1);
    // A third of the mesh heard: a third of the limit, used up.
    assert_eq!(send(&mut mesh, &limits, 0, 30, 0), 30);
    let view = mesh.nodes[0].view(BLOCK, 1_000);
    let whole = limits.next_penalty(None, &view, 1.0, 1_000);
    let part = limits.next_penalty(None, &view, 1.0 / 3.0, 1_000);
    assert_eq!(part.until_ms, 1_000 + 15 * MIN, "the plain first penalty, not until 10 fit again");
    assert!(whole.until_ms >= part.until_ms);
    assert_eq!(part.strikes, 1);
}

#[test]
fn a_sender_told_to_come_back_after_t_is_taken_at_t() {
    for limit in [4.0, 10.0, 30.0, 300.0] {
        let limits = limits(limit);
        let mut mesh = Mesh::new(3);
        // The block floods all three nodes in one round.
        let mut txns = vec![];
        for node in 0..3 {
            let (id, fitted) = mesh.rcpts(&limits, node, 100, 0);
            mesh.nodes[node].seal(BLOCK, id, 10 + node as u64);
            txns.push((node, id, fitted));
        }
        mesh.round(500);
        for &(node, id, _) in &txns {
            mesh.hold(&limits, node, id, 500);
        }
        mesh.round(600);
        let view = mesh.nodes[1].view(BLOCK, 600);
        let penalty = limits.next_penalty(None, &view, 1.0, 600);
        assert!(penalty.until_ms >= 600 + 15 * MIN, "at least the first penalty's length");
        // At T, a person-to-person message on a new connection to any node is taken.
        let t = penalty.until_ms;
        mesh.round(t);
        mesh.nodes[2].record(BLOCK, Kind::Connection, t);
        assert_eq!(limits.connection(&mesh.nodes[2].view(BLOCK, t), 1.0), Verdict::Within);
        let wanted = 5.0f64.min(limit / 2.0) as u16;
        assert_eq!(
            send(&mut mesh, &limits, 2, wanted, t),
            wanted,
            "limit {limit}: come back at {} min",
            t / MIN
        );
    }
}

#[test]
fn strikes_grow_only_for_abuse_after_a_penalty_ends() {
    let limits = limits(30.0);
    let mut mesh = Mesh::new(1);
    send(&mut mesh, &limits, 0, 30, 0);
    let first = limits.next_penalty(None, &mesh.nodes[0].view(BLOCK, 0), 1.0, 0);
    assert_eq!(first.strikes, 1);
    // Asked again and again during the penalty (and concurrently: the same
    // `last` seen twice): the same penalty, no longer, no new strike.
    for t in [0, 1, MIN, first.until_ms - 1] {
        let again = limits.next_penalty(Some(first), &mesh.nodes[0].view(BLOCK, t), 1.0, t);
        assert_eq!(again, first);
    }
    assert_eq!(
        limits.next_penalty(None, &mesh.nodes[0].view(BLOCK, 0), 1.0, 0),
        first,
        "a concurrent first offence"
    );
    // Abuse after it ended: the second penalty is twice as long.
    let t = first.until_ms + MIN;
    send(&mut mesh, &limits, 0, 30, t);
    let second = limits.next_penalty(Some(first), &mesh.nodes[0].view(BLOCK, t), 1.0, t);
    assert_eq!(second.strikes, 2);
    assert!(second.until_ms - t >= 30 * MIN, "doubled: {} min", (second.until_ms - t) / MIN);
    // A day later the block starts afresh.
    let t = second.until_ms + 25 * HOUR;
    let fresh = limits.next_penalty(Some(second), &mesh.nodes[0].view(BLOCK, t), 1.0, t);
    assert_eq!(fresh.strikes, 1);
}

#[test]
fn repeated_abuse_reaches_the_maximum_and_no_further() {
    let limits = limits(30.0);
    let mut last: Option<Penalty> = None;
    let mut now = 0;
    let mut mesh = Mesh::new(1);
    let mut lengths = vec![];
    for _ in 0..10 {
        send(&mut mesh, &limits, 0, 40, now);
        let p = limits.next_penalty(last, &mesh.nodes[0].view(BLOCK, now), 1.0, now);
        lengths.push((p.until_ms - now) / MIN);
        last = Some(p);
        now = p.until_ms;
    }
    assert_eq!(&lengths[..5], &[15, 30, 60, 120, 240], "doubling from 15 minutes");
    assert_eq!(*lengths.last().unwrap(), 24 * 60, "at most a day: {lengths:?}");
}

#[test]
fn one_hostile_peer_cannot_lock_a_block_out() {
    let limits = limits(30.0);
    let mut node = Counts::new(fingerprint(0), Periods::default());
    let hostile = node.origin(fingerprint(9)).unwrap();
    let claim = magicmx_proto::wire::CountEntry {
        block: BLOCK,
        recipients: 1.0e6,
        connections: 1.0e6,
        age_ms: 0,
        seq: 0,
        open: vec![],
    };
    node.merge(hostile, 0, &claim, 0);
    assert_eq!(limits.recipient(&node.view(BLOCK, 0), 1.0), Verdict::Within, "the cap leaves room");
    let used = limits.usage(&node.view(BLOCK, 0));
    assert!((used.recipients - 28.5).abs() < 1e-9, "{used:?}");
}
