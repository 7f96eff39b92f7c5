//! The throttle as a spammer and an honest sender meet it: real node
//! processes on loopback, clients bound to their own 127.a.b.c source
//! addresses (each 127.a.b.0/24 a block of its own).

use std::time::{Duration, Instant};

use magicmx_tests::{
    connect_from, magicmx, python, specs, wait_for_maildir_files, wait_for_mesh, NodeProcess, RawClient, Spec,
};

/// Sends MESSAGES messages of one recipient each on one session per node
/// port, all sessions at once, from SOURCE; prints what was accepted.
const FLOOD: &str = r#"
import smtplib, sys, threading
source, count, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
lock = threading.Lock()
tally = {"accepted": 0, "rcpt_451": 0, "refused_at_connect": 0}
def flood(port):
    try:
        s = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30)
    except (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected, ConnectionError):
        with lock: tally["refused_at_connect"] += 1
        return
    s.ehlo("flood.test")
    for i in range(count):
        try:
            s.mail("bulk@flood.test")
            code, _ = s.rcpt("user%d@example.test" % i)
            if code != 250:
                if code == 451:
                    with lock: tally["rcpt_451"] += 1
                s.rset()
                continue
            code, _ = s.data(b"Subject: offer\r\n\r\nbuy now\r\n")
            if code == 250:
                with lock: tally["accepted"] += 1
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            break
    try:
        s.quit()
    except Exception:
        pass
threads = [threading.Thread(target=flood, args=(p,)) for p in ports]
for t in threads: t.start()
for t in threads: t.join()
print("accepted=%d rcpt_451=%d refused_at_connect=%d" % (tally["accepted"], tally["rcpt_451"], tally["refused_at_connect"]))
"#;

