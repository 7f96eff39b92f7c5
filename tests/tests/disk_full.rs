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
        assert!(
            Instant::now() < deadline,
            "no 250 within 10 s of freeing the disk: {reply}\n{}",
            node.log_text()
        );
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

/// `/metrics` of the node: each sample line's name (with its labels) and value.
fn metrics(node: &NodeProcess) -> std::collections::HashMap<String, f64> {
    const GET: &str = "import sys, urllib.request\nprint(urllib.request.urlopen('http://%s/metrics' % sys.argv[1], timeout=10).read().decode())";
    let text = python(GET, &[&node.admin.expect("the admin address").to_string()]);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.rsplit_once(' ').and_then(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        })
        .collect()
}

fn metric(node: &NodeProcess, name: &str) -> f64 {
    metrics(node).get(name).copied().unwrap_or(0.0)
}

/// The files in the spool now.
fn spool_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("spool")).unwrap().count()
}

#[test]
fn below_min_free_mail_and_a_data_in_progress_get_452_and_nothing_is_left() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let data = Tmpfs::mount(&dir.path().join("data"), 64 * MIB);
    let node =
        NodeProcess::start_on_port_0(dir.path(), &config(dir.path(), "[queue]\nmin_free = 16777216\n"));

    // 12 MiB free, under the 16 MiB floor: refused at MAIL, three times.
    data.fill(12 * MIB);
    for n in 0..3 {
        let reply = send(&node, &format!("floor-{n}"), 1_000);
        assert!(
            reply.starts_with("MAIL 452 4.3.1 Insufficient system storage: the disk is nearly full"),
            "{reply}"
        );
    }
    // 20 MiB free: a 10 MiB message starts, and the floor is met half way.
    data.free();
    data.fill(20 * MIB);
    let reply = send(&node, "big-while-full", 10 * MIB as usize);
    assert!(reply.starts_with("DATA 452 4.3.1"), "{reply}");
    assert_eq!(spool_files(data.path()), 0, "the partial spool file is gone");
    assert!(data.available() >= 19 * MIB, "its space is back: {} free", data.available());
    // Space again: the same message is taken.
    data.free();
    let reply = send(&node, "big-with-room", 10 * MIB as usize);
    assert!(reply.starts_with("DATA 250 "), "{reply}");
    let subjects = delivered(&dir.path().join("maildir"), 1);
    assert_eq!(
        subjects,
        BTreeSet::from(["big-with-room".to_string()]),
        "only the message taken is delivered"
    );

    let log = node.log_text();
    assert_eq!(log.matches("disk nearly full").count(), 1, "one log line for four refusals:\n{log}");
    assert!(log.contains("refused=1"), "{log}");
    assert_eq!(metric(&node, "magicmx_refusals_total{reason=\"disk_full\"}"), 4.0);
    assert!(metric(&node, "magicmx_disk_free_bytes") > 16.0 * MIB as f64);
}

