//! The SMTP-time checks against real DNS: a hickory-server in this process
//! answers the test zones (forward, reverse, block lists, SPF), the real
//! node asks it, and clients come from their own 127.a.b.c addresses.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use magicmx_tests::{
    claim_port, python, specs, wait_for_maildir_files, NodeProcess, Spec, TestDns, TestHost, Zone,
};

fn ip(a: u8, b: u8, c: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, a, b, c)
}

/// From SOURCE: EHLO, MAIL FROM:<SENDER>, then (if taken) RCPT TO each
/// recipient and DATA; prints every reply code and text.
const DIALOGUE: &str = r#"
import smtplib, sys
host, port, source, sender, rcpts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
s = smtplib.SMTP(host, port, source_address=(source, 0), timeout=30)
s.ehlo("client.test")
code, text = s.mail(sender)
print("MAIL", code, text.decode())
if code == 250:
    ok = 0
    for r in rcpts:
        code, text = s.rcpt(r)
        print("RCPT", r, code, text.decode())
        ok += code == 250
    if ok:
        code, text = s.data(b"Subject: checked\r\n\r\nbody\r\n")
        print("DATA", code, text.decode())
s.quit()
"#;

fn dialogue_args(spec: &Spec, source: Ipv4Addr, sender: &str, rcpts: &[&str]) -> Vec<String> {
    let mut args =
        vec![spec.listen_ip.to_string(), spec.smtp.to_string(), source.to_string(), sender.to_string()];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    args
}

