//! The real MX is down for a while: messages wait in the queue (and
//! `magicmx queue list` shows them), and all arrive, once each, when it is
//! back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use magicmx_tests::{claim_port, magicmx, python, specs, Sink};

const SEND: &str = r#"
import smtplib, sys
for n in range(int(sys.argv[2])):
    s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.99.1", 0), timeout=10)
    s.sendmail("alice@client.test", ["bob@example.test"], ("Subject: outage-%d\r\n\r\nwaiting\r\n" % n).encode())
    s.quit()
"#;

#[test]
fn mail_waits_while_the_real_mx_is_down_and_arrives_once_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let sink_port = claim_port();
    let mut spec = specs(&root.path().join("node"), 1, false, "").remove(0);
    spec.route = Some(format!("smtp://127.0.0.1:{sink_port}"));
    spec.delivery = "retry_first = \"1s\"\nretry_max = \"2s\"\nconnect_timeout = \"1s\"".into();
    let node = spec.start();
    python(SEND, &[&spec.smtp.to_string(), "3"]);

    // The real MX is down: all three wait, and the queue says so.
    let config = spec.dir.join("magicmx.toml").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, list) = magicmx(&["queue", "list", "--config", &config]);
        if ok && list.contains("3 message(s)") && node.log_text().matches("status=\"deferred\"").count() >= 3
        {
            break;
        }
        assert!(Instant::now() < deadline, "three messages wait in the queue: {list}\n{}", node.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }

    // It comes back: everything arrives, once.
    let sink_addr: SocketAddr = format!("127.0.0.1:{sink_port}").parse().unwrap();
    let sink = Sink::start(root.path(), sink_addr, &[]);
    let got = sink.wait_for(3, Duration::from_secs(20));
    assert_eq!(got.len(), 3, "{}", node.log_text());
    std::thread::sleep(Duration::from_secs(3));
    let mut subjects: Vec<String> = sink
        .messages()
        .iter()
        .map(|m| m.lines().find(|l| l.starts_with("Subject:")).unwrap().to_string())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Subject: outage-0", "Subject: outage-1", "Subject: outage-2"],
        "each exactly once"
    );
    let (ok, list) = magicmx(&["queue", "list", "--config", &config]);
    assert!(ok && list.contains("the queue is empty"), "{list}");
}
