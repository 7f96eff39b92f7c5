//! Delivery through real peers: Python's smtplib sends to the real `magicmx`
//! binary, which finds the real MX through an authoritative DNS server
//! (hickory-server, in this process) and delivers to Postfix's smtp-sink.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use magicmx_tests::CHECKS_OFF;
use magicmx_tests::{claim_port, python, NodeProcess, Sink, TestDns, Zone, LOOPBACK_ADMIN};

/// Sends one message; prints the server's verdict.
const SEND: &str = r#"
import smtplib, sys
port, sender, rcpt, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
s.ehlo("client.test")
s.mail(sender)
print("rcpt", s.rcpt(rcpt)[0])
print("data", s.data(("Subject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\nbody of %s\r\n" % (subject, subject, subject)).encode())[0])
s.quit()
"#;

fn send(node: &NodeProcess, sender: &str, rcpt: &str, subject: &str) {
    let out = python(SEND, &[&node.smtp.port().to_string(), sender, rcpt, subject]);
    assert!(out.contains("rcpt 250") && out.contains("data 250"), "{out}\n{}", node.log_text());
}

fn ip(a: u8, b: u8, c: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, a, b, c)
}

/// A node serving example.test by MX, asking `dns`, MX hosts on `mx_port`,
/// retrying after a second; `domain` and `delivery` add keys to those sections.
fn start_node(dir: &Path, dns: &TestDns, mx_port: u16, domain: &str, delivery: &str) -> NodeProcess {
    let port = claim_port();
    let config = format!(
        r#"[node]
name = "delivery-test"
data_dir = "{data}"

[smtp]
listen = ["127.0.0.1:{port}"]
hostname = "mx1.mesh.test"
greet_pause = "0s"

[mesh]
magic_mx_names = ["*.mesh.test"]

[delivery]
port = {mx_port}
retry_first = "1s"
retry_max = "2s"
connect_timeout = "2s"
{delivery}

[checks]
nameservers = ["{dns}"]
dns_timeout = "2s"
{CHECKS_OFF}
[[domain]]
name = "example.test"
route = "mx"
{domain}

{LOOPBACK_ADMIN}"#,
        data = dir.join("data").display(),
        dns = dns.addr,
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    NodeProcess::start(dir, &config, addr)
}

fn wait_for_log(node: &NodeProcess, needle: &str, count: usize, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if node.log_text().matches(needle).count() >= count {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn delivers_to_the_real_mx_and_never_to_the_magic_one() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let dns = TestDns::start(&[
        Zone::new("example.test")
            .mx(10, "mx1.mesh.test")
            .mx(20, "mail.example.test")
            .a("mail.example.test", ip(0, 31, 3)),
        Zone::new("mesh.test").a("mx1.mesh.test", ip(0, 31, 2)),
    ]);
    let magic = Sink::start(dir.path(), SocketAddr::new(ip(0, 31, 2).into(), mx_port), &[]);
    let real = Sink::start(dir.path(), SocketAddr::new(ip(0, 31, 3).into(), mx_port), &[]);
    let node = start_node(dir.path(), &dns, mx_port, "", "");
    send(&node, "alice@client.test", "bob@example.test", "via-mx");
    let got = real.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "the real MX got the message:\n{}", node.log_text());
    let message = &got[0];
    assert!(message.contains("X-Mail-Args: <alice@client.test>"), "{message}");
    assert!(message.contains("X-Rcpt-Args: <bob@example.test>"), "{message}");
    assert!(message.contains("by mx1.mesh.test (magicmx) with ESMTP id"), "{message}");
    assert!(message.contains("Subject: via-mx") && message.contains("body of via-mx"), "{message}");
    assert!(magic.messages().is_empty(), "nothing went to the magic MX");
}

#[test]
fn an_mx_that_points_back_at_the_node_is_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[Zone::new("example.test")
        .mx(10, "loop.example.test")
        .a("loop.example.test", Ipv4Addr::LOCALHOST)]);
    // The MX port is the node's own SMTP port: delivering would loop.
    let port = claim_port();
    let config_port = port;
    let node = {
        let config = format!(
            "[node]\ndata_dir = \"{}\"\n[smtp]\nlisten = [\"127.0.0.1:{config_port}\"]\nhostname = \"mx1.mesh.test\"\ngreet_pause = \"0s\"\n[delivery]\nport = {config_port}\nretry_first = \"1s\"\nretry_max = \"2s\"\n[checks]\nnameservers = [\"{}\"]\nfcrdns = \"off\"\nspf = \"off\"\nsender_domain = false\nverify_recipients = false\ndkim = \"off\"\ndmarc = \"off\"\n[[domain]]\nname = \"example.test\"\nroute = \"mx\"\n{LOOPBACK_ADMIN}",
            dir.path().join("data").display(),
            dns.addr
        );
        NodeProcess::start(dir.path(), &config, format!("127.0.0.1:{port}").parse().unwrap())
    };
    send(&node, "alice@client.test", "bob@example.test", "loop");
    assert!(
        wait_for_log(&node, "is this node: mail loops back", 1, Duration::from_secs(10)),
        "{}",
        node.log_text()
    );
    assert_eq!(
        node.log_text().matches("verdict=\"accepted\"").count(),
        1,
        "the node never took its own mail back"
    );
}