fn dialogue(spec: &Spec, source: Ipv4Addr, sender: &str, rcpts: &[&str]) -> String {
    let args = dialogue_args(spec, source, sender, rcpts);
    python(DIALOGUE, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The same dialogue from a client on a test host (outside 127.0.0.0/8).
fn dialogue_from(host: &TestHost, spec: &Spec, source: Ipv4Addr, sender: &str, rcpts: &[&str]) -> String {
    let args = dialogue_args(spec, source, sender, rcpts);
    host.python(DIALOGUE, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A node asking `dns`, with `checks` as its `[checks]` keys.
fn start_node(root: &Path, name: &str, dns: &TestDns, checks: &str) -> (Spec, NodeProcess) {
    start_node_on(root, name, dns, checks, Ipv4Addr::LOCALHOST)
}

/// The same, listening on `listen`.
fn start_node_on(
    root: &Path,
    name: &str,
    dns: &TestDns,
    checks: &str,
    listen: Ipv4Addr,
) -> (Spec, NodeProcess) {
    let mut spec = specs(&root.join(name), 1, false, "").remove(0);
    spec.checks = format!("nameservers = [\"{}\"]\ndns_timeout = \"2s\"\n{checks}", dns.addr);
    spec.listen_ip = listen.into();
    let node = spec.start();
    (spec, node)
}

const ALL_OFF_BUT: &str =
    "fcrdns = \"off\"\nspf = \"off\"\nsender_domain = false\nverify_recipients = false\ndkim = \"off\"\ndmarc = \"off\"\n";

fn only(line: &str) -> String {
    let key = line.split('=').next().unwrap().trim();
    ALL_OFF_BUT.lines().filter(|l| !l.starts_with(key)).chain(line.lines()).collect::<Vec<_>>().join("\n")
}

#[test]
fn dnsbl_listed_unlisted_unreachable_and_weighted() {
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[
        Zone::new("bl.test")
            .a("1.60.0.127.bl.test", ip(0, 0, 2))
            .txt("1.60.0.127.bl.test", "Listed by bl.test: seen spamming")
            .a("3.60.0.127.bl.test", ip(0, 0, 2)),
        Zone::new("bl2.test").a("3.60.0.127.bl2.test", ip(0, 0, 2)),
    ]);
    let (spec, _node) = start_node(root.path(), "one", &dns, &format!("{ALL_OFF_BUT}dnsbl = [\"bl.test\"]"));
    let listed = dialogue(&spec, ip(0, 60, 1), "alice@client.test", &["bob@example.test"]);
    assert!(
        listed.contains("MAIL 554 5.7.1") && listed.contains("Listed by bl.test: seen spamming"),
        "{listed}"
    );
    let unlisted = dialogue(&spec, ip(0, 60, 2), "alice@client.test", &["bob@example.test"]);
    assert!(unlisted.contains("MAIL 250") && unlisted.contains("DATA 250"), "{unlisted}");

    // A list nobody answers for: temporary failure, as rblsmtpd -c.
    let (spec, _node) =
        start_node(root.path(), "down", &dns, &format!("{ALL_OFF_BUT}dnsbl = [\"down.test\"]"));
    let unreachable = dialogue(&spec, ip(0, 60, 2), "alice@client.test", &["bob@example.test"]);
    assert!(unreachable.contains("MAIL 451 4.4.3"), "{unreachable}");

    // Weights: bl.test counts 2, bl2.test 1, refusal at 3.
    let weighted = format!("{ALL_OFF_BUT}dnsbl = [\"bl.test*2\", \"bl2.test\"]\ndnsbl_threshold = 3");
    let (spec, _node) = start_node(root.path(), "weights", &dns, &weighted);
    let one_list = dialogue(&spec, ip(0, 60, 1), "alice@client.test", &["bob@example.test"]);
    assert!(one_list.contains("MAIL 250"), "listed once (2 < 3): {one_list}");
    let both = dialogue(&spec, ip(0, 60, 3), "alice@client.test", &["bob@example.test"]);
    assert!(both.contains("MAIL 554 5.7.1"), "listed twice (3): {both}");
}

#[test]
fn dnsbl_counts_only_the_answers_a_list_defines_and_its_text_cannot_break_the_reply() {
    let root = tempfile::tempdir().unwrap();
    let long = "x".repeat(1000);
    let dns = TestDns::start(&[
        // A Spamhaus-like error answer (a query through a public resolver).
        Zone::new("err.test").a("4.61.0.127.err.test", Ipv4Addr::new(127, 255, 255, 254)),
        Zone::new("filt.test").a("5.61.0.127.filt.test", ip(0, 0, 10)).a("6.61.0.127.filt.test", ip(0, 0, 3)),
        Zone::new("bl.test")
            .a("7.61.0.127.bl.test", ip(0, 0, 2))
            .txt("7.61.0.127.bl.test", &format!("Listed\r\n250 OK fake reply {long}")),
    ]);
    let lists = "dnsbl = [\"err.test\", \"filt.test=127.0.0.[2..3]\", \"bl.test\"]";
    let (spec, _node) = start_node(root.path(), "lists", &dns, &format!("{ALL_OFF_BUT}{lists}"));
    let error_code = dialogue(&spec, ip(0, 61, 4), "alice@client.test", &["bob@example.test"]);
    assert!(error_code.contains("MAIL 250"), "127.255.255.254 is no listing: {error_code}");
    let outside = dialogue(&spec, ip(0, 61, 5), "alice@client.test", &["bob@example.test"]);
    assert!(outside.contains("MAIL 250"), "127.0.0.10 is outside the filter: {outside}");
    let inside = dialogue(&spec, ip(0, 61, 6), "alice@client.test", &["bob@example.test"]);
    assert!(inside.contains("MAIL 554 5.7.1"), "127.0.0.3 is inside it: {inside}");
    let text = dialogue(&spec, ip(0, 61, 7), "alice@client.test", &["bob@example.test"]);
    let line = text.lines().find(|l| l.starts_with("MAIL 554 5.7.1")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("Listed 250 OK fake reply xxx"), "the text, on one line: {line}");
    assert!(line.len() < 400, "bounded: {} characters", line.len());
    assert!(!text.lines().any(|l| l.starts_with("250 OK fake")), "{text}");
}

/// TEST-NET-2: not used by this machine's own interfaces (check `ip addr`
/// before choosing another network for a test host).
fn tn2(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

#[test]
fn forward_confirmed_reverse_dns_pass_mismatch_and_missing() {
    // Clients on a test host: loopback addresses cannot have PTR records of their own.
    let host = TestHost::create("fcrdns", [198, 51, 100], &[61, 62, 63]);
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[
        Zone::new("100.51.198.in-addr.arpa")
            .ptr(tn2(61), "good.client.test")
            .ptr(tn2(62), "liar.client.test"),
        Zone::with_mx_at("client.test", ip(0, 99, 9))
            .a("good.client.test", tn2(61))
            .a("liar.client.test", tn2(99)),
    ]);
    let (spec, _node) = start_node_on(root.path(), "reject", &dns, &only("fcrdns = \"reject\""), host.local);
    let pass = dialogue_from(&host, &spec, tn2(61), "alice@client.test", &["bob@example.test"]);
    assert!(pass.contains("MAIL 250"), "{pass}");
    let mismatch = dialogue_from(&host, &spec, tn2(62), "alice@client.test", &["bob@example.test"]);
    assert!(mismatch.contains("MAIL 550 5.7.25") && mismatch.contains("does not resolve back"), "{mismatch}");
    let missing = dialogue_from(&host, &spec, tn2(63), "alice@client.test", &["bob@example.test"]);
    assert!(missing.contains("MAIL 550 5.7.25") && missing.contains("no PTR"), "{missing}");

    // Header mode refuses nothing and records the result.
    let (spec, node) = start_node_on(root.path(), "header", &dns, &only("fcrdns = \"header\""), host.local);
    for source in [tn2(61), tn2(62)] {
        let out = dialogue_from(&host, &spec, source, "alice@client.test", &["bob@example.test"]);
        assert!(out.contains("DATA 250"), "{out}");
    }
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 2, Duration::from_secs(10));
    let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    assert!(
        texts.iter().any(|t| t.contains("Authentication-Results: n0.mesh.test;\r\n\tiprev=pass policy.iprev=198.51.100.61 (good.client.test)")),
        "{texts:?}\n{}",
        node.log_text()
    );
    assert!(
        texts.iter().any(|t| t.contains("iprev=fail policy.iprev=198.51.100.62 (liar.client.test)")),
        "{texts:?}"
    );
}

#[test]
fn sender_domain_must_take_mail() {
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[Zone::with_mx_at("client.test", ip(0, 99, 9)), Zone::new("nowhere.test")]);
    let (spec, _node) = start_node(root.path(), "sender", &dns, &only("sender_domain = true"));
    let fine = dialogue(&spec, ip(0, 68, 1), "alice@client.test", &["bob@example.test"]);
    assert!(fine.contains("MAIL 250"), "{fine}");
    let none = dialogue(&spec, ip(0, 68, 1), "ghost@nowhere.test", &["bob@example.test"]);
    assert!(none.contains("MAIL 550 5.1.8"), "{none}");
    let temporary = dialogue(&spec, ip(0, 68, 1), "x@unanswered.test", &["bob@example.test"]);
    assert!(temporary.contains("MAIL 451 4.4.3"), "{temporary}");
    let bounce = dialogue(&spec, ip(0, 68, 1), "", &["bob@example.test"]);
    assert!(bounce.contains("MAIL 250"), "the null sender has no domain to check: {bounce}");
}

fn spf_zones() -> Vec<Zone> {
    vec![
        Zone::with_mx_at("client.test", ip(0, 99, 9)).txt("client.test", "v=spf1 ip4:127.0.64.0/24 -all"),
        Zone::with_mx_at("soft.test", ip(0, 99, 9)).txt("soft.test", "v=spf1 ip4:127.0.64.0/24 ~all"),
    ]
}

#[test]
fn spf_pass_fail_softfail_and_temperror() {
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&spf_zones());
    let (spec, node) = start_node(root.path(), "strict", &dns, &only("spf = \"strict\""));
    let pass = dialogue(&spec, ip(0, 64, 1), "alice@client.test", &["bob@example.test"]);
    assert!(pass.contains("MAIL 250") && pass.contains("DATA 250"), "{pass}");
    let fail = dialogue(&spec, ip(0, 65, 1), "alice@client.test", &["bob@example.test"]);
    assert!(fail.contains("MAIL 550 5.7.23"), "{fail}");
    let softfail = dialogue(&spec, ip(0, 65, 1), "carol@soft.test", &["bob@example.test"]);
    assert!(softfail.contains("MAIL 250"), "softfail only recorded by default: {softfail}");
    let temperror = dialogue(&spec, ip(0, 65, 1), "x@unanswered.test", &["bob@example.test"]);
    assert!(temperror.contains("MAIL 451 4.4.3"), "{temperror}");
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 2, Duration::from_secs(10));
    let texts: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    assert!(texts.contains("spf=pass smtp.mailfrom=alice@client.test"), "{texts}\n{}", node.log_text());
    assert!(texts.contains("spf=softfail smtp.mailfrom=carol@soft.test"), "{texts}");

    let strict_soft = format!("{}\nspf_softfail = \"reject\"", only("spf = \"strict\""));
    let (spec, _node) = start_node(root.path(), "softfail", &dns, &strict_soft);
    let softfail = dialogue(&spec, ip(0, 65, 1), "carol@soft.test", &["bob@example.test"]);
    assert!(softfail.contains("MAIL 550 5.7.23"), "{softfail}");

    let (spec, _node) = start_node(root.path(), "header", &dns, &only("spf = \"header\""));
    let fail = dialogue(&spec, ip(0, 65, 1), "alice@client.test", &["bob@example.test"]);
    assert!(fail.contains("DATA 250"), "header mode refuses nothing: {fail}");
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 1, Duration::from_secs(10));
    assert!(std::fs::read_to_string(&files[0]).unwrap().contains("spf=fail smtp.mailfrom=alice@client.test"));
}

