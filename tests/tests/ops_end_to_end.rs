//! Operating a node: the CLI against a running node and against none,
//! `/metrics` as Prometheus reads it, the status page in a real browser,
//! low priority, and the DNS records to publish.

use std::time::{Duration, Instant};

use magicmx_tests::{magicmx, python, specs, Spec};

/// A node whose only domain goes to a next hop that is down: mail waits.
fn waiting_node(root: &std::path::Path) -> Spec {
    let mut spec = specs(root, 1, false, "").remove(0);
    spec.route = Some("smtp://127.0.0.1:9".into());
    spec
}

const SEND: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=(sys.argv[2], 0), timeout=10)
s.sendmail("alice@client.test", ["bob@example.test"], b"Subject: waiting\r\n\r\nbody\r\n")
try:
    s.sendmail("alice@client.test", ["x@elsewhere.test"], b"Subject: relay\r\n\r\nno\r\n")
except smtplib.SMTPRecipientsRefused:
    print("relay refused")
s.quit()
"#;

fn config_arg(spec: &Spec) -> String {
    spec.dir.join("magicmx.toml").display().to_string()
}

#[test]
fn status_queue_and_peers_from_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let spec = waiting_node(root.path());
    let _node = spec.start();
    python(SEND, &[&spec.smtp.to_string(), "127.0.90.1"]);
    let config = config_arg(&spec);
    let (ok, status) = magicmx(&["status", "--config", &config]);
    assert!(ok, "{status}");
    assert!(status.contains("node n0") && status.contains("accepted        1"), "{status}");
    assert!(status.contains("relay_denied"), "{status}");
    let (ok, json) = magicmx(&["status", "--json", "--config", &config]);
    assert!(ok && json.contains("\"accepted\": 1"), "{json}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let (_, list) = magicmx(&["queue", "list", "--config", &config]);
        if let Some(line) = list.lines().find(|l| l.contains("bob@example.test")) {
            break line.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the message shows in the queue: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (ok, show) = magicmx(&["queue", "show", &id, "--config", &config]);
    assert!(ok && show.contains("bob@example.test") && show.contains("pending"), "{show}");
    let (ok, out) = magicmx(&["queue", "retry", &id, "--config", &config]);
    assert!(ok, "{out}");
    let (ok, out) = magicmx(&["queue", "drop", &id, "--config", &config]);
    assert!(ok, "{out}");
    let (ok, list) = magicmx(&["queue", "list", "--config", &config]);
    assert!(ok && list.contains("the queue is empty"), "{list}");
    let (ok, out) = magicmx(&["queue", "show", &id, "--config", &config]);
    assert!(!ok && out.contains("no message"), "{out}");
    let (ok, peers) = magicmx(&["peers", "--config", &config]);
    assert!(ok && peers.contains("no peers"), "{peers}");
}

#[test]
fn commands_without_a_running_node_fail_clearly() {
    for args in [vec!["status"], vec!["peers"], vec!["queue", "list"], vec!["queue", "drop", "00"]] {
        let mut args: Vec<&str> = args;
        args.extend(["--admin", "127.0.0.1:9"]);
        let (ok, out) = magicmx(&args);
        assert!(!ok, "{args:?} fails");
        assert!(out.contains("cannot reach the node's admin API at http://127.0.0.1:9"), "{args:?}: {out}");
    }
}

/// Reads `/metrics` with the Prometheus project's own OpenMetrics parser
/// (prometheus_client), which is strict about the format the node declares.
const METRICS: &str = r#"
import sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
response = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=10)
assert response.headers["Content-Type"].startswith("application/openmetrics-text"), response.headers
text = response.read().decode()
values = {}
for family in openmetrics(text):
    for sample in family.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(sample.labels.items()))
        values["%s{%s}" % (sample.name, labels)] = sample.value
for key in sorted(values):
    print(key, values[key])
"#;

fn metrics(spec: &Spec) -> std::collections::HashMap<String, f64> {
    python(METRICS, &[&spec.admin.to_string()])
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.parse().unwrap())))
        .collect()
}

#[test]
fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let root = tempfile::tempdir().unwrap();
    let spec = waiting_node(root.path());
    let _node = spec.start();
    let before = metrics(&spec);
    let get = |m: &std::collections::HashMap<String, f64>, k: &str| *m.get(k).unwrap_or(&0.0);
    python(SEND, &[&spec.smtp.to_string(), "127.0.91.1"]);
    python(SEND, &[&spec.smtp.to_string(), "127.0.91.2"]);
    let after = metrics(&spec);
    assert!(after.contains_key("magicmx_connections_total{}"), "{after:?}");
    assert_eq!(get(&after, "magicmx_connections_total{}") - get(&before, "magicmx_connections_total{}"), 2.0);
    assert_eq!(
        get(&after, "magicmx_messages_total{result=accepted}")
            - get(&before, "magicmx_messages_total{result=accepted}"),
        2.0
    );
    assert_eq!(get(&after, "magicmx_refusals_total{reason=relay_denied}"), 2.0);
    assert!(get(&after, "magicmx_hold_seconds_count{}") >= 2.0, "{after:?}");
    assert!(after.contains_key("magicmx_queue_messages{}"));
}

