//! What a session hands to its caller: replies to send, and requests that
//! wait for the caller's verdict.

use crate::address::Address;

use super::reply::Reply;

/// The output of [`super::Session::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send this reply to the client.
    Reply(Reply),
    /// The `220` to STARTTLS has been handed out; once it is sent, run the TLS
    /// handshake and call [`super::Session::tls_started`].
    StartTls,
    /// Close the connection once the replies before this event are sent.
    Close,
    /// The client broke the protocol; what follows depends on the
    /// [`super::ViolationAction`]. For logs and metrics.
    Violation(Violation),
    /// MAIL FROM passed the session's own rules; answer with `decide`.
    Mail(MailRequest),
    /// RCPT TO passed the session's own rules; answer with `decide`.
    Rcpt(RcptRequest),
    /// The next piece of the message being read (dot-unstuffed, lines ended
    /// with CRLF), in order: write it away before polling again. If the
    /// message is then refused (a reply of the session's own instead of
    /// [`Event::Message`]), the pieces are to be thrown away.
    Content(Vec<u8>),
    /// The message has ended well, its content handed out in the
    /// [`Event::Content`] before it; answer with `decide` (a 250 only once it
    /// is on disk).
    Message(Message),
}

/// Protocol breaches worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Data before the greeting (postscreen's pregreet test).
    Pregreet,
    /// A command sent before the reply to the previous one, PIPELINING not offered.
    Pipelining,
    /// A line ending in a bare LF, or a bare CR inside a line (SMTP smuggling).
    BareLineEnding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailRequest {
    /// `None` is the null reverse-path `<>`.
    pub sender: Option<Address>,
    /// The SIZE parameter, when given.
    pub declared_size: Option<usize>,
    pub smtputf8: bool,
    pub eight_bit_mime: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptRequest {
    pub recipient: Address,
    /// The sender of the transaction this recipient is for.
    pub sender: Option<Address>,
}

/// A message whose DATA ended well: its envelope, and what was seen of the
/// content handed out before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub helo: String,
    pub sender: Option<Address>,
    pub recipients: Vec<Address>,
    /// Octets of content (dot-unstuffed, CRLF line ends).
    pub size: usize,
    /// The header section has a `Message-ID:` field.
    pub has_message_id: bool,
    /// The content has octets above 127.
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub eight_bit_mime: bool,
    pub tls: bool,
    pub esmtp: bool,
}

impl Message {
    /// The `with` protocol of the `Received:` header (RFC 3848, RFC 6531).
    pub fn protocol(&self) -> &'static str {
        match (self.smtputf8, self.esmtp, self.tls) {
            (true, _, true) => "UTF8SMTPS",
            (true, _, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, true) => "SMTPS",
            (false, false, false) => "SMTP",
        }
    }
}