/// A real MX for call-outs: Python's asyncio speaking just enough SMTP,
/// taking only bob@example.test.
/// A real MX for call-outs: takes bob@, refuses every other recipient,
/// refuses senders named spammer@ at MAIL, answers RCPT after a pause, and
/// writes the most connections it ever had at once to the file `argv[2]`.
const PICKY_MX: &str = r#"
import asyncio, sys
now, most = 0, 0
async def serve(reader, writer):
    global now, most
    now += 1
    most = max(most, now)
    open(sys.argv[2], "w").write(str(most))
    writer.write(b"220 picky.test ESMTP\r\n")
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            # It lets the node hand over the original client, as the
            # printed mesh listener does.
            writer.write(b"250-picky.test\r\n250 XCLIENT ADDR NAME HELO PROTO\r\n")
        elif verb == b"XCLI":
            writer.write(b"220 picky.test ESMTP\r\n")
        elif verb == b"MAIL" and b"spammer@" in line.lower():
            writer.write(b"553 5.7.1 sender refused here\r\n")
        elif verb == b"RCPT":
            await asyncio.sleep(0.3)
            writer.write(b"250 2.1.5 OK\r\n" if b"<bob@example.test>" in line.lower() else b"550 5.1.1 no such user here\r\n")
        elif verb == b"QUIT":
            # Counted out before the client hears 221 and frees its slot.
            now -= 1
            writer.write(b"221 bye\r\n")
            await writer.drain()
            writer.close()
            return
        else:
            writer.write(b"250 2.0.0 OK\r\n")
        await writer.drain()
    writer.close()
    now -= 1
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print("ready %d" % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"#;

struct Picky(Child);
impl Drop for Picky {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The picky MX, on a port of its own choosing; and that port.
fn picky_mx(most_at_once: &std::path::Path) -> (Picky, u16) {
    let mut child = Command::new("python3")
        .args(["-c", PICKY_MX, "0", most_at_once.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 for the call-out test's MX");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line)
        .unwrap();
    let port = line.trim().strip_prefix("ready ").and_then(|p| p.parse().ok()).expect("ready PORT");
    (Picky(child), port)
}

#[test]
fn callouts_refuse_what_the_real_mx_refuses_and_defer_ok_when_it_is_down() {
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[]);
    let (mx, mx_port) = picky_mx(&root.path().join("most"));
    let mut spec = specs(&root.path().join("callout"), 1, false, "").remove(0);
    spec.route = Some(format!("smtp://127.0.0.1:{mx_port}"));
    spec.checks = format!("nameservers = [\"{}\"]\n{}", dns.addr, only("verify_recipients = true"));
    let _node = spec.start();
    let out =
        dialogue(&spec, ip(0, 69, 1), "alice@client.test", &["bob@example.test", "nobody@example.test"]);
    assert!(out.contains("RCPT bob@example.test 250"), "{out}");
    assert!(out.contains("RCPT nobody@example.test 550 5.1.1") && out.contains("no such user here"), "{out}");
    drop(mx);
    let out =
        dialogue(&spec, ip(0, 69, 1), "alice@client.test", &["carol@example.test", "nobody@example.test"]);
    assert!(out.contains("RCPT carol@example.test 250"), "the real MX is down: accepted (defer_ok): {out}");
    assert!(
        out.contains("RCPT nobody@example.test 550 5.1.1"),
        "a known bad recipient stays refused (cache): {out}"
    );
}

#[test]
fn a_refused_sender_poisons_no_callout_and_probes_keep_the_per_host_limit() {
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[]);
    let most_at_once = root.path().join("most");
    let (_mx, mx_port) = picky_mx(&most_at_once);
    let mut spec = specs(&root.path().join("callout"), 1, false, "").remove(0);
    spec.route = Some(format!("smtp://127.0.0.1:{mx_port}"));
    spec.checks = format!("nameservers = [\"{}\"]\n{}", dns.addr, only("verify_recipients = true"));
    // No idle connections kept: every connection the MX sees is in use.
    spec.delivery = "max_per_host = 2\nidle_connection = \"0s\"".into();
    let _node = spec.start();

    // The real MX, handed the original client, refuses this sender: passed
    // on, as a refusal of the sender...
    let out = dialogue(&spec, ip(0, 72, 1), "spammer@client.test", &["bob@example.test"]);
    assert!(out.contains("RCPT bob@example.test 550 5.1.0") && out.contains("sender refused here"), "{out}");
    // ...and bob is not refused for the next sender.
    let out = dialogue(&spec, ip(0, 72, 2), "alice@client.test", &["bob@example.test"]);
    assert!(out.contains("RCPT bob@example.test 250"), "the cache was poisoned: {out}");

    // Eight clients at once, each with a recipient not yet probed: the
    // probes queue for the two connection slots the real MX is allowed.
    let clients: Vec<_> = (0..8u8)
        .map(|n| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let rcpt = format!("nobody{n}@example.test");
                dialogue(&spec, ip(0, 73, n + 1), "alice@client.test", &[rcpt.as_str()])
            })
        })
        .collect();
    for (n, client) in clients.into_iter().enumerate() {
        let out = client.join().unwrap();
        assert!(out.contains(&format!("RCPT nobody{n}@example.test 550 5.1.1")), "{out}");
    }
    let most: u32 = std::fs::read_to_string(&most_at_once).unwrap().trim().parse().unwrap();
    assert!(most <= 2, "{most} call-out connections to the real MX at once, over max_per_host = 2");
}

