//! One outbound SMTP connection: greeting, EHLO (HELO when EHLO is refused),
//! STARTTLS, and mail transactions with a result per recipient. Where the
//! server offers PIPELINING (RFC 2920), a transaction's MAIL, RCPTs and DATA
//! go in one write; otherwise commands go one at a time. Every reply is
//! awaited under the RFC 5321 time-outs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use magicmx_proto::smtp::client::{client_attributes_command, Capabilities, DotStuffer, ReplyReader};
use magicmx_proto::smtp::Reply;
use magicmx_proto::Address;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Outcome;
use crate::queue::{Body, PIECE};

/// Anything a connection can run over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What went wrong on a connection; the connection is not to be reused.
#[derive(Debug)]
pub enum Broken {
    /// Could not connect, or the connection failed or timed out.
    Network(String),
    /// The server answered something unreadable.
    Protocol(String),
    /// The server refused the session (greeting, EHLO/HELO, or required TLS).
    Refused(Reply),
    /// TLS was required and is not available or not valid.
    Tls(String),
    /// The message could not be read from the spool in the middle of DATA.
    Spool(String),
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Network(e) => write!(f, "connection: {e}"),
            Broken::Protocol(e) => write!(f, "protocol: {e}"),
            Broken::Refused(reply) => write!(f, "refused: {}", reply.to_string().trim_end()),
            Broken::Tls(e) => write!(f, "TLS: {e}"),
            Broken::Spool(e) => write!(f, "reading the queued message: {e}"),
        }
    }
}

/// Time-outs of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub data: Duration,
}

/// How to treat STARTTLS on this connection.
pub enum TlsPolicy {
    /// Use it when offered; any certificate.
    Opportunistic(TlsConnector),
    /// Plaintext only (after an opportunistic handshake failed).
    Off,
    /// Must be offered and the certificate valid for `name`.
    Require(TlsConnector),
}

pub struct Connection {
    io: Box<dyn Io>,
    reader: ReplyReader,
    caps: Capabilities,
    timeouts: Timeouts,
    pub addr: SocketAddr,
    pub host: String,
    pub tls: bool,
}

/// What a call-out heard: a refusal of the sender says nothing of the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// MAIL was refused with this.
    Sender(Reply),
    /// The reply to RCPT.
    Recipient(Reply),
}

/// What [`Connection::hand_over`] came to.
enum HandOver {
    /// The session is now the original client's.
    Xclient,
    /// XCLIENT was wanted and not taken.
    AsNode(NotHandedOver),
    /// XCLIENT is off for this domain.
    NotWanted,
}

/// The server's replies to a transaction's envelope: MAIL, each RCPT, and
/// DATA when it was sent.
struct Envelope {
    mail: Reply,
    rcpts: Vec<Reply>,
    data: Option<Reply>,
}

/// The server's answer to one whole transaction.
pub struct Sent {
    /// One outcome per recipient, in order.
    pub outcomes: Vec<Outcome>,
    /// The connection may carry another message (not after XCLIENT: the
    /// session then belongs to the original client; not after a break).
    pub reusable: bool,
    /// XCLIENT was wanted (`offered`) and the message went as from this
    /// node instead, for this reason.
    pub as_node: Option<NotHandedOver>,
    /// The connection broke after the final dot: the outcome is unknown.
    pub reply_lost: bool,
}

/// A message's original client, as XCLIENT or XFORWARD hand it to the next
/// hop, so that its restrictions, milters and logs see who really sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalClient {
    pub addr: IpAddr,
    /// Its forward-confirmed host name, when it had one.
    pub name: Option<String>,
    pub helo: String,
    /// It said EHLO (not HELO).
    pub esmtp: bool,
}

/// How the original client may be handed on to a domain's next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ClientForwarding {
    /// XCLIENT: the next hop treats the session as the client's.
    pub xclient: Xclient,
    /// XFORWARD, where offered and XCLIENT is not: for logs and filters only.
    pub xforward: bool,
}

/// A domain's choice about XCLIENT (`xclient` in its `[[domain]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Xclient {
    /// Never sent.
    Off,
    /// Used where the next hop offers it; otherwise the message goes as
    /// from this node.
    #[default]
    Offered,
    /// The next hop must take it: a hop that does not is a configuration
    /// fault, and the message waits in the queue rather than go as from
    /// this node (whose address the next hop's SPF would judge).
    Require,
}

