//! The promise, judged by real MTAs: a legitimate sender is at worst
//! delayed, never bounced. Each test builds a small Internet in a network
//! namespace, as a postmaster deploys the mesh:
//!
//! ```text
//! example.test.  MX 10 mx.mesh.test.      127.0.1.1 (n1), 127.0.1.2 (n2): the magic MX
//!                MX 20 mail.example.test. 127.0.2.1: the real MX, Postfix asking n3's policy service
//!                MX 99 trap.mesh.test.    127.0.1.99: the trap, a listener of n1
//! n3 (127.0.1.3) serves the policy service; 127.0.2.2 is smtp-sink, the mailbox behind the real MX.
//! The sender: Postfix at 127.0.3.1, resolving MX records through the world's DNS server;
//! its user hands it mail from 127.0.4.1. Its neighbour 127.0.3.50 spams; a bot at 127.0.5.1
//! skips the mesh; a bot at 127.0.6.1 goes straight for the trap.
//! ```
//!
//! The sender's Postfix retries every 5–10 s, so each test shows, in the
//! sender's own log, that its message was deferred (never bounced) while
//! the mesh throttled it or could not be reached, and then delivered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use magicmx_tests::CHECKS_OFF;
use magicmx_tests::{
    certified_nodes, magicmx, wait_until, NodeProcess, Postfix, Sink, World, Zone, RESOLVER,
};

const NODES: [(&str, &str); 3] = [("n1", "127.0.1.1"), ("n2", "127.0.1.2"), ("n3", "127.0.1.3")];
const TRAP: &str = "127.0.1.99";
const REAL_MX: &str = "127.0.2.1";
const MAILBOX: &str = "127.0.2.2";
const SENDER: &str = "127.0.3.1";
const USER: &str = "127.0.4.1";

fn at25(ip: &str) -> SocketAddr {
    format!("{ip}:25").parse().unwrap()
}

fn zones() -> Vec<Zone> {
    let ip = |s: &str| s.parse().unwrap();
    vec![
        Zone::new("example.test")
            .mx(10, "mx.mesh.test")
            .mx(20, "mail.example.test")
            .mx(99, "trap.mesh.test")
            .a("mail.example.test", ip(REAL_MX)),
        Zone::new("mesh.test")
            .a("mx.mesh.test", ip(NODES[0].1))
            .a("mx.mesh.test", ip(NODES[1].1))
            .a("trap.mesh.test", ip(TRAP)),
        Zone::new("client.test").a("mta.client.test", ip(SENDER)),
    ]
}

/// The whole deployment, torn down when dropped.
struct Deployment {
    nodes: Vec<Option<NodeProcess>>,
    dirs: Vec<PathBuf>,
    configs: Vec<String>,
    sender: Postfix,
    real_mx: Postfix,
    sink: Sink,
    world: World,
    _root: tempfile::TempDir,
}

/// How the real MX is wired to the mesh.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wiring {
    /// The nodes deliver by MX to port 25, where the policy service lets them in.
    Policy,
    /// As `magicmx dns-records` prints it: the nodes deliver to a listener
    /// of the mesh's own and hand over the original client with XCLIENT.
    Xclient,
    /// The same, but that listener trusts the nodes with XFORWARD only
    /// (logs and filters see the client; restrictions still see the node).
    Xforward,
}

