//! A resolver that never answers costs a message its DNS budget
//! (`checks.dns_budget`) and no more: every check that could not ask is
//! `temperror` in `Authentication-Results:`, the message is taken, and no
//! name is asked more than one try's worth of datagrams.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use magicmx_tests::{python, specs, wait_for_maildir_files, DeadDns, NodeProcess, Spec};

/// From SOURCE, one message From: alice@signed.test, with a DKIM signature
/// (whose body hash matches, so the key is asked for) when SIGNED is 1;
/// prints `MESSAGE <DATA code> <seconds of MAIL and RCPT> <seconds of DATA>`.
const SEND: &str = r#"
import base64, hashlib, smtplib, sys, time
host, port, source, signed = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
body = b"The body.\r\n"
head = (b"From: <alice@signed.test>\r\nTo: <bob@example.test>\r\nSubject: dead resolver\r\n"
        b"Message-ID: <%s.%d@signed.test>\r\n" % (source.encode(), signed))
if signed:
    bh = base64.b64encode(hashlib.sha256(body).digest())
    head = (b"DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; d=signed.test; s=sel;\r\n"
            b"\th=From:To:Subject; bh=" + bh + b"; b=" + base64.b64encode(b"x" * 256) + b"\r\n" + head)
s = smtplib.SMTP(host, port, source_address=(source, 0), timeout=120)
s.ehlo("client.test")
started = time.monotonic()
s.mail("alice@signed.test")
s.rcpt("bob@example.test")
at_data = time.monotonic()
code, text = s.data(head + b"\r\n" + body)
done = time.monotonic()
print("MESSAGE", code, "%.2f" % (at_data - started), "%.2f" % (done - at_data))
s.quit()
"#;

/// The budget the nodes get, and what the test allows (a loaded machine is slow).
const BUDGET: &str = "2s";
const ALLOWED: f64 = 10.0;

fn start(root: &Path, name: &str, dns: &DeadDns, checks: &str) -> (Spec, NodeProcess) {
    let mut spec = specs(&root.join(name), 1, false, "").remove(0);
    spec.checks = format!(
        "nameservers = [\"{}\"]\ndns_timeout = \"1s\"\ndns_budget = \"{BUDGET}\"\nsender_domain = false\nverify_recipients = false\n{checks}",
        dns.addr
    );
    let node = spec.start();
    (spec, node)
}

/// Sends one message; its DATA code and the seconds MAIL+RCPT and DATA took.
fn send(spec: &Spec, source: &str, signed: bool) -> (u16, f64, f64) {
    let (host, port) = (spec.listen_ip.to_string(), spec.smtp.to_string());
    let out = python(SEND, &[&host, &port, source, if signed { "1" } else { "0" }]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"MESSAGE"), "{out}");
    (fields[1].parse().unwrap(), fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// The queries of one message: what the dead server got while it was sent.
fn asked_during(dns: &DeadDns, send: impl FnOnce()) -> HashMap<String, usize> {
    let before = dns.asked();
    send();
    // Late datagrams of a look-up already given up on are still that message's.
    std::thread::sleep(Duration::from_millis(800));
    let mut after = dns.asked();
    for (name, n) in before {
        *after.get_mut(&name).unwrap() -= n;
    }
    after.retain(|_, n| *n > 0);
    after
}

/// Each delivered message's Authentication-Results, by its Message-ID tag.
fn results(spec: &Spec, count: usize) -> Vec<String> {
    let files = wait_for_maildir_files(&spec.maildir(), "bob", count, Duration::from_secs(10));
    assert_eq!(files.len(), count, "{files:?}");
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let start = text.find("Authentication-Results:").unwrap_or_else(|| panic!("{text}"));
            let header: Vec<&str> =
                text[start..].split("\r\n").take_while(|l| !l.is_empty()).take(6).collect();
            let id = text.lines().find(|l| l.starts_with("Message-ID:")).unwrap_or("").to_string();
            format!("{id} {}", header.join(" "))
        })
        .collect()
}

#[test]
fn a_dead_resolver_costs_the_end_of_data_its_budget_and_each_name_one_try() {
    let root = tempfile::tempdir().unwrap();
    let dns = DeadDns::start();
    // The issue's node: DKIM and DMARC recorded, SPF off (DMARC asks it anyway).
    let checks = "fcrdns = \"off\"\nspf = \"off\"\ndkim = \"header\"\ndmarc = \"header\"";
    let (spec, node) = start(root.path(), "dkim", &dns, checks);
    for (source, signed) in [("127.0.81.1", true), ("127.0.81.2", false)] {
        let mut reply = (0, 0.0, 0.0);
        let asked = asked_during(&dns, || reply = send(&spec, source, signed));
        let (code, _, data) = reply;
        eprintln!("signed={signed}: DATA {code} in {data} s; asked {asked:?}");
        assert_eq!(code, 250, "a timeout refuses nothing:\n{}", node.log_text());
        assert!(data < ALLOWED, "the end of DATA took {data} s with a budget of {BUDGET}");
        assert!(asked.contains_key("signed.test"), "SPF asked for DMARC: {asked:?}");
        assert!(asked.values().all(|n| *n <= 3), "one try per name (3 datagrams at most): {asked:?}");
    }
    let results = results(&spec, 2);
    let signed = results.iter().find(|r| r.contains("127.0.81.1.1@")).unwrap();
    assert!(signed.contains("dkim=temperror") && signed.contains("dmarc=temperror"), "{signed}");
    let unsigned = results.iter().find(|r| r.contains("127.0.81.2.0@")).unwrap();
    assert!(unsigned.contains("dkim=none") || !unsigned.contains("dkim="), "{unsigned}");
    assert!(unsigned.contains("dmarc=temperror"), "{unsigned}");
}

#[test]
fn every_check_of_a_message_shares_one_budget() {
    let root = tempfile::tempdir().unwrap();
    let dns = DeadDns::start();
    // (Reverse DNS of a loopback client comes from /etc/hosts, not DNS.)
    let checks = "fcrdns = \"off\"\nspf = \"header\"\ndkim = \"header\"\ndmarc = \"header\"";
    let (spec, node) = start(root.path(), "all", &dns, checks);
    let (code, mail, data) = send(&spec, "127.0.82.1", true);
    assert_eq!(code, 250, "{}", node.log_text());
    eprintln!("MAIL and RCPT in {mail} s, DATA in {data} s");
    assert!(
        mail + data < ALLOWED,
        "MAIL to the end of DATA took {mail} + {data} s with a budget of {BUDGET}"
    );
    let results = results(&spec, 1);
    for check in ["spf=temperror", "dkim=temperror", "dmarc=temperror"] {
        assert!(results[0].contains(check), "{check}: {}", results[0]);
    }
}
