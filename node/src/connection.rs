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

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let client_ip = peer.ip().to_canonical();
    let mut session = Session::new(shared.session_config.clone(), client_ip, Instant::now());
    let pause = shared.settings.smtp.greet_pause;
    if !pause.is_zero() {
        let mut early = [0u8; 512];
        match tokio::time::timeout(pause, stream.read(&mut early)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => session.receive(&early[..n], Instant::now()),
            Err(_quiet) => {}
        }
    }
    session.greet(Instant::now());
    let outcome = drive(&shared, &mut session, &mut stream).await;
    if let (Ok(Outcome::StartTls), Some(acceptor)) = (outcome, &shared.tls) {
        match acceptor.accept(stream).await {
            Ok(mut tls) => {
                session.tls_started(Instant::now());
                let _ = drive(&shared, &mut session, &mut tls).await;
            }
            Err(e) => tracing::info!(client = %client_ip, error = %e, "TLS handshake failed"),
        }
    }
}

async fn drive<S>(shared: &Shared, session: &mut Session, stream: &mut S) -> std::io::Result<Outcome>
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
                Event::Mail(_) => session.decide(Reply::new(250, "2.1.0", "Sender OK")),
                Event::Rcpt(request) => {
                    shared.count(client_ip, magicmx_gossip::Kind::Recipient);
                    let reply = shared.domains.verdict(&request.recipient);
                    if !reply.is_positive() {
                        tracing::info!(client = %client_ip, rcpt = %request.recipient, reply = %reply.to_string().trim_end(), "recipient refused");
                    }
                    session.decide(reply);
                }
                Event::Message(message) => {
                    in_data = false;
                    let reply = intake::accept(shared, session, message).await;
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