#[test]
fn questions_to_the_blocks_homes_show_in_metrics() {
    let root = tempfile::tempdir().unwrap();
    let specs = specs(root.path(), 2, true, "");
    let nodes: Vec<_> = specs.iter().map(Spec::start).collect();
    assert!(magicmx_tests::wait_for_mesh(&nodes, Duration::from_secs(30)), "the mesh formed");
    // A node that has just started asks the other home even for its own
    // blocks until the members have sent it their registers (four gossip
    // intervals, at least 2 s, from its start): past that here.
    std::thread::sleep(Duration::from_secs(2));
    // Ten blocks, each sending one message to node 0: each block's primary
    // home is one of the two nodes, so node 0 answers some questions itself
    // and asks node 1 the others.
    for b in 0..10 {
        python(SEND, &[&specs[0].smtp.to_string(), &format!("127.0.{}.1", 150 + b)]);
    }
    let (at_0, at_1) = (metrics(&specs[0]), metrics(&specs[1]));
    let get = |m: &std::collections::HashMap<String, f64>, outcome: &str| {
        *m.get(&format!("magicmx_mesh_questions_total{{outcome={outcome}}}")).unwrap_or(&0.0)
    };
    let (here, away) = (get(&at_0, "answered_here"), get(&at_0, "asked_away"));
    assert_eq!(here + away, 20.0, "two questions a message (RCPT, end of DATA): {at_0:?}");
    assert!(here > 0.0 && away > 0.0, "both nodes are homes of some blocks: {here} / {away}");
    assert_eq!(get(&at_1, "answered_for_others"), away, "node 1 answered what node 0 asked it");
    assert_eq!(get(&at_0, "timed_out"), 0.0);
    assert_eq!(*at_0.get("magicmx_mesh_dropped_total{what=penalties}").unwrap_or(&-1.0), 0.0);
    // Each member's standing here, and why: an honest peer's word counts whole.
    let standing: Vec<(&String, &f64)> =
        at_0.iter().filter(|(k, _)| k.starts_with("magicmx_mesh_member_standing{member=")).collect();
    assert_eq!(standing.len(), 1, "one member, node 1: {at_0:?}");
    assert_eq!(*standing[0].1, 1.0);
    assert!(at_0.keys().any(|k| k.starts_with("magicmx_mesh_member_clock_offset_seconds{member=")));
    assert_eq!(*at_0.get("magicmx_mesh_strangers_total{event=homes_disagreed}").unwrap_or(&-1.0), 0.0);
    let (ok, peers) = magicmx(&["peers", "--config", &config_arg(&specs[0])]);
    assert!(ok && peers.contains("STANDING") && peers.contains("1.00"), "{peers}");
}

#[test]
fn the_node_runs_at_its_configured_nice_level() {
    let root = tempfile::tempdir().unwrap();
    let spec = waiting_node(root.path());
    let config = spec.config().replace("[node]\n", "[node]\nnice = 7\n");
    let node = magicmx_tests::NodeProcess::start(&spec.dir, &config, spec.smtp_addr());
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.pid())).unwrap();
    // Field 19 of /proc/PID/stat is the nice value (after the command in parentheses).
    let after_name = stat.rsplit_once(") ").unwrap().1;
    let nice: i32 = after_name.split_whitespace().nth(16).unwrap().parse().unwrap();
    assert_eq!(nice, 7, "{stat}");
    assert!(node.log_text().contains("running at low priority"), "{}", node.log_text());
}

#[test]
fn dns_records_put_the_magic_mx_first_and_explain_why() {
    let (ok, out) = magicmx(&[
        "dns-records",
        "--domain",
        "example.org",
        "--magic-mx",
        "mx.mesh.example",
        "--real-mx",
        "mail.example.org",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("example.org.\t3600\tIN\tMX\t10\tmx.mesh.example."), "{out}");
    assert!(out.contains("example.org.\t3600\tIN\tMX\t20\tmail.example.org."), "{out}");
    assert!(out.contains("check_policy_service inet:"), "{out}");
    let magic = out.find("MX\t10").unwrap();
    let real = out.find("MX\t20").unwrap();
    assert!(magic < real);
}

/// A private Postfix instance (Debian's postfix, set up by bench/lib/postfix.sh)
/// that asks `policy` about every recipient; stopped when dropped.
struct PostfixWithPolicy {
    dir: std::path::PathBuf,
    port: u16,
}

fn postfix_lib() -> String {
    format!("{}/../bench/lib/postfix.sh", env!("CARGO_MANIFEST_DIR"))
}

impl PostfixWithPolicy {
    fn start(dir: &std::path::Path, policy: u16) -> PostfixWithPolicy {
        let port = magicmx_tests::claim_port();
        let script = r#"set -e
source "$1"
pf_relay_setup "$2" "$3" 9 20
printf 'smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:%s, permit\n' "$4" >> "$2/etc/main.cf"
pf_relay_start "$2"
"#;
        let out = std::process::Command::new("bash")
            .args([
                "-c",
                script,
                "_",
                &postfix_lib(),
                dir.to_str().unwrap(),
                &port.to_string(),
                &policy.to_string(),
            ])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "a private Postfix (apt-get install postfix) did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        PostfixWithPolicy { dir: dir.to_path_buf(), port }
    }
}

impl Drop for PostfixWithPolicy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .args([
                "-c",
                "source \"$1\"; pf_relay_stop \"$2\"",
                "_",
                &postfix_lib(),
                self.dir.to_str().unwrap(),
            ])
            .output();
    }
}

