//! DATA (RFC 5321 §4.1.1.4): reads the message to the lone dot, unstuffs
//! dots, writes bare CR or LF out as CR LF without letting them end the
//! message (SMTP smuggling), breaks lines over 1,000 octets as Postfix does
//! (the message is taken: a 5xx would bounce mail the real MX accepts), and
//! refuses messages with too many octets or too many `Received:` headers
//! (a mail loop).
//!
//! The content is not kept: it is handed to the caller as it arrives, in
//! [`Event::Content`] pieces of about [`CHUNK`] octets, to be written to disk
//! while the rest is read. A session holds one buffer being filled and one
//! piece being written, reserved from the shared
//! [`DataBudget`](super::DataBudget) for the time of the DATA: memory is flat
//! in the size of the message. A message refused at its end was handed out
//! in part already; the refusal tells the caller to throw those pieces away.

use std::borrow::Cow;

use super::budget::{Reservation, CHUNK};
use super::event::{Event, Message, Violation};
use super::reply::Reply;
use super::session::{Pending, Session, State, Transaction};

/// The state of one message being read.
#[derive(Debug, Default)]
pub(super) struct DataReader {
    /// Content read and not yet handed out.
    buffer: Vec<u8>,
    /// Octets of content kept (handed out).
    size: usize,
    /// Octets read so far, kept or not (for the size limit).
    received: usize,
    in_headers: bool,
    received_headers: usize,
    has_message_id: bool,
    eight_bit: bool,
    oversize: bool,
    /// The last line did not end in CR LF: a dot after it is content.
    after_bare_ending: bool,
    /// A bare CR or LF was written out as CR LF (reported once).
    normalised: bool,
    /// The buffer and the piece being written; given back at the verdict on the message.
    pub(super) reservation: Reservation,
    own_results: OwnResults,
}

/// Removes the `Authentication-Results:` fields that carry this server's own
/// authserv-id (RFC 8601 §5: only it may write them, so any that arrive with
/// a message are forged), whatever the checks and whoever the client.
#[derive(Debug, Default)]
struct OwnResults {
    /// Inside such a field: its continuation lines go too.
    dropping: bool,
    /// A field whose first line ends before its authserv-id, held until the
    /// next line shows whose it is.
    held: Option<Vec<u8>>,
}

/// What of a header line to keep.
#[derive(Debug, PartialEq, Eq)]
enum Kept {
    Line,
    Nothing,
    /// A held line, then this one.
    HeldThenLine(Vec<u8>),
}

impl OwnResults {
    fn filter(&mut self, line: &[u8], own_id: &str) -> Kept {
        let continues = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continues && self.dropping {
            return Kept::Nothing;
        }
        self.dropping = false;
        if let Some(held) = self.held.take() {
            if continues && authserv_id(line).eq_ignore_ascii_case(own_id.as_bytes()) {
                self.dropping = true;
                return Kept::Nothing;
            }
            return Kept::HeldThenLine(held);
        }
        const NAME: &[u8] = b"authentication-results:";
        if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return Kept::Line;
        }
        let id = authserv_id(&line[NAME.len()..]);
        if id.is_empty() {
            self.held = Some(line.to_vec());
            return Kept::Nothing;
        }
        if id.eq_ignore_ascii_case(own_id.as_bytes()) {
            self.dropping = true;
            return Kept::Nothing;
        }
        Kept::Line
    }
}

/// The authserv-id at the start of an `Authentication-Results:` value:
/// after white space and comments, up to `;` or white space.
fn authserv_id(mut value: &[u8]) -> &[u8] {
    loop {
        value = value.trim_ascii_start();
        match value.first() {
            Some(b'(') => match value.iter().position(|&b| b == b')') {
                Some(end) => value = &value[end + 1..],
                None => return &[],
            },
            _ => break,
        }
    }
    let end = value.iter().position(|&b| b == b';' || b.is_ascii_whitespace()).unwrap_or(value.len());
    &value[..end]
}

impl DataReader {
    /// Takes one line of content, unstuffed and without its line ending.
    fn take_line(&mut self, bytes: &[u8], own_id: &str, max_size: usize) {
        self.received += bytes.len() + 2;
        if self.received > max_size {
            self.oversize = true;
        }
        let mut held = None;
        if self.in_headers {
            match self.own_results.filter(bytes, own_id) {
                Kept::Line => {}
                Kept::Nothing => return,
                Kept::HeldThenLine(line) => held = Some(line),
            }
            let named =
                |name: &[u8]| bytes.len() >= name.len() && bytes[..name.len()].eq_ignore_ascii_case(name);
            if bytes.is_empty() {
                self.in_headers = false;
            } else if named(b"received:") {
                self.received_headers += 1;
            } else if named(b"message-id:") {
                self.has_message_id = true;
            }
        }
        if self.oversize {
            // Refused at the end: nothing more is worth keeping.
            self.buffer.clear();
            return;
        }
        for line in held.as_deref().into_iter().chain([bytes]) {
            self.eight_bit |= !line.is_ascii();
            self.size += line.len() + 2;
            self.buffer.extend_from_slice(line);
            self.buffer.extend_from_slice(b"\r\n");
        }
    }
}