#[test]
fn temporary_refusal_then_acceptance_delivers_once_after_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let mx = SocketAddr::new(ip(0, 32, 3).into(), mx_port);
    let dns = TestDns::start(&[Zone::with_mx_at("example.test", ip(0, 32, 3))]);
    let refusing = Sink::start(dir.path(), mx, &["-r", "RCPT"]);
    let node = start_node(dir.path(), &dns, mx_port, "", "");
    send(&node, "alice@client.test", "bob@example.test", "retry-me");
    assert!(wait_for_log(&node, "status=\"deferred\"", 2, Duration::from_secs(10)), "{}", node.log_text());
    assert!(refusing.messages().is_empty());
    drop(refusing);
    let accepting = Sink::start(dir.path(), mx, &[]);
    let got = accepting.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "delivered after the retry:\n{}", node.log_text());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(accepting.messages().len(), 1, "and only once");
    assert!(got[0].contains("Subject: retry-me"));
    assert_eq!(node.log_text().matches("status=\"sent\"").count(), 1);
}

/// Checks a DSN with Python's email package: RFC 3464 structure and fields.
const CHECK_DSN: &str = r#"
import email, sys
text = open(sys.argv[1]).read()
msg = email.message_from_string(text)
assert msg.get_content_type() == "multipart/report", msg.get_content_type()
assert msg.get_param("report-type") == "delivery-status", msg.get_param("report-type")
parts = msg.get_payload()
assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"], [p.get_content_type() for p in parts]
status = parts[1].get_payload()
per_message, per_recipient = status[0], status[1]
assert per_message["Reporting-MTA"] == "dns; mx1.mesh.test", per_message["Reporting-MTA"]
assert per_recipient["Final-Recipient"] == "rfc822; bob@example.test", per_recipient["Final-Recipient"]
assert per_recipient["Action"] == "failed"
assert per_recipient["Status"].startswith("5."), per_recipient["Status"]
assert per_recipient["Diagnostic-Code"].startswith("smtp; 5"), per_recipient["Diagnostic-Code"]
assert "Subject: bounce-me" in parts[2].get_payload(), parts[2].get_payload()
print("DSN OK", per_recipient["Status"])
"#;