/// swaks from `source` up to RCPT; its whole transcript.
fn swaks(port: u16, source: &str) -> String {
    let out = std::process::Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--local-interface", source])
        .args([
            "--from",
            "alice@client.test",
            "--to",
            "bob@example.test",
            "--quit-after",
            "RCPT",
            "--timeout",
            "20",
        ])
        .output()
        .expect("swaks is needed by this test (apt-get install swaks)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_real_mx_takes_mesh_nodes_and_sends_everyone_else_to_the_magic_mx() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let mut spec = waiting_node(&root.path().join("node"));
    let policy_port = magicmx_tests::claim_port();
    spec.trusted = vec!["127.0.95.0/24".into()];
    let config = spec.config().replace(
        "policy_listen = \"127.0.0.1:0\"",
        &format!("policy_listen = \"127.0.0.1:{policy_port}\"\nmesh_clients = [\"127.0.94.0/24\"]\nmagic_mx = \"mx.mesh.test\""),
    );
    let _node = magicmx_tests::NodeProcess::start(&spec.dir, &config, spec.smtp_addr());
    let postfix_dir = root.path().join("postfix");
    std::fs::create_dir_all(&postfix_dir).unwrap();
    let postfix = PostfixWithPolicy::start(&postfix_dir, policy_port);

    let mesh = swaks(postfix.port, "127.0.94.1");
    assert!(mesh.contains("<-  250 2.1.5"), "a mesh node is taken:\n{mesh}");
    let trusted = swaks(postfix.port, "127.0.95.1");
    assert!(trusted.contains("<-  250 2.1.5"), "a trusted sender is taken:\n{trusted}");
    let stranger = swaks(postfix.port, "127.0.93.1");
    assert!(
        stranger.contains("<** 450 4.7.1") && stranger.contains("please deliver there"),
        "a stranger is sent to the magic MX, with a temporary refusal (it keeps its message):\n{stranger}"
    );
    assert!(stranger.contains("mx.mesh.test"), "{stranger}");
}

#[test]
fn the_status_page_shows_mail_taken_and_refused_in_a_real_browser() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = waiting_node(root.path());
    spec.trap = Some(magicmx_tests::claim_port());
    // With a token: the page loads without it and polls with it, from its #token=.
    let config = spec.config().replace("[admin]\n", "[admin]\ntoken = \"s3cret-t0ken\"\n");
    let node = magicmx_tests::NodeProcess::start(&spec.dir, &config, spec.smtp_addr());
    // Mail taken from one block...
    python(SEND, &[&spec.smtp.to_string(), "127.0.97.1"]);
    python(SEND, &[&spec.smtp.to_string(), "127.0.97.2"]);
    // ...and another block trapped, then refused at connect.
    let trap = format!("127.0.0.1:{}", spec.trap.unwrap()).parse().unwrap();
    magicmx_tests::RawClient::from_stream(magicmx_tests::connect_from("127.0.96.66", trap)).reply();
    for _ in 0..2 {
        let mut client = magicmx_tests::RawClient::from_stream(magicmx_tests::connect_from(
            "127.0.96.1",
            spec.smtp_addr(),
        ));
        assert!(client.reply().starts_with("421"));
    }
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("status-page.png");
    let expect = r#"{"node": "n0", "accepted_min": 2, "refused_min": 2, "top_block": "127.0.97.0/24",
        "penalised_block": "127.0.96.0/24", "chart_points_min": 1}"#;
    let checker = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/check_status_page.py");
    let out = std::process::Command::new("python3")
        .args([
            checker,
            &format!("http://127.0.0.1:{}/#token=s3cret-t0ken", spec.admin),
            screenshot.to_str().unwrap(),
            expect,
        ])
        .output()
        .expect("python3");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the status page check failed (exit {:?}):\n{text}\n{}",
        out.status.code(),
        node.log_text()
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a screenshot was saved: {}",
        screenshot.display()
    );
}