#[test]
fn a_trusted_host_name_counts_only_when_forward_confirmed() {
    // TEST-NET-3, unused by this machine.
    let host = TestHost::create("trusted", [203, 0, 113], &[66, 67]);
    let tn3 = |last: u8| Ipv4Addr::new(203, 0, 113, last);
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[
        Zone::new("113.0.203.in-addr.arpa").ptr(tn3(66), "a.trusted.test").ptr(tn3(67), "b.trusted.test"),
        Zone::new("trusted.test").a("a.trusted.test", tn3(99)).a("b.trusted.test", tn3(67)),
    ]);
    let mut spec = specs(&root.path().join("names"), 1, false, "recipients_per_hour = 2").remove(0);
    spec.trusted_hostnames = vec!["*.trusted.test".into()];
    spec.checks = format!("nameservers = [\"{}\"]\n{ALL_OFF_BUT}", dns.addr);
    spec.listen_ip = host.local.into();
    let _node = spec.start();
    let rcpts = ["r1@example.test", "r2@example.test", "r3@example.test", "r4@example.test"];
    // b.trusted.test resolves back: trusted, not throttled...
    let honest = dialogue_from(&host, &spec, tn3(67), "alice@client.test", &rcpts);
    assert!(rcpts.iter().all(|r| honest.contains(&format!("RCPT {r} 250"))), "{honest}");
    // ...a.trusted.test resolves elsewhere: not trusted, so throttled at 2,
    // and the block is penalised...
    let liar = dialogue_from(&host, &spec, tn3(66), "alice@client.test", &rcpts);
    assert!(liar.contains("RCPT r3@example.test 451 4.7.1"), "{liar}");
    // ...while the verified host still gets through the gate.
    let again = dialogue_from(&host, &spec, tn3(67), "alice@client.test", &rcpts);
    assert!(rcpts.iter().all(|r| again.contains(&format!("RCPT {r} 250"))), "{again}");
}

