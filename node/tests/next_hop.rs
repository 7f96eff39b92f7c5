//! Delivery's dialogue with a next hop, by what the next hop offers.
//! PIPELINING (RFC 2920): the envelope (MAIL, every RCPT, DATA) goes in one
//! write and the replies are matched in order; without it, one command at a
//! time. XCLIENT and XFORWARD (Postfix): the original client is handed on
//! before MAIL as the domain's settings allow. The next hop is a scripted
//! server on loopback that answers only once it has what it waits for, so a
//! client that waited for a reply the server withholds would stall (and the
//! test fails on its time-out).

use std::sync::Arc;
use std::time::Duration;

use magicmx_node::queue::{Arrival, Body};
use magicmx_node::route::smtp::{
    ClientForwarding, Connection, NotHandedOver, OriginalClient, Timeouts, TlsPolicy, TransactionError,
    Xclient,
};
use magicmx_node::route::Outcome;
use magicmx_proto::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    command: Duration::from_secs(5),
    data: Duration::from_secs(5),
};

/// Reads until `wanted` has arrived; everything read.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, wanted: &[u8]) {
    let mut buf = [0u8; 4096];
    while !seen.windows(wanted.len()).any(|w| w == wanted) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the client sent what the script waits for")
            .unwrap();
        assert!(n > 0, "the client closed early; it sent {:?}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buf[..n]);
    }
}

/// A next hop: greets, answers EHLO with `ehlo`, then runs `script`: pairs of
/// (what to wait for, what to answer). What it read is sent back at the end.
async fn next_hop(
    ehlo: &'static str,
    script: Vec<(&'static str, &'static str)>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        stream.write_all(b"220 hop.test ESMTP\r\n").await.unwrap();
        read_until(&mut stream, &mut seen, b"\r\n").await;
        stream.write_all(ehlo.as_bytes()).await.unwrap();
        seen.clear();
        for (wait, answer) in script {
            read_until(&mut stream, &mut seen, wait.as_bytes()).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    (addr, task)
}

fn body() -> Body {
    Body::at_hand(Arrival::local(Vec::new(), false), Arc::new(b"Subject: hi\r\n\r\nhello\r\n".to_vec()))
}

fn addresses(list: &[&str]) -> Vec<Address> {
    list.iter().map(|a| Address::parse(a).unwrap()).collect()
}

fn kinds(outcomes: &[Outcome]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Delivered(_) => "delivered",
            Outcome::Transient(_) => "transient",
            Outcome::Permanent(_) => "permanent",
        })
        .collect()
}

#[tokio::test]
async fn with_pipelining_the_envelope_goes_in_one_write_and_replies_match_in_order() {
    let ehlo = "250-hop.test\r\n250 PIPELINING\r\n";
    // Nothing is answered until DATA has arrived: the envelope came at once.
    let script = vec![
        ("DATA\r\n", "250 2.1.0 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n354 go on\r\n"),
        ("\r\n.\r\n", "250 2.0.0 queued as 1\r\n"),
    ];
    let (addr, hop) = next_hop(ehlo, script).await;
    let mut conn =
        Connection::open(addr, "hop.test", "mx.mesh.test", &TlsPolicy::Off, TIMEOUTS).await.unwrap();
    let sender = Address::parse("alice@client.test").unwrap();
    let sent = conn
        .send(Some(&sender), &addresses(&["nobody@example.test", "bob@example.test"]), &body(), None)
        .await
        .unwrap_or_else(|_| panic!("the transaction completes"));
    assert_eq!(kinds(&sent.outcomes), ["permanent", "delivered"]);
    let seen = hop.await.unwrap();
    assert!(
        seen.starts_with("MAIL FROM:<alice@client.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"),
        "{seen}"
    );
}

#[tokio::test]
async fn with_pipelining_no_accepted_recipient_sends_no_message() {
    let ehlo = "250-hop.test\r\n250 PIPELINING\r\n";
    // A server that (wrongly) accepts DATA with no recipient gets an empty
    // message's dot, so the session stays in step; then RSET.
    let script = vec![
        ("DATA\r\n", "250 2.1.0 ok\r\n550 5.1.1 no\r\n354 go on\r\n"),
        (".\r\n", "554 5.5.1 no valid recipients\r\n"),
        ("RSET\r\n", "250 2.0.0 ok\r\n"),
    ];
    let (addr, hop) = next_hop(ehlo, script).await;
    let mut conn =
        Connection::open(addr, "hop.test", "mx.mesh.test", &TlsPolicy::Off, TIMEOUTS).await.unwrap();
    let sent = conn
        .send(None, &addresses(&["nobody@example.test"]), &body(), None)
        .await
        .unwrap_or_else(|_| panic!("the transaction completes"));
    assert_eq!(kinds(&sent.outcomes), ["permanent"]);
    let seen = hop.await.unwrap();
    assert!(!seen.contains("Subject: hi"), "no content was sent: {seen}");
}

