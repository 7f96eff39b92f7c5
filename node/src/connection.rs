//! One client connection: the greet pause, then the proto session driven over
//! the socket, upgraded to TLS after STARTTLS. The node answers the session's
//! requests here: recipients by the domain table, messages by the queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use magicmx_gossip::tally::now_ms;
use magicmx_proto::smtp::{Event, Reply, Session};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::checks::Findings;
use crate::hold::hold;
use crate::intake;
use crate::reservation::Reservation;
use crate::route::outbound::NextHop;
use crate::route::Route;
use crate::stats::Stats;
use crate::Shared;

enum Outcome {
    Closed,
    StartTls,
}

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr, trusted: bool) {
    let client_ip = peer.ip().to_canonical();
    let mut session = Session::new(shared.session_config.clone(), client_ip, Instant::now());
    // A trusted host name counts once its reverse DNS is forward-confirmed;
    // the gate remembers it for the next connections.
    let trusted = trusted || {
        let named = shared.checks.trusted_by_name(client_ip).await;
        if named {
            shared.trust.trust_by_name(client_ip, now_ms());
        }
        named
    };
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
    let mut transaction = Transaction {
        trusted,
        reserved: None,
        findings: Findings::default(),
        sender: None,
        body: intake::Receiving::default(),
    };
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

/// What the node keeps about the client's current transaction.
struct Transaction {
    trusted: bool,
    /// Its recipients reserved against the block's limit (untrusted clients,
    /// from the first recipient the throttle let through).
    reserved: Option<Reservation>,
    /// What the checks found, for the queue and the headers.
    findings: Findings,
    sender: Option<magicmx_proto::Address>,
    /// The message being read, on its way to the spool.
    body: intake::Receiving,
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
                        transaction.body.discard();
                        Stats::add(if reply.is_transient() {
                            &shared.stats.tempfailed
                        } else {
                            &shared.stats.rejected
                        });
                        shared.stats.refusal("message_refused");
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
                Event::Mail(request) => {
                    transaction.reserved = None;
                    transaction.body.discard();
                    transaction.findings = Findings::default();
                    transaction.sender = request.sender.clone();
                    let refusal = match transaction.trusted || shared.checks.idle_at_mail() {
                        true => None,
                        false => {
                            let helo = session.helo().unwrap_or("").to_string();
                            let findings = &mut transaction.findings;
                            shared.checks.mail(client_ip, &helo, request.sender.as_ref(), findings).await
                        }
                    };
                    if let Some(reply) = &refusal {
                        shared.stats.refusal(check_reason(reply));
                        let summary = transaction.findings.summary();
                        tracing::info!(client = %client_ip, sender = ?request.sender.as_ref().map(ToString::to_string), checks = %summary, reply = %reply.to_string().trim_end(), "sender refused");
                    }
                    session.decide(refusal.unwrap_or_else(|| Reply::new(250, "2.1.0", "Sender OK")));
                }
                Event::Rcpt(request) => {
                    let mut reply = shared.domains.verdict(&request.recipient);
                    // postmaster@ is always taken (RFC 5321 §4.5.1), and not counted.
                    if !transaction.trusted && reply.is_positive() && !request.recipient.is_postmaster() {
                        if let Some(refusal) = callout(shared, transaction, &request.recipient).await {
                            reply = refusal;
                        } else {
                            let reserved = transaction
                                .reserved
                                .get_or_insert_with(|| shared.throttle.transaction(client_ip));
                            if let Some(refusal) = shared.throttle.recipient(reserved, now_ms()).await {
                                reply = refusal;
                            }
                        }
                    }
                    if !reply.is_positive() {
                        shared.stats.refusal(match reply.status.as_deref() {
                            Some("5.7.1") => "relay_denied",
                            Some("4.7.1") => "over_limit",
                            Some("5.1.1") => "callout",
                            _ => "recipient",
                        });
                        tracing::info!(client = %client_ip, rcpt = %request.recipient, reply = %reply.to_string().trim_end(), "recipient refused");
                    }
                    session.decide(reply);
                }
                Event::Content(piece) => transaction.body.piece(&shared.queue, piece).await,
                Event::Message(message) => {
                    in_data = false;
                    // Its body; dropped unqueued, a spool file goes with it.
                    let body = transaction.body.take();
                    // Only recipients the throttle counted are held: none for
                    // a trusted client, nor for mail to postmaster alone.
                    let mut reserved = transaction.reserved.take().filter(|r| r.recipients() > 0);
                    let held = match &mut reserved {
                        None => None,
                        Some(reserved) => {
                            let started = Instant::now();
                            let held = hold(&shared.throttle, reserved).await;
                            shared.stats.hold(started.elapsed());
                            held
                        }
                    };
                    let reply = match (held, body) {
                        (Some(refusal), _) => {
                            Stats::add(&shared.stats.tempfailed);
                            shared.stats.refusal("over_limit_after_hold");
                            log_refused_message(shared, client_ip, &refusal);
                            refusal
                        }
                        (None, Some(body)) => {
                            let (reply, after) = intake::accept(
                                shared,
                                session,
                                message,
                                body,
                                &transaction.findings,
                                !transaction.trusted,
                            )
                            .await;
                            after_reply = Some(after);
                            reply
                        }
                        (None, None) => {
                            Stats::add(&shared.stats.tempfailed);
                            shared.stats.refusal("queue_error");
                            intake::queue_error()
                        }
                    };
                    if let Some(reserved) = reserved {
                        reserved.settle(reply.code == 250, now_ms());
                    }
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

fn log_refused_message(shared: &Shared, client_ip: std::net::IpAddr, reply: &Reply) {
    let block = shared.block_of(client_ip);
    let reply = reply.to_string();
    tracing::info!(client = %client_ip, %block, verdict = "rejected", reply = %reply.trim_end(), "transaction");
}

/// The call-out for a recipient of a served domain, when configured.
async fn callout(
    shared: &Shared,
    transaction: &Transaction,
    recipient: &magicmx_proto::Address,
) -> Option<Reply> {
    if !shared.checks.settings().verify_recipients {
        return None;
    }
    let (route, address) = shared.domains.route_for(recipient)?;
    let hop = match route {
        Route::Mx => NextHop::Mx(address.domain.to_string()),
        Route::Smtp { host, port } => NextHop::Fixed { host: host.clone(), port: *port },
        Route::Maildir(_) => return None,
    };
    if let Some(cached) = shared.checks.callouts.cached(&address, now_ms()) {
        return cached;
    }
    let probe = shared.outbound.probe(&hop, transaction.sender.as_ref(), &address).await;
    shared.checks.callouts.record(&address, probe, now_ms())
}

/// The refusal reason of a sender check, by its enhanced status code.
fn check_reason(reply: &Reply) -> &'static str {
    match reply.status.as_deref() {
        Some("5.7.1") => "dnsbl",
        Some("5.7.25") | Some("4.7.25") => "fcrdns",
        Some("5.1.8") => "sender_domain",
        Some("5.7.23") => "spf",
        Some("4.4.3") => "dns_temporary",
        _ => "sender_checks",
    }
}
