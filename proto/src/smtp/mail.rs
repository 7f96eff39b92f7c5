//! MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY=8BITMIME
//! (RFC 6152) and SMTPUTF8 (RFC 6531).

use std::borrow::Cow;

use smtp_proto::{MailFrom, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8};

use crate::address::Address;

use super::event::{Event, MailRequest};
use super::reply::Reply;
use super::session::{Pending, Session};

impl Session {
    pub(super) fn handle_mail(&mut self, from: MailFrom<Cow<'_, str>>) {
        if !self.require_helo() {
            return;
        }
        if self.transaction.sender.is_some() {
            return self.reply(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        if from.flags & MAIL_BODY_BINARYMIME != 0 {
            return self.reply(Reply::new(555, "5.5.4", "BODY=BINARYMIME is not supported"));
        }
        let max = self.config.limits.max_message_size;
        if from.size > max {
            let text = format!("Message size exceeds fixed maximum message size ({max} octets)");
            return self.reply(Reply::new(552, "5.3.4", text));
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let sender = if from.address.is_empty() {
            None
        } else {
            match Address::parse(&from.address) {
                Ok(address) => Some(address),
                Err(e) => return self.reply(Reply::new(501, "5.1.7", format!("Bad sender address: {e}"))),
            }
        };
        if sender.as_ref().is_some_and(Address::is_utf8) && !smtputf8 {
            return self.reply(Reply::new(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8"));
        }
        self.transaction.smtputf8 = smtputf8;
        self.transaction.eight_bit_mime = from.flags & MAIL_BODY_8BITMIME != 0;
        self.transaction.pending_sender = Some(sender.clone());
        let request = MailRequest {
            sender,
            declared_size: (from.size > 0).then_some(from.size),
            smtputf8,
            eight_bit_mime: self.transaction.eight_bit_mime,
        };
        self.await_verdict(Pending::Mail, Event::Mail(request));
    }
}