/// The parts of `magicmx dns-records`' output, by file (`main.cf`, …).
fn dns_records(postfix_dir: &Path) -> std::collections::HashMap<String, String> {
    let (ok, out) = magicmx(&[
        "dns-records",
        "--domain",
        "example.test",
        "--magic-mx",
        "mx.mesh.test",
        "--real-mx",
        "mail.example.test",
        "--policy",
        &format!("{}:10040", NODES[2].1),
        // The nodes reach the real MX from 127.0.0.1, the loopback's own address.
        "--mesh-nodes",
        "127.0.0.1",
        "--mesh-listen",
        &format!("{REAL_MX}:2525"),
        "--postfix-dir",
        postfix_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let mut parts = std::collections::HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("# ---- ").and_then(|l| l.split(" ----").next()) {
            parts.extend(current.take());
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    parts.extend(current);
    parts
}

/// A node's configuration; `domain` is what its `[[domain]]` says besides
/// the name (the route, and `xclient` as printed).
fn node_config(name: &str, ip: &str, dir: &Path, throttle: &str, domain: &str, extras: &Extras) -> String {
    let delivery = extras.delivery;
    let checks = match extras.callouts {
        true => CHECKS_OFF.replace("verify_recipients = false", "verify_recipients = true"),
        false => CHECKS_OFF.to_string(),
    };
    let d = dir.display();
    let seeds: Vec<String> =
        NODES.iter().filter(|(n, _)| *n != name).map(|(_, ip)| format!("\"{ip}:7946\"")).collect();
    let trap = if name == "n1" { format!("[trap]\nlisten = [\"{TRAP}:25\"]\n") } else { String::new() };
    format!(
        r#"[node]
name = "{name}"
data_dir = "{d}/data"
nice = 0

[smtp]
listen = ["{ip}:25"]
hostname = "{name}.mesh.test"
greet_pause = "0s"
tls_cert = "{d}/../smtp-cert.pem"
tls_key = "{d}/../smtp-key.pem"

{trap}
[mesh]
listen = "{ip}:7946"
seeds = [{seeds}]
ca_cert = "{d}/mesh-ca.pem"
cert = "{d}/node.pem"
key = "{d}/node.key"
gossip_interval = "200ms"
magic_mx_names = ["mx.mesh.test", "*.mesh.test"]

[throttle]
{throttle}

[checks]
{checks}nameservers = ["{RESOLVER}"]

[[domain]]
name = "example.test"
{domain}

[delivery]
{delivery}

[admin]
listen = "{ip}:8025"
policy_listen = "{ip}:10040"
# Nodes reach the real MX from 127.0.0.1, the loopback's own address.
mesh_clients = ["127.0.0.1/32"]
magic_mx = "mx.mesh.test"
"#,
        seeds = seeds.join(", ")
    )
}

/// What a test changes in the deployment besides the throttle and wiring.
#[derive(Default)]
struct Extras {
    /// More main.cf settings of the real MX (after the printed ones).
    real_mx: &'static str,
    /// More main.cf settings of the sending MTA.
    sender: &'static str,
    /// The nodes call the real MX out about each recipient.
    callouts: bool,
    /// The nodes' `[delivery]` settings.
    delivery: &'static str,
    /// A change to the printed master.cf of the real MX: (from, to).
    master_cf: Option<(&'static str, &'static str)>,
    /// More zones in the world's DNS.
    zones: Vec<Zone>,
}

impl Deployment {
    fn start(tag: &str, throttle: &str, wiring: Wiring) -> Deployment {
        Deployment::start_with(tag, throttle, wiring, Extras::default())
    }

    fn start_with(tag: &str, throttle: &str, wiring: Wiring, extras: Extras) -> Deployment {
        let root = tempfile::tempdir().unwrap();
        let mut all_zones = zones();
        all_zones.extend(extras.zones.iter().cloned());
        let world = World::create(tag, root.path(), &all_zones);
        let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
        let dirs = certified_nodes(root.path(), &names);
        // The magic MX offers STARTTLS, as any MX does, with a certificate of
        // its own name (the sending Postfix encrypts opportunistically).
        let smtp_cert = rcgen::generate_simple_self_signed(vec!["mx.mesh.test".into()]).unwrap();
        std::fs::write(root.path().join("smtp-cert.pem"), smtp_cert.cert.pem()).unwrap();
        std::fs::write(root.path().join("smtp-key.pem"), smtp_cert.signing_key.serialize_pem()).unwrap();
        let real_mx_etc = root.path().join("real-mx/etc");
        let printed = dns_records(&real_mx_etc);
        let (domain, main_cf, master_cf) = match wiring {
            Wiring::Policy => (
                "route = \"mx\"".to_string(),
                format!(
                    "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, check_policy_service inet:{}:10040",
                    NODES[2].1
                ),
                String::new(),
            ),
            Wiring::Xclient | Wiring::Xforward => {
                let toml = &printed["magicmx.toml, on every node: deliver through the mesh's own way in"];
                // Its [[domain]] as printed, but for the name.
                let domain: Vec<&str> = toml
                    .lines()
                    .skip_while(|l| !l.starts_with("name = "))
                    .skip(1)
                    .take_while(|l| !l.is_empty())
                    .collect();
                std::fs::create_dir_all(&real_mx_etc).unwrap();
                let cidr = format!("{}/magicmx-nodes.cidr", real_mx_etc.display());
                std::fs::write(&cidr, &printed[&cidr]).unwrap();
                let mut master_cf = printed["master.cf"].clone();
                let mut domain = domain.join("\n");
                if wiring == Wiring::Xforward {
                    master_cf = master_cf.replace("smtpd_authorized_xclient_hosts", "smtpd_authorized_xforward_hosts");
                    domain = domain.replace("xclient = \"require\"", "xclient = \"off\"");
                }
                if let Some((from, to)) = extras.master_cf {
                    assert!(master_cf.contains(from), "{master_cf}");
                    master_cf = master_cf.replace(from, to);
                }
                (domain, printed["main.cf"].clone(), master_cf)
            }
        };
        let configs: Vec<String> = NODES
            .iter()
            .zip(&dirs)
            .map(|((name, ip), dir)| node_config(name, ip, dir, throttle, &domain, &extras))
            .collect();
        let nodes = (0..NODES.len())
            .map(|i| Some(NodeProcess::start_in(&world, &dirs[i], &configs[i], at25(NODES[i].1))))
            .collect();
        let sink = Sink::start_in(&world, root.path(), at25(MAILBOX), &[]);
        let real_mx = Postfix::start(
            &world,
            &root.path().join("real-mx"),
            "mail.example.test",
            at25(REAL_MX),
            &format!(
                "mynetworks =
relay_domains = example.test
relay_recipient_maps =
smtpd_relay_restrictions = reject_unauth_destination
smtp_dns_support_level = disabled
{main_cf}
{}",
                extras.real_mx
            ),
            &master_cf,
            Some(&format!("example.test smtp:[{MAILBOX}]:25\n")),
        );
        let sender = Postfix::start(
            &world,
            &root.path().join("sender"),
            "mta.client.test",
            at25(SENDER),
            &format!(
                "mynetworks = {USER}/32
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_bind_address = {SENDER}
smtp_dns_support_level = enabled
smtp_host_lookup = dns
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
smtp_connect_timeout = 5s
smtp_tls_security_level = may
smtp_tls_loglevel = 1
{}",
                extras.sender
            ),
            "",
            None,
        );
        let deployment = Deployment { nodes, dirs, configs, sender, real_mx, sink, world, _root: root };
        deployment.wait_for_mesh();
        deployment
    }

    fn wait_for_mesh(&self) {
        let met = wait_until(Duration::from_secs(30), || {
            self.nodes
                .iter()
                .flatten()
                .all(|n| n.log_text().matches("mesh peer up").count() >= NODES.len() - 1)
        });
        assert!(met, "the mesh formed:\n{}", self.node_logs());
    }

    fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill9();
        }
    }

    fn restart(&mut self, i: usize) {
        self.stop(i);
        let node = NodeProcess::start_in(&self.world, &self.dirs[i], &self.configs[i], at25(NODES[i].1));
        self.nodes[i] = Some(node);
    }

    fn node_logs(&self) -> String {
        self.dirs
            .iter()
            .map(|d| std::fs::read_to_string(d.join("node.log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    /// The user hands the sending MTA a message with `id` for `rcpts`.
    fn send(&self, id: &str, rcpts: &[String]) {
        let script = r#"
import smtplib, sys
user, mta, msgid = sys.argv[1], sys.argv[2], sys.argv[3]
rcpts = sys.argv[4:]
body = ("From: alice@client.test\r\nTo: %s\r\nSubject: hello\r\nMessage-ID: <%s>\r\n\r\nHi.\r\n" % (rcpts[0], msgid)).encode()
with smtplib.SMTP(mta, 25, source_address=(user, 0), timeout=30) as s:
    s.sendmail("alice@client.test", rcpts, body)
print("handed over")
"#;
        let mut args = vec![USER, SENDER, id];
        args.extend(rcpts.iter().map(String::as_str));
        assert!(self.world.python(script, &args).contains("handed over"));
    }

    /// The sending MTA's log lines about the message with `id`: what each
    /// host said ("host ... said: ..."), and a line per try and recipient
    /// ("to=<...>, relay=..., status=...").
    fn deliveries(&self, id: &str) -> Vec<String> {
        let log = self.sender.log();
        let queue_ids: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("message-id=<{id}>")))
            .filter_map(|l| l.split(": ").nth(1))
            .collect();
        log.lines()
            .filter(|l| {
                queue_ids
                    .iter()
                    .any(|q| l.contains(&format!(" {q}: to=")) || l.contains(&format!(" {q}: host ")))
            })
            .map(String::from)
            .collect()
    }

    /// Whether the message with `id` was deferred after a host answered `said`.
    fn deferred_after(&self, id: &str, said: &str) -> bool {
        let lines = self.deliveries(id);
        lines.iter().any(|l| l.contains(" host ") && l.contains(said))
            && lines.iter().any(|l| l.contains("status=deferred"))
    }

    fn sent_to(&self, id: &str) -> Vec<String> {
        let mut rcpts: Vec<String> = self
            .deliveries(id)
            .iter()
            .filter(|l| l.contains("status=sent"))
            .filter_map(|l| l.split("to=<").nth(1)?.split('>').next().map(String::from))
            .collect();
        rcpts.sort();
        rcpts.dedup();
        rcpts
    }

    /// Waits until every recipient of `id` is sent; the test fails with the logs otherwise.
    fn wait_sent(&self, id: &str, rcpts: &[String], timeout: Duration) {
        let mut want = rcpts.to_vec();
        want.sort();
        let done = wait_until(timeout, || self.sent_to(id) == want);
        assert!(
            done,
            "{id}: sent to {:?} of {want:?} within {timeout:?}\n{}\n--- nodes ---\n{}",
            self.sent_to(id),
            self.deliveries(id).join("\n"),
            self.node_logs()
        );
    }

    /// Asserts the promise: nothing the sender handled was bounced.
    fn assert_nothing_bounced(&self) {
        let bounced = self.sender.log_lines("status=bounced");
        assert!(bounced.is_empty(), "the sender bounced mail:\n{}", bounced.join("\n"));
    }

    /// Messages that reached the mailbox behind the real MX with `id`.
    /// Sends a message with `id` to bob through the mesh, checks that it
    /// reached the mailbox unbounced; the real MX's one log line about taking
    /// it on the mesh's own listener (`… client=…`).
    fn relay_one_to_the_mesh_listener(&self, id: &str) -> String {
        self.send(id, &rcpts(&["bob"]));
        self.wait_sent(id, &rcpts(&["bob"]), Duration::from_secs(60));
        self.assert_nothing_bounced();
        assert!(wait_until(Duration::from_secs(20), || self.in_mailbox(id) == 1));
        // The queue id the real MX gave it (a call-out's MAIL logs a
        // `client=` line too, under a queue id no message ever gets).
        let log = self.real_mx.log();
        let queue_id = |l: &str| l.split(": ").nth(1).map(String::from);
        let ids: Vec<String> =
            log.lines().filter(|l| l.contains(&format!("message-id=<{id}>"))).filter_map(queue_id).collect();
        let queued: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("postfix/magicmx/smtpd") && l.contains(": client="))
            .filter(|l| queue_id(l).is_some_and(|q| ids.contains(&q)))
            .collect();
        assert_eq!(queued.len(), 1, "{log}");
        queued[0].to_string()
    }

    /// What node `i`'s admin listener serves at `path`.
    fn admin_get(&self, i: usize, path: &str) -> String {
        let script = r#"
import sys, urllib.request
print(urllib.request.urlopen("http://%s:8025%s" % (sys.argv[1], sys.argv[2]), timeout=10).read().decode())
"#;
        self.world.python(script, &[NODES[i].1, path])
    }

    /// Waits until every node running holds a penalty on `block` (a peer's
    /// penalty reaches a node within a gossip interval, and is in force
    /// once the block's homes bear it out).
    fn wait_penalised_everywhere(&self, block: &str) {
        let held = |i: usize| {
            let status: serde_json::Value = serde_json::from_str(&self.admin_get(i, "/status")).unwrap();
            status["penalised"].as_array().unwrap().iter().any(|p| p["block"] == block)
        };
        let running: Vec<usize> = (0..NODES.len()).filter(|&i| self.nodes[i].is_some()).collect();
        let everywhere = wait_until(Duration::from_secs(20), || running.iter().all(|&i| held(i)));
        assert!(everywhere, "every node holds the penalty on {block}:\n{}", self.node_logs());
    }

    fn in_mailbox(&self, id: &str) -> usize {
        self.sink.messages().iter().filter(|m| m.contains(&format!("Message-ID: <{id}>"))).count()
    }
}

/// A bot that skips the mesh and talks to the real MX directly: the SMTP
/// code it is given for its recipient.
fn bot_to_real_mx(world: &World, source: &str, id: &str) -> String {
    let script = r#"
import smtplib, sys
src, mx, msgid = sys.argv[1], sys.argv[2], sys.argv[3]
body = ("Subject: buy now\r\nMessage-ID: <%s>\r\n\r\ncheap\r\n" % msgid).encode()
s = smtplib.SMTP(mx, 25, source_address=(src, 0), timeout=30)
try:
    s.sendmail("bulk@bot.test", ["bob@example.test"], body)
    print("code=250")
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]
    print("code=%d %s" % (code, text.decode()))
"#;
    world.python(script, &[source, REAL_MX, id])
}

fn rcpts(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{n}@example.test")).collect()
}

#[test]
fn a_sender_whose_block_is_penalised_is_deferred_not_bounced_and_taken_after_t() {
    let mut mesh = Deployment::start(
        "penalty",
        "connections_per_minute = 5\nrecipients_per_hour = 30\npenalty = \"20s\"",
        Wiring::Policy,
    );
    // The sender's neighbour opens connections until the block is penalised.
    let flood = r#"
import socket, sys
for i in range(8):
    with socket.create_connection((sys.argv[2], 25), source_address=(sys.argv[1], 0), timeout=10) as s:
        s.recv(512)
print("done")
"#;
    mesh.world.python(flood, &["127.0.3.50", NODES[0].1]);
    let penalised_at = Instant::now();
    let penalised = wait_until(Duration::from_secs(5), || mesh.node_logs().contains("block=127.0.3.0/24"));
    assert!(penalised, "the block is penalised:\n{}", mesh.node_logs());
    // Not before every node holds it: one that has not heard yet would take the message.
    mesh.wait_penalised_everywhere("127.0.3.0/24");

    mesh.send("penalty-1@client.test", &rcpts(&["bob"]));
    // Refused by both magic MX nodes (421), sent back by the real MX (450),
    // refused by the trap (421): deferred.
    let deferred =
        wait_until(Duration::from_secs(30), || mesh.deferred_after("penalty-1@client.test", "421 4.7.0"));
    assert!(deferred, "deferred first:\n{}", mesh.sender.log());
    let told = mesh.real_mx.log_lines("450 4.7.1");
    assert!(
        told.iter().any(|l| l.contains(SENDER) && l.contains("mx.mesh.test")),
        "the real MX sent the sender back to the magic MX with a 450:\n{}",
        mesh.real_mx.log()
    );
    // The magic MX nodes restart meanwhile: the penalty survives, unchanged.
    mesh.restart(0);
    mesh.restart(1);
    mesh.wait_for_mesh();

    mesh.wait_sent("penalty-1@client.test", &rcpts(&["bob"]), Duration::from_secs(120));
    let took = penalised_at.elapsed();
    mesh.assert_nothing_bounced();
    assert!(took >= Duration::from_secs(19), "held off for the penalty: {took:?}");
    let sent =
        mesh.deliveries("penalty-1@client.test").into_iter().find(|l| l.contains("status=sent")).unwrap();
    assert!(sent.contains("relay=mx.mesh.test["), "through the magic MX: {sent}");
    assert!(
        wait_until(Duration::from_secs(20), || mesh.in_mailbox("penalty-1@client.test") == 1),
        "the message reached the real MX's mailbox once"
    );
    // Its retries (and its fall to the trap) did not lengthen the penalty
    // or add a strike: one penalty, and every 421 named the same end.
    let logs = mesh.node_logs();
    let penalties: Vec<&str> =
        logs.lines().filter(|l| l.contains("block penalised") && l.contains("127.0.3.0/24")).collect();
    assert_eq!(penalties.len(), 1, "one penalty:\n{}", penalties.join("\n"));
    assert!(penalties[0].contains("strikes=1"), "{}", penalties[0]);
    let ends: std::collections::BTreeSet<String> = mesh
        .deliveries("penalty-1@client.test")
        .iter()
        .filter_map(|l| Some(l.split("come back after ").nth(1)?.split(" (in").next()?.to_string()))
        .collect();
    assert!(ends.len() <= 1, "the come-back time never moved: {ends:?}");

    // Mail that skips the mesh still never gets in...
    let bot = bot_to_real_mx(&mesh.world, "127.0.5.1", "bot-1@bot.test");
    assert!(bot.contains("code=450") && bot.contains("mx.mesh.test"), "{bot}");
    // ...and a bot that goes straight for the trap is penalised mesh-wide.
    let trap_hit = r#"
import socket, sys
with socket.create_connection((sys.argv[2], 25), source_address=(sys.argv[1], 0), timeout=10) as s:
    print(s.recv(512).decode())
"#;
    let said = mesh.world.python(trap_hit, &["127.0.6.1", TRAP]);
    assert!(said.starts_with("421"), "{said}");
    let trapped = wait_until(Duration::from_secs(5), || {
        mesh.node_logs().lines().any(|l| l.contains("reason=\"trap hit\"") && l.contains("127.0.6.0/24"))
    });
    assert!(trapped, "the bot's block is penalised:\n{}", mesh.node_logs());
    assert_eq!(mesh.in_mailbox("bot-1@bot.test"), 0);
}

#[test]
fn a_message_over_what_is_left_is_taken_in_part_now_and_the_rest_later() {
    let mesh = Deployment::start(
        "partial",
        "recipients_per_hour = 600\nconnections_per_minute = 1000\npenalty = \"10s\"",
        Wiring::Policy,
    );
    // The neighbour uses 595 of the block's 600 recipients an hour, over
    // both magic MX nodes (each node's part stays under the cap on what one
    // peer may add, so both see all of it: see `throttle.peer_share`).
    let spam = r#"
import smtplib, sys
src, nodes = sys.argv[1], sys.argv[2:]
for i, batch in enumerate((100, 100, 100, 100, 100, 95)):
    with smtplib.SMTP(nodes[i % 2], 25, source_address=(src, 0), timeout=60) as s:
        rcpts = ["user%d@example.test" % j for j in range(batch)]
        s.sendmail("news@client.test", rcpts, b"Subject: news\r\n\r\nnews\r\n")
print("spammed")
"#;
    assert!(mesh.world.python(spam, &["127.0.3.50", NODES[0].1, NODES[1].1]).contains("spammed"));
    std::thread::sleep(Duration::from_millis(500)); // a gossip round or two

    // Eight recipients, five left: five now, three after the come-back time.
    let all = rcpts(&["bob1", "bob2", "bob3", "bob4", "bob5", "bob6", "bob7", "bob8"]);
    mesh.send("partial-1@client.test", &all);
    let first_part = wait_until(Duration::from_secs(30), || mesh.sent_to("partial-1@client.test").len() == 5);
    assert!(first_part, "five taken at once:\n{}", mesh.deliveries("partial-1@client.test").join("\n"));
    assert!(
        wait_until(Duration::from_secs(30), || mesh.deferred_after("partial-1@client.test", "451 4.7.1")),
        "the rest deferred after 451 4.7.1:\n{}",
        mesh.deliveries("partial-1@client.test").join("\n")
    );
    mesh.wait_sent("partial-1@client.test", &all, Duration::from_secs(120));
    mesh.assert_nothing_bounced();
    assert!(
        mesh.deliveries("partial-1@client.test")
            .iter()
            .filter(|l| l.contains("status=sent"))
            .all(|l| l.contains("relay=mx.mesh.test[")),
        "every recipient through the magic MX"
    );
    assert!(wait_until(Duration::from_secs(20), || mesh.in_mailbox("partial-1@client.test") == 2));
}

#[test]
fn with_every_magic_mx_node_down_mail_waits_at_its_sender_and_goes_through_when_they_are_back() {
    let mut mesh = Deployment::start("outage", "recipients_per_hour = 30", Wiring::Policy);
    // The whole mesh is down, policy service included: the real MX answers
    // 451 4.3.5 (it cannot ask), and the sender keeps the message.
    for i in 0..NODES.len() {
        mesh.stop(i);
    }
    mesh.send("outage-1@client.test", &rcpts(&["bob"]));
    let deferred = |mesh: &Deployment, said: &str| {
        wait_until(Duration::from_secs(60), || mesh.deferred_after("outage-1@client.test", said))
    };
    assert!(deferred(&mesh, "4.3.5"), "deferred while nothing answers:\n{}", mesh.sender.log());
    // The policy service is back, the magic MX still down: a 450 that
    // points at the magic MX, still a deferral.
    mesh.restart(2);
    assert!(deferred(&mesh, "450 4.7.1"), "deferred by the policy service:\n{}", mesh.sender.log());
    // The magic MX is back: the message goes through it.
    mesh.restart(0);
    mesh.restart(1);
    mesh.wait_sent("outage-1@client.test", &rcpts(&["bob"]), Duration::from_secs(90));
    mesh.assert_nothing_bounced();
    assert!(wait_until(Duration::from_secs(20), || mesh.in_mailbox("outage-1@client.test") == 1));
}

#[test]
fn wired_as_dns_records_prints_the_real_mx_sees_the_original_client_and_no_bot_gets_in() {
    let mesh = Deployment::start("xclient", "recipients_per_hour = 30", Wiring::Xclient);
    // The real MX took it on the mesh's own listener, from a node, and its
    // log names the sending MTA as the client: XCLIENT handed it over.
    let queued = mesh.relay_one_to_the_mesh_listener("xclient-1@client.test");
    assert!(queued.contains(&format!("client=unknown[{SENDER}]")), "{queued}");
    let log = mesh.real_mx.log();
    assert!(log.contains("ALLOWLISTED [127.0.0.1]"), "the node passed postscreen: {log}");
    // The sender reached the magic MX over STARTTLS.
    let sent = mesh.sender.log();
    assert!(sent.contains("TLS connection established to mx.mesh.test["), "{sent}");
    // A bot gets nothing in on either port: 450 on the MX's port 25, and
    // dropped by postscreen on the mesh's listener.
    let bot = bot_to_real_mx(&mesh.world, "127.0.5.1", "bot-2@bot.test");
    assert!(bot.contains("code=450"), "{bot}");
    let knock = r#"
import socket, sys
with socket.create_connection((sys.argv[2], 2525), source_address=(sys.argv[1], 0), timeout=10) as s:
    print("said:", s.recv(512).decode().strip())
"#;
    let said = mesh.world.python(knock, &["127.0.5.1", REAL_MX]);
    assert!(said.contains("521"), "{said}");
    assert!(wait_until(Duration::from_secs(5), || mesh.real_mx.log().contains("DENYLISTED [127.0.5.1]")));
    assert_eq!(mesh.in_mailbox("bot-2@bot.test"), 0);
}

#[test]
fn where_the_real_mx_offers_only_xforward_its_log_still_names_the_original_client() {
    let mesh = Deployment::start("xforward", "recipients_per_hour = 30", Wiring::Xforward);
    // The client is the node; XFORWARD adds the sending MTA as orig_client.
    let queued = mesh.relay_one_to_the_mesh_listener("xforward-1@client.test");
    assert!(queued.contains(&format!("[127.0.0.1], orig_client=unknown[{SENDER}]")), "{queued}");
}

/// main.cf restrictions common on real MXs: each would refuse the sending
/// MTA below (an Exchange server's NetBIOS HELO, a sender domain without
/// MX or address records, a client on a DNS list).
const STRICT_REAL_MX: &str = "smtpd_helo_required = yes
smtpd_helo_restrictions = reject_non_fqdn_helo_hostname
smtpd_sender_restrictions = reject_unknown_sender_domain
smtpd_client_restrictions = reject_rbl_client rbl.test";

#[test]
fn wired_as_printed_a_real_mx_with_strict_restrictions_judges_nothing_the_node_took_again() {
    let listed = Zone::new("rbl.test").a("1.3.0.127.rbl.test", "127.0.0.2".parse().unwrap());
    let extras = Extras {
        real_mx: STRICT_REAL_MX,
        sender: "smtp_helo_name = EXCHANGE01",
        callouts: true,
        zones: vec![listed],
        ..Extras::default()
    };
    let mesh = Deployment::start_with("strict", "recipients_per_hour = 30", Wiring::Xclient, extras);
    // The restrictions are real: the same sender straight at the real MX's port 25 is refused.
    let direct = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[2], 25, source_address=(sys.argv[1], 0), timeout=30)
s.ehlo("EXCHANGE01")
try:
    s.sendmail("alice@client.test", ["bob@example.test"], b"Subject: direct\r\n\r\nhi\r\n")
    print("code=250")
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]
    print("code=%d %s" % (code, text.decode()))