fn flood(source: &str, per_node: usize, nodes: &[&Spec]) -> (usize, String) {
    let mut args = vec![source.to_string(), per_node.to_string()];
    args.extend(nodes.iter().map(|s| s.smtp.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(FLOOD, &args);
    let accepted =
        out.split("accepted=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    (accepted, out)
}

/// Only the recipient limit acts: 30 an hour, connections unlimited.
const RECIPIENT_LIMIT: &str = "recipients_per_hour = 30\nconnections_per_minute = 1000\nhold = \"2s\"";

/// Connects from `source` and returns the first reply ("" if closed unanswered).
fn first_reply(spec: &Spec, source: &str) -> String {
    RawClient::from_stream(connect_from(source, spec.smtp_addr())).reply()
}

#[test]
fn a_block_within_its_limit_is_never_refused() {
    let root = tempfile::tempdir().unwrap();
    let spec = &specs(root.path(), 1, false, RECIPIENT_LIMIT)[0];
    let node = spec.start();
    let (accepted, out) = flood("127.0.41.1", 25, &[spec]);
    assert_eq!(accepted, 25, "{out}\n{}", node.log_text());
    assert!(!node.log_text().contains("penalised"));
}

#[test]
fn a_block_spraying_three_meshed_nodes_is_held_to_the_limit_but_not_without_the_mesh() {
    let root = tempfile::tempdir().unwrap();
    // With gossip: one mesh of three.
    let meshed = specs(&root.path().join("meshed"), 3, true, RECIPIENT_LIMIT);
    let nodes: Vec<NodeProcess> = meshed.iter().map(Spec::start).collect();
    assert!(wait_for_mesh(&nodes, Duration::from_secs(30)), "the mesh formed");
    let (accepted, out) = flood("127.0.42.1", 40, &meshed.iter().collect::<Vec<_>>());
    assert!(
        (27..=31).contains(&accepted),
        "accepted {accepted} of a limit of 30 across the mesh (0.9 to 1.05 of it): {out}"
    );
    drop(nodes);

    // Without: three lone nodes each allow the whole limit.
    let lone = specs(&root.path().join("lone"), 3, false, RECIPIENT_LIMIT);
    let _nodes: Vec<NodeProcess> = lone.iter().map(Spec::start).collect();
    let (accepted, out) = flood("127.0.43.1", 40, &lone.iter().collect::<Vec<_>>());
    assert!((81..=93).contains(&accepted), "about three limits without a mesh: {out}");
}

#[test]
fn trusted_sources_are_not_counted_gated_or_held() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = specs(root.path(), 1, false, RECIPIENT_LIMIT).remove(0);
    spec.trusted = vec!["127.0.44.5/32".into()];
    let node = spec.start();
    // Trusted: far over the limit, all taken, and nothing counted for the block...
    let (accepted, out) = flood("127.0.44.5", 45, &[&spec]);
    assert_eq!(accepted, 45, "{out}");
    let (accepted, out) = flood("127.0.44.6", 20, &[&spec]);
    assert_eq!(accepted, 20, "the trusted mail did not count against its neighbours: {out}");
    // ...an untrusted neighbour then overruns the limit and the block is penalised...
    let (accepted, out) = flood("127.0.44.7", 30, &[&spec]);
    assert!(accepted < 30, "{out}");
    assert!(node.log_text().contains("block penalised"), "{}", node.log_text());
    let refused = first_reply(&spec, "127.0.44.8");
    assert!(refused.starts_with("421 4.7.0"), "the penalised block is refused at connect: {refused}");
    // ...but the trusted source is not gated.
    let (accepted, out) = flood("127.0.44.5", 5, &[&spec]);
    assert_eq!(accepted, 5, "{out}");
}

/// SESSIONS threads at once from SOURCE, each sending ROUNDS messages on a
/// new connection per message (the close/open churn of an MTA's parallel
/// deliveries); prints how many were taken and how many refused.
const PARALLEL: &str = r#"
import smtplib, sys, threading
source, port, sessions, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
tally = {"taken": 0, "refused": 0}
def deliver():
    for _ in range(rounds):
        try:
            with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as s:
                s.sendmail("relay@partner.test", ["bob@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
            with lock: tally["taken"] += 1
        except (smtplib.SMTPException, ConnectionError) as e:
            with lock: tally["refused"] += 1
threads = [threading.Thread(target=deliver) for _ in range(sessions)]
for t in threads: t.start()
for t in threads: t.join()
print("taken=%d refused=%d" % (tally["taken"], tally["refused"]))
"#;

#[test]
fn a_trusted_mta_with_twenty_parallel_sessions_is_never_refused_by_the_per_ip_cap() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = specs(root.path(), 1, false, "connections_per_minute = 1000").remove(0);
    spec.trusted = vec!["127.0.56.5/32".into()];
    spec.smtp_keys = "max_connections_per_ip = 5".into();
    let node = spec.start();
    let port = spec.smtp.to_string();
    let out = python(PARALLEL, &["127.0.56.5", &port, "20", "5"]);
    assert!(out.contains("taken=100 refused=0"), "{out}\n{}", node.log_text());
    // The cap still holds for an untrusted address.
    let out = python(PARALLEL, &["127.0.57.5", &port, "20", "1"]);
    assert!(!out.contains("refused=0"), "the per-IP cap of 5 refuses some of 20 at once: {out}");
}

#[test]
fn trust_added_at_run_time_with_the_cli_takes_effect_and_survives_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let spec = specs(root.path(), 1, false, RECIPIENT_LIMIT).remove(0);
    let node = spec.start();
    let config = spec.dir.join("magicmx.toml");
    let config = config.to_str().unwrap();
    let (ok, out) =
        magicmx(&["trust", "add", "127.0.45.0/24", "--reason", "partner relay", "--config", config]);
    assert!(ok, "{out}");
    let (accepted, out) = flood("127.0.45.9", 40, &[&spec]);
    assert_eq!(accepted, 40, "trusted at once: {out}");
    node.kill9();
    let _node = spec.start();
    let (ok, list) = magicmx(&["trust", "list", "--config", config]);
    assert!(ok && list.contains("127.0.45.0/24") && list.contains("partner relay"), "{list}");
    let (ok, out) = magicmx(&["trust", "remove", "127.0.45.0/24", "--config", config]);
    assert!(ok, "{out}");
    let (ok, out) = magicmx(&["trust", "remove", "127.0.45.0/24", "--config", config]);
    assert!(!ok && out.contains("not trusted"), "{out}");
}

#[test]
fn trust_commands_without_a_running_node_fail_clearly() {
    let (ok, out) = magicmx(&["trust", "list", "--admin", "127.0.0.1:9"]);
    assert!(!ok);
    assert!(
        out.contains("cannot reach the node's admin API") && out.contains("is `magicmx run` running?"),
        "{out}"
    );
}

#[test]
fn a_trap_hit_at_one_node_makes_every_node_refuse_the_block_within_two_rounds() {
    let root = tempfile::tempdir().unwrap();
    let mut meshed = specs(root.path(), 3, true, RECIPIENT_LIMIT);
    meshed[0].trap = Some(magicmx_tests::claim_port());
    let nodes: Vec<NodeProcess> = meshed.iter().map(Spec::start).collect();
    assert!(wait_for_mesh(&nodes, Duration::from_secs(30)), "the mesh formed");
    let trap = format!("127.0.0.1:{}", meshed[0].trap.unwrap()).parse().unwrap();
    let mut hit = RawClient::from_stream(connect_from("127.0.46.66", trap));
    assert!(hit.reply().starts_with("421"), "the trap answers 421");
    let hit_at = Instant::now();
    // Gossip every 200 ms: two rounds. Each node is asked until it refuses
    // (asking a refusing node again would spend its polite refusals).
    let mut refusing = vec![false; meshed.len()];
    while !refusing.iter().all(|r| *r) && hit_at.elapsed() < Duration::from_secs(5) {
        for (spec, refused) in meshed.iter().zip(refusing.iter_mut()) {
            if !*refused {
                *refused = first_reply(spec, "127.0.46.1").starts_with("421 4.7.0");
            }
        }
    }
    let everywhere = refusing.iter().all(|r| *r);
    assert!(everywhere, "every node refuses the block");
    assert!(
        hit_at.elapsed() <= Duration::from_millis(400) + Duration::from_millis(300),
        "within two rounds: {:?}",
        hit_at.elapsed()
    );
    // Past the polite refusals, connections are closed without a word.
    let mut replies = vec![];
    for _ in 0..4 {
        replies.push(first_reply(&meshed[1], "127.0.46.2"));
    }
    assert_eq!(replies.last().unwrap(), "", "a repeat caller is closed unanswered: {replies:?}");
    assert!(first_reply(&meshed[1], "127.0.47.1").starts_with("220"), "another block is served");
}

#[test]
fn a_trap_hit_while_a_member_is_down_penalises_no_one_and_once_whole_it_does() {
    let root = tempfile::tempdir().unwrap();
    let mut meshed = specs(root.path(), 3, true, RECIPIENT_LIMIT);
    meshed[0].trap = Some(magicmx_tests::claim_port());
    let mut nodes: Vec<NodeProcess> = meshed.iter().map(Spec::start).collect();
    assert!(wait_for_mesh(&nodes, Duration::from_secs(30)), "the mesh formed");
    let trap = format!("127.0.0.1:{}", meshed[0].trap.unwrap()).parse().unwrap();
    // A member goes down: the sender may have been throttled there, where
    // the trap's node cannot see.
    nodes.pop().unwrap().kill9();
    let down = Instant::now();
    while !nodes[0].log_text().contains("mesh peer down") && down.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(nodes[0].log_text().contains("mesh peer down"), "{}", nodes[0].log_text());
    let hit = RawClient::from_stream(connect_from("127.0.52.66", trap)).reply();
    assert!(hit.starts_with("421"), "the trap still answers 421: {hit}");
    std::thread::sleep(Duration::from_millis(500));
    for spec in &meshed[..2] {
        let reply = first_reply(spec, "127.0.52.1");
        assert!(reply.starts_with("220"), "not penalised anywhere: {reply}");
    }
    assert!(nodes[0].log_text().contains("hears less than the whole mesh: not penalised"));
    // The member is back: the trap speaks for the whole mesh again.
    nodes.push(meshed[2].start());
    assert!(wait_for_mesh(&nodes, Duration::from_secs(30)), "the mesh formed again");
    let whole = Instant::now();
    let mut penalised = false;
    while !penalised && whole.elapsed() < Duration::from_secs(20) {
        // A block of its own each time: a spared hit leaves nothing behind.
        let source = format!("127.0.{}.66", 53 + whole.elapsed().as_secs());
        RawClient::from_stream(connect_from(&source, trap)).reply();
        std::thread::sleep(Duration::from_millis(300));
        penalised = first_reply(&meshed[0], &source.replace(".66", ".1")).starts_with("421");
    }
    assert!(penalised, "a trap hit penalises once every member is heard:\n{}", nodes[0].log_text());
}

#[test]
fn penalties_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = specs(root.path(), 1, false, RECIPIENT_LIMIT).remove(0);
    spec.trap = Some(magicmx_tests::claim_port());
    let node = spec.start();
    let trap = format!("127.0.0.1:{}", spec.trap.unwrap()).parse().unwrap();
    RawClient::from_stream(connect_from("127.0.48.66", trap)).reply();
    assert!(first_reply(&spec, "127.0.48.1").starts_with("421"));
    // The trap, like the gate, answers three times per penalty, then closes silently.
    let again: Vec<String> =
        (0..2).map(|_| RawClient::from_stream(connect_from("127.0.48.66", trap)).reply()).collect();
    assert!(again[0].starts_with("421") && again[1].is_empty(), "{again:?}");
    assert_eq!(node.log_text().matches("reason=\"trap hit\"").count(), 1, "one penalty, logged once");
    std::thread::sleep(Duration::from_millis(500));
    node.kill9();
    let node = spec.start();
    let reply = first_reply(&spec, "127.0.48.2");
    assert!(
        reply.starts_with("421 4.7.0"),
        "still penalised after the restart: {reply}\n{}",
        node.log_text()
    );
}

#[test]
fn during_a_flood_from_one_block_another_blocks_message_is_accepted_and_delivered() {
    let root = tempfile::tempdir().unwrap();
    let spec = specs(root.path(), 1, false, RECIPIENT_LIMIT).remove(0);
    let node = spec.start();
    let flooder = {
        let spec = spec.clone();
        std::thread::spawn(move || flood("127.0.49.1", 200, &[&spec, &spec, &spec, &spec]))
    };
    std::thread::sleep(Duration::from_millis(300));
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.50.1", 0), timeout=30)
s.sendmail("alice@client.test", ["bob@example.test"], b"Subject: honest\r\n\r\nhello\r\n")
s.quit()
print("sent")
"#;
    let out = python(script, &[&spec.smtp.to_string()]);
    assert!(out.contains("sent"), "{out}");
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "{}", node.log_text());
    let (accepted, out) = flooder.join().unwrap();
    assert!(accepted <= 33, "the flood itself was held to the limit: {out}");
}
