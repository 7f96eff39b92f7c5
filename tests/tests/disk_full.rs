//! A full disk, for real: the node's data directory on a small tmpfs of the
//! test's own that is filled to the last byte and emptied again, while the
//! node (the real binary) takes mail over SMTP. Needs root (mount).
//!
//! - The queue database's own commits fail (ENOSPC) and redb latches the
//!   error: the node reopens it by itself and takes mail again once there
//!   is room, without a restart; nothing that got its 250 is lost.
//! - Below `queue.min_free`, MAIL and a DATA in progress get `452 4.3.1`
//!   and no partial spool file is left.
//! - Bodies in flight are bounded in all and per source block.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use magicmx_node::Queue;
use magicmx_tests::{node_config, python, wait_for_maildir_files, NodeProcess, Tmpfs};

/// Sends one message of about `size` octets tagged `tag` (its Subject and
/// Message-ID), from `source` if given; prints the first reply that is not
/// 250 (`MAIL 452 …`) or the reply to the message (`DATA 250 …`).
const SEND: &str = r#"
import smtplib, sys
port, tag, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
source = (sys.argv[4], 0) if len(sys.argv) > 4 else None
try:
    s = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=source)
except smtplib.SMTPConnectError as e:
    print("CONNECT", e.smtp_code, e.smtp_error.decode()); sys.exit(0)
s.ehlo("client.test")
code, text = s.mail("alice@client.test")
if code != 250:
    print("MAIL", code, text.decode()); sys.exit(0)
code, text = s.rcpt("bob@example.test")
if code != 250:
    print("RCPT", code, text.decode()); sys.exit(0)
body = "Subject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n" % (tag, tag)
body += ("%-76s\r\n" % tag) * (size // 78)
code, text = s.data(body.encode())
print("DATA", code, text.decode().replace("\n", " "))
s.quit()
"#;

fn send(node: &NodeProcess, tag: &str, size: usize) -> String {
    python(SEND, &[&node.smtp.port().to_string(), tag, &size.to_string()]).trim().to_string()
}

/// The test's node: its own `extra` sections, retries every second, and
/// the throttle out of the way (every client here is one block, 127.0.0.0/24).
fn config(dir: &Path, extra: &str) -> String {
    let extra = format!(
        "{extra}\n[delivery]\nretry_first = \"1s\"\nretry_max = \"1s\"\n\n[throttle]\nrecipients_per_hour = 100000\nconnections_per_minute = 100000\n"
    );
    node_config(dir, 0, "").replace("[checks]", &format!("{extra}\n[checks]"))
}

/// The Subjects of the messages delivered to bob.
fn delivered(maildir: &Path, count: usize) -> BTreeSet<String> {
    wait_for_maildir_files(maildir, "bob", count, Duration::from_secs(20))
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_failed_queue_commit_is_recovered_from_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The queue database on a small file system of its own; the spool on
    // another, so that only the database's writes fail.
    let data = Tmpfs::mount(&dir.path().join("data"), 16 << 20);
    let _spool = Tmpfs::mount(&data.path().join("spool"), 64 << 20);
    // Delivery is blocked (the maildir's root is a file): what is taken
    // stays in the queue until the end.
    let maildir = dir.path().join("maildir");
    std::fs::write(&maildir, b"not yet").unwrap();
    // No floor: the commit itself is to meet the full disk.
    let node = NodeProcess::start_on_port_0(dir.path(), &config(dir.path(), "[queue]\nmin_free = 0\n"));
    let mut taken = BTreeSet::new();
    let first = send(&node, "before", 2_000);
    assert!(first.starts_with("DATA 250 "), "{first}");
    taken.insert("before".to_string());

    data.fill(0);
    // Bodies of 40 KiB go into the database's commit: sooner or later one
    // needs a page the full file system cannot give.
    let mut refused = 0;
    for n in 0..60 {
        let tag = format!("full-{n}");
        let reply = send(&node, &tag, 40_000);
        match reply.split(' ').nth(1) {
            Some("250") => drop(taken.insert(tag)),
            Some("451") => {
                assert!(reply.starts_with("DATA 451 4.3.0"), "{reply}");
                refused += 1;
            }
            _ => panic!("{tag}: {reply}"),
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "a full disk makes the queue's commits fail:\n{}", node.log_text());

    data.free();
    // Space is back: the node takes mail again by itself (the same
    // process: it is never restarted here).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    let after = loop {
        n += 1;
        let tag = format!("after-{n}");
        let reply = send(&node, &tag, 40_000);
        if reply.starts_with("DATA 250 ") {
            taken.insert(tag);
            break reply;
        }
        assert!(Instant::now() < deadline, "no 250 within 10 s of freeing the disk: {reply}\n{}", node.log_text());
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(after.starts_with("DATA 250 "), "{after}");
    let log = node.log_text();
    assert!(log.contains("queue database opened again"), "{log}");
    // And the rest of the queue's writes work: delivery records its results.
    std::fs::remove_file(&maildir).unwrap();
    let subjects = delivered(&maildir, taken.len());
    assert_eq!(subjects, taken, "exactly the messages that got 250 are delivered:\n{}", node.log_text());
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.log_text().matches("status=\"sent\"").count() < taken.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    node.stop();
    let queue = Queue::open(data.path()).unwrap();
    assert_eq!(queue.list().unwrap().len(), 0, "every delivery was recorded: the queue is empty");
    drop(queue);
    let files = wait_for_maildir_files(&maildir, "bob", taken.len(), Duration::ZERO);
    assert_eq!(files.len(), taken.len(), "none delivered twice");
}
