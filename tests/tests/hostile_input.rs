//! Doors the network can reach, attacked as an attacker who has read the
//! source would: each test knocks from outside on a real node process and
//! checks what it answers and what it keeps (its memory, from /proc).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use magicmx_tests::{
    claim_port, connect_from, python, specs, wait_for_maildir_files, NodeProcess, RawClient, Spec,
};

/// The node's resident memory in KiB.
fn rss_kib(node: &NodeProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

/// A node whose policy service listens on a port of its own, with `admin` keys added.
fn policy_node(root: &std::path::Path, admin: &str) -> (Spec, NodeProcess, SocketAddr) {
    let spec = specs(root, 1, false, "").remove(0);
    let port = claim_port();
    let config = spec.config().replace(
        "policy_listen = \"127.0.0.1:0\"",
        &format!("policy_listen = \"127.0.0.1:{port}\"\n{admin}"),
    );
    let node = NodeProcess::start(&spec.dir, &config, spec.smtp_addr());
    (spec, node, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Whether the server closes `stream` within `within` (reads until EOF or error).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

fn ask(stream: &mut TcpStream, client: &str) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={client}\n\n").unwrap();
    let mut answer = vec![];
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\n\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        answer.push(byte[0]);
    }
    String::from_utf8(answer).unwrap()
}

#[test]
fn the_policy_service_serves_only_its_clients_and_cuts_off_what_is_out_of_bounds() {
    let root = tempfile::tempdir().unwrap();
    let admin =
        "policy_clients = [\"127.0.0.1/32\"]\npolicy_max_connections = 4\npolicy_idle_timeout = \"1s\"";
    let (_spec, node, policy) = policy_node(root.path(), admin);

    // A stranger is closed at once, unanswered.
    let mut stranger = connect_from("127.0.88.1", policy);
    let _ = write!(stranger, "client_address=192.0.2.1\n\n");
    assert!(closed_within(&mut stranger, Duration::from_secs(2)), "a client not in policy_clients is closed");

    // The real MX is answered.
    let mut mx = TcpStream::connect(policy).unwrap();
    assert!(ask(&mut mx, "192.0.2.1").starts_with("action=DEFER_IF_PERMIT 4.7.1"));

    // A 64 MiB line without a newline is cut off, not buffered.
    let before = rss_kib(&node);
    let mut flood = TcpStream::connect(policy).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..64 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 64, "the connection was cut off, after {sent} MiB");
    assert!(rss_kib(&node) < before + 4 * 1024, "memory grew from {before} to {} KiB", rss_kib(&node));

    // Too many attributes, and silence, end a connection.
    let mut many = TcpStream::connect(policy).unwrap();
    let attributes: String = (0..200).map(|i| format!("x{i}=y\n")).collect();
    let _ = many.write_all(attributes.as_bytes());
    assert!(closed_within(&mut many, Duration::from_secs(2)), "more than 100 attributes");
    let mut idle = TcpStream::connect(policy).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)), "idle past policy_idle_timeout");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    // Connections past policy_max_connections are closed at once.
    drop((mx, flood, many, idle));
    std::thread::sleep(Duration::from_millis(200));
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(policy).unwrap()).collect();
    assert!(ask(&mut held[3], "192.0.2.2").starts_with("action="), "the fourth is served");
    let mut fifth = TcpStream::connect(policy).unwrap();
    assert!(closed_within(&mut fifth, Duration::from_secs(2)), "the fifth is closed");
    drop(held);
}

/// Asks COUNT questions about distinct client addresses over one
/// connection, in batches; prints how many answers came back.
const MANY_CLIENTS: &str = r#"
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=60)
answered = 0
batch = 1000
for start in range(0, count, batch):
    out = "".join("request=smtpd_access_policy\nclient_address=10.%d.%d.%d\n\n" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
                  for i in range(start, min(count, start + batch)))
    s.sendall(out.encode())
    want = min(count, start + batch) - start
    got = b""
    while got.count(b"\n\n") < want:
        got += s.recv(65536)
    answered += got.count(b"\n\n")
print(answered)
"#;

#[test]
fn three_hundred_thousand_distinct_clients_leave_no_trace_in_the_policy_service() {
    let root = tempfile::tempdir().unwrap();
    let (_spec, node, policy) = policy_node(root.path(), "");
    let port = policy.port().to_string();
    python(MANY_CLIENTS, &[&port, "10000"]);
    let before = rss_kib(&node);
    let answered: u64 = python(MANY_CLIENTS, &[&port, "300000"]).trim().parse().unwrap();
    assert_eq!(answered, 300_000);
    let after = rss_kib(&node);
    assert!(after < before + 2 * 1024, "memory from {before} to {after} KiB over 300,000 clients");
    println!("policy service: 300,000 distinct clients, RSS {before} -> {after} KiB");
}