#[test]
fn a_dsn_goes_only_to_a_sender_whose_spf_passed() {
    let root = tempfile::tempdir().unwrap();
    let mx_port = claim_port();
    // example.test's MX refuses every recipient; client.test takes mail at its own MX.
    let dns = TestDns::start(&[
        Zone::with_mx_at("example.test", ip(0, 70, 3)),
        Zone::with_mx_at("client.test", ip(0, 70, 5)).txt("client.test", "v=spf1 ip4:127.0.71.0/24 -all"),
    ]);
    let _refusing = magicmx_tests::Sink::start(
        root.path(),
        std::net::SocketAddr::new(ip(0, 70, 3).into(), mx_port),
        &["-f", "RCPT"],
    );
    let senders_mx =
        magicmx_tests::Sink::start(root.path(), std::net::SocketAddr::new(ip(0, 70, 5).into(), mx_port), &[]);
    let mut spec = specs(&root.path().join("node"), 1, false, "").remove(0);
    spec.route = Some("mx".into());
    spec.checks = format!("nameservers = [\"{}\"]\n{}", dns.addr, only("spf = \"header\""));
    spec.delivery = format!("port = {mx_port}\nretry_first = \"1s\"\nretry_max = \"2s\"");
    let node = spec.start();
    // From outside client.test's SPF: fail (recorded only), bounced, no DSN.
    let forged = dialogue(&spec, ip(0, 72, 1), "alice@client.test", &["bob@example.test"]);
    assert!(forged.contains("DATA 250"), "{forged}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !node.log_text().contains("no DSN: the sender is not believable")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(node.log_text().contains("spf=Some(\"fail\")"), "{}", node.log_text());
    // From inside it: pass, bounced, and the DSN arrives.
    let honest = dialogue(&spec, ip(0, 71, 1), "alice@client.test", &["bob@example.test"]);
    assert!(honest.contains("DATA 250"), "{honest}");
    let dsns = senders_mx.wait_for(1, Duration::from_secs(15));
    assert_eq!(dsns.len(), 1, "exactly one DSN, for the SPF-passed sender:\n{}", node.log_text());
    assert!(dsns[0].contains("X-Mail-Args: <>") && dsns[0].contains("Action: failed"), "{}", dsns[0]);
}

