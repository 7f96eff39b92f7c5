//! Slow and idle clients do not starve the node: with 1,000 idle connections
//! and senders dribbling their DATA, a normal message is still taken within
//! a few seconds and delivered.

use std::time::{Duration, Instant};

use magicmx_tests::{python, specs, wait_for_maildir_files};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: String, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

async fn read_some(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_message_gets_through_1000_idle_connections_and_slow_senders() {
    let root = tempfile::tempdir().unwrap();
    let spec = specs(root.path(), 1, false, "").remove(0);
    let node = spec.start();
    let addr = spec.smtp_addr();

    // 1,000 idle connections: 100 blocks of 10 (within the per-address and
    // per-block limits), each greeted and then silent.
    let mut idle = Vec::new();
    for block in 0..100u32 {
        for host in 1..=10u32 {
            let mut stream = connect_from(format!("127.1.{block}.{host}"), addr).await;
            let greeting = read_some(&mut stream).await;
            assert!(greeting.starts_with("220"), "idle connection {block}.{host}: {greeting}");
            idle.push(stream);
        }
    }

    // Five senders that dribble their message a byte every half second.
    let mut slow = Vec::new();
    for n in 0..5u32 {
        slow.push(tokio::spawn(async move {
            let mut s = connect_from(format!("127.2.{n}.1"), addr).await;
            read_some(&mut s).await;
            for command in [
                "EHLO slow.test\r\n",
                "MAIL FROM:<slow@slow.test>\r\n",
                "RCPT TO:<bob@example.test>\r\n",
                "DATA\r\n",
            ] {
                s.write_all(command.as_bytes()).await.unwrap();
                read_some(&mut s).await;
            }
            for byte in b"Subject: slow\r\n\r\nvery slow".iter().cycle().take(40) {
                if s.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A normal message, from elsewhere.
    let port = spec.smtp.to_string();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let script = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.3.0.1", 0), timeout=30)
s.sendmail("alice@client.test", ["bob@example.test"], b"Subject: normal\r\n\r\nhello\r\n")
s.quit()
print("sent")
"#;
        python(script, &[&port])
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(out.contains("sent"), "{out}");
    assert!(took < Duration::from_secs(5), "taken within a few seconds: {took:?}");
    let maildir = spec.maildir();
    let files = tokio::task::spawn_blocking(move || {
        wait_for_maildir_files(&maildir, "bob", 1, Duration::from_secs(10))
    })
    .await
    .unwrap();
    let normal = files.iter().any(|f| std::fs::read_to_string(f).unwrap().contains("Subject: normal"));
    assert!(normal, "and delivered: {}", node.log_text());
    for task in slow {
        task.abort();
    }
    drop(idle);
}
