//! Scripted SMTP dialogues against the sans-I/O session: one test per rule,
//! each asserting the reply codes a client would see.

use std::sync::Arc;
use std::time::{Duration, Instant};

use magicmx_proto::smtp::{
    DataBudget, Event, Message, Reply, Session, SessionConfig, Violation, ViolationAction, CHUNK,
};

/// A client talking to a session. Requests handed to the "node" are decided
/// here: recipients at `refused.test` get 550, everything else is taken.
struct Dialogue {
    session: Session,
    now: Instant,
    /// Messages handed over, each with its content gathered from the pieces before it.
    messages: Vec<Taken>,
    /// Content handed out for the message being read.
    content: Vec<u8>,
    /// The largest piece of content handed out at once.
    largest_piece: usize,
    violations: Vec<Violation>,
    closed: bool,
    tls_requested: bool,
}

impl Dialogue {
    fn with(config: SessionConfig) -> Dialogue {
        let now = Instant::now();
        let session = Session::new(Arc::new(config), "192.0.2.10".parse().unwrap(), now);
        Dialogue {
            session,
            now,
            messages: vec![],
            content: vec![],
            largest_piece: 0,
            violations: vec![],
            closed: false,
            tls_requested: false,
        }
    }

    fn config() -> SessionConfig {
        SessionConfig::new("mx.mesh.test")
    }

    /// Connected and greeted.
    fn new() -> Dialogue {
        Dialogue::greeted(Self::config())
    }

    fn greeted(config: SessionConfig) -> Dialogue {
        let mut d = Dialogue::with(config);
        d.session.greet(d.now);
        let replies = d.drain();
        assert_eq!(codes(&replies), vec![220]);
        d
    }

    fn drain(&mut self) -> Vec<Reply> {
        let mut replies = vec![];
        while let Some(event) = self.session.poll() {
            match event {
                Event::Reply(r) => replies.push(r),
                Event::Close => self.closed = true,
                Event::StartTls => self.tls_requested = true,
                Event::Violation(v) => self.violations.push(v),
                Event::Mail(_) => self.session.decide(Reply::new(250, "2.1.0", "Sender OK")),
                Event::Rcpt(r) if r.recipient.domain.as_str() == "refused.test" => {
                    self.session.decide(Reply::new(550, "5.7.1", "Relay access denied"))
                }
                Event::Rcpt(_) => self.session.decide(Reply::new(250, "2.1.5", "Recipient OK")),
                Event::Content(piece) => {
                    self.largest_piece = self.largest_piece.max(piece.len());
                    self.content.extend_from_slice(&piece);
                }
                Event::Message(message) => {
                    let content = std::mem::take(&mut self.content);
                    assert_eq!(message.size, content.len(), "the size is what was handed out");
                    self.messages.push(Taken { message, content });
                    self.session.decide(Reply::new(250, "2.0.0", "Queued"));
                }
            }
        }
        replies
    }

    /// Sends raw bytes and returns every reply they caused.
    fn send(&mut self, bytes: &[u8]) -> Vec<Reply> {
        self.session.receive(bytes, self.now);
        self.drain()
    }

    /// Sends one command line and returns the code of its (single) reply.
    fn cmd(&mut self, line: &str) -> u16 {
        let replies = self.send(format!("{line}\r\n").as_bytes());
        assert_eq!(replies.len(), 1, "one reply to {line:?}, got {replies:?}");
        replies[0].code
    }

    fn reply_to(&mut self, line: &str) -> Reply {
        let mut replies = self.send(format!("{line}\r\n").as_bytes());
        assert_eq!(replies.len(), 1, "one reply to {line:?}, got {replies:?}");
        replies.remove(0)
    }

    /// EHLO, MAIL, one RCPT, DATA; ready for the message.
    fn up_to_data(&mut self) {
        assert_eq!(self.cmd("EHLO client.test"), 250);
        assert_eq!(self.cmd("MAIL FROM:<alice@client.test>"), 250);
        assert_eq!(self.cmd("RCPT TO:<bob@example.test>"), 250);
        assert_eq!(self.cmd("DATA"), 354);
    }
}

/// A message the "node" took, and its content.
struct Taken {
    message: Message,
    content: Vec<u8>,
}

fn codes(replies: &[Reply]) -> Vec<u16> {
    replies.iter().map(|r| r.code).collect()
}