/// Starts a message of `size` octets from `source` and leaves it unended;
/// the process prints HOLDING once it has sent it, and waits to be killed.
const HOLD: &str = r#"
import smtplib, sys
port, source, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=(source, 0))
s.ehlo("client.test")
assert s.mail("alice@client.test")[0] == 250
assert s.rcpt("bob@example.test")[0] == 250
assert s.docmd("DATA")[0] == 354
s.send(("Subject: held\r\n\r\n" + ("%-76s\r\n" % "held") * (size // 78)).encode())
print("HOLDING", flush=True)
sys.stdin.read()
"#;

/// A message being sent and not ended, until dropped.
struct Held(std::process::Child);

impl Held {
    fn start(node: &NodeProcess, source: &str, size: usize) -> Held {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .args(["-c", HOLD, &node.smtp.port().to_string(), source, &size.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "HOLDING", "the held message was started");
        Held(child)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn send_from(node: &NodeProcess, source: &str, tag: &str, size: usize) -> String {
    python(SEND, &[&node.smtp.port().to_string(), tag, &size.to_string(), source]).trim().to_string()
}

/// Waits until the bodies in flight (`magicmx_spool_in_flight_bytes`)
/// are as `wanted` says (a held message's pieces have reached the node, or
/// a client gone has given its own back); returns them.
fn in_flight_until(node: &NodeProcess, wanted: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(node, "magicmx_spool_in_flight_bytes");
        if wanted(now) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` pieces at least.
fn pieces(n: u32) -> impl Fn(f64) -> bool {
    move |octets| octets >= f64::from(n) * 65_536.0
}

#[test]
fn bodies_in_flight_are_bounded_per_block_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    // Pieces are 64 KiB (65,536 to 65,613 octets: whole lines), and a
    // message being read holds those handed out: one of 540,000 octets
    // holds 8. Per block 560,000: with one such message in flight, another
    // from its block does not fit (8 + 1 pieces). In all 1,100,000: with
    // two, nothing more does (16 + 1).
    let bounds = "[queue]\nmin_free = 0\nmax_in_flight = 1100000\nmax_in_flight_per_block = 560000\n";
    let config = config(dir.path(), bounds).replace("greet_pause", "max_message_size = 560000\ngreet_pause");
    let node = NodeProcess::start_on_port_0(dir.path(), &config);
    const HELD: usize = 540_000;

    let held_a = Held::start(&node, "127.0.10.1", HELD);
    assert!(pieces(8)(in_flight_until(&node, pieces(8))));
    for n in 0..3 {
        let reply = send_from(&node, "127.0.10.2", &format!("a-{n}"), 1_000);
        assert!(
            reply.starts_with("MAIL 452 4.3.1 Insufficient system storage: too much mail being received from your network 127.0.10.0/24"),
            "{reply}"
        );
    }
    // Another block is not held back by the first.
    let reply = send_from(&node, "127.0.11.1", "b-small", 300_000);
    assert!(reply.starts_with("DATA 250 "), "{reply}");
    assert_eq!(delivered(&dir.path().join("maildir"), 1).len(), 1, "delivered, its spool file gone");

    let held_b = Held::start(&node, "127.0.11.2", HELD);
    assert!(pieces(16)(in_flight_until(&node, pieces(16))));
    let reply = send_from(&node, "127.0.12.1", "c-refused", 1_000);
    assert!(
        reply.starts_with(
            "MAIL 452 4.3.1 Insufficient system storage: too much mail being received; try again later"
        ),
        "{reply}"
    );
    // The held messages' spool files are the only ones.
    assert_eq!(spool_files(&dir.path().join("data")), 2);

    // A DATA in progress meets its block's bound: a message of block D
    // while another of D is being read ends with 452, its spool file gone.
    drop(held_b);
    let a_alone = in_flight_until(&node, |octets| octets < 9.0 * 65_536.0);
    assert!(pieces(8)(a_alone) && !pieces(9)(a_alone), "held B gave its own back: {a_alone}");
    let held_d = Held::start(&node, "127.0.13.1", 200_000);
    assert!(pieces(11)(in_flight_until(&node, pieces(11))));
    let reply = send_from(&node, "127.0.13.2", "d-mid-data", 450_000);
    assert!(reply.starts_with("DATA 452 4.3.1"), "{reply}");
    assert!(reply.contains("from your network 127.0.13.0/24"), "{reply}");
    assert_eq!(spool_files(&dir.path().join("data")), 2, "held A and held D only");

    // Everyone gone: nothing in flight, and block A is taken again.
    drop((held_a, held_d));
    let left = in_flight_until(&node, |octets| octets == 0.0);
    assert_eq!(left, 0.0, "what clients left is given back");
    let reply = send_from(&node, "127.0.10.3", "a-later", 300_000);
    assert!(reply.starts_with("DATA 250 "), "{reply}");
    let subjects = delivered(&dir.path().join("maildir"), 2);
    let taken = BTreeSet::from(["a-later".to_string(), "b-small".to_string()]);
    assert_eq!(subjects, taken, "only what got 250 is delivered");
    // The queue drops a delivered message's spool file just after the maildir has it.
    let spool = dir.path().join("data");
    magicmx_tests::wait_until(std::time::Duration::from_secs(10), || spool_files(&spool) == 0);
    assert_eq!(spool_files(&spool), 0, "and the spool is empty once they are");

    let log = node.log_text();
    assert_eq!(
        log.matches("queue.max_in_flight_per_block reached").count(),
        1,
        "one line for four refusals:\n{log}"
    );
    assert_eq!(log.matches("queue.max_in_flight reached").count(), 1, "{log}");
    assert_eq!(metric(&node, "magicmx_refusals_total{reason=\"in_flight_block\"}"), 4.0);
    assert_eq!(metric(&node, "magicmx_refusals_total{reason=\"in_flight\"}"), 1.0);
}

/// The queue in-process, on a tmpfs that fills: readers on other threads
/// go on reading while commits fail and the database is replaced. They see
/// the old handle or the new one (an error from the latched old one, or
/// "unavailable" while it cannot be opened yet), never a closed one, and
/// never fewer messages than were committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_the_old_handle_or_the_new_while_the_queue_is_reopened() {
    use magicmx_node::queue::{Arrival, RecipientState, RecipientStatus};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let data = Tmpfs::mount(&dir.path().join("data"), 8 << 20);
    let _spool = Tmpfs::mount(&data.path().join("spool"), 1 << 20);
    let queue = Queue::open(data.path()).unwrap();
    let envelope = magicmx_node::Envelope {
        sender: None,
        recipients: vec![RecipientState {
            address: magicmx_proto::Address::parse("bob@example.test").unwrap(),
            status: RecipientStatus::Pending { attempts: 0, next_attempt_ms: 0, last_error: None },
        }],
        arrived: 0,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        block: "127.0.0.0/24".into(),
        helo: "client.test".into(),
        tls: false,
        size: 0,
        dsn_for: None,
        spf: None,
    };
    let info = Arrival::local(vec![], false);
    let body = Arc::new(vec![b'x'; 40_000]);
    let committed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(BTreeSet::new()));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, committed, stop, errors) =
                (queue.clone(), committed.clone(), stop.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let floor = committed.load(Ordering::SeqCst);
                    match queue.list() {
                        Ok(list) => assert!(list.len() >= floor, "{} listed, {floor} committed", list.len()),
                        Err(error) => drop(errors.lock().unwrap().insert(error.to_string())),
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    let mut taken = vec![];
    let insert = |queue: &Queue| {
        let (queue, envelope, info, body) = (queue.clone(), envelope.clone(), info.clone(), body.clone());
        async move {
            let id = queue.next_id();
            queue.insert(id, &envelope, &info, Some(body), None).await.map(|()| id)
        }
    };
    for _ in 0..5 {
        taken.push(insert(&queue).await.unwrap());
        committed.fetch_add(1, Ordering::SeqCst);
    }
    data.fill(0);
    let mut failed = 0;
    for _ in 0..200 {
        match insert(&queue).await {
            Ok(id) => {
                taken.push(id);
                committed.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => failed += 1,
        }
        if failed == 3 {
            break;
        }
    }
    assert_eq!(failed, 3, "the full file system makes commits fail");
    data.free();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(id) = insert(&queue).await {
            taken.push(id);
            break;
        }
        assert!(Instant::now() < deadline, "the queue takes writes again once there is room");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("a reader's assertion failed") > 0);
    }
    assert!(queue.reopened() >= 1, "the database was opened again");
    let errors = errors.lock().unwrap();
    assert!(!errors.iter().any(|e| e.contains("closed")), "no reader met a closed handle: {errors:?}");
    let listed: BTreeSet<u64> = queue.list().unwrap().iter().map(|(id, _)| id.0).collect();
    assert_eq!(listed, taken.iter().map(|id| id.0).collect(), "exactly what was committed");
}