/// One HTTP request to the admin API; its status code.
fn http(admin: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn the_admin_api_refuses_rebound_names_foreign_origins_and_wrong_tokens() {
    let root = tempfile::tempdir().unwrap();
    let spec = specs(root.path(), 1, false, "").remove(0);
    let config = spec.config().replace("[admin]\n", "[admin]\ntoken = \"s3cret\"\n");
    let _node = NodeProcess::start(&spec.dir, &config, spec.smtp_addr());
    let admin: SocketAddr = format!("127.0.0.1:{}", spec.admin).parse().unwrap();
    let own = format!("127.0.0.1:{}", spec.admin);
    let bearer = ("Authorization", "Bearer s3cret");
    // DNS rebinding: a page of evil.example whose name now points here.
    assert_eq!(http(admin, "GET", "/status", &[("Host", "evil.example"), bearer]), 421);
    assert_eq!(http(admin, "GET", "/status", &[("Host", &own), bearer]), 200);
    assert_eq!(http(admin, "GET", "/status", &[("Host", &format!("localhost:{}", spec.admin)), bearer]), 200);
    // The token: none, a wrong one, one a character short.
    assert_eq!(http(admin, "GET", "/status", &[("Host", &own)]), 401);
    assert_eq!(http(admin, "GET", "/status", &[("Host", &own), ("Authorization", "Bearer s3creT")]), 401);
    assert_eq!(http(admin, "GET", "/status", &[("Host", &own), ("Authorization", "Bearer s3cre")]), 401);
    // The status page itself loads without the token (it polls with it).
    assert_eq!(http(admin, "GET", "/", &[("Host", &own)]), 200);
    // A cross-site form or script may not change state, even with the token.
    let path = "/queue/0000000000000001/retry";
    assert_eq!(http(admin, "POST", path, &[("Host", &own), ("Origin", "http://evil.example"), bearer]), 403);
    let own_origin = format!("http://{own}");
    assert_eq!(
        http(admin, "POST", path, &[("Host", &own), ("Origin", &own_origin), bearer]),
        404,
        "let through: no such message"
    );
    assert_eq!(http(admin, "POST", path, &[("Host", &own), bearer]), 404, "the CLI sends no Origin");
}

/// A node with a STARTTLS certificate and short session bounds.
fn smtp_node(root: &std::path::Path, keys: &str) -> (Spec, NodeProcess) {
    let cert = rcgen::generate_simple_self_signed(vec!["node1.mesh.test".into()]).unwrap();
    let (cert_path, key_path) = (root.join("smtp.pem"), root.join("smtp.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut spec = specs(root, 1, false, "").remove(0);
    spec.smtp_keys =
        format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n{keys}", cert_path.display(), key_path.display());
    let node = spec.start();
    (spec, node)
}

#[test]
fn smtp_sessions_are_bounded_in_junk_commands_tls_handshake_and_duration() {
    let root = tempfile::tempdir().unwrap();
    let (spec, _node) =
        smtp_node(root.path(), "tls_handshake_timeout = \"1s\"\nmax_session_duration = \"3s\"");

    // Junk: 100 NOOPs and RSETs are answered; past them each is an error,
    // and the 20th error closes the session (the default limits).
    let mut junk = RawClient::connect(spec.smtp_addr());
    assert!(junk.reply().starts_with("220 "));
    junk.send(b"EHLO junk.test\r\n");
    junk.reply();
    let mut last = String::new();
    let mut answered = 0;
    for n in 0..200 {
        junk.send(if n % 2 == 0 { b"NOOP\r\n" } else { b"RSET\r\n" });
        last = junk.reply();
        if !last.starts_with("250") {
            break;
        }
        answered += 1;
    }
    assert_eq!(answered, 120, "100 free, then 20 counted as errors; last: {last}");
    assert!(last.starts_with("421 4.7.0"), "{last}");
    assert!(junk.is_closed());

    // A client that asks for TLS and never starts the handshake is let go.
    let mut silent = RawClient::connect(spec.smtp_addr());
    silent.reply();
    silent.send(b"EHLO silent.test\r\n");
    silent.reply();
    silent.send(b"STARTTLS\r\n");
    assert!(silent.reply().starts_with("220 "));
    let asked = Instant::now();
    assert!(silent.is_closed(), "closed after the handshake time-out");
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(8), "{waited:?}");

    // A client that keeps its session busy is ended after max_session_duration.
    let mut busy = RawClient::connect(spec.smtp_addr());
    let connected = Instant::now();
    busy.reply();
    busy.send(b"EHLO busy.test\r\n");
    busy.reply();
    let ended = loop {
        std::thread::sleep(Duration::from_millis(400));
        if busy.send_quietly(b"HELO busy.test\r\n").is_err() {
            break String::new();
        }
        let reply = busy.reply();
        if !reply.starts_with("250") {
            break reply;
        }
        assert!(connected.elapsed() < Duration::from_secs(10), "still open after 10 s");
    };
    assert!(ended.starts_with("421 4.4.2") && ended.contains("too long"), "{ended:?}");
    assert!(connected.elapsed() >= Duration::from_secs(3));
}

#[test]
fn bare_line_feeds_in_a_message_are_taken_as_crlf_and_smuggle_nothing() {
    let root = tempfile::tempdir().unwrap();
    let spec = specs(root.path(), 1, false, "").remove(0);
    let _node = spec.start();
    let mut client = RawClient::connect(spec.smtp_addr());
    client.reply();
    for command in ["EHLO lf.test", "MAIL FROM:<alice@lf.test>", "RCPT TO:<bob@example.test>", "DATA"] {
        client.send(format!("{command}\r\n").as_bytes());
        client.reply();
    }
    // A Unix mailer's bare LFs, then a smuggling attempt: "\n.\n" and a
    // second transaction, which must stay inside the first message.
    client.send(b"Subject: lf\nMessage-ID: <lf@lf.test>\n\nline one\nline two\n.\nMAIL FROM:<evil@lf.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n");
    let reply = client.reply();
    assert!(reply.starts_with("250 "), "{reply}");
    client.send(b"QUIT\r\n");
    client.reply();
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 1, Duration::from_secs(10));
    let stored = std::fs::read(&files[0]).unwrap();
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("Subject: lf\r\nMessage-ID: <lf@lf.test>\r\n"), "{text}");
    assert!(text.contains("\r\nline one\r\nline two\r\n\r\nMAIL FROM:<evil@lf.test>\r\n"), "{text}");
    assert!(!stored.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "no bare LF stored");
    assert!(wait_for_maildir_files(&spec.maildir(), "victim", 1, Duration::from_secs(1)).is_empty());
}