#[test]
fn greeting_is_220_with_the_hostname() {
    let mut d = Dialogue::with(Dialogue::config());
    d.session.greet(d.now);
    let replies = d.drain();
    assert_eq!(replies[0].to_string(), "220 mx.mesh.test ESMTP magicmx\r\n");
}

#[test]
fn ehlo_advertises_extensions_but_never_pipelining() {
    let mut d = Dialogue::new();
    let reply = d.reply_to("EHLO client.test");
    assert_eq!(reply.code, 250);
    let text = reply.to_string();
    for keyword in ["SIZE 26214400", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"] {
        assert!(text.contains(keyword), "{keyword} missing from {text}");
    }
    assert!(!text.contains("PIPELINING"));
    assert!(!text.contains("STARTTLS"), "no certificate, no STARTTLS");
}

#[test]
fn ehlo_offers_starttls_when_a_certificate_is_set() {
    let mut config = Dialogue::config();
    config.starttls = true;
    let mut d = Dialogue::greeted(config);
    assert!(d.reply_to("EHLO client.test").to_string().contains("STARTTLS"));
}

#[test]
fn helo_gets_a_plain_250() {
    let mut d = Dialogue::new();
    let reply = d.reply_to("HELO client.test");
    assert_eq!(reply.lines.len(), 1);
    assert_eq!(reply.code, 250);
}

#[test]
fn a_whole_transaction_hands_over_the_message() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let replies = d.send(b"Subject: hi\r\n\r\nHello\r\n.\r\n");
    assert_eq!(codes(&replies), vec![250]);
    let Taken { message: m, content } = &d.messages[0];
    assert_eq!(m.sender.as_ref().unwrap().to_string(), "alice@client.test");
    assert_eq!(m.recipients.len(), 1);
    assert_eq!(content, b"Subject: hi\r\n\r\nHello\r\n");
    assert_eq!(m.protocol(), "ESMTP");
    assert!(!m.has_message_id && !m.eight_bit);
    assert_eq!(d.cmd("QUIT"), 221);
    assert!(d.closed);
}

#[test]
fn a_message_id_counts_only_in_the_header_section() {
    let mut d = Dialogue::new();
    let with =
        ["Subject: hi\r\nMessage-ID: <1@client.test>\r\n\r\nbody\r\n", "message-id: <2@x>\r\n\r\nb\r\n"];
    let without = ["Subject: hi\r\n\r\nMessage-ID: <3@client.test>\r\n", "Subject: hi\r\n\r\nbody\r\n"];
    for content in with.iter().chain(&without) {
        d.up_to_data();
        assert_eq!(codes(&d.send(format!("{content}.\r\n").as_bytes())), vec![250]);
    }
    let seen: Vec<bool> = d.messages.iter().map(|t| t.message.has_message_id).collect();
    assert_eq!(seen, vec![true, true, false, false]);
}

#[test]
fn authentication_results_in_this_servers_name_are_removed_and_others_kept() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let forged = "Authentication-Results: mx.mesh.test; spf=pass smtp.mailfrom=ceo@bank.test\r\n\
Authentication-Results: MX.MESH.TEST;\r\n\tdkim=pass header.d=bank.test\r\n\
Authentication-Results:\r\n\t (a comment) mx.mesh.test; dmarc=pass\r\n\
Authentication-Results: other.example; spf=fail\r\n\
Subject: hi\r\n\
Authentication-Results:\r\n\tthird.example; dkim=none\r\n\
\r\n\
Authentication-Results: mx.mesh.test; spf=pass (in the body: text, kept)\r\n";
    assert_eq!(codes(&d.send(format!("{forged}.\r\n").as_bytes())), vec![250]);
    let kept = String::from_utf8(d.messages[0].content.clone()).unwrap();
    assert_eq!(
        kept,
        "Authentication-Results: other.example; spf=fail\r\nSubject: hi\r\n\
Authentication-Results:\r\n\tthird.example; dkim=none\r\n\r\n\
Authentication-Results: mx.mesh.test; spf=pass (in the body: text, kept)\r\n"
    );
}

#[test]
fn data_may_arrive_in_any_fragments() {
    let mut d = Dialogue::new();
    d.up_to_data();
    for chunk in [&b"Subj"[..], b"ect: x\r", b"\n\r\nbo", b"dy\r\n.", b"\r", b"\n"] {
        d.send(chunk);
    }
    assert_eq!(d.messages[0].content, b"Subject: x\r\n\r\nbody\r\n");
}

