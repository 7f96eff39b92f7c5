//! A mesh of strangers over real QUIC: four members, three honest (the
//! node's own limits as their judge) and one hostile — a member with a valid
//! certificate whose judge lies ("no" to every question it is home for) and
//! which, from a second socket with the same certificate, sends what a
//! compromised node would in the real wire format: penalties on a block
//! that is within its limit, counts from an hour ahead and nonsense, a
//! restart in every frame, SWIM gossip that an honest member is down, and
//! revocations of an honest member that the mesh CA never signed.
//! The hostile parts are this test's code; the shipped binary has none.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, Member, PostcardCodec, State};
use magicmx_gossip::counts::{BlockView, Fingerprint};
use magicmx_gossip::identity::NodeId;
use magicmx_gossip::tally::{now_ms, wire_block};
use magicmx_gossip::transport::{Delivery, Transport};
use magicmx_gossip::{pki, tls, Judge, Kind, Mesh, MeshSettings, Penalty, Question, Tally};
use magicmx_node::settings::ThrottleSettings;
use magicmx_proto::wire::{encode, Ask, CountEntry, Counts, Frame, PenaltyEntry, Revocation};
use magicmx_proto::SourceBlock;
use magicmx_tests::wait_for;
use rand::SeedableRng;

const INTERVAL: Duration = Duration::from_millis(200);

/// The hostile member's judge: "no" to everything it is asked as a home.
struct SaysNo;

impl Judge for SaysNo {
    fn recipient(&self, _: &BlockView, _: f64) -> bool {
        false
    }
    fn connection(&self, _: &BlockView, _: f64) -> bool {
        true
    }
    fn sealed(&self, _: &BlockView, _: f64, _: Fingerprint, _: u32) -> bool {
        false
    }
    fn seen(&self, _: &BlockView) -> bool {
        true
    }
    fn penalty(&self, _: Option<Penalty>, _: &BlockView, _: f64, now_ms: u64) -> Penalty {
        Penalty { until_ms: now_ms + 86_400_000, strikes: 8 }
    }
}

fn settings(dir: &Path, ca_key: &str, name: &str) -> MeshSettings {
    let pem = pki::issue_for_days(ca_key, name, 30).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, pem.cert).unwrap();
    std::fs::write(&key, pem.key).unwrap();
    let mut s = MeshSettings::new(name, "127.0.0.1:0".parse().unwrap(), dir.join("ca.pem"), cert, key);
    s.interval = INTERVAL;
    s
}

fn alive(m: &Mesh) -> usize {
    m.peers().iter().filter(|p| p.alive).count()
}

/// One message of one recipient through `node`, as the node's RCPT and
/// hold take it: reserve and ask, then seal and ask both homes.
async fn message(node: &Mesh, block: SourceBlock, txn: u32) -> bool {
    let tally = node.tally();
    tally.record(block, Kind::Connection, now_ms());
    tally.reserve(block, txn, 1, now_ms());
    if !node.ask(block, Question::Recipient).await.yes {
        tally.release(block, txn, 1, now_ms());
        return false;
    }
    tally.seal(block, txn, now_ms());
    let taken = node.ask(block, Question::Sealed { id: txn }).await.yes;
    tally.settle(block, txn, taken, now_ms());
    taken
}