fn no_storage() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage: too many messages being received; try again later")
}

impl Session {
    pub(super) fn handle_data(&mut self) {
        if !self.require_helo() {
            return;
        }
        if self.transaction.sender.is_none() {
            return self.reply(Reply::new(503, "5.5.1", "Need MAIL command"));
        }
        if self.transaction.recipients.is_empty() {
            return self.reply(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        let Some(reservation) = Reservation::start(&self.config.data_budget, 2 * CHUNK) else {
            return self.reply(no_storage());
        };
        // Grown as needed: most messages are far smaller than a chunk.
        self.data = DataReader { in_headers: true, reservation, ..DataReader::default() };
        self.reply(Reply::plain(354, vec!["End data with <CR><LF>.<CR><LF>".into()]));
        self.state = State::Data;
    }

    /// Reads buffered message lines; returns false when it needs more input.
    /// A full buffer is handed out as [`Event::Content`] before reading on.
    ///
    /// A bare LF or bare CR ends a line of content, written out with CR LF
    /// (Postfix 3.9's `smtpd_forbid_bare_newline = normalize`). Only a lone
    /// dot ending in CR LF, after a line ending in CR LF, ends the message:
    /// `<LF>.<LF>`, `<CR><LF>.<LF>`, `<LF>.<CR><LF>` and their kin are
    /// content, so nothing can be smuggled past the end of the message.
    pub(super) fn read_data(&mut self) -> bool {
        let limits = &self.config.limits;
        let (text_line, max_size) = (limits.text_line, limits.max_message_size);
        let own_id = self.config.hostname.as_str();
        let mut progressed = false;
        while let Some(line) = self.input.next_text_line(text_line) {
            progressed = true;
            let data = &mut self.data;
            let after_bare_ending = std::mem::replace(&mut data.after_bare_ending, !line.ends_in_crlf);
            let bytes = self.input.bytes(&line);
            if !line.continued && bytes == b"." && !line.bare_line_ending && !after_bare_ending {
                self.finish_data();
                return true;
            }
            if line.bare_line_ending && !std::mem::replace(&mut data.normalised, true) {
                self.events.push_back(Event::Violation(Violation::BareLineEnding));
            }
            // A continued piece is the rest of a line over the limit, written
            // out as Postfix breaks such a line: CR LF SPACE (in the header
            // section a folded continuation, in the body a harmless space).
            // It does not start a line: no end-of-data dot, no dot-stuffing.
            let text: Cow<[u8]> = match line.continued {
                true => [b" ", bytes].concat().into(),
                false => bytes.strip_prefix(b".").unwrap_or(bytes).into(),
            };
            for part in text.split(|&b| b == b'\r') {
                data.take_line(part, own_id, max_size);
            }
            if data.buffer.len() >= CHUNK {
                let piece = std::mem::replace(&mut data.buffer, Vec::with_capacity(CHUNK));
                self.events.push_back(Event::Content(piece));
                return true;
            }
        }
        progressed
    }

    fn finish_data(&mut self) {
        self.state = State::Ready;
        let mut data = std::mem::take(&mut self.data);
        // The caller holds the content until its verdict: so does the budget.
        self.data.reservation = std::mem::take(&mut data.reservation);
        let limits = &self.config.limits;
        let refusal = if data.oversize {
            let text = format!(
                "Message size exceeds fixed maximum message size ({} octets)",
                limits.max_message_size
            );
            Some(Reply::new(552, "5.3.4", text))
        } else if data.received_headers > limits.max_received_headers {
            Some(Reply::new(554, "5.4.6", "Too many Received headers: mail loop detected"))
        } else {
            None
        };
        if let Some(reply) = refusal {
            self.data.reservation.release();
            self.transaction = Transaction::default();
            if !self.input.is_empty() && self.violation(Violation::Pipelining) {
                return;
            }
            return self.reply(reply);
        }
        if let Some(held) = data.own_results.held.take() {
            // A message of headers only, ending in a field held for its next line.
            data.size += held.len() + 2;
            data.buffer.extend_from_slice(&held);
            data.buffer.extend_from_slice(b"\r\n");
        }
        if !data.buffer.is_empty() {
            self.events.push_back(Event::Content(std::mem::take(&mut data.buffer)));
        }
        let transaction = std::mem::take(&mut self.transaction);
        let message = Message {
            helo: self.helo.clone().unwrap_or_default(),
            sender: transaction.sender.flatten(),
            recipients: transaction.recipients,
            size: data.size,
            has_message_id: data.has_message_id,
            eight_bit: data.eight_bit,
            smtputf8: transaction.smtputf8,
            eight_bit_mime: transaction.eight_bit_mime,
            tls: self.tls,
            esmtp: self.esmtp,
        };
        if !self.input.is_empty() {
            self.input_while_awaiting = true;
        }
        self.await_verdict(Pending::Message, Event::Message(message));
    }
}
