//! The session state machine: greeting, command dispatch, decisions, STARTTLS,
//! time-outs and protocol violations. One file per verb holds the verb's rules.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use smtp_proto::Request;

use crate::address::Address;

use super::config::{SessionConfig, ViolationAction};
use super::data::DataReader;
use super::event::{Event, Violation};
use super::framing::{Input, Line};
use super::reply::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Connected, greeting not yet sent.
    Connected,
    /// Reading commands.
    Ready,
    /// Reading the message after `354`.
    Data,
    /// Waiting for the caller's verdict on a request.
    Awaiting(Pending),
    /// `220` to STARTTLS handed out; waiting for the handshake.
    StartingTls,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    Mail,
    Rcpt,
    Message,
}

/// The mail transaction being built (RFC 5321 §3.3).
#[derive(Debug, Default)]
pub(super) struct Transaction {
    /// `Some(None)` is the null sender.
    pub sender: Option<Option<Address>>,
    pub recipients: Vec<Address>,
    pub smtputf8: bool,
    pub eight_bit_mime: bool,
    /// A request handed to the caller, kept until its verdict.
    pub pending_sender: Option<Option<Address>>,
    pub pending_recipient: Option<Address>,
}

/// One SMTP server session. See the module documentation of [`super`].
#[derive(Debug)]
pub struct Session {
    pub(super) config: Arc<SessionConfig>,
    pub(super) client_ip: IpAddr,
    pub(super) state: State,
    pub(super) input: Input,
    pub(super) events: VecDeque<Event>,
    pub(super) helo: Option<String>,
    pub(super) esmtp: bool,
    pub(super) tls: bool,
    pub(super) transaction: Transaction,
    pub(super) data: DataReader,
    errors: usize,
    /// NOOP, RSET, VRFY and HELP since the last message taken.
    junk_commands: usize,
    started: Instant,
    last_activity: Instant,
    pregreet: bool,
    /// Input arrived while a verdict was pending.
    pub(super) input_while_awaiting: bool,
}

impl Session {
    pub fn new(config: Arc<SessionConfig>, client_ip: IpAddr, now: Instant) -> Session {
        Session {
            config,
            client_ip,
            state: State::Connected,
            input: Input::default(),
            events: VecDeque::new(),
            helo: None,
            esmtp: false,
            tls: false,
            transaction: Transaction::default(),
            data: DataReader::default(),
            errors: 0,
            junk_commands: 0,
            started: now,
            last_activity: now,
            pregreet: false,
            input_while_awaiting: false,
        }
    }

    /// Hands out the greeting. Input received before this call is a pregreet
    /// violation.
    pub fn greet(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        self.last_activity = now;
        self.state = State::Ready;
        if self.pregreet && self.violation(Violation::Pregreet) {
            return;
        }
        let text = format!("{} ESMTP magicmx", self.config.hostname);
        self.events.push_back(Event::Reply(Reply::plain(220, vec![text])));
    }

    /// Feeds bytes from the client.
    pub fn receive(&mut self, data: &[u8], now: Instant) {
        if self.state == State::Closed || data.is_empty() {
            return;
        }
        self.last_activity = now;
        match self.state {
            State::Connected => self.pregreet = true,
            State::Awaiting(_) | State::StartingTls => self.input_while_awaiting = true,
            _ => {}
        }
        self.input.push(data);
    }

