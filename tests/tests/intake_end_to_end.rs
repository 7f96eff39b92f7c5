//! The real `magicmx` binary taking mail from real clients (Python's smtplib
//! and a raw socket), as a postmaster would see it.

use std::net::SocketAddr;
use std::time::Duration;

use magicmx_tests::{claim_port, node_config, python, wait_for_maildir_files, NodeProcess, RawClient};

const SEND: &str = r#"
import smtplib, sys
port, body = int(sys.argv[1]), sys.argv[2].encode()
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
s.ehlo("client.test")
refused = s.sendmail("alice@client.test", ["bob@example.test"], body)
print("refused", refused)
s.quit()
"#;

fn start(dir: &std::path::Path, extra: &str) -> NodeProcess {
    let port = claim_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    NodeProcess::start(dir, &node_config(dir, port, extra), addr)
}

#[test]
fn smtplib_message_lands_in_the_maildir_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "");
    // CRLF line ends, a line that needs dot-stuffing, 8-bit text, long-ish lines.
    let body = "From: Alice <alice@client.test>\r\nTo: bob@example.test\r\nSubject: byte for byte\r\n\r\nHello Bob,\r\n.a line that starts with a dot\r\n..two dots\r\n\r\nGrüße, Alice\r\n".to_string()
        + &"x".repeat(900)
        + "\r\n";
    let out = python(SEND, &[&node.smtp.port().to_string(), &body]);
    assert!(out.contains("refused {}"), "{out}");
    let files = wait_for_maildir_files(&dir.path().join("maildir"), "bob", 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1, "one file for one recipient:\n{}", node.log_text());
    let (received, message) = stored_message(&files[0]);
    assert_eq!(message, body.as_bytes(), "the message after the Received header is exactly what was sent");
    assert!(received.contains("by mx.mesh.test (magicmx) with ESMTP id"), "{received}");
}

/// A stored message's own `Received:` header, and the message after it (the
/// message must begin with `From: Alice`).
fn stored_message(file: &std::path::Path) -> (String, Vec<u8>) {
    let stored = std::fs::read(file).unwrap();
    let received_at = find(&stored, b"Received: from client.test").expect("a Received header");
    let after = &stored[received_at..];
    let header_end = find(after, b"\r\nFrom: Alice").expect("the message after the Received header") + 2;
    (String::from_utf8_lossy(&after[..header_end]).into_owned(), after[header_end..].to_vec())
}

/// RFC 5321 caps a line at 1,000 octets, but such mail exists and Postfix
/// takes it (it breaks the lines when it sends them on): refusing it would
/// bounce mail the real MX accepts.
#[test]
fn a_message_with_lines_over_1000_octets_is_taken_with_them_broken_as_postfix_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "");
    let body = format!(
        "From: Alice <alice@client.test>\r\nTo: bob@example.test\r\nSubject: {}\r\n\r\n<p>{}</p>\r\nbye\r\n",
        "long ".repeat(400),
        "html without line breaks ".repeat(400)
    );
    let out = python(SEND, &[&node.smtp.port().to_string(), &body]);
    assert!(out.contains("refused {}"), "taken: {out}");
    let files = wait_for_maildir_files(&dir.path().join("maildir"), "bob", 1, Duration::from_secs(10));
    let (_, message) = stored_message(&files[0]);
    let message = String::from_utf8(message).unwrap();
    assert!(message.split("\r\n").all(|line| line.len() <= 998), "every line fits");
    assert_eq!(message.replace("\r\n ", ""), body, "nothing lost: only CR LF SPACE was added");
}

#[test]
fn relay_to_a_domain_not_served_is_refused_550_5_7_1() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "");
    let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("client.test")
s.mail("alice@client.test")
for rcpt in ["victim@elsewhere.test", "user%elsewhere.test@example.test", "user@[127.0.0.1]", "postmaster@example.test"]:
    code, text = s.rcpt(rcpt)
    print(rcpt, code, text.decode())
s.quit()
"#;
    let out = python(script, &[&node.smtp.port().to_string()]);
    assert!(out.contains("victim@elsewhere.test 550 5.7.1"), "{out}");
    assert!(out.contains("user%elsewhere.test@example.test 550 5.7.1"), "{out}");
    // An address literal is refused too (smtp-proto already refuses its syntax).
    assert!(out.contains("user@[127.0.0.1] 5"), "{out}");
    assert!(out.contains("postmaster@example.test 250"), "{out}");
}