#[tokio::test]
async fn without_pipelining_commands_go_one_at_a_time() {
    let ehlo = "250-hop.test\r\n250 SIZE 1000000\r\n";
    // Each command is answered as it comes: a client that sent ahead would
    // have its RCPT in the buffer when MAIL is answered.
    let script = vec![
        ("MAIL FROM:<alice@client.test> SIZE=", "250 2.1.0 ok\r\n"),
        ("RCPT TO:<bob@example.test>\r\n", "250 2.1.5 ok\r\n"),
        ("DATA\r\n", "354 go on\r\n"),
        ("\r\n.\r\n", "250 2.0.0 queued as 2\r\n"),
    ];
    let (addr, hop) = next_hop(ehlo, script).await;
    let mut conn =
        Connection::open(addr, "hop.test", "mx.mesh.test", &TlsPolicy::Off, TIMEOUTS).await.unwrap();
    let sender = Address::parse("alice@client.test").unwrap();
    let sent = conn
        .send(Some(&sender), &addresses(&["bob@example.test"]), &body(), None)
        .await
        .unwrap_or_else(|_| panic!("the transaction completes"));
    assert_eq!(kinds(&sent.outcomes), ["delivered"]);
    let seen = hop.await.unwrap();
    let mail_line_end = seen.find("\r\n").unwrap();
    assert!(seen[..mail_line_end].starts_with("MAIL FROM:"), "{seen}");
}

/// A next hop that offers both XCLIENT and XFORWARD, as Postfix does to a
/// host in both `smtpd_authorized_*_hosts`.
const OFFERS_BOTH: &str =
    "250-hop.test\r\n250-XCLIENT NAME ADDR PROTO HELO\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE\r\n";

fn original_client() -> OriginalClient {
    OriginalClient {
        addr: "192.0.2.7".parse().unwrap(),
        name: Some("mta.client.test".into()),
        helo: "mta.client.test".into(),
        esmtp: true,
    }
}

/// Sends one message to a next hop offering both commands, handing on the
/// original client as `forwarding` allows; what the next hop read, and
/// whether the connection may carry another message.
async fn hand_over(
    forwarding: ClientForwarding,
    script: Vec<(&'static str, &'static str)>,
) -> (String, bool) {
    let (addr, hop) = next_hop(OFFERS_BOTH, script).await;
    let mut conn =
        Connection::open(addr, "hop.test", "mx.mesh.test", &TlsPolicy::Off, TIMEOUTS).await.unwrap();
    let sender = Address::parse("alice@client.test").unwrap();
    let client = original_client();
    let sent = conn
        .send(Some(&sender), &addresses(&["bob@example.test"]), &body(), Some((&client, forwarding)))
        .await
        .unwrap_or_else(|_| panic!("the transaction completes"));
    assert_eq!(kinds(&sent.outcomes), ["delivered"]);
    (hop.await.unwrap(), sent.reusable)
}

/// The rest of a transaction after the hand-over, one command at a time.
const TRANSACTION: [(&str, &str); 4] = [
    ("MAIL FROM:<alice@client.test>", "250 2.1.0 ok\r\n"),
    ("RCPT TO:<bob@example.test>\r\n", "250 2.1.5 ok\r\n"),
    ("DATA\r\n", "354 go on\r\n"),
    ("\r\n.\r\n", "250 2.0.0 queued\r\n"),
];

#[tokio::test]
async fn xclient_hands_over_the_original_client_and_the_session_starts_again_as_its() {
    let mut script =
        vec![("XCLIENT ", "220 hop.test ESMTP\r\n"), ("EHLO mta.client.test\r\n", "250 hop.test\r\n")];
    script.extend(TRANSACTION);
    let both = ClientForwarding { xclient: Xclient::Offered, xforward: true };
    let (seen, reusable) = hand_over(both, script).await;
    assert!(
        seen.starts_with("XCLIENT ADDR=192.0.2.7 NAME=mta.client.test HELO=mta.client.test PROTO=ESMTP\r\nEHLO mta.client.test\r\nMAIL FROM:"),
        "{seen}"
    );
    assert!(!seen.contains("XFORWARD"), "{seen}");
    assert!(!reusable, "after XCLIENT the session is the client's, not for another message");
}

