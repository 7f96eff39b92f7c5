//! A message that got 250 is on disk: it survives SIGKILL of the node right
//! after the reply and is delivered once after a restart.

use std::net::SocketAddr;
use std::time::Duration;

use magicmx_node::{Queue, RecipientStatus};
use magicmx_tests::{claim_port, node_config, python, wait_for_maildir_files, NodeProcess};

/// Sends one message and SIGKILLs the node the moment the 250 arrives.
const SEND_THEN_KILL: &str = r#"
import os, signal, smtplib, sys
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
s.ehlo("client.test")
s.mail("alice@client.test")
s.rcpt("bob@example.test")
code, text = s.data(("Subject: message %s\r\n\r\nbody %s\r\n" % (n, n)).encode())
os.kill(pid, signal.SIGKILL)
print(code, text.decode())
"#;

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[test]
fn message_that_got_250_is_in_the_queue_after_sigkill_and_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = claim_port();
    // First life: the maildir cannot be written (its root is a file), so the
    // message can only be in the queue when the node dies.
    let blocked = dir.path().join("maildir");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let config = node_config(dir.path(), port, "");
    let node = NodeProcess::start(dir.path(), &config, addr(port));
    let out = python(SEND_THEN_KILL, &[&port.to_string(), &node.pid().to_string(), "1"]);
    assert!(out.starts_with("250 2.0.0 Ok: queued as"), "{out}");
    node.kill9();

    let queue_path = dir.path().join("data");
    {
        let queue = Queue::open(&queue_path).expect("the queue opens after SIGKILL");
        let queued = queue.list().unwrap();
        assert_eq!(queued.len(), 1, "the accepted message is in the queue");
        let (id, envelope) = &queued[0];
        assert_eq!(envelope.recipients[0].address.to_string(), "bob@example.test");
        assert!(matches!(envelope.recipients[0].status, RecipientStatus::Pending { .. }));
        let body = queue.body(*id).unwrap().expect("its body is in the spool");
        let mut content = vec![];
        body.copy_to(&mut content).unwrap();
        let content = String::from_utf8(content).unwrap();
        assert!(content.starts_with("Received: "), "{content}");
        assert!(content.ends_with("Subject: message 1\r\n\r\nbody 1\r\n"), "{content}");
    }

    // Second life: the maildir is fixed; the restart delivers the message.
    std::fs::remove_file(&blocked).unwrap();
    let node = NodeProcess::start(dir.path(), &config, addr(port));
    let files = wait_for_maildir_files(&blocked, "bob", 1, Duration::from_secs(15));
    assert_eq!(files.len(), 1, "delivered after the restart:\n{}", node.log_text());
    let stored = String::from_utf8(std::fs::read(&files[0]).unwrap()).unwrap();
    assert!(stored.ends_with("body 1\r\n"));
    assert!(wait_for_empty_queue(node, &queue_path), "the queue empties once delivered");
}

#[test]
fn repeated_sigkill_right_after_250_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = claim_port();
    let config = node_config(dir.path(), port, "");
    const ROUNDS: usize = 5;
    for n in 0..ROUNDS {
        let node = NodeProcess::start(dir.path(), &config, addr(port));
        let out = python(SEND_THEN_KILL, &[&port.to_string(), &node.pid().to_string(), &n.to_string()]);
        assert!(out.starts_with("250 "), "{out}");
        node.kill9();
    }
    let node = NodeProcess::start(dir.path(), &config, addr(port));
    let maildir = dir.path().join("maildir");
    let files = wait_for_maildir_files(&maildir, "bob", ROUNDS, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let files_after = wait_for_maildir_files(&maildir, "bob", ROUNDS, Duration::from_secs(0));
    assert_eq!(files.len(), ROUNDS, "every accepted message arrives:\n{}", node.log_text());
    assert_eq!(files_after.len(), ROUNDS, "and none twice");
    let mut subjects: Vec<String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().find(|l| l.starts_with("Subject:")).unwrap().to_string()
        })
        .collect();
    subjects.sort();
    let expected: Vec<String> = (0..ROUNDS).map(|n| format!("Subject: message {n}")).collect();
    assert_eq!(subjects, expected);
}

/// Once the node has logged the delivery, stops it (SIGTERM) and reads the
/// queue itself: it must be empty, and so must the spool.
fn wait_for_empty_queue(node: NodeProcess, queue: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !node.log_text().contains("status=\"sent\"") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    node.stop();
    let empty = Queue::open(queue).unwrap().list().unwrap().is_empty();
    empty && std::fs::read_dir(queue.join("spool")).unwrap().count() == 0
}

/// Starts a message of MIB MiB and never ends it: sends EHLO, MAIL, RCPT,
/// DATA and the lines, then waits (until the node goes away).
const HALF_A_MESSAGE: &str = r#"
import smtplib, sys, time
port, mib = int(sys.argv[1]), int(sys.argv[2])
try:
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.ehlo("client.test")
    s.mail("alice@client.test")
    s.rcpt("bob@example.test")
    s.putcmd("data")
    s.getreply()
    line = b"x" * 998 + b"\r\n"
    for _ in range(mib * 1024 * 1024 // len(line)):
        s.send(line)
    print("sent", flush=True)
    s.sock.recv(1)
except (OSError, smtplib.SMTPException):
    pass
"#;

#[test]
fn a_node_killed_in_the_middle_of_a_large_data_leaves_no_partial_body_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = claim_port();
    let config = node_config(dir.path(), port, "");
    let node = NodeProcess::start(dir.path(), &config, addr(port));
    let client = std::thread::spawn(move || python(HALF_A_MESSAGE, &[&port.to_string(), "8"]));
    // The body goes to disk as it arrives: the spool file grows while DATA is read.
    let spool = dir.path().join("data/spool");
    let spooled = || -> u64 {
        std::fs::read_dir(&spool)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while spooled() < 6 * 1024 * 1024 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(spooled() >= 6 * 1024 * 1024, "the body is written while it is read: {} octets", spooled());
    node.kill9();
    assert!(client.join().unwrap().contains("sent"));
    assert!(spooled() > 0, "the killed node left its partial body behind");

    let node = NodeProcess::start(dir.path(), &config, addr(port));
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "gone after the restart:\n{}", node.log_text());
    assert!(node.log_text().contains("removing the spool file of a message never queued"));
    let send = r#"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.sendmail("alice@client.test", ["bob@example.test"], b"Subject: after\r\n\r\nafter\r\n")
print("taken")
"#;
    assert!(python(send, &[&port.to_string()]).contains("taken"), "the node takes mail again");
}
