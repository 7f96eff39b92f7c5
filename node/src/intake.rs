//! Taking a message in: stamp the `Received:` header, commit it durably to
//! the queue, and only then answer 250; log one line per transaction.

use std::time::{SystemTime, UNIX_EPOCH};

use magicmx_proto::smtp::{received_header, Message, ReceivedInfo, Reply, Session};
use time::OffsetDateTime;

use std::sync::Arc;

use crate::checks::Findings;
use crate::deliver::Job;
use crate::queue::{Envelope, RecipientState, RecipientStatus};
use crate::stats::Stats;
use crate::Shared;

/// Work that waits until the reply is written: waking delivery and the log
/// line. Keeping them out of the way shortens the gap between a durable
/// commit and the 250 (a kill there makes the client send the message
/// again). Runs when dropped, so no path can skip it.
pub(crate) struct AfterReply(Option<Box<dyn FnOnce() + Send>>);

impl AfterReply {
    fn none() -> AfterReply {
        AfterReply(None)
    }
}

impl Drop for AfterReply {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            work();
        }
    }
}

pub(crate) async fn accept(
    shared: &Shared,
    session: &Session,
    message: Message,
    findings: &Findings,
) -> (Reply, AfterReply) {
    let client_ip = session.client_ip();
    let block = shared.block_of(client_ip);
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
    let mut content = received_header(&info, OffsetDateTime::now_utc()).into_bytes();
    if let Some(results) =
        findings.header(&shared.session_config.hostname, client_ip, message.sender.as_ref())
    {
        content.extend_from_slice(results.as_bytes());
    }
    content.extend_from_slice(&message.content);
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
    match shared.queue.insert(id, &envelope, content.to_vec()).await {
        Ok(()) => {
            Stats::add(&shared.stats.accepted);
            let delivery = shared.delivery.clone();
            let checks = findings.summary();
            let after = move || {
                let _ = delivery.send(Job { id, loaded: Some((envelope, content)) });
                tracing::info!(queue_id = %id, client = %client_ip, %block, sender = %format!("<{sender}>"), rcpts, size, %checks, verdict = "accepted", "transaction");
            };
            (Reply::new(250, "2.0.0", format!("Ok: queued as {id}")), AfterReply(Some(Box::new(after))))
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

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}
