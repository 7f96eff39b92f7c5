//! Fuzzes the SMTP server session: the input is split into chunks fed to the
//! session as if they arrived from a client, with verdicts, STARTTLS and
//! time-outs mixed in by control bytes. The session must never panic, never
//! hand out an event after Close, keep its buffers bounded, hand out no line
//! of content over 998 octets (the next hop may refuse it), and give back
//! every octet of its memory budget once it is gone.

#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use magicmx_proto::smtp::{DataBudget, Event, Limits, Reply, Session, SessionConfig, ViolationAction};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else { return };
    // A budget too small for even one chunk refuses every DATA.
    let budget = DataBudget::new(if flags & 8 != 0 { 1000 } else { 1 << 20 });
    let config = SessionConfig {
        hostname: "mx.fuzz.test".into(),
        limits: Limits { max_message_size: 4096, max_recipients: 5, ..Limits::default() },
        starttls: flags & 1 != 0,
        on_violation: if flags & 2 != 0 { ViolationAction::Ignore } else { ViolationAction::Reject },
        data_budget: budget.clone(),
    };
    let start = Instant::now();
    let mut now = start;
    let mut session = Session::new(Arc::new(config), "192.0.2.1".parse().unwrap(), now);
    if flags & 4 != 0 {
        session.receive(b"EHLO early\r\n", now);
    }
    session.greet(now);
    let mut closed = false;
    // Content handed out for the message being read.
    let mut content = 0usize;
    // Octets of content since the last CR LF handed out (across pieces), and
    // whether the last one was a CR.
    let (mut line, mut after_cr) = (0usize, false);
    // 0xFF splits chunks; the byte after it steers the next verdicts.
    for chunk in data.split(|&b| b == 0xFF) {
        let (steer, bytes) = chunk.split_first().map(|(s, b)| (*s, b)).unwrap_or((0, chunk));
        now += Duration::from_secs(u64::from(steer & 0x0F) * 30);
        session.handle_timeout(now);
        session.receive(bytes, now);
        while let Some(event) = session.poll() {
            assert!(!closed, "event after Close: {event:?}");
            match event {
                Event::Close => closed = true,
                Event::StartTls => session.tls_started(now),
                Event::Content(piece) => {
                    assert!(piece.len() <= magicmx_proto::smtp::CHUNK + 1000, "a piece of {}", piece.len());
                    content += piece.len();
                    for &b in &piece {
                        line = if b == b'\n' && after_cr { 0 } else { line + 1 };
                        after_cr = b == b'\r';
                        assert!(line <= 999, "a line of content over 998 octets (and its CR)");
                    }
                }
                Event::Mail(_) | Event::Rcpt(_) | Event::Message(_) => {
                    if let Event::Message(message) = &event {
                        assert!(message.size <= 4096, "message over the size limit");
                        assert_eq!(message.size, std::mem::take(&mut content), "its size is what was handed out");
                        assert!(!message.recipients.is_empty() && message.recipients.len() <= 5);
                    }
                    let reply = match steer >> 6 {
                        0 => Reply::new(250, "2.0.0", "OK"),
                        1 => Reply::new(451, "4.7.1", "later"),
                        2 => Reply::new(550, "5.7.1", "no"),
                        _ => Reply::new(421, "4.7.0", "bye"),
                    };
                    session.decide(reply);
                }
                Event::Reply(r) => {
                    assert!((200..600).contains(&r.code));
                    if r.code >= 400 {
                        content = 0; // a refused message's pieces are thrown away
                    }
                }
                Event::Violation(_) => {}
            }
        }
    }
    drop(session);
    assert_eq!(budget.in_use(), 0, "memory budget not given back");
});