#[test]
fn dot_stuffed_lines_are_unstuffed() {
    let mut d = Dialogue::new();
    d.up_to_data();
    d.send(b"\r\n..\r\n..hidden\r\n.\r\n");
    assert_eq!(d.messages[0].content, b"\r\n.\r\n.hidden\r\n");
}

/// A line over 1,000 octets is taken, broken as Postfix breaks it (every
/// 998 octets, CR LF SPACE): a 5xx would bounce mail the real MX accepts.
#[test]
fn a_line_over_the_limit_is_broken_not_refused_and_nothing_is_lost() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let subject = format!("Subject: {}", "s".repeat(1500));
    // A body line of 2,500 octets whose pieces begin with a dot and with the
    // end-of-data dot: no piece ends the message or loses a dot.
    let mut body = "b".repeat(997);
    body.push('.');
    body.push_str(&".".repeat(998));
    body.push_str(&"c".repeat(505));
    let sent = format!("{subject}\r\n\r\n{body}\r\nnext\r\n.\r\n");
    // In pieces that cut through the long lines anywhere.
    let replies: Vec<Reply> = sent.as_bytes().chunks(333).flat_map(|piece| d.send(piece)).collect();
    assert_eq!(codes(&replies), vec![250], "taken");
    let kept = String::from_utf8(d.messages[0].content.clone()).unwrap();
    let lines: Vec<&str> = kept.split("\r\n").collect();
    assert!(lines.iter().all(|l| l.len() <= 998), "{:?}", lines.iter().map(|l| l.len()).collect::<Vec<_>>());
    // Taking the CR LF SPACE out gives back exactly what was sent.
    assert_eq!(kept.replace("\r\n ", ""), format!("{subject}\r\n\r\n{body}\r\nnext\r\n"));
    // The header section stays one folded field, then the blank line.
    assert!(lines[1].starts_with(' ') && lines[2].is_empty(), "{:?}", &lines[..3]);
}

#[test]
fn null_sender_is_accepted() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    assert_eq!(d.cmd("MAIL FROM:<>"), 250);
    assert_eq!(d.cmd("RCPT TO:<bob@example.test>"), 250);
    assert_eq!(d.cmd("DATA"), 354);
    d.send(b"x\r\n.\r\n");
    assert!(d.messages[0].message.sender.is_none());
}

#[test]
fn mail_before_helo_is_refused_503() {
    let mut d = Dialogue::new();
    let reply = d.reply_to("MAIL FROM:<alice@client.test>");
    assert_eq!((reply.code, reply.status.as_deref()), (503, Some("5.5.1")));
}

#[test]
fn rcpt_before_mail_is_refused_503() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    assert_eq!(d.cmd("RCPT TO:<bob@example.test>"), 503);
}

#[test]
fn data_without_recipients_is_refused() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    assert_eq!(d.cmd("DATA"), 503);
    d.cmd("MAIL FROM:<alice@client.test>");
    assert_eq!(d.cmd("RCPT TO:<bob@refused.test>"), 550);
    assert_eq!(d.cmd("DATA"), 554);
}

#[test]
fn nested_mail_is_refused() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.cmd("MAIL FROM:<alice@client.test>");
    assert_eq!(d.cmd("MAIL FROM:<eve@client.test>"), 503);
}

#[test]
fn rset_ends_the_transaction() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.cmd("MAIL FROM:<alice@client.test>");
    d.cmd("RCPT TO:<bob@example.test>");
    assert_eq!(d.cmd("RSET"), 250);
    assert_eq!(d.cmd("RCPT TO:<bob@example.test>"), 503);
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test>"), 250);
}

#[test]
fn noop_vrfy_help_and_quit_answer_as_the_rfc_says() {
    let mut d = Dialogue::new();
    assert_eq!(d.cmd("NOOP"), 250);
    let vrfy = d.reply_to("VRFY bob");
    assert_eq!((vrfy.code, vrfy.status.as_deref()), (252, Some("2.5.2")));
    assert_eq!(d.cmd("HELP"), 214);
    assert_eq!(d.cmd("QUIT"), 221);
    assert!(d.closed);
}