/// Why the original client was not handed over with XCLIENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotHandedOver {
    /// The next hop's EHLO does not offer XCLIENT to this node.
    NotOffered,
    /// It offered XCLIENT and refused the command.
    Refused(Reply),
    /// It answered 250 where a new 220 greeting belongs (smtp-sink does):
    /// the session goes on as this node's.
    NoNewGreeting(Reply),
}

impl NotHandedOver {
    /// For metrics.
    pub fn label(&self) -> &'static str {
        match self {
            NotHandedOver::NotOffered => "xclient_not_offered",
            NotHandedOver::Refused(_) => "xclient_refused",
            NotHandedOver::NoNewGreeting(_) => "xclient_no_new_greeting",
        }
    }
}

impl std::fmt::Display for NotHandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotHandedOver::NotOffered => f.write_str(
                "XCLIENT is not offered to this node (is its address in the next hop's smtpd_authorized_xclient_hosts?)",
            ),
            NotHandedOver::Refused(reply) => write!(f, "XCLIENT refused: {}", reply.to_string().trim_end()),
            NotHandedOver::NoNewGreeting(reply) => {
                write!(f, "XCLIENT answered without a new greeting: {}", reply.to_string().trim_end())
            }
        }
    }
}

impl OriginalClient {
    /// The attributes both commands share (RFC-less, Postfix's XCLIENT_README).
    fn attributes(&self) -> Vec<(&'static str, String)> {
        let addr = match self.addr {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPV6:{v6}"),
        };
        let unavailable = || "[UNAVAILABLE]".to_string();
        let helo = Some(self.helo.clone()).filter(|h| !h.is_empty()).unwrap_or_else(unavailable);
        vec![
            ("ADDR", addr),
            ("NAME", self.name.clone().unwrap_or_else(unavailable)),
            ("HELO", helo),
            ("PROTO", if self.esmtp { "ESMTP" } else { "SMTP" }.to_string()),
        ]
    }
}

/// Why a transaction did not reach a result for its recipients.
pub enum TransactionError {
    /// MAIL FROM got a temporary refusal: another host may take it.
    SenderDeferred(Reply),
    /// XCLIENT is required and the next hop did not take it.
    NotHandedOver(NotHandedOver),
    /// The connection broke before the final dot: nothing was taken.
    Broken(Broken),
}

impl Connection {
    /// Connects, reads the greeting, says EHLO and sets up TLS as asked.
    pub async fn open(
        addr: SocketAddr,
        host: &str,
        helo: &str,
        tls: &TlsPolicy,
        timeouts: Timeouts,
    ) -> Result<Connection, Broken> {
        let stream = tokio::time::timeout(timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| Broken::Network("connect timed out".into()))?
            .map_err(|e| Broken::Network(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            io: Box::new(stream),
            reader: ReplyReader::default(),
            caps: Capabilities::default(),
            timeouts,
            addr,
            host: host.to_string(),
            tls: false,
        };
        let greeting = conn.read_reply(timeouts.command).await?;
        if greeting.code != 220 {
            return Err(Broken::Refused(greeting));
        }
        conn.hello(helo).await?;
        let connector = match tls {
            TlsPolicy::Off => return Ok(conn),
            TlsPolicy::Opportunistic(_) if !conn.caps.starttls => return Ok(conn),
            TlsPolicy::Require(_) if !conn.caps.starttls => {
                return Err(Broken::Tls(format!("{host} does not offer STARTTLS")))
            }
            TlsPolicy::Opportunistic(c) | TlsPolicy::Require(c) => c,
        };
        let reply = conn.command(b"STARTTLS\r\n", timeouts.command).await?;
        if reply.code != 220 {
            return match tls {
                TlsPolicy::Require(_) => Err(Broken::Refused(reply)),
                _ => Ok(conn),
            };
        }
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Broken::Tls(format!("{host}: {e}")))?;
        let plain = std::mem::replace(&mut conn.io, Box::new(tokio::io::duplex(1).0));
        let tls_stream = tokio::time::timeout(timeouts.command, connector.connect(name, plain))
            .await
            .map_err(|_| Broken::Tls("handshake timed out".into()))?
            .map_err(|e| Broken::Tls(e.to_string()))?;
        conn.io = Box::new(tls_stream);
        conn.tls = true;
        conn.reader = ReplyReader::default();
        conn.hello(helo).await?;
        Ok(conn)
    }

