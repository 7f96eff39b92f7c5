//! Doors the network can reach, attacked as an attacker who has read the
//! source would: each test knocks from outside on a real node process and
//! checks what it answers and what it keeps (its memory, from /proc).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use magicmx_tests::{claim_port, connect_from, python, specs, NodeProcess, Spec};

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