#[test]
fn unknown_and_unoffered_commands_are_refused() {
    let mut d = Dialogue::new();
    assert_eq!(d.cmd("FROB x"), 500);
    assert_eq!(d.cmd("AUTH PLAIN AGJvYgBib2I="), 502);
    assert_eq!(d.cmd("STARTTLS"), 502);
    assert_eq!(d.cmd("EHLO"), 501);
}

#[test]
fn command_line_over_512_octets_is_refused_500() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    let long = format!("MAIL FROM:<{}@client.test>", "a".repeat(500));
    let reply = d.reply_to(&long);
    assert_eq!((reply.code, reply.status.as_deref()), (500, Some("5.5.2")));
    assert_eq!(d.cmd("NOOP"), 250, "the session goes on after the long line");
}

#[test]
fn the_101st_recipient_gets_452_4_5_3() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.cmd("MAIL FROM:<alice@client.test>");
    for i in 0..100 {
        assert_eq!(d.cmd(&format!("RCPT TO:<user{i}@example.test>")), 250);
    }
    let reply = d.reply_to("RCPT TO:<user100@example.test>");
    assert_eq!((reply.code, reply.status.as_deref()), (452, Some("4.5.3")));
    assert_eq!(d.cmd("DATA"), 354);
    d.send(b"x\r\n.\r\n");
    assert_eq!(d.messages[0].message.recipients.len(), 100);
}

#[test]
fn size_over_the_limit_is_refused_at_mail_552() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    let reply = d.reply_to("MAIL FROM:<alice@client.test> SIZE=26214401");
    assert_eq!((reply.code, reply.status.as_deref()), (552, Some("5.3.4")));
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test> SIZE=1000"), 250);
}

#[test]
fn oversized_body_is_refused_after_data_552() {
    let mut config = Dialogue::config();
    config.limits.max_message_size = 1000;
    let mut d = Dialogue::greeted(config);
    d.up_to_data();
    let line = format!("{}\r\n", "x".repeat(98));
    for _ in 0..20 {
        assert!(d.send(line.as_bytes()).is_empty());
    }
    let replies = d.send(b".\r\n");
    assert_eq!((replies[0].code, replies[0].status.as_deref()), (552, Some("5.3.4")));
    assert!(d.messages.is_empty());
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test>"), 250, "a new transaction may start");
}

/// A config whose sessions share a budget of `kib` KiB for message content.
fn budgeted(kib: usize) -> (SessionConfig, DataBudget) {
    let budget = DataBudget::new(kib * 1024);
    let mut config = Dialogue::config();
    config.data_budget = budget.clone();
    (config, budget)
}

/// Sends `kib` KiB of message lines (no final dot).
fn send_kib(d: &mut Dialogue, kib: usize) {
    let line = format!("{}\r\n", "x".repeat(510));
    for _ in 0..2 * kib {
        assert!(d.send(line.as_bytes()).is_empty());
    }
}

#[test]
fn data_past_the_shared_memory_budget_gets_452_until_memory_is_free() {
    let (config, budget) = budgeted(128);
    let mut first = Dialogue::greeted(config.clone());
    first.up_to_data();
    send_kib(&mut first, 100);
    let mut second = Dialogue::greeted(config);
    assert_eq!(second.cmd("EHLO client.test"), 250);
    assert_eq!(second.cmd("MAIL FROM:<carol@client.test>"), 250);
    assert_eq!(second.cmd("RCPT TO:<bob@example.test>"), 250);
    let reply = second.reply_to("DATA");
    assert_eq!((reply.code, reply.status.as_deref()), (452, Some("4.3.1")), "{reply:?}");
    assert_eq!(codes(&first.send(b".\r\n")), vec![250], "the first message is not disturbed");
    assert_eq!(budget.in_use(), 0, "handed over: its memory is back");
    assert_eq!(second.cmd("DATA"), 354, "the transaction stands; DATA may be tried again");
    assert_eq!(codes(&second.send(b"Subject: hi\r\n\r\nhi\r\n.\r\n")), vec![250]);
}

