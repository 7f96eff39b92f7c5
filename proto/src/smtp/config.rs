//! Settings of one SMTP session: the server's name, its limits and time-outs,
//! and what to do with clients that break the protocol.

use std::time::Duration;

use super::budget::DataBudget;

/// What to do with a client that talks before the greeting or pipelines
/// without PIPELINING having been offered (postscreen's pregreet and
/// pipelining tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationAction {
    /// `554 5.5.1` and close.
    Reject,
    /// Note it in an event and carry on.
    Ignore,
}

/// Protocol limits, each with its RFC 5321 default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Command line, CRLF included (§4.5.3.1.4): 512.
    pub command_line: usize,
    /// Text line in DATA, CRLF included (§4.5.3.1.6): 1000.
    pub text_line: usize,
    /// Recipients per message (§4.5.3.1.8): 100.
    pub max_recipients: usize,
    /// Message size in octets after dot-unstuffing (the design's 25 MiB).
    pub max_message_size: usize,
    /// `Received:` headers above which a message is taken to be looping
    /// (RFC 5321 §6.3 suggests 100; Postfix uses 50).
    pub max_received_headers: usize,
    /// Error replies after which the session is closed (Postfix's hard error limit).
    pub max_errors: usize,
    /// NOOP, RSET, VRFY and HELP a client may send before each one more
    /// counts as an error (Postfix's `smtpd_junk_command_limit`): 100.
    /// The count starts again with each message taken.
    pub junk_commands: usize,
    /// Waiting for the next command (§4.5.3.2.7): 5 minutes.
    pub command_timeout: Duration,
    /// Waiting for the next chunk of DATA (§4.5.3.2.5 is the client's 3 minutes;
    /// the server waits as long).
    pub data_timeout: Duration,
    /// The TLS handshake after `220` to STARTTLS (Postfix's
    /// `smtpd_starttls_timeout` under stress): 2 minutes.
    pub tls_handshake_timeout: Duration,
    /// The longest a session may last, however busy: past it the next wait
    /// ends with `421 4.4.2`. 1 hour.
    pub session_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_line: 512,
            text_line: 1000,
            max_recipients: 100,
            max_message_size: 26_214_400,
            max_received_headers: 50,
            max_errors: 20,
            junk_commands: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            tls_handshake_timeout: Duration::from_secs(120),
            session_duration: Duration::from_secs(3600),
        }
    }
}

/// Everything a session needs to know about the server it speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The name in the greeting, the EHLO reply and `Received:` headers.
    pub hostname: String,
    pub limits: Limits,
    /// Offer STARTTLS (the caller has a certificate).
    pub starttls: bool,
    pub on_violation: ViolationAction,
    /// The memory all sessions sharing it may hold in messages being read.
    pub data_budget: DataBudget,
}

impl SessionConfig {
    pub fn new(hostname: impl Into<String>) -> Self {
        SessionConfig {
            hostname: hostname.into(),
            limits: Limits::default(),
            starttls: false,
            on_violation: ViolationAction::Reject,
            data_budget: DataBudget::unlimited(),
        }
    }
}