fn weight_of(node: &Mesh, member: Fingerprint) -> f64 {
    node.standing().iter().find(|m| m.fingerprint == member).map_or(1.0, |m| m.weight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_member_neither_evicts_nor_starves_nor_penalises_the_honest_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::new_ca(1).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert).unwrap();
    let limits = Arc::new(ThrottleSettings::default().limits());
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut s = settings(dir.path(), &ca.key, &format!("honest{i}"));
        s.seeds = nodes.first().map(|n: &Mesh| vec![n.local_addr()]).unwrap_or_default();
        let tally = Arc::new(Tally::new(s.engine_settings(), limits.clone()));
        nodes.push(Mesh::start_with(s, tally).await.unwrap());
    }
    let mut bad = settings(dir.path(), &ca.key, "hostile");
    bad.seeds = vec![nodes[0].local_addr()];
    let tally = Arc::new(Tally::new(bad.engine_settings(), Arc::new(SaysNo)));
    let liar = Mesh::start_with(bad.clone(), tally).await.unwrap();
    let liar_fp = liar.fingerprint();
    assert!(
        wait_for(Duration::from_secs(30), || nodes.iter().all(|n| alive(n) == 3) && alive(&liar) == 3).await,
        "the four members see each other"
    );
    // Past every node's warm-up.
    tokio::time::sleep(INTERVAL * 10).await;

    // 1. A lying home starves nothing: person-to-person mail from blocks
    //    whose primary home is the liar is taken at every honest node.
    let blocks: Vec<SourceBlock> = (1..=250u8)
        .map(|n| SourceBlock::of_default(format!("198.51.{n}.9").parse().unwrap()))
        .filter(|b| nodes[0].homes(*b).first() == Some(&liar_fp))
        .take(6)
        .collect();
    assert!(blocks.len() >= 3, "blocks the liar is primary home of");
    let mut txn = 1;
    for (k, block) in blocks.iter().enumerate() {
        let node = &nodes[k % 3];
        assert!(message(node, *block, txn).await, "a person-to-person message from {block} deferred");
        txn += 1;
    }
    assert!(
        nodes.iter().any(|n| weight_of(n, liar_fp) < 1.0),
        "the liar was outvoted: {:?}",
        nodes.iter().map(|n| weight_of(n, liar_fp)).collect::<Vec<_>>()
    );

    // 2. From a second socket with the liar's own certificate: what a
    //    compromised member sends.
    let config =
        tls::load(&bad.ca_cert, &bad.cert, &bad.key, Default::default(), Duration::from_secs(10)).unwrap();
    let (inbox, mut replies) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while replies.recv().await.is_some() {} });
    let forger = Transport::bind("127.0.0.1:0".parse().unwrap(), config, inbox).unwrap();
    let send = |to: std::net::SocketAddr, frame: Frame| {
        let forger = forger.clone();
        async move { forger.send(to, Arc::new(encode(&frame)), Delivery::Stream).await }
    };
    // A block that came through the mesh and is well within its limit,
    // penalised for a day, at every honest node.
    let legit = blocks[0];
    let forged = PenaltyEntry { block: wire_block(legit), until_ms: now_ms() + 86_400_000, strikes: 8 };
    let penalties =
        Counts { round: 9, started_ms: 1, base_ms: now_ms(), entries: vec![], penalties: vec![forged] };
    for n in &nodes {
        send(n.local_addr(), Frame::Counts(penalties.clone())).await;
    }
    tokio::time::sleep(INTERVAL * 10).await;
    for (i, n) in nodes.iter().enumerate() {
        assert!(n.tally().penalty(legit, now_ms()).is_none(), "node {i} holds the forged penalty in force");
    }
    assert!(message(&nodes[1], legit, txn).await, "the legitimate block is still taken");

    // 3. Counts from an hour ahead, and nonsense: refused, and the member caught.
    let entry = |r: f32| CountEntry {
        block: wire_block(legit),
        recipients: r,
        connections: r,
        age_ms: 0,
        seq: 0,
        open: vec![],
    };
    let ahead = Counts {
        round: 10,
        started_ms: 1,
        base_ms: now_ms() + 3_700_000,
        entries: vec![entry(28.0)],
        penalties: vec![],
    };
    let nonsense = Ask {
        id: 1,
        base_ms: now_ms(),
        block: wire_block(legit),
        question: Question::Recipient,
        entry: Some(entry(f32::NAN)),
    };
    for n in &nodes {
        send(n.local_addr(), Frame::Counts(ahead.clone())).await;
        send(n.local_addr(), Frame::Ask(nonsense.clone())).await;
    }
    assert!(
        wait_for(Duration::from_secs(10), || nodes.iter().all(|n| weight_of(n, liar_fp) == 0.0)).await,
        "every honest node weighs the liar's word at nothing: {:?}",
        nodes.iter().map(|n| n.standing().into_iter().find(|m| m.fingerprint == liar_fp)).collect::<Vec<_>>()
    );
    assert!(
        wait_for(Duration::from_secs(10), || nodes
            .iter()
            .all(|n| n.engine_stats().clock_refused >= 1 && n.rejected_entries() >= 1))
        .await,
        "each refused the frame from an hour ahead and the nonsense entries: {:?}",
        nodes
            .iter()
            .map(|n| (n.engine_stats(), n.stats().frames_dropped.load(std::sync::atomic::Ordering::Relaxed)))
            .collect::<Vec<_>>()
    );

    // 4. A restart in every frame: believed once at most in ten minutes.
    let refused_before = nodes[0].engine_stats().restarts_refused;
    for started in [now_ms(), now_ms() + 1, now_ms() + 2] {
        let restart = Counts {
            round: 12,
            started_ms: started,
            base_ms: now_ms(),
            entries: vec![entry(1.0)],
            penalties: vec![],
        };
        send(nodes[0].local_addr(), Frame::Counts(restart)).await;
    }
    assert!(
        wait_for(Duration::from_secs(5), || nodes[0].engine_stats().restarts_refused >= refused_before + 2)
            .await
    );

    // 5. SWIM gossip that honest1 is down, from an identity at the liar's
    //    address and certificate, with honest1's identity bumped past its own.
    let target = nodes[0].peers().into_iter().find(|p| p.name == "honest1").expect("honest0 knows honest1");
    let forged_self = NodeId {
        name: "hostile".into(),
        addr: forger.local_addr(),
        fingerprint: liar_fp,
        started_ms: 1,
        bump: 1,
    };
    let accused = NodeId {
        name: target.name.clone(),
        addr: target.addr,
        fingerprint: target.fingerprint,
        started_ms: 1,
        bump: u64::MAX / 2,
    };
    let mut foca =
        Foca::new(forged_self, foca::Config::simple(), rand::rngs::SmallRng::seed_from_u64(7), PostcardCodec);
    let mut runtime = AccumulatingRuntime::new();
    foca.apply_many(std::iter::once(Member::new(accused.clone(), 9, State::Down)), true, &mut runtime)
        .unwrap();
    let to = NodeId {
        name: String::new(),
        addr: nodes[0].local_addr(),
        fingerprint: nodes[0].fingerprint(),
        started_ms: 0,
        bump: 0,
    };
    for _ in 0..5 {
        foca.announce(to.clone(), &mut runtime).unwrap();
        while let Some((_, packet)) = runtime.to_send() {
            send(nodes[0].local_addr(), Frame::Swim(packet.to_vec())).await;
        }
        tokio::time::sleep(INTERVAL).await;
    }
    tokio::time::sleep(INTERVAL * 15).await;
    let seen = nodes[0].peers();
    assert!(
        seen.iter().any(|p| p.name == "honest1" && p.alive),
        "honest0 still takes honest1 as up: {seen:?}"
    );
    assert_eq!(nodes[0].heard_share().0, 3, "and hears the whole mesh: {:?}", nodes[0].heard_share());

    // 5. Revocations of an honest member signed by a CA of the liar's own:
    //    a frame of 4,096 of them. None is taken, the member stays up, and
    //    the liar is caught for it (one signature check per frame).
    let own_ca = pki::new_ca(1).unwrap();
    let (ok, honest1) = magicmx_tests::magicmx(&[
        "mesh",
        "fingerprint",
        "--cert",
        dir.path().join("honest1.pem").to_str().unwrap(),
    ]);
    assert!(ok, "{honest1}");
    let honest1 = tls::parse_revoked(honest1.trim()).unwrap();
    let forged = magicmx_gossip::revocation::sign(&own_ca.key, honest1, now_ms()).unwrap();
    let flood: Vec<Revocation> =
        (0..4096u64).map(|n| Revocation { at_ms: forged.at_ms + n, ..forged.clone() }).collect();
    let forgeries = |n: &Mesh| {
        let report = n.standing().into_iter().find(|m| m.fingerprint == liar_fp);
        report
            .and_then(|m| m.standing.contradicted.get("passed on a revocation the CA did not sign").copied())
    };
    send(nodes[0].local_addr(), Frame::Revoked(flood)).await;
    tokio::time::sleep(INTERVAL * 5).await;
    assert!(nodes[0].revocations().is_empty(), "no forged revocation is kept");
    assert!(nodes[0].peers().iter().any(|p| p.name == "honest1" && p.alive), "honest1 stays up");
    assert_eq!(forgeries(&nodes[0]), Some(1), "the liar is caught once for the frame of forgeries");

    for n in nodes.iter().chain([&liar]) {
        n.shutdown();
    }
    forger.close();
}