    /// The next event, processing buffered input as far as it can without a
    /// verdict from the caller.
    pub fn poll(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let progressed = match self.state {
                State::Ready => self.read_command(),
                State::Data => self.read_data(),
                _ => false,
            };
            if !progressed {
                return None;
            }
        }
    }

    /// The caller's verdict on the pending request: the reply to send. A
    /// positive reply takes the sender or recipient into the transaction; any
    /// reply to a message ends the transaction.
    pub fn decide(&mut self, reply: Reply) {
        let State::Awaiting(pending) = self.state else {
            return;
        };
        self.state = State::Ready;
        match pending {
            Pending::Mail => {
                let sender = self.transaction.pending_sender.take();
                if reply.is_positive() {
                    self.transaction.sender = sender;
                } else {
                    self.transaction = Transaction::default();
                }
            }
            Pending::Rcpt => {
                let recipient = self.transaction.pending_recipient.take();
                if let (true, Some(recipient)) = (reply.is_positive(), recipient) {
                    self.transaction.recipients.push(recipient);
                }
            }
            Pending::Message => {
                self.transaction = Transaction::default();
                self.data.reservation.release();
                if reply.is_positive() {
                    self.junk_commands = 0;
                }
            }
        }
        let closing = reply.code == 421;
        self.reply(reply);
        if closing {
            self.close();
            return;
        }
        if std::mem::take(&mut self.input_while_awaiting) {
            self.violation(Violation::Pipelining);
        }
    }

    /// The TLS handshake after STARTTLS is done: the session starts afresh
    /// (RFC 3207 §4.2), and plaintext sent before the handshake is discarded.
    pub fn tls_started(&mut self, now: Instant) {
        if self.state != State::StartingTls {
            return;
        }
        self.input.clear();
        self.input_while_awaiting = false;
        self.helo = None;
        self.esmtp = false;
        self.tls = true;
        self.transaction = Transaction::default();
        self.last_activity = now;
        self.state = State::Ready;
    }

    /// When the session will time out if nothing arrives, or reach its
    /// longest duration; `None` while the caller holds the next move.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        let idle = match self.state {
            State::Ready => limits.command_timeout,
            State::Data => limits.data_timeout,
            _ => return None,
        };
        Some((self.last_activity + idle).min(self.started + limits.session_duration))
    }

    /// Closes the session with `421 4.4.2` if its time-out has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            return;
        }
        let text = match now >= self.started + self.config.limits.session_duration {
            true => format!("{} Error: session lasted too long, please reconnect", self.config.hostname),
            false => format!("{} Error: timeout exceeded", self.config.hostname),
        };
        self.events.push_back(Event::Reply(Reply::new(421, "4.4.2", text)));
        self.close();
    }

    /// The client closed its side.
    pub fn client_closed(&mut self) {
        self.state = State::Closed;
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.events.is_empty()
    }

    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The client said EHLO (not HELO).
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    /// Queues a reply, counting errors; past the error limit the session is closed.
    pub(super) fn reply(&mut self, reply: Reply) {
        let is_error = reply.code >= 400 && reply.code != 421;
        self.events.push_back(Event::Reply(reply));
        if is_error {
            self.count_error();
        }
    }

    /// One more error; at the error limit the session is closed.
    fn count_error(&mut self) {
        self.errors += 1;
        if self.errors >= self.config.limits.max_errors && self.state != State::Closed {
            let text = format!("{} Error: too many errors", self.config.hostname);
            self.events.push_back(Event::Reply(Reply::new(421, "4.7.0", text)));
            self.close();
        }
    }

    /// A command that moves no mail: its reply, then, past the junk-command
    /// limit, one more error.
    fn junk(&mut self, reply: Reply) {
        self.reply(reply);
        self.junk_commands += 1;
        if self.junk_commands > self.config.limits.junk_commands {
            self.count_error();
        }
    }

    pub(super) fn close(&mut self) {
        self.events.push_back(Event::Close);
        self.state = State::Closed;
        self.input.clear();
    }

    /// Hands a request to the caller and waits for its verdict.
    pub(super) fn await_verdict(&mut self, pending: Pending, event: Event) {
        self.events.push_back(event);
        self.state = State::Awaiting(pending);
    }

    /// Reports a violation; returns true if the session was closed for it.
    pub(super) fn violation(&mut self, violation: Violation) -> bool {
        self.events.push_back(Event::Violation(violation));
        if self.config.on_violation == ViolationAction::Ignore {
            return false;
        }
        let text = match violation {
            Violation::Pregreet => "Protocol error: talking before the greeting",
            Violation::Pipelining => "Protocol error: PIPELINING was not offered, wait for each reply",
            Violation::BareLineEnding => "Protocol error: bare <CR> or <LF> received",
        };
        self.events.push_back(Event::Reply(Reply::new(554, "5.5.1", text)));
        self.close();
        true
    }

    fn read_command(&mut self) -> bool {
        let Some(line) = self.input.next_line(self.config.limits.command_line) else {
            return false;
        };
        if !self.input.is_empty() && self.violation(Violation::Pipelining) {
            return true;
        }
        self.handle_command(line);
        true
    }

    fn handle_command(&mut self, line: Line) {
        if line.too_long {
            let text = format!("Line too long (limit {} octets)", self.config.limits.command_line);
            return self.reply(Reply::new(500, "5.5.2", text));
        }
        if line.bare_line_ending {
            self.violation(Violation::BareLineEnding);
            if self.state != State::Closed {
                self.reply(Reply::new(500, "5.5.2", "Syntax error: bare <CR> or <LF> received"));
            }
            return;
        }
        let mut raw = self.input.bytes(&line).to_vec();
        raw.extend_from_slice(b"\r\n");
        let request = Request::parse(&mut raw.iter());
        let request = match request {
            Ok(request) => request,
            Err(error) => return self.reply(parse_error_reply(error)),
        };
        self.dispatch(request, &raw);
    }

    fn dispatch(&mut self, request: Request<Cow<'_, str>>, raw: &[u8]) {
        match request {
            Request::Ehlo { host } => self.handle_ehlo(&host, true),
            Request::Helo { host } => self.handle_ehlo(&host, false),
            Request::Mail { from } => self.handle_mail(from),
            Request::Rcpt { to } => self.handle_rcpt(to, raw),
            Request::Data => self.handle_data(),
            Request::Rset => {
                self.transaction = Transaction::default();
                self.junk(Reply::new(250, "2.0.0", "OK"));
            }
            Request::Noop { .. } => self.junk(Reply::new(250, "2.0.0", "OK")),
            Request::Vrfy { .. } => self.junk(Reply::new(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => self.junk(Reply::new(
                214,
                "2.0.0",
                "magicmx relays mail for its domains; commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
            )),
            Request::Quit => {
                let text = format!("{} closing connection", self.config.hostname);
                self.events.push_back(Event::Reply(Reply::new(221, "2.0.0", text)));
                self.close();
            }
            Request::StartTls => self.handle_starttls(),
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.reply(Reply::new(502, "5.5.1", "Command not implemented")),
        }
    }

    fn handle_starttls(&mut self) {
        if self.tls {
            return self.reply(Reply::new(503, "5.5.1", "TLS already active"));
        }
        if !self.config.starttls {
            return self.reply(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        self.events.push_back(Event::Reply(Reply::new(220, "2.0.0", "Ready to start TLS")));
        self.events.push_back(Event::StartTls);
        self.state = State::StartingTls;
    }

    /// The EHLO/HELO check shared by MAIL, RCPT and DATA.
    pub(super) fn require_helo(&mut self) -> bool {
        if self.helo.is_none() {
            self.reply(Reply::new(503, "5.5.1", "Send HELO/EHLO first"));
            return false;
        }
        true
    }
}

fn parse_error_reply(error: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match error {
        E::UnknownCommand => Reply::new(500, "5.5.1", "Command unrecognized"),
        E::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, "5.5.4", format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => Reply::new(501, "5.5.4", format!("Invalid parameter {param}")),
        E::UnsupportedParameter { param } => {
            let param: String = param.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
            Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
        }
        _ => Reply::new(500, "5.5.2", "Syntax error"),
    }
}