#[test]
fn a_message_of_any_size_is_handed_out_in_pieces_within_two_chunks_of_budget() {
    let (config, budget) = budgeted(128);
    let mut d = Dialogue::greeted(config);
    d.up_to_data();
    let line = format!("{}\r\n", "x".repeat(510));
    // 4 MiB against a budget of 128 KiB: the session never holds more than
    // its two chunks, and hands the content out as it goes.
    for _ in 0..8 * 1024 {
        assert!(d.send(line.as_bytes()).is_empty());
        assert_eq!(budget.in_use(), 2 * CHUNK);
    }
    assert!(d.content.len() >= 4 * 1024 * 1024 - CHUNK, "handed out while read: {}", d.content.len());
    assert_eq!(codes(&d.send(b".\r\n")), vec![250]);
    let taken = &d.messages[0];
    assert_eq!(taken.content.len(), 8 * 1024 * 512);
    assert!(taken.content.chunks(512).all(|l| l == line.as_bytes()));
    assert!(d.largest_piece <= CHUNK + 1000, "pieces of about a chunk: {}", d.largest_piece);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn a_refused_message_was_handed_out_in_part_and_the_refusal_says_so() {
    let mut config = Dialogue::config();
    config.limits.max_message_size = 200 * 1024;
    let mut d = Dialogue::greeted(config);
    d.up_to_data();
    send_kib(&mut d, 300);
    assert!(!d.content.is_empty(), "pieces went out before the size was passed");
    let replies = d.send(b".\r\n");
    assert_eq!((replies[0].code, replies[0].status.as_deref()), (552, Some("5.3.4")));
    assert!(d.messages.is_empty(), "no message: the caller throws the pieces away");
}

#[test]
fn a_message_holds_its_memory_until_the_verdict_on_it() {
    let (config, budget) = budgeted(1024);
    let now = Instant::now();
    let mut session = Session::new(Arc::new(config), "192.0.2.10".parse().unwrap(), now);
    session.greet(now);
    let mut verdicts = 0;
    let mut feed = |session: &mut Session, bytes: &[u8]| {
        session.receive(bytes, now);
        while let Some(event) = session.poll() {
            match event {
                Event::Mail(_) | Event::Rcpt(_) => session.decide(Reply::new(250, "2.0.0", "OK")),
                Event::Message(_) => verdicts += 1,
                _ => {}
            }
        }
    };
    for line in ["EHLO client.test", "MAIL FROM:<alice@client.test>", "RCPT TO:<bob@example.test>", "DATA"] {
        feed(&mut session, format!("{line}\r\n").as_bytes());
    }
    feed(&mut session, format!("{}\r\n.\r\n", "x".repeat(500)).as_bytes());
    assert_eq!(verdicts, 1, "the message is handed over");
    assert!(budget.in_use() > 0, "the caller holds it until its verdict (on disk, or not)");
    session.decide(Reply::new(250, "2.0.0", "Queued"));
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn a_client_gone_in_the_middle_of_data_gives_its_memory_back() {
    let (config, budget) = budgeted(1024);
    let mut d = Dialogue::greeted(config);
    d.up_to_data();
    send_kib(&mut d, 300);
    assert_eq!(budget.in_use(), 2 * CHUNK, "two chunks, whatever the size");
    d.session.client_closed();
    drop(d);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn a_text_line_of_1000_octets_with_its_ending_is_kept_whole_and_one_more_is_broken() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let fits = "x".repeat(998);
    assert_eq!(codes(&d.send(format!("{fits}\r\n.\r\n").as_bytes())), vec![250]);
    assert_eq!(d.messages[0].content, format!("{fits}\r\n").as_bytes());
    d.cmd("MAIL FROM:<alice@client.test>");
    d.cmd("RCPT TO:<bob@example.test>");
    d.cmd("DATA");
    let over = "x".repeat(999);
    assert_eq!(codes(&d.send(format!("{over}\r\n.\r\n").as_bytes())), vec![250]);
    assert_eq!(d.messages[1].content, format!("{}\r\n xx\r\n", "x".repeat(997)).as_bytes());
}

#[test]
fn pipelining_when_not_offered_is_rejected_554_and_closed() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    let replies = d.send(b"MAIL FROM:<alice@client.test>\r\nRCPT TO:<bob@example.test>\r\n");
    assert_eq!(codes(&replies), vec![554]);
    assert_eq!(replies[0].status.as_deref(), Some("5.5.1"));
    assert!(d.closed);
    assert_eq!(d.violations, vec![Violation::Pipelining]);
}

#[test]
fn pipelining_after_the_final_dot_is_caught() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let replies = d.send(b"x\r\n.\r\nQUIT\r\n");
    assert_eq!(codes(&replies), vec![250, 554], "the message is answered, then the breach");
    assert!(d.closed);
}