#[test]
fn starttls_upgrades_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["mx.mesh.test".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let extra = format!("tls_cert = \"{}\"\ntls_key = \"{}\"", cert_path.display(), key_path.display());
    let node = start(dir.path(), &extra);
    let script = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("client.test")
print("offered", s.has_extn("starttls"))
s.starttls(context=ctx)
s.ehlo("client.test")
print("offered-after", s.has_extn("starttls"))
s.sendmail("alice@client.test", ["bob@example.test"], b"Subject: tls\r\n\r\nsecret\r\n")
s.quit()
"#;
    let out = python(script, &[&node.smtp.port().to_string(), &cert_path.display().to_string()]);
    assert!(out.contains("offered True") && out.contains("offered-after False"), "{out}");
    let files = wait_for_maildir_files(&dir.path().join("maildir"), "bob", 1, Duration::from_secs(10));
    let stored = String::from_utf8(std::fs::read(&files[0]).unwrap()).unwrap();
    assert!(stored.contains("with ESMTPS id"), "{stored}");
}

#[test]
fn client_that_talks_before_the_greeting_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "");
    // Restart with a greet pause long enough to talk into.
    let port = node.smtp.port();
    node.kill9();
    let config = node_config(dir.path(), port, "").replace("greet_pause = \"0s\"", "greet_pause = \"500ms\"");
    let node = NodeProcess::start(dir.path(), &config, format!("127.0.0.1:{port}").parse().unwrap());
    let mut client = RawClient::connect(node.smtp);
    client.send(b"EHLO eager.test\r\n");
    let reply = client.reply();
    assert!(reply.starts_with("554 5.5.1"), "{reply}");
    assert!(client.is_closed());
    let mut polite = RawClient::connect(node.smtp);
    assert!(polite.reply().starts_with("220 "));
}

#[test]
fn pipelining_client_is_refused_554_and_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "");
    let mut client = RawClient::connect(node.smtp);
    assert!(client.reply().starts_with("220 "));
    client.send(b"EHLO bot.test\r\nMAIL FROM:<a@bot.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
    let reply = client.reply();
    assert!(reply.starts_with("554 5.5.1"), "{reply}");
    assert!(client.is_closed());
}

#[test]
fn connections_over_the_per_ip_cap_get_421() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "max_connections_per_ip = 2");
    // The start-up probe's slot is handed back just after its connection closes.
    std::thread::sleep(Duration::from_millis(200));
    let mut first = RawClient::connect(node.smtp);
    let mut second = RawClient::connect(node.smtp);
    assert!(first.reply().starts_with("220 ") && second.reply().starts_with("220 "));
    let mut third = RawClient::connect(node.smtp);
    let reply = third.reply();
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = RawClient::connect(node.smtp);
    assert!(fourth.reply().starts_with("220 "), "the slot came back");
}

/// One small message; prints 250, or the code and text of the refusal at DATA.
const SEND_SMALL: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
try:
    s.sendmail("carol@client.test", ["bob@example.test"], b"Subject: small\r\n\r\nsmall\r\n")
    print(250)
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;

/// A raw client in the middle of DATA, having sent `kib` KiB of the message.
fn inside_data(node: &NodeProcess, kib: usize) -> RawClient {
    let mut client = RawClient::connect(node.smtp);
    assert!(client.reply().starts_with("220 "));
    for (command, code) in [
        ("EHLO big.test", "250"),
        ("MAIL FROM:<big@client.test>", "250"),
        ("RCPT TO:<bob@example.test>", "250"),
        ("DATA", "354"),
    ] {
        client.send(format!("{command}\r\n").as_bytes());
        let reply = client.reply();
        assert!(reply.starts_with(code), "{command}: {reply}");
    }
    let line = format!("{}\r\n", "x".repeat(510));
    for _ in 0..2 * kib {
        client.send(line.as_bytes());
    }
    // Let the node read it all.
    std::thread::sleep(Duration::from_millis(300));
    client
}

#[test]
fn messages_being_read_share_a_memory_budget_and_past_it_data_gets_452() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "max_message_size = 131072\nmax_data_memory = 131072");
    let port = node.smtp.port().to_string();
    let mut big = inside_data(&node, 100);
    let out = python(SEND_SMALL, &[&port]);
    assert!(out.starts_with("452 4.3.1"), "the budget is taken: {out}");
    big.send(b".\r\n");
    let reply = big.reply();
    assert!(reply.starts_with("250 "), "the big message is not disturbed: {reply}");
    assert_eq!(python(SEND_SMALL, &[&port]).trim(), "250", "its memory is back once it is queued");
    // A client that goes away in the middle of DATA gives its share back too.
    drop(inside_data(&node, 100));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(python(SEND_SMALL, &[&port]).trim(), "250", "{}", node.log_text());
    let files = wait_for_maildir_files(&dir.path().join("maildir"), "bob", 3, Duration::from_secs(10));
    assert_eq!(files.len(), 3);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