/// Makes an RSA key (openssl) for a DKIM selector: prints the private key
/// in PEM, a line `====`, and the `p=` value of its DNS record.
const DKIM_KEY: &str = r#"
import base64, subprocess
pem = subprocess.run(["openssl", "genrsa", "-traditional", "2048"], capture_output=True, check=True).stdout
der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True, check=True).stdout
print(pem.decode() + "====\n" + base64.b64encode(der).decode())
"#;

/// Sends one message From: FROM (MAIL FROM the same), signed by dkimpy for
/// DOMAIN with selector `sel` when a key is given; with TAMPER the body is
/// changed after signing. Prints the reply to DATA.
const SIGNED: &str = r#"
import dkim, smtplib, sys
host, port, source, sender, key, domain, tamper = sys.argv[1:8]
message = ("From: <%s>\r\nTo: <bob@example.test>\r\nSubject: signed\r\nMessage-ID: <%s.1@%s>\r\n\r\nThe body.\r\n"
           % (sender, source, sender.split("@")[1])).encode()
if key != "-":
    signature = dkim.sign(message, b"sel", domain.encode(), open(key, "rb").read(),
                          include_headers=[b"From", b"To", b"Subject", b"Message-ID"])
    message = signature + message
if tamper == "1":
    message = message.replace(b"The body.", b"The b0dy.")