#[test]
fn input_while_a_verdict_is_pending_is_pipelining() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.session.receive(b"MAIL FROM:<alice@client.test>\r\n", d.now);
    assert!(matches!(d.session.poll(), Some(Event::Mail(_))));
    d.session.receive(b"RCPT TO:<bob@example.test>\r\n", d.now);
    d.session.decide(Reply::new(250, "2.1.0", "OK"));
    assert_eq!(codes(&d.drain()), vec![250, 554]);
    assert!(d.closed);
}

#[test]
fn pipelining_with_the_ignore_action_is_reported_and_served() {
    let mut config = Dialogue::config();
    config.on_violation = ViolationAction::Ignore;
    let mut d = Dialogue::greeted(config);
    let replies =
        d.send(b"EHLO client.test\r\nMAIL FROM:<alice@client.test>\r\nRCPT TO:<bob@example.test>\r\n");
    assert_eq!(codes(&replies), vec![250, 250, 250]);
    assert!(d.violations.contains(&Violation::Pipelining));
    assert!(!d.closed);
}

#[test]
fn talking_before_the_greeting_is_rejected_554() {
    let mut d = Dialogue::with(Dialogue::config());
    d.session.receive(b"EHLO eager.test\r\n", d.now);
    assert!(d.drain().is_empty(), "nothing is answered before the greeting");
    d.session.greet(d.now);
    let replies = d.drain();
    assert_eq!(codes(&replies), vec![554]);
    assert!(d.closed);
    assert_eq!(d.violations, vec![Violation::Pregreet]);
}

#[test]
fn talking_before_the_greeting_with_ignore_is_served() {
    let mut config = Dialogue::config();
    config.on_violation = ViolationAction::Ignore;
    let mut d = Dialogue::with(config);
    d.session.receive(b"EHLO eager.test\r\n", d.now);
    d.session.greet(d.now);
    assert_eq!(codes(&d.drain()), vec![220, 250]);
    assert_eq!(d.violations, vec![Violation::Pregreet]);
}

#[test]
fn bare_lf_in_a_command_is_rejected() {
    let mut d = Dialogue::new();
    let replies = d.send(b"EHLO client.test\n");
    assert_eq!(codes(&replies), vec![554]);
    assert!(d.closed);
    assert_eq!(d.violations, vec![Violation::BareLineEnding]);
}

#[test]
fn bare_cr_in_a_command_is_rejected() {
    let mut config = Dialogue::config();
    config.on_violation = ViolationAction::Ignore;
    let mut d = Dialogue::greeted(config);
    let replies = d.send(b"EHLO client.test\rMAIL FROM:<x@y.test>\r\n");
    assert_eq!(codes(&replies), vec![500], "refused even when violations are ignored");
    assert_eq!(d.violations, vec![Violation::BareLineEnding]);
}

#[test]
fn bare_lf_in_data_is_written_as_crlf() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let replies = d.send(b"Subject: a\nX: b\r\n\nline one\nline two\r\n.\r\n");
    assert_eq!(codes(&replies), vec![250]);
    assert_eq!(d.messages[0].content, b"Subject: a\r\nX: b\r\n\r\nline one\r\nline two\r\n");
    assert!(d.violations.contains(&Violation::BareLineEnding), "noted for the log");
}

#[test]
fn bare_cr_in_data_ends_a_line_of_content() {
    let mut d = Dialogue::new();
    d.up_to_data();
    assert_eq!(codes(&d.send(b"a\rb\r\n.\r\n")), vec![250]);
    assert_eq!(d.messages[0].content, b"a\r\nb\r\n");
}

