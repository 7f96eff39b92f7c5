//! One client connection: the greet pause, then the proto session driven over
//! the socket, upgraded to TLS after STARTTLS. Only bytes and events move
//! here: each event of the session goes to its stage in `session/`, whose
//! verdict is counted, logged and answered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use magicmx_proto::smtp::{Event, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::intake;
use crate::named_trust;
use crate::replies;
use crate::route::smtp::OriginalClient;
use crate::session::{self, Callout, Data, Mail, Rcpt, Transaction};
use crate::stats::Stats;
use crate::Shared;

enum Outcome {
    Closed,
    StartTls,
}

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, trusted: bool) {
    let client_ip = peer.ip().to_canonical();
    let mut session = Session::new(shared.sizes.session_config(), client_ip, Instant::now());
    // A trusted host name counts once its reverse DNS is forward-confirmed;
    // the gate remembers it for the next connections, and it is proved
    // again before the proof lapses.
    let trusted = named_trust::at_connect(&shared, client_ip, trusted).await;
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
    let mut transaction = Transaction::new(client_ip, trusted);
    let outcome = drive(&shared, &mut session, &mut stream, &mut transaction).await;
    if let (Ok(Outcome::StartTls), Some(acceptor)) = (outcome, &shared.tls) {
        let handshake_timeout = shared.session_config.limits.tls_handshake_timeout;
        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(mut tls)) => {
                session.tls_started(Instant::now());
                let _ = drive(&shared, &mut session, &mut tls, &mut transaction).await;
            }
            Ok(Err(e)) => tracing::info!(client = %client_ip, error = %e, "TLS handshake failed"),
            Err(_elapsed) => tracing::info!(client = %client_ip, "TLS handshake timed out"),
        }
    }
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
    // Runs (when dropped) once the reply it follows has been written.
    let mut after_reply: Option<intake::AfterReply> = None;
    loop {
        while let Some(event) = session.poll() {
            match event {
                Event::Reply(reply) => {
                    if std::mem::replace(&mut in_data, reply.code == 354) {
                        // The session's own refusal of the message (size,
                        // loops, long lines): no stage saw it.
                        transaction.body.discard();
                        Stats::add(if reply.is_transient() {
                            &shared.stats.tempfailed
                        } else {
                            &shared.stats.rejected
                        });
                        shared.stats.refusal(replies::MESSAGE_REFUSED);
                        let block = shared.throttle.block_of(client_ip);
                        let text = reply.to_string();
                        tracing::info!(client = %client_ip, %block, verdict = "rejected", reply = %text.trim_end(), "transaction");
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
                Event::Mail(request) => {
                    let helo = session.helo().unwrap_or("").to_string();
                    let sender = request.sender;
                    let intake = &shared.intake;
                    let stage =
                        Mail { checks: &shared.checks, disk: &intake.disk, prefixes: intake.prefixes };
                    let now = shared.clock.now();
                    let verdict = session::mail(stage, client_ip, &helo, sender, transaction, now).await;
                    let reply = match verdict {
                        Ok(()) => replies::sender_ok(),
                        Err(refusal) => {
                            shared.stats.refusal(refusal.label());
                            let reply = refusal.reply();
                            // The disk logs its own refusals, once a minute.
                            if !refusal.is_disk() {
                                let summary = transaction.findings.summary();
                                let sender = transaction.sender.as_ref().map(ToString::to_string);
                                tracing::info!(client = %client_ip, sender = ?sender, checks = %summary, reply = %reply.to_string().trim_end(), "sender refused");
                            }
                            reply
                        }
                    };
                    session.decide(reply);
                }
                Event::Rcpt(request) => {
                    let callout = shared.checks.settings().verify_recipients.then(|| Callout {
                        checks: &shared.checks,
                        outbound: &shared.outbound,
                        client: original_client(session, transaction),
                    });
                    let stage = Rcpt { domains: &shared.domains, throttle: &shared.throttle, callout };
                    let verdict = stage.verdict(transaction, &request.recipient, shared.clock.now()).await;
                    let reply = match verdict {
                        Ok(()) => replies::recipient_ok(),
                        Err(refusal) => {
                            shared.stats.refusal(refusal.label());
                            let reply = refusal.reply();
                            tracing::info!(client = %client_ip, rcpt = %request.recipient, reply = %reply.to_string().trim_end(), "recipient refused");
                            reply
                        }
                    };
                    session.decide(reply);
                }
                Event::Content(piece) => transaction.content(&shared.intake, piece, shared.clock.now()).await,
                Event::Message(message) => {
                    in_data = false;
                    let now = shared.clock.now();
                    let stage =
                        Data { throttle: &shared.throttle, intake: &shared.intake, stats: &shared.stats };
                    let verdict = session::end_of_data(stage, session, message, transaction, now).await;
                    let reply = match verdict {
                        Ok((reply, after)) => {
                            after_reply = Some(after);
                            reply
                        }
                        Err(refusal) => {
                            session::count_refused_message(&shared.stats, &refusal);
                            refusal.reply()
                        }
                    };
                    session.decide(reply);
                }
            }
        }
        if !out.is_empty() {
            let written = stream.write_all(&out).await;
            out.clear();
            if let Some(after) = after_reply.take() {
                after.written(written.is_ok());
            }
            written?;
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

/// The client of this session as a next hop is told of it (XCLIENT).
fn original_client(session: &Session, transaction: &Transaction) -> OriginalClient {
    let iprev = transaction.findings.iprev.as_ref();
    OriginalClient {
        addr: session.client_ip(),
        name: iprev.filter(|i| i.result == "pass").and_then(|i| i.name.clone()),
        helo: session.helo().unwrap_or_default().to_string(),
        esmtp: session.is_esmtp(),
    }
}