    /// The largest message the server takes (its EHLO's SIZE), if it says.
    pub fn size_limit(&self) -> Option<u64> {
        self.caps.size.filter(|&n| n > 0).map(|n| n as u64)
    }

    async fn hello(&mut self, helo: &str) -> Result<(), Broken> {
        let reply = self.command(format!("EHLO {helo}\r\n").as_bytes(), self.timeouts.command).await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        let reply = self.command(format!("HELO {helo}\r\n").as_bytes(), self.timeouts.command).await?;
        if reply.code != 250 {
            return Err(Broken::Refused(reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// One mail transaction. Recipients the server refuses are reported per
    /// recipient; the connection stays usable unless an error is returned.
    pub async fn send(
        &mut self,
        sender: Option<&Address>,
        recipients: &[Address],
        body: &Body,
        client: Option<(&OriginalClient, ClientForwarding)>,
    ) -> Result<Sent, TransactionError> {
        let needs_utf8 = sender.is_some_and(Address::is_utf8) || recipients.iter().any(Address::is_utf8);
        let refused = |why: String| Sent {
            outcomes: vec![Outcome::Permanent(why); recipients.len()],
            reusable: true,
            as_node: None,
            reply_lost: false,
        };
        if needs_utf8 && !self.caps.smtputf8 {
            return Ok(refused(format!(
                "{} does not support SMTPUTF8, which these addresses need",
                self.host
            )));
        }
        let size = body.size();
        if let Some(limit) = self.caps.size.filter(|&n| n > 0 && size > n as u64) {
            return Ok(refused(format!("message of {size} octets exceeds {}'s limit of {limit}", self.host)));
        }
        let (mut reusable, mut as_node) = (true, None);
        if let Some((client, forwarding)) = client {
            match self.hand_over(client, forwarding).await.map_err(TransactionError::Broken)? {
                HandOver::Xclient => reusable = false,
                HandOver::AsNode(why) if forwarding.xclient == Xclient::Require => {
                    return Err(TransactionError::NotHandedOver(why))
                }
                HandOver::AsNode(why) => as_node = Some(why),
                HandOver::NotWanted => {}
            }
        }
        let mut mail = format!("MAIL FROM:<{}>", sender.map(ToString::to_string).unwrap_or_default());
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if self.caps.eight_bit_mime && body.eight_bit() {
            mail.push_str(" BODY=8BITMIME");
        }
        if needs_utf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let envelope = match self.caps.pipelining {
            true => self.envelope_pipelined(&mail, recipients).await,
            false => self.envelope_one_by_one(&mail, recipients).await,
        };
        let Envelope { mail: reply, rcpts, data } = envelope.map_err(TransactionError::Broken)?;
        if reply.is_transient() {
            return Err(TransactionError::SenderDeferred(reply));
        }
        if !reply.is_positive() {
            let outcome = self.refusal(&reply);
            self.reset().await;
            return Ok(Sent {
                outcomes: vec![outcome; recipients.len()],
                reusable,
                as_node,
                reply_lost: false,
            });
        }
        let mut outcomes = Vec::with_capacity(recipients.len());
        let mut accepted = Vec::new();
        for (i, reply) in rcpts.iter().enumerate() {
            if reply.is_positive() {
                accepted.push(i);
                outcomes.push(Outcome::Delivered(String::new()));
            } else {
                outcomes.push(self.refusal(reply));
            }
        }
        let Some(reply) = data.filter(|_| !accepted.is_empty()) else {
            self.reset().await;
            return Ok(Sent { outcomes, reusable, as_node, reply_lost: false });
        };
        let final_reply = if reply.code == 354 {
            self.write_body(body).await.map_err(TransactionError::Broken)?;
            match self.read_reply(self.timeouts.data).await {
                Ok(reply) => reply,
                // After the final dot the next hop may have taken the
                // message: as after a crash, it is tried again later (a
                // duplicate at worst), never sent again at once.
                Err(broken) => {
                    let unknown = Outcome::Transient(format!(
                        "{}[{}]: no reply to the end of the message ({broken}); it may have been taken, so it is tried again later, not at once",
                        self.host,
                        self.addr.ip()
                    ));
                    for i in accepted {
                        outcomes[i] = unknown.clone();
                    }
                    return Ok(Sent { outcomes, reusable: false, as_node, reply_lost: true });
                }
            }
        } else {
            reply
        };
        let result = if final_reply.is_positive() {
            Outcome::Delivered(self.describe(&final_reply))
        } else {
            self.refusal(&final_reply)
        };
        for i in accepted {
            outcomes[i] = result.clone();
        }
        Ok(Sent { outcomes, reusable, as_node, reply_lost: false })
    }

    /// MAIL, each RCPT and DATA one at a time, each reply awaited: no RCPT
    /// after a refused MAIL, no DATA without an accepted recipient.
    async fn envelope_one_by_one(&mut self, mail: &str, recipients: &[Address]) -> Result<Envelope, Broken> {
        let command = self.timeouts.command;
        let mail = self.command(mail.as_bytes(), command).await?;
        let mut envelope = Envelope { mail, rcpts: Vec::new(), data: None };
        if !envelope.mail.is_positive() {
            return Ok(envelope);
        }
        for rcpt in recipients {
            let line = format!("RCPT TO:<{rcpt}>\r\n");
            envelope.rcpts.push(self.command(line.as_bytes(), command).await?);
        }
        if envelope.rcpts.iter().any(Reply::is_positive) {
            envelope.data = Some(self.command(b"DATA\r\n", command).await?);
        }
        Ok(envelope)
    }

    /// MAIL, every RCPT and DATA in one write (RFC 2920, where the server
    /// offers PIPELINING), then their replies in order. A server that
    /// answers DATA with 354 though nothing was accepted gets an empty
    /// message's final dot, so the session stays in step.
    async fn envelope_pipelined(&mut self, mail: &str, recipients: &[Address]) -> Result<Envelope, Broken> {
        let command = self.timeouts.command;
        let mut batch = mail.as_bytes().to_vec();
        for rcpt in recipients {
            batch.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        }
        batch.extend_from_slice(b"DATA\r\n");
        self.write(&batch).await?;
        let mail = self.read_reply(command).await?;
        let mut rcpts = Vec::with_capacity(recipients.len());
        for _ in recipients {
            rcpts.push(self.read_reply(command).await?);
        }
        let data = self.read_reply(command).await?;
        let usable = mail.is_positive() && rcpts.iter().any(Reply::is_positive);
        if data.code == 354 && !usable {
            self.write(b".\r\n").await?;
            self.read_reply(self.timeouts.data).await?;
            return Ok(Envelope { mail, rcpts, data: None });
        }
        Ok(Envelope { mail, rcpts, data: Some(data) })
    }

    /// Hands the original client on before MAIL: XCLIENT where the next hop
    /// offers it (it answers with a new greeting, and the session starts
    /// again with the client's own EHLO), else XFORWARD (logs only). Says
    /// whether XCLIENT took, and why not when it was wanted.
    async fn hand_over(
        &mut self,
        client: &OriginalClient,
        forwarding: ClientForwarding,
    ) -> Result<HandOver, Broken> {
        let attributes = client.attributes();
        let mut outcome = HandOver::NotWanted;
        if forwarding.xclient != Xclient::Off {
            let offered = self.caps.xclient.clone().unwrap_or_default();
            match client_attributes_command("XCLIENT", &attributes, &offered) {
                None => outcome = HandOver::AsNode(NotHandedOver::NotOffered),
                Some(command) => {
                    let reply = self.command(command.as_bytes(), self.timeouts.command).await?;
                    if reply.code == 220 {
                        let helo =
                            if client.helo.is_empty() { "[UNAVAILABLE]" } else { client.helo.as_str() };
                        self.hello(helo).await?;
                        return Ok(HandOver::Xclient);
                    }
                    outcome = HandOver::AsNode(match reply.code {
                        250 => NotHandedOver::NoNewGreeting(reply),
                        _ => NotHandedOver::Refused(reply),
                    });
                }
            }
        }
        if matches!(outcome, HandOver::AsNode(_)) && forwarding.xclient == Xclient::Require {
            return Ok(outcome);
        }
        let mut attributes = attributes;
        attributes.push(("SOURCE", "REMOTE".to_string()));
        let xforward = self.caps.xforward.as_ref().filter(|_| forwarding.xforward);
        if let Some(command) = xforward.and_then(|o| client_attributes_command("XFORWARD", &attributes, o)) {
            let reply = self.command(command.as_bytes(), self.timeouts.command).await?;
            if reply.code != 250 {
                tracing::warn!(host = %self.host, reply = %reply.to_string().trim_end(), "XFORWARD refused");
            }
        }
        Ok(outcome)
    }

    /// Asks whether the server would take `recipient` from `sender`, and
    /// takes nothing (RSET): the reply to RCPT, or to MAIL if that refused.
    /// The original client is handed over first, as for a delivery, so
    /// that the next hop judges the sender, not this node; the answer says
    /// whether it was.
    pub async fn probe(
        &mut self,
        sender: Option<&Address>,
        recipient: &Address,
        client: Option<(&OriginalClient, ClientForwarding)>,
    ) -> Result<(Probed, bool), Broken> {
        let handed_over = match client {
            Some((client, forwarding)) => {
                matches!(self.hand_over(client, forwarding).await?, HandOver::Xclient)
            }
            None => false,
        };
        let command = self.timeouts.command;
        let mail = format!("MAIL FROM:<{}>\r\n", sender.map(ToString::to_string).unwrap_or_default());
        let reply = self.command(mail.as_bytes(), command).await?;
        if !reply.is_positive() {
            return Ok((Probed::Sender(reply), handed_over));
        }
        let reply = self.command(format!("RCPT TO:<{recipient}>\r\n").as_bytes(), command).await?;
        self.reset().await;
        Ok((Probed::Recipient(reply), handed_over))
    }

    /// Ends the session politely.
    pub async fn quit(mut self) {
        let _ = self.command(b"QUIT\r\n", Duration::from_secs(5)).await;
        let _ = self.io.shutdown().await;
    }

    async fn reset(&mut self) {
        let _ = self.command(b"RSET\r\n", self.timeouts.command).await;
    }

    fn describe(&self, reply: &Reply) -> String {
        format!(
            "{}[{}] said: {}",
            self.host,
            self.addr.ip(),
            reply.to_string().trim_end().replace("\r\n", " ")
        )
    }

    fn refusal(&self, reply: &Reply) -> Outcome {
        if reply.is_transient() {
            Outcome::Transient(self.describe(reply))
        } else {
            Outcome::Permanent(self.describe(reply))
        }
    }

    async fn command(&mut self, line: &[u8], timeout: Duration) -> Result<Reply, Broken> {
        self.write(line).await?;
        self.read_reply(timeout).await
    }

    /// The message after DATA, dot-stuffed, read piece by piece (from the
    /// spool for a large one), and the final dot; written a piece at a time,
    /// a small message in one write.
    async fn write_body(&mut self, body: &Body) -> Result<(), Broken> {
        let spool = |e: std::io::Error| Broken::Spool(e.to_string());
        let mut pieces = body.pieces().await.map_err(spool)?;
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::new();
        while let Some(piece) = pieces.next().await.map_err(spool)? {
            stuffer.push(&piece, &mut out);
            if out.len() >= PIECE {
                self.write(&out).await?;
                out.clear();
            }
        }
        stuffer.finish(&mut out);
        self.write(&out).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(self.timeouts.command, write)
            .await
            .map_err(|_| Broken::Network("write timed out".into()))?
            .map_err(|e| Broken::Network(e.to_string()))
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<Reply, Broken> {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.reader.next_reply() {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(Broken::Protocol(e.to_string())),
            }
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut buf))
                .await
                .map_err(|_| Broken::Network(format!("no reply within {}s", timeout.as_secs())))?
                .map_err(|e| Broken::Network(e.to_string()))?;
            if n == 0 {
                return Err(Broken::Network("connection closed by the server".into()));
            }
            self.reader.push(&buf[..n]);
        }
    }
}

/// A shared handle on a connector, for [`TlsPolicy`].
pub fn connector(config: &Arc<rustls::ClientConfig>) -> TlsConnector {
    TlsConnector::from(config.clone())
}