#[tokio::test]
async fn with_xclient_turned_off_for_the_domain_xforward_carries_the_client_for_logs() {
    let mut script = vec![("XFORWARD ", "250 2.0.0 ok\r\n")];
    script.extend(TRANSACTION);
    let xforward_only = ClientForwarding { xclient: Xclient::Off, xforward: true };
    let (seen, reusable) = hand_over(xforward_only, script).await;
    assert!(
        seen.starts_with(
            "XFORWARD ADDR=192.0.2.7 NAME=mta.client.test HELO=mta.client.test PROTO=ESMTP SOURCE=REMOTE\r\nMAIL FROM:"
        ),
        "{seen}"
    );
    assert!(!seen.contains("XCLIENT"), "{seen}");
    assert!(reusable, "XFORWARD leaves the session this node's");
}

#[tokio::test]
async fn with_both_turned_off_for_the_domain_nothing_is_handed_over() {
    let neither = ClientForwarding { xclient: Xclient::Off, xforward: false };
    let (seen, reusable) = hand_over(neither, TRANSACTION.to_vec()).await;
    assert!(seen.starts_with("MAIL FROM:<alice@client.test>"), "{seen}");
    assert!(!seen.contains("XCLIENT") && !seen.contains("XFORWARD"), "{seen}");
    assert!(reusable);
}

/// Sends one message to a next hop whose EHLO is `ehlo`, with the domain's
/// `xclient` choice; the transaction's result and what the next hop read.
async fn send_with(
    ehlo: &'static str,
    xclient: Xclient,
    script: Vec<(&'static str, &'static str)>,
) -> (Result<magicmx_node::route::smtp::Sent, TransactionError>, String) {
    let (addr, hop) = next_hop(ehlo, script).await;
    let mut conn =
        Connection::open(addr, "hop.test", "mx.mesh.test", &TlsPolicy::Off, TIMEOUTS).await.unwrap();
    let sender = Address::parse("alice@client.test").unwrap();
    let client = original_client();
    let forwarding = ClientForwarding { xclient, xforward: true };
    let result = conn
        .send(Some(&sender), &addresses(&["bob@example.test"]), &body(), Some((&client, forwarding)))
        .await;
    drop(conn);
    (result, hop.await.unwrap())
}

#[tokio::test]
async fn with_xclient_required_a_hop_that_does_not_offer_it_gets_no_message() {
    let offers_xforward = "250-hop.test\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE\r\n";
    let (result, seen) = send_with(offers_xforward, Xclient::Require, vec![]).await;
    assert!(matches!(result, Err(TransactionError::NotHandedOver(NotHandedOver::NotOffered))));
    assert!(!seen.contains("MAIL FROM"), "nothing goes as from this node: {seen}");
}

#[tokio::test]
async fn with_xclient_required_a_refused_xclient_gets_no_message() {
    let script = vec![("XCLIENT ", "550 5.7.0 not authorized\r\n")];
    let (result, seen) = send_with(OFFERS_BOTH, Xclient::Require, script).await;
    assert!(matches!(result, Err(TransactionError::NotHandedOver(NotHandedOver::Refused(_)))));
    assert!(!seen.contains("MAIL FROM"), "{seen}");
}

#[tokio::test]
async fn with_xclient_offered_a_250_instead_of_a_greeting_sends_as_this_node_and_says_why() {
    // It goes on with XFORWARD, for the next hop's logs.
    let mut script = vec![("XCLIENT ", "250 2.0.0 ok\r\n"), ("XFORWARD ", "250 2.0.0 ok\r\n")];
    script.extend(TRANSACTION);
    let (result, _) = send_with(OFFERS_BOTH, Xclient::Offered, script).await;
    let sent = result.unwrap_or_else(|_| panic!("delivered as from this node"));
    assert_eq!(kinds(&sent.outcomes), ["delivered"]);
    assert!(matches!(sent.as_node, Some(NotHandedOver::NoNewGreeting(_))));
}

#[tokio::test]
async fn a_connection_lost_after_the_final_dot_leaves_the_outcome_unknown_and_transient() {
    // The next hop reads the whole message, then the connection drops
    // without its reply: it may have taken the message.
    let script = vec![
        ("MAIL FROM:<alice@client.test>", "250 2.1.0 ok\r\n"),
        ("RCPT TO:<bob@example.test>\r\n", "250 2.1.5 ok\r\n"),
        ("DATA\r\n", "354 go on\r\n"),
        ("\r\n.\r\n", ""),
    ];
    let (result, seen) = send_with("250 hop.test\r\n", Xclient::Offered, script).await;
    let sent = result.unwrap_or_else(|_| panic!("an outcome, not a broken connection to retry at once"));
    assert!(sent.reply_lost && !sent.reusable);
    assert_eq!(kinds(&sent.outcomes), ["transient"]);
    assert!(seen.contains("\r\n.\r\n"));
}
