//! RCPT TO (RFC 5321 §4.1.1.3): sequence, recipient limit, syntax, and the
//! bare `<postmaster>` every server must accept (§4.5.1).

use std::borrow::Cow;

use smtp_proto::RcptTo;

use crate::address::{Address, Domain};

use super::event::{Event, RcptRequest};
use super::reply::Reply;
use super::session::{Pending, Session};

impl Session {
    pub(super) fn handle_rcpt(&mut self, to: RcptTo<Cow<'_, str>>, raw: &[u8]) {
        if !self.require_helo() {
            return;
        }
        let Some(sender) = self.transaction.sender.clone() else {
            return self.reply(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
        };
        let max = self.config.limits.max_recipients;
        if self.transaction.recipients.len() >= max {
            return self.reply(Reply::new(452, "4.5.3", format!("Too many recipients (limit {max})")));
        }
        let recipient = if to.address.is_empty() {
            // smtp-proto reports both `<>` and `<postmaster>` as empty.
            if !contains_ignore_case(raw, b"<postmaster>") {
                return self.reply(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
            }
            let domain = Domain::parse(&self.config.hostname)
                .unwrap_or_else(|_| Domain::parse("localhost").expect("localhost is a valid domain"));
            Address { local: "postmaster".into(), domain }
        } else {
            match Address::parse(&to.address) {
                Ok(address) => address,
                Err(e) => return self.reply(Reply::new(501, "5.1.3", format!("Bad recipient address: {e}"))),
            }
        };
        if recipient.is_utf8() && !self.transaction.smtputf8 {
            return self.reply(Reply::new(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8"));
        }
        self.transaction.pending_recipient = Some(recipient.clone());
        self.await_verdict(Pending::Rcpt, Event::Rcpt(RcptRequest { recipient, sender }));
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}
