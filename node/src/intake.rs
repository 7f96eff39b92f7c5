//! Taking a message in: stamp the `Received:` header, commit it durably to
//! the queue, and only then answer 250; log one line per transaction. A
//! second try of a message whose 250 was lost gets that 250 instead
//! (`crate::resend`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use magicmx_proto::smtp::{received_header, Message, ReceivedInfo, Reply, Session};
use time::OffsetDateTime;

use crate::checks::Findings;
use crate::deliver::Job;
use crate::queue::{Envelope, QueueId, RecipientState, RecipientStatus, Unanswered};
use crate::resend;
use crate::stats::Stats;
use crate::Shared;

/// Work that waits until the reply is written: noting the message answered
/// (or not), waking delivery and the log line. Keeping it out of the way
/// shortens the gap between a durable commit and the 250. Call
/// [`AfterReply::written`]; when dropped it runs as if the write failed, so
/// no path can skip the delivery wake-up.
pub(crate) struct AfterReply(Option<Box<dyn FnOnce(bool) + Send>>);

impl AfterReply {
    fn none() -> AfterReply {
        AfterReply(None)
    }

    fn new(work: impl FnOnce(bool) + Send + 'static) -> AfterReply {
        AfterReply(Some(Box::new(work)))
    }

    /// The reply was written (`true`) or could not be (`false`).
    pub(crate) fn written(mut self, written: bool) {
        if let Some(work) = self.0.take() {
            work(written);
        }
    }
}

impl Drop for AfterReply {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            work(false);
        }
    }
}

/// What settles a message's unanswered note: dropped once the reply is
/// written; otherwise kept, so that the client's next try is recognised.
fn settler(shared: &Shared, id: QueueId, fingerprint: Option<[u8; 32]>) -> impl FnOnce(bool) + Send {
    let (queue, unanswered) = (shared.queue.clone(), shared.unanswered.clone());
    move |written| match (written, fingerprint) {
        (true, Some(_)) => queue.answered(id),
        (false, Some(fingerprint)) => unanswered.remember(fingerprint, id, unix_now()),
        (_, None) => {}
    }
}

pub(crate) async fn accept(
    shared: &Shared,
    session: &Session,
    mut message: Message,
    findings: &Findings,
) -> (Reply, AfterReply) {
    let client_ip = session.client_ip();
    let block = shared.block_of(client_ip);
    let fingerprint = resend::fingerprint(&message);
    let claimed = fingerprint.and_then(|f| shared.unanswered.claim(&f).map(|original| (f, original)));
    if let Some((fingerprint, original)) = claimed {
        return second_try(shared, client_ip, &message, original, fingerprint);
    }
    let id = shared.queue.next_id();
    let info = ReceivedInfo {
        helo: message.helo.clone(),
        client_ip,
        client_name: None,
        server: shared.session_config.hostname.clone(),
        protocol: message.protocol(),
        queue_id: id.to_string(),
        single_recipient: match message.recipients.as_slice() {
            [only] => Some(only.to_string()),
            _ => None,
        },
    };
    let mut headers = received_header(&info, OffsetDateTime::now_utc());
    if let Some(results) =
        findings.header(&shared.session_config.hostname, client_ip, message.sender.as_ref())
    {
        headers.push_str(&results);
    }
    // One copy of the message at a time: the client's is dropped here.
    let body = std::mem::take(&mut message.content);
    let mut content = Vec::with_capacity(headers.len() + body.len());
    content.extend_from_slice(headers.as_bytes());
    content.extend_from_slice(&body);
    drop(body);
    let now = unix_now();
    let envelope = Envelope {
        sender: message.sender,
        recipients: message
            .recipients
            .into_iter()
            .map(|address| RecipientState {
                address,
                status: RecipientStatus::Pending {
                    attempts: 0,
                    next_attempt_ms: now * 1000,
                    last_error: None,
                },
            })
            .collect(),
        arrived: now,
        client_ip,
        block: block.to_string(),
        helo: message.helo,
        tls: message.tls,
        size: content.len() as u64,
        dsn_for: None,
        spf: findings.spf.as_ref().map(|s| s.as_str().to_string()),
    };
    let sender = envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let (rcpts, size) = (envelope.recipients.len(), envelope.size);
    let content = Arc::new(content);
    let unanswered = fingerprint.map(|fingerprint| Unanswered { fingerprint, arrived: now });
    match shared.queue.insert(id, &envelope, content.clone(), unanswered).await {
        Ok(()) => {
            Stats::add(&shared.stats.accepted);
            let settle = settler(shared, id, fingerprint);
            let delivery = shared.delivery.clone();
            let checks = findings.summary();
            let after = move |written| {
                settle(written);
                // With every delivery slot busy the deliverer keeps only the
                // id and reads the message back when its turn comes.
                let _ = delivery.send(Job { id, loaded: Some((envelope, content)) });
                tracing::info!(queue_id = %id, client = %client_ip, %block, sender = %format!("<{sender}>"), rcpts, size, %checks, verdict = "accepted", "transaction");
            };
            (Reply::new(250, "2.0.0", format!("Ok: queued as {id}")), AfterReply::new(after))
        }
        Err(error) => {
            Stats::add(&shared.stats.tempfailed);
            shared.stats.refusal("queue_error");
            tracing::error!(queue_id = %id, client = %client_ip, %block, sender = %format!("<{sender}>"), rcpts, size, verdict = "tempfail", %error, "transaction");
            (
                Reply::new(451, "4.3.0", "Temporary failure writing the queue; please try again later"),
                AfterReply::none(),
            )
        }
    }
}

/// The client sends again a message already queued as `original` whose 250
/// it never heard: it hears that 250 now, and nothing is queued twice.
fn second_try(
    shared: &Shared,
    client_ip: IpAddr,
    message: &Message,
    original: QueueId,
    fingerprint: [u8; 32],
) -> (Reply, AfterReply) {
    Stats::add(&shared.stats.resent);
    let sender = message.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let rcpts = message.recipients.len();
    let settle = settler(shared, original, Some(fingerprint));
    let after = move |written| {
        settle(written);
        tracing::info!(queue_id = %original, client = %client_ip, sender = %format!("<{sender}>"), rcpts, verdict = "sent_again", "transaction: a second try of a message whose 250 was lost; not queued twice");
    };
    (Reply::new(250, "2.0.0", format!("Ok: queued as {original}")), AfterReply::new(after))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}