/// Every way of ending DATA a lenient server might accept, followed by a
/// second transaction: none ends the message, so the "smuggled" commands are
/// content of the first message and no second message is taken.
#[test]
fn no_bare_line_ending_ends_a_message_so_nothing_is_smuggled() {
    let smuggled = b"MAIL FROM:<evil@client.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nspoofed\r\n";
    let ends: [&[u8]; 7] =
        [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n", b"\r\n.\r\r\n"];
    for end in ends {
        let mut d = Dialogue::new();
        d.up_to_data();
        let mut input = b"Subject: a\r\n\r\nbody".to_vec();
        input.extend_from_slice(end);
        input.extend_from_slice(smuggled);
        assert!(d.send(&input).is_empty(), "{end:?} ended the message");
        assert_eq!(codes(&d.send(b".\r\n")), vec![250], "after {end:?}");
        assert_eq!(d.messages.len(), 1, "after {end:?}");
        let content = String::from_utf8(d.messages[0].content.clone()).unwrap();
        assert!(content.contains("\r\nMAIL FROM:<evil@client.test>\r\n"), "{end:?}: {content:?}");
    }
}

#[test]
fn more_than_50_received_headers_is_a_loop_554_5_4_6() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let mut message = "Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n".repeat(51);
    message.push_str("\r\nbody\r\n.\r\n");
    let replies = d.send(message.as_bytes());
    assert_eq!((replies[0].code, replies[0].status.as_deref()), (554, Some("5.4.6")));
}

#[test]
fn fifty_received_headers_and_more_in_the_body_are_fine() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let hop = "Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n";
    let message = format!("{}\r\n{}.\r\n", hop.repeat(50), hop.repeat(10));
    assert_eq!(codes(&d.send(message.as_bytes())), vec![250]);
}

#[test]
fn utf8_address_needs_the_smtputf8_parameter() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    let reply = d.reply_to("MAIL FROM:<jösé@client.test>");
    assert_eq!((reply.code, reply.status.as_deref()), (553, Some("5.6.7")));
    assert_eq!(d.cmd("MAIL FROM:<jösé@client.test> SMTPUTF8"), 250);
    assert_eq!(d.cmd("RCPT TO:<bücher@example.test>"), 250);
    d.cmd("DATA");
    d.send(b"x\r\n.\r\n");
    assert_eq!(d.messages[0].message.protocol(), "UTF8SMTP");
}

#[test]
fn body_8bitmime_is_taken_and_binarymime_refused() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test> BODY=BINARYMIME"), 555);
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test> BODY=8BITMIME"), 250);
}

#[test]
fn bare_postmaster_is_accepted_for_the_server() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.cmd("MAIL FROM:<alice@client.test>");
    assert_eq!(d.cmd("RCPT TO:<Postmaster>"), 250);
    assert_eq!(d.cmd("RCPT TO:<>"), 501);
    d.cmd("DATA");
    d.send(b"x\r\n.\r\n");
    assert_eq!(d.messages[0].message.recipients[0].to_string(), "postmaster@mx.mesh.test");
}

#[test]
fn refused_recipients_are_left_out_of_the_message() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.cmd("MAIL FROM:<alice@client.test>");
    assert_eq!(d.cmd("RCPT TO:<x@refused.test>"), 550);
    assert_eq!(d.cmd("RCPT TO:<bob@example.test>"), 250);
    d.cmd("DATA");
    d.send(b"x\r\n.\r\n");
    assert_eq!(d.messages[0].message.recipients.len(), 1);
}

#[test]
fn starttls_restarts_the_session() {
    let mut config = Dialogue::config();
    config.starttls = true;
    let mut d = Dialogue::greeted(config);
    d.cmd("EHLO client.test");
    d.cmd("MAIL FROM:<alice@client.test>");
    assert_eq!(d.cmd("STARTTLS"), 220);
    assert!(d.tls_requested);
    d.session.tls_started(d.now);
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test>"), 503, "EHLO again after TLS");
    let ehlo = d.reply_to("EHLO client.test");
    assert!(!ehlo.to_string().contains("STARTTLS"));
    assert_eq!(d.cmd("STARTTLS"), 503);
    d.cmd("MAIL FROM:<alice@client.test>");
    d.cmd("RCPT TO:<bob@example.test>");
    d.cmd("DATA");
    d.send(b"x\r\n.\r\n");
    assert!(d.messages[0].message.tls);
    assert_eq!(d.messages[0].message.protocol(), "ESMTPS");
}

#[test]
fn plaintext_injected_after_starttls_is_rejected() {
    let mut config = Dialogue::config();
    config.starttls = true;
    let mut d = Dialogue::greeted(config);
    d.cmd("EHLO client.test");
    let replies = d.send(b"STARTTLS\r\nMAIL FROM:<evil@client.test>\r\n");
    assert_eq!(codes(&replies), vec![554]);
    assert!(!d.tls_requested);
    assert!(d.closed);
}