"#;
    let said = mesh.world.python(direct, &[SENDER, REAL_MX]);
    assert!(said.contains("code=554") && said.contains("rbl.test"), "{said}");
    // Through the mesh: the call-out and the delivery both hand over the
    // original client, and the mesh listener judges only the recipient.
    let queued = mesh.relay_one_to_the_mesh_listener("strict-1@client.test");
    assert!(queued.contains(&format!("client=unknown[{SENDER}]")), "{queued}");
    // The call-out's session names the sender too (its MAIL gets a queue
    // id and a `client=` line, though nothing is queued): two in all.
    let sessions = mesh.real_mx.log_lines("postfix/magicmx/smtpd");
    let as_sender = sessions.iter().filter(|l| l.contains(&format!(": client=unknown[{SENDER}]"))).count();
    assert_eq!(
        as_sender,
        2,
        "the call-out and the delivery both hand the client over:\n{}",
        sessions.join("\n")
    );
    let refused: Vec<String> = mesh
        .real_mx
        .log_lines("postfix/magicmx/smtpd")
        .into_iter()
        .filter(|l| l.contains("reject:"))
        .collect();
    assert!(refused.is_empty(), "nothing refused on the mesh listener: {refused:?}");
    let probed: u64 = (0..2)
        .map(|i| {
            metric(&mesh.admin_get(i, "/metrics"), "magicmx_checks_total{check=\"callout\",result=\"valid\"}")
        })
        .sum();
    assert_eq!(probed, 1, "the recipient was called out once, and found valid");
}