#[test]
fn permanent_refusal_returns_a_dsn_but_never_for_a_null_sender() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let dns = TestDns::start(&[
        Zone::with_mx_at("example.test", ip(0, 33, 3)),
        Zone::with_mx_at("client.test", ip(0, 33, 5)),
    ]);
    let _refusing = Sink::start(dir.path(), SocketAddr::new(ip(0, 33, 3).into(), mx_port), &["-f", "RCPT"]);
    let senders_mx = Sink::start(dir.path(), SocketAddr::new(ip(0, 33, 5).into(), mx_port), &[]);
    let node = start_node(dir.path(), &dns, mx_port, "", "");
    send(&node, "alice@client.test", "bob@example.test", "bounce-me");
    let got = senders_mx.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "the sender got a DSN:\n{}", node.log_text());
    let dsn = &got[0];
    assert!(dsn.contains("X-Mail-Args: <>"), "a DSN comes from the null sender: {dsn}");
    assert!(dsn.contains("X-Rcpt-Args: <alice@client.test>"), "{dsn}");
    let dsn_file = dir.path().join("dsn.eml");
    std::fs::write(&dsn_file, dsn).unwrap();
    let out = python(CHECK_DSN, &[dsn_file.to_str().unwrap()]);
    assert!(out.contains("DSN OK 5."), "{out}");

    // The same refusal for a message from the null sender: no DSN.
    send(&node, "", "bob@example.test", "bounce-me-quietly");
    assert!(wait_for_log(&node, "status=\"bounced\"", 2, Duration::from_secs(10)), "{}", node.log_text());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(senders_mx.messages().len(), 1, "no DSN for a null-sender message");
    assert_eq!(node.log_text().matches("DSN queued").count(), 1);
}

#[test]
fn restart_while_messages_wait_for_retry_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let mx = SocketAddr::new(ip(0, 34, 3).into(), mx_port);
    let dns = TestDns::start(&[Zone::with_mx_at("example.test", ip(0, 34, 3))]);
    // Nothing listens at the MX yet: every message waits for a retry.
    let node = start_node(dir.path(), &dns, mx_port, "", "");
    const COUNT: usize = 5;
    for n in 0..COUNT {
        send(&node, "alice@client.test", "bob@example.test", &format!("queued-{n}"));
    }
    assert!(
        wait_for_log(&node, "status=\"deferred\"", COUNT, Duration::from_secs(10)),
        "{}",
        node.log_text()
    );
    let port = node.smtp.port();
    node.kill9();
    let config = std::fs::read_to_string(dir.path().join("magicmx.toml")).unwrap();
    let node = NodeProcess::start(dir.path(), &config, format!("127.0.0.1:{port}").parse().unwrap());
    let sink = Sink::start(dir.path(), mx, &[]);
    let got = sink.wait_for(COUNT, Duration::from_secs(20));
    assert_eq!(got.len(), COUNT, "every message arrives:\n{}", node.log_text());
    std::thread::sleep(Duration::from_secs(3));
    let got = sink.messages();
    let mut subjects: Vec<&str> =
        got.iter().map(|m| m.lines().find(|l| l.starts_with("Subject:")).unwrap()).collect();
    subjects.sort();
    let expected: Vec<String> = (0..COUNT).map(|n| format!("Subject: queued-{n}")).collect();
    assert_eq!(subjects, expected, "each exactly once");
}