#[test]
fn idle_client_times_out_after_5_minutes_with_421_4_4_2() {
    let mut d = Dialogue::new();
    let deadline = d.session.poll_timeout().unwrap();
    assert_eq!(deadline - d.now, Duration::from_secs(300));
    d.session.handle_timeout(d.now + Duration::from_secs(299));
    assert!(d.drain().is_empty());
    d.session.handle_timeout(deadline);
    let replies = d.drain();
    assert_eq!((replies[0].code, replies[0].status.as_deref()), (421, Some("4.4.2")));
    assert!(d.closed);
}

#[test]
fn stalled_data_times_out_after_3_minutes() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let deadline = d.session.poll_timeout().unwrap();
    assert_eq!(deadline - d.now, Duration::from_secs(180));
    d.session.handle_timeout(deadline);
    assert_eq!(codes(&d.drain()), vec![421]);
}

#[test]
fn a_busy_session_ends_after_an_hour_with_421_4_4_2() {
    let mut d = Dialogue::new();
    // A client that keeps the connection busy, a command every 4 minutes.
    for _ in 0..14 {
        d.now += Duration::from_secs(240);
        assert_eq!(d.cmd("EHLO client.test"), 250);
    }
    // 56 minutes in: the next idle deadline is cut to the hour.
    let deadline = d.session.poll_timeout().unwrap();
    assert_eq!(deadline - d.now, Duration::from_secs(240));
    d.session.handle_timeout(deadline);
    let replies = d.drain();
    assert_eq!((replies[0].code, replies[0].status.as_deref()), (421, Some("4.4.2")));
    assert!(replies[0].lines[0].contains("too long"), "{:?}", replies[0]);
    assert!(d.closed);
}

#[test]
fn past_100_junk_commands_each_counts_as_an_error() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    for i in 0..100 {
        let command = ["NOOP", "RSET", "VRFY bob", "HELP"][i % 4];
        let replies = d.send(format!("{command}\r\n").as_bytes());
        assert_eq!(replies.len(), 1, "{command} number {}", i + 1);
    }
    // The 101st to 119th are answered, and count as errors 1 to 19.
    for _ in 0..19 {
        assert_eq!(d.cmd("NOOP"), 250);
    }
    assert_eq!(codes(&d.send(b"NOOP\r\n")), vec![250, 421]);
    assert!(d.closed);
}

#[test]
fn each_message_taken_starts_the_junk_count_again() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    // A relay reusing its connection: RSET before each of 300 messages.
    for _ in 0..300 {
        assert_eq!(d.cmd("RSET"), 250);
        assert_eq!(d.cmd("MAIL FROM:<alice@client.test>"), 250);
        assert_eq!(d.cmd("RCPT TO:<bob@example.test>"), 250);
        assert_eq!(d.cmd("DATA"), 354);
        assert_eq!(codes(&d.send(b"x\r\n.\r\n")), vec![250]);
    }
    assert!(!d.closed);
}

#[test]
fn no_timeout_runs_while_the_node_decides() {
    let mut d = Dialogue::new();
    d.cmd("EHLO client.test");
    d.session.receive(b"MAIL FROM:<alice@client.test>\r\n", d.now);
    assert!(matches!(d.session.poll(), Some(Event::Mail(_))));
    assert!(d.session.poll_timeout().is_none());
}

#[test]
fn too_many_errors_close_the_session() {
    let mut d = Dialogue::new();
    for _ in 0..19 {
        assert_eq!(d.cmd("FROB"), 500);
    }
    let replies = d.send(b"FROB\r\n");
    assert_eq!(codes(&replies), vec![500, 421]);
    assert!(d.closed);
}

#[test]
fn a_refused_message_starts_no_trouble_for_the_next() {
    let mut d = Dialogue::new();
    d.up_to_data();
    let looping = "Received: from a\r\n".repeat(51);
    assert_eq!(codes(&d.send(format!("{looping}\r\nloop\r\n.\r\n").as_bytes())), vec![554]);
    assert_eq!(d.cmd("MAIL FROM:<alice@client.test>"), 250);
    d.cmd("RCPT TO:<bob@example.test>");
    d.cmd("DATA");
    assert_eq!(codes(&d.send(b"ok\r\n.\r\n")), vec![250]);
    assert_eq!(d.messages.len(), 1);
}
