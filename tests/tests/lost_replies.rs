//! Both sides of RFC 1047 after a crash. A client's second try of a message
//! whose 250 died with the node is answered with the first copy's 250 and not
//! queued twice; a recipient the next hop took just before the node died (the
//! delivery journal says so) is not sent again.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use magicmx_node::Queue;
use magicmx_tests::{claim_port, node_config, python, wait_for_maildir_files, NodeProcess};

/// Sends one message with the given Message-ID (same bytes every time) and
/// prints the reply; with a PID, SIGKILLs that process the moment the reply
/// arrives.
const SEND: &str = r#"
import os, signal, smtplib, sys
port, mid, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
s.ehlo("client.test")
s.mail("alice@client.test")
s.rcpt("bob@example.test")
code, text = s.data(("Message-ID: <%s@client.test>\r\nSubject: %s\r\n\r\nbody\r\n" % (mid, mid)).encode())
if pid:
    os.kill(pid, signal.SIGKILL)
print(code, text.decode())
"#;

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn send(port: u16, message_id: &str, kill: Option<u32>) -> String {
    let pid = kill.unwrap_or(0).to_string();
    python(SEND, &[&port.to_string(), message_id, &pid]).trim().to_string()
}

/// The queue id in `250 2.0.0 Ok: queued as ID`.
fn queue_id(reply: &str) -> String {
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    reply.rsplit(' ').next().unwrap().to_string()
}

/// The test config with example.test routed to `route` instead of the maildir.
fn config_routed(dir: &std::path::Path, port: u16, route: &str) -> String {
    let maildir_route = format!("route = \"maildir:{}\"", dir.join("maildir").display());
    let config = node_config(dir, port, "");
    assert!(config.contains(&maildir_route));
    config.replace(&maildir_route, &format!("route = \"{route}\""))
}

#[test]
fn a_second_try_after_the_250_died_with_the_node_is_answered_and_not_queued_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = claim_port();
    // First life: the next hop takes connections and never greets, so the
    // message stays queued and nothing else is committed after its 250.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let route = format!("smtp://{}", silent.local_addr().unwrap());
    let node = NodeProcess::start(dir.path(), &config_routed(dir.path(), port, &route), addr(port));
    let first = queue_id(&send(port, "lost-250", Some(node.pid())));
    node.kill9();

    // Second life: the client, which never saw that 250, sends the message
    // again; another message comes too.
    let node = NodeProcess::start(dir.path(), &node_config(dir.path(), port, ""), addr(port));
    let again = queue_id(&send(port, "lost-250", None));
    assert_eq!(again, first, "the second try gets the first copy's 250:\n{}", node.log_text());
    let other = queue_id(&send(port, "another", None));
    assert_ne!(other, first, "a different message is a different message");
    let maildir = dir.path().join("maildir");
    wait_for_maildir_files(&maildir, "bob", 2, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let files = wait_for_maildir_files(&maildir, "bob", 2, Duration::ZERO);
    let subjects: Vec<String> = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(files.len(), 2, "one copy of each message: {subjects:?}\n{}", node.log_text());
    assert!(subjects.contains(&"Subject: lost-250".to_string()), "{subjects:?}");
    assert!(node.log_text().contains("verdict=\"sent_again\""), "{}", node.log_text());

    // A third try, once the second try's 250 was written, is a new message:
    // nothing is remembered for ever.
    let third = queue_id(&send(port, "lost-250", None));
    assert_ne!(third, first);
}

#[test]
fn a_recipient_the_journal_says_was_taken_is_not_delivered_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let port = claim_port();
    let config = node_config(dir.path(), port, "");
    // First life: the maildir cannot be written (its root is a file), so both
    // messages stay queued; then the node dies.
    let maildir = dir.path().join("maildir");
    std::fs::write(&maildir, b"not a directory").unwrap();
    let node = NodeProcess::start(dir.path(), &config, addr(port));
    let taken = queue_id(&send(port, "taken", None));
    let pending = queue_id(&send(port, "pending", None));
    node.kill9();
    // What the journal holds when the next hop said 250 for the first message
    // and the node died before the queue recorded it.
    std::fs::write(dir.path().join("data/delivered-1.log"), format!("{taken} 0\n")).unwrap();

    // Second life: the maildir works; only the other message is delivered.
    std::fs::remove_file(&maildir).unwrap();
    let node = NodeProcess::start(dir.path(), &config, addr(port));
    wait_for_maildir_files(&maildir, "bob", 1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let files = wait_for_maildir_files(&maildir, "bob", 1, Duration::ZERO);
    assert_eq!(files.len(), 1, "{}", node.log_text());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Subject: pending") && text.contains(&pending), "{text}");
    assert!(node.log_text().contains("delivery journal"), "{}", node.log_text());
    node.stop();
    assert!(Queue::open(&dir.path().join("data")).unwrap().list().unwrap().is_empty());
    assert!(!dir.path().join("data/delivered-1.log").exists(), "an applied journal file is removed");
}