/// A CA and a certificate it signed for `host`, as PEM files in `dir`:
/// returns (ca.pem, cert.pem, key.pem).
fn test_ca(dir: &Path, host: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![host.to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

#[test]
fn required_tls_delivers_only_over_a_verified_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let dns = TestDns::start(&[Zone::with_mx_at("example.test", ip(0, 35, 3))]);
    // The real MX is a second magicmx with a certificate from the test CA.
    let (ca, cert, key) = test_ca(dir.path(), "mail.example.test");
    let mx_dir = dir.path().join("mx");
    std::fs::create_dir_all(&mx_dir).unwrap();
    let mx_config = format!(
        "[node]\ndata_dir = \"{data}\"\n[smtp]\nlisten = [\"127.0.35.3:{mx_port}\"]\nhostname = \"mail.example.test\"\ngreet_pause = \"0s\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n[checks]\nfcrdns = \"off\"\nspf = \"off\"\nsender_domain = false\nverify_recipients = false\ndkim = \"off\"\ndmarc = \"off\"\n[[domain]]\nname = \"example.test\"\nroute = \"maildir:{maildir}\"\n{LOOPBACK_ADMIN}",
        data = mx_dir.join("data").display(),
        maildir = mx_dir.join("maildir").display(),
        cert = cert.display(),
        key = key.display(),
    );
    let _mx = NodeProcess::start(&mx_dir, &mx_config, SocketAddr::new(ip(0, 35, 3).into(), mx_port));
    // The sending node trusts the test CA through `delivery.ca_file`.
    let ca_file = format!("ca_file = \"{}\"", ca.display());
    let node = start_node(dir.path(), &dns, mx_port, "tls = \"require\"", &ca_file);
    send(&node, "alice@client.test", "bob@example.test", "over-tls");
    let files =
        magicmx_tests::wait_for_maildir_files(&mx_dir.join("maildir"), "bob", 1, Duration::from_secs(15));
    assert_eq!(files.len(), 1, "delivered:\n{}", node.log_text());
    let stored = std::fs::read_to_string(&files[0]).unwrap();
    assert!(stored.contains("by mail.example.test (magicmx) with ESMTPS id"), "{stored}");
}

#[test]
fn required_tls_defers_when_the_mx_offers_none() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let dns = TestDns::start(&[Zone::with_mx_at("example.test", ip(0, 36, 3))]);
    let sink = Sink::start(dir.path(), SocketAddr::new(ip(0, 36, 3).into(), mx_port), &[]);
    let node = start_node(dir.path(), &dns, mx_port, "tls = \"require\"", "");
    send(&node, "alice@client.test", "bob@example.test", "plaintext-never");
    assert!(
        wait_for_log(&node, "does not offer STARTTLS", 1, Duration::from_secs(10)),
        "{}",
        node.log_text()
    );
    assert!(node.log_text().contains("status=\"deferred\""));
    assert!(sink.messages().is_empty(), "nothing went out in plaintext");
}

#[test]
fn expired_messages_are_returned_but_not_to_a_sender_domain_without_mail() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let dns = TestDns::start(&[
        Zone::with_mx_at("example.test", ip(0, 37, 3)),
        Zone::with_mx_at("client.test", ip(0, 37, 5)),
    ]);
    let senders_mx = Sink::start(dir.path(), SocketAddr::new(ip(0, 37, 5).into(), mx_port), &[]);
    // Nothing listens at example.test's MX; messages expire after 2 seconds.
    let node = start_node(dir.path(), &dns, mx_port, "", "expire = \"2s\"");
    send(&node, "alice@client.test", "bob@example.test", "too-late");
    send(&node, "forged@nowhere.test", "bob@example.test", "too-late-forged");
    assert!(wait_for_log(&node, "gave up after 2s", 2, Duration::from_secs(20)), "{}", node.log_text());
    let got = senders_mx.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "alice gets her DSN:\n{}", node.log_text());
    assert!(got[0].contains("Action: failed") && got[0].contains("gave up after 2s"), "{}", got[0]);
    // Its DSN is decided beside alice's, after a DNS look-up of its own.
    assert!(
        wait_for_log(&node, "no DSN: the sender is not believable", 1, Duration::from_secs(10)),
        "no backscatter to nowhere.test:\n{}",
        node.log_text()
    );
}

#[test]
fn with_every_delivery_slot_busy_messages_wait_their_turn_and_all_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    let dns = TestDns::start(&[Zone::with_mx_at("example.test", ip(0, 38, 3))]);
    // The next hop takes a second over each message; one delivery at a time,
    // so the others arrive while the only slot is busy.
    let sink = Sink::start(dir.path(), SocketAddr::new(ip(0, 38, 3).into(), mx_port), &["-w", "1"]);
    let node = start_node(dir.path(), &dns, mx_port, "", "max_concurrent = 1");
    for n in 0..4 {
        send(&node, "alice@client.test", "bob@example.test", &format!("turn-{n}"));
    }
    let got = sink.wait_for(4, Duration::from_secs(30));
    assert_eq!(got.len(), 4, "{}", node.log_text());
    for n in 0..4 {
        assert!(got.iter().any(|m| m.contains(&format!("turn-{n}"))), "turn-{n} arrived");
    }
}
