//! The server side of an SMTP session (RFC 5321) as a state machine.
//!
//! [`Session`] is fed the client's bytes and the current instant, and hands
//! out [`Event`]s: replies to send, and requests (sender, recipient, message)
//! that the caller answers with a [`Reply`] through [`Session::decide`].

mod budget;
pub mod client;
mod config;
mod data;
mod ehlo;
mod event;
mod framing;
mod mail;
mod rcpt;
mod received;
mod reply;
mod session;

pub use budget::{DataBudget, CHUNK};
pub use config::{Limits, SessionConfig, ViolationAction};
pub use event::{Event, MailRequest, Message, RcptRequest, Violation};
pub use received::{received_header, ReceivedInfo};
pub use reply::Reply;
pub use session::Session;
