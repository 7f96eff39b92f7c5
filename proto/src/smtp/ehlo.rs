//! EHLO and HELO (RFC 5321 §4.1.1.1): the client names itself; the EHLO reply
//! lists the extensions offered. PIPELINING is deliberately never offered.

use super::reply::Reply;
use super::session::{Session, Transaction};

impl Session {
    pub(super) fn handle_ehlo(&mut self, host: &str, esmtp: bool) {
        self.transaction = Transaction::default();
        self.helo = Some(host.to_string());
        self.esmtp = esmtp;
        let greeting = format!("{} Hello {} [{}]", self.config.hostname, host, self.client_ip);
        if !esmtp {
            return self.reply(Reply::plain(250, vec![greeting]));
        }
        let mut lines = vec![
            greeting,
            format!("SIZE {}", self.config.limits.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
        ];
        if self.config.starttls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        self.reply(Reply::plain(250, lines));
    }
}