#[test]
fn a_node_missing_from_the_xclient_hosts_keeps_its_mail_queued_until_it_is_named() {
    // The postmaster forgot the nodes' address: the mesh listener does not
    // offer them XCLIENT. The nodes require it, as printed.
    let extras = Extras {
        delivery: "retry_first = \"2s\"\nretry_max = \"2s\"",
        master_cf: Some((
            "smtpd_authorized_xclient_hosts=127.0.0.1",
            "smtpd_authorized_xclient_hosts=127.0.9.9",
        )),
        ..Extras::default()
    };
    let mesh = Deployment::start_with("forgotten", "recipients_per_hour = 30", Wiring::Xclient, extras);
    let id = "forgotten-1@client.test";
    mesh.send(id, &rcpts(&["bob"]));
    mesh.wait_sent(id, &rcpts(&["bob"]), Duration::from_secs(60));
    // Taken by the magic MX, and never delivered as from the node.
    let counted = |mesh: &Deployment| -> u64 {
        (0..2)
            .map(|i| {
                metric(
                    &mesh.admin_get(i, "/metrics"),
                    "magicmx_next_hop_faults_total{fault=\"xclient_not_offered\"}",
                )
            })
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(20), || counted(&mesh) >= 2),
        "retried and counted:\n{}",
        mesh.node_logs()
    );
    assert_eq!(mesh.in_mailbox(id), 0);
    let warned =
        mesh.node_logs().lines().filter(|l| l.contains("messages for this hop wait in the queue")).count();
    assert_eq!(warned, 1, "said once, with what is missing:\n{}", mesh.node_logs());
    // The postmaster names the node; the next retry goes through, once, and nothing bounced.
    let master = mesh.real_mx.etc().join("master.cf");
    let fixed = std::fs::read_to_string(&master).unwrap().replace("127.0.9.9", "127.0.0.1");
    std::fs::write(&master, fixed).unwrap();
    let etc = mesh.real_mx.etc();
    let out = mesh.world.command("postfix").args(["-c", etc.to_str().unwrap(), "reload"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_until(Duration::from_secs(30), || mesh.in_mailbox(id) == 1), "{}", mesh.node_logs());
    let queued = mesh.real_mx.log_lines("postfix/magicmx/smtpd");
    assert!(queued.iter().any(|l| l.contains(&format!("client=unknown[{SENDER}]"))), "{}", queued.join("\n"));
    mesh.assert_nothing_bounced();
    assert!(mesh
        .sink
        .messages()
        .iter()
        .all(|m| !m.contains("Undelivered Mail") && !m.contains("delivery-status")));
}

