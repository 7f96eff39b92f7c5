//! One client connection: the greet pause, then the proto session driven over
//! the socket, upgraded to TLS after STARTTLS. The node answers the session's
//! requests here: recipients by the domain table, messages by the queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use magicmx_proto::smtp::{Event, Reply, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::intake;
use crate::Shared;

enum Outcome {
    Closed,
    StartTls,
}

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, trusted: bool) {
    let client_ip = peer.ip().to_canonical();
    let mut session = Session::new(shared.session_config.clone(), client_ip, Instant::now());
    let pause = shared.settings.smtp.greet_pause;
    // Trusted senders are known: no need to test their manners.
    if !pause.is_zero() && !trusted {
        let mut early = [0u8; 512];
        match tokio::time::timeout(pause, stream.read(&mut early)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => session.receive(&early[..n], Instant::now()),
            Err(_quiet) => {}
        }
    }
    session.greet(Instant::now());
    let mut transaction = Transaction { trusted, first_rcpt: None };
    let outcome = drive(&shared, &mut session, &mut stream, &mut transaction).await;
    if let (Ok(Outcome::StartTls), Some(acceptor)) = (outcome, &shared.tls) {
        match acceptor.accept(stream).await {
            Ok(mut tls) => {
                session.tls_started(Instant::now());
                let _ = drive(&shared, &mut session, &mut tls, &mut transaction).await;
            }
            Err(e) => tracing::info!(client = %client_ip, error = %e, "TLS handshake failed"),
        }
    }
}

/// What the node keeps about the client's current transaction.
struct Transaction {
    trusted: bool,
    /// When its first recipient was offered: the hold waits for a round from then.
    first_rcpt: Option<Instant>,
}

async fn drive<S>(
    shared: &Shared,
    session: &mut Session,
    stream: &mut S,
    transaction: &mut Transaction,
) -> std::io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client_ip = session.client_ip();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(1024);
    // Between the 354 and the reply to the message: a reply the session makes
    // itself there is its refusal of the message.
    let mut in_data = false;
    loop {
        while let Some(event) = session.poll() {
            match event {
                Event::Reply(reply) => {
                    if std::mem::replace(&mut in_data, reply.code == 354) {
                        log_refused_message(shared, client_ip, &reply);
                    }
                    out.extend_from_slice(&reply.to_bytes());
                }
                Event::Close => {
                    stream.write_all(&out).await?;
                    let _ = stream.shutdown().await;
                    return Ok(Outcome::Closed);
                }
                Event::StartTls => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    return Ok(Outcome::StartTls);
                }
                Event::Violation(violation) => {
                    tracing::info!(client = %client_ip, ?violation, "protocol violation")
                }
                Event::Mail(_) => {
                    transaction.first_rcpt = None;
                    session.decide(Reply::new(250, "2.1.0", "Sender OK"));
                }
                Event::Rcpt(request) => {
                    transaction.first_rcpt.get_or_insert_with(Instant::now);
                    let mut reply = shared.domains.verdict(&request.recipient);
                    if !transaction.trusted {
                        let refusal = shared.throttle.recipient(client_ip, &request.recipient);
                        if let (Some(refusal), true) = (refusal, reply.is_positive()) {
                            reply = refusal;
                        }
                    }
                    if !reply.is_positive() {
                        tracing::info!(client = %client_ip, rcpt = %request.recipient, reply = %reply.to_string().trim_end(), "recipient refused");
                    }
                    session.decide(reply);
                }
                Event::Message(message) => {
                    in_data = false;
                    let since = transaction.first_rcpt.take().unwrap_or_else(Instant::now);
                    let held = match transaction.trusted {
                        true => None,
                        false => shared.throttle.hold(client_ip, since).await,
                    };
                    let reply = match held {
                        Some(refusal) => {
                            log_refused_message(shared, client_ip, &refusal);
                            refusal
                        }
                        None => intake::accept(shared, session, message).await,
                    };
                    session.decide(reply);
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let read = match session.poll_timeout() {
            Some(deadline) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                tokio::time::timeout_at(deadline, stream.read(&mut buf)).await
            }
            None => Ok(stream.read(&mut buf).await),
        };
        match read {
            Err(_elapsed) => session.handle_timeout(Instant::now()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                session.client_closed();
                return Ok(Outcome::Closed);
            }
            Ok(Ok(n)) => session.receive(&buf[..n], Instant::now()),
        }
    }
}

fn log_refused_message(shared: &Shared, client_ip: std::net::IpAddr, reply: &Reply) {
    let block = shared.block_of(client_ip);
    let reply = reply.to_string();
    tracing::info!(client = %client_ip, %block, verdict = "rejected", reply = %reply.trim_end(), "transaction");
}