s = smtplib.SMTP(host, int(port), source_address=(source, 0), timeout=30)
try:
    s.sendmail(sender, ["bob@example.test"], message)
    print("DATA 250")
except smtplib.SMTPDataError as e:
    print("DATA", e.smtp_code, e.smtp_error.decode())
s.quit()
"#;

#[test]
fn dkim_and_dmarc_are_recorded_and_a_p_reject_is_honoured_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let out = python(DKIM_KEY, &[]);
    let (pem, public) = out.split_once("====\n").unwrap();
    let key = root.path().join("dkim.pem");
    std::fs::write(&key, pem).unwrap();
    let dns = TestDns::start(&[
        Zone::with_mx_at("signed.test", ip(0, 99, 9))
            .txt("sel._domainkey.signed.test", &format!("v=DKIM1; k=rsa; p={}", public.trim()))
            .txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
        Zone::with_mx_at("strict.test", ip(0, 99, 9)).txt("_dmarc.strict.test", "v=DMARC1; p=reject"),
        // DMARC's tree walk also asks `_dmarc.test`: on the Internet the
        // root would say there is no such name; here the zone `test` does.
        Zone::new("test"),
    ]);
    let key = key.to_str().unwrap();
    let send = |spec: &Spec, source: &str, from: &str, signed_by: Option<&str>, tamper: bool| {
        let (key, domain) = match signed_by {
            Some(domain) => (key, domain),
            None => ("-", "-"),
        };
        let tamper = if tamper { "1" } else { "0" };
        let (listen, port) = (spec.listen_ip.to_string(), spec.smtp.to_string());
        python(SIGNED, &[&listen, &port, source, from, key, domain, tamper])
    };

    let checks = |dmarc: &str| {
        let others = ALL_OFF_BUT.lines().filter(|l| !l.starts_with("dkim") && !l.starts_with("dmarc"));
        let mut lines: Vec<String> = others.map(String::from).collect();
        lines.extend(["dkim = \"header\"".to_string(), format!("dmarc = \"{dmarc}\"")]);
        lines.join("\n")
    };
    // Recorded only: every message is taken, and its results are in the header.
    let (spec, node) = start_node(root.path(), "header", &dns, &checks("header"));
    assert!(send(&spec, "127.0.75.1", "alice@signed.test", Some("signed.test"), false).contains("DATA 250"));
    assert!(send(&spec, "127.0.75.2", "alice@signed.test", Some("signed.test"), true).contains("DATA 250"));
    assert!(send(&spec, "127.0.75.3", "eve@strict.test", None, false).contains("DATA 250"));
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 3, Duration::from_secs(10));
    let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let of = |source: &str| -> String {
        texts
            .iter()
            .find(|t| t.contains(&format!("<{source}.1@")))
            .cloned()
            .unwrap_or_else(|| panic!("{texts:?}"))
    };
    let results = |text: &str| -> String {
        let start =
            text.find("Authentication-Results:").unwrap_or_else(|| panic!("{text}\n{}", node.log_text()));
        text[start..].split("\r\n").take_while(|l| !l.is_empty()).take(4).collect::<Vec<_>>().join(" ")
    };
    let good = results(&of("127.0.75.1"));
    assert!(
        good.contains("dkim=pass header.i=@signed.test")
            && good.contains("dmarc=pass header.from=signed.test"),
        "{good}"
    );
    let tampered = results(&of("127.0.75.2"));
    // mail-auth calls a body that no longer matches its hash "neutral".
    assert!(
        tampered.contains("dkim=neutral (body hash did not verify)") && tampered.contains("dmarc=fail"),
        "{tampered}"
    );
    let unsigned = results(&of("127.0.75.3"));
    assert!(
        unsigned.contains("dmarc=fail (policy not aligned) header.from=strict.test policy.dmarc=reject"),
        "{unsigned}"
    );

    // Honoured: the domain's p=reject refuses what fails, and only that.
    let (spec, node) = start_node(root.path(), "reject", &dns, &checks("reject"));
    let refused = send(&spec, "127.0.76.3", "eve@strict.test", None, false);
    assert!(
        refused.contains("DATA 550 5.7.1") && refused.contains("DMARC policy of strict.test"),
        "{refused}"
    );
    assert!(send(&spec, "127.0.76.1", "alice@signed.test", Some("signed.test"), false).contains("DATA 250"));
    assert!(node.log_text().contains("dkim=none dmarc=fail"), "{}", node.log_text());
}