/// The value of one sample in a /metrics text; 0 for a labelled counter
/// not counted yet (the node shows only what it has seen).
fn metric(text: &str, sample: &str) -> u64 {
    let family = sample.split('{').next().unwrap().trim_end_matches("_total");
    assert!(text.contains(&format!("# TYPE {family} ")), "{family} in:\n{text}");
    text.lines().find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok()).unwrap_or(0.0) as u64
}

#[test]
fn a_message_larger_than_the_real_mx_takes_is_refused_before_the_250_never_returned_after() {
    let extras = Extras { real_mx: "message_size_limit = 100000", ..Extras::default() };
    let mesh = Deployment::start_with("size", "recipients_per_hour = 30", Wiring::Xclient, extras);
    // The node learns the real MX's SIZE and advertises it as its own.
    let client = r#"
import smtplib, sys
src, node, size, declare = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "yes"
s = smtplib.SMTP(node, 25, source_address=(src, 0), timeout=30)
s.ehlo("mta.client.test")
print("advertised=%s" % s.esmtp_features.get("size"))
if not declare:
    s.esmtp_features.pop("size", None)
body = b"Subject: big\r\nMessage-ID: <size-%d@client.test>\r\n\r\n" % size + (b"x" * 76 + b"\r\n") * (size // 78)
try:
    s.sendmail("alice@client.test", ["bob@example.test"], body)
    print("code=250")
except smtplib.SMTPSenderRefused as e:
    print("mail=%d %s" % (e.smtp_code, e.smtp_error.decode()))
except smtplib.SMTPDataError as e:
    print("data=%d %s" % (e.smtp_code, e.smtp_error.decode()))
"#;
    let send = |size: usize, declare: bool| {
        let declare = if declare { "yes" } else { "no" };
        mesh.world.python(client, &["127.0.7.1", NODES[0].1, &size.to_string(), declare])
    };
    // (Asked at start, and again 15 s later if the real MX was not up yet.)
    let learned = wait_until(Duration::from_secs(40), || {
        mesh.nodes[0].as_ref().unwrap().log_text().contains("the node now takes messages up to this size")
    });
    assert!(learned, "n1 learned the real MX's SIZE:\n{}", mesh.node_logs());
    assert!(send(0, true).contains("advertised=100000"), "and advertises it");
    // Declared at MAIL: refused there, before anything is taken.
    let said = send(150_000, true);
    assert!(said.contains("mail=552") && said.contains("5.3.4"), "{said}");
    // Not declared: refused at the end of DATA, still before any 250.
    let said = send(150_000, false);
    assert!(said.contains("data=552") && said.contains("5.3.4"), "{said}");
    // What the real MX takes goes through.
    assert!(send(50_000, true).contains("code=250"));
    assert!(wait_until(Duration::from_secs(30), || mesh.in_mailbox("size-50000@client.test") == 1));
    assert_eq!(mesh.in_mailbox("size-150000@client.test"), 0);
    // The node made no DSN: it took nothing it could not deliver.
    assert!(!mesh.node_logs().contains("DSN queued"), "{}", mesh.node_logs());
}