#[test]
fn dmarc_weighs_spf_even_when_the_spf_check_is_off() {
    let root = tempfile::tempdir().unwrap();
    let dns = TestDns::start(&[
        Zone::with_mx_at("aligned.test", ip(0, 99, 9))
            .txt("aligned.test", "v=spf1 ip4:127.0.77.0/24 -all")
            .txt("_dmarc.aligned.test", "v=DMARC1; p=reject"),
        Zone::new("test"),
    ]);
    // SPF's own check off; DMARC honoured.
    let others = ALL_OFF_BUT.lines().filter(|l| !l.starts_with("dkim") && !l.starts_with("dmarc"));
    let checks = others.chain(["dkim = \"header\"", "dmarc = \"reject\""]).collect::<Vec<_>>().join("\n");
    let (spec, node) = start_node(root.path(), "dmarc", &dns, &checks);
    let send = |source: &str| {
        let (listen, port) = (spec.listen_ip.to_string(), spec.smtp.to_string());
        python(SIGNED, &[&listen, &port, source, "alice@aligned.test", "-", "-", "0"])
    };
    // Unsigned, from inside the domain's SPF: DMARC passes on SPF alone.
    let aligned = send("127.0.77.1");
    assert!(aligned.contains("DATA 250"), "{aligned}\n{}", node.log_text());
    let files = wait_for_maildir_files(&spec.maildir(), "bob", 1, Duration::from_secs(10));
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("dmarc=pass header.from=aligned.test"), "{text}");
    assert!(!text.contains("spf="), "SPF's own result is not recorded with spf = off: {text}");
    // Unsigned, from outside it: DMARC fails, and p=reject is honoured.
    let forged = send("127.0.78.1");
    assert!(forged.contains("DATA 550 5.7.1"), "{forged}");
}
