//! Taking a message in: its body is written to the spool while it is read;
//! at its end the `Received:` and `Authentication-Results:` headers are
//! made, the body is fsync'd and the envelope committed durably to the
//! queue, and only then is the answer 250; one log line per transaction. A
//! second try of a message whose 250 was lost gets that 250 instead
//! (`crate::resend`).

use std::net::IpAddr;
use std::sync::Arc;

use magicmx_proto::smtp::{received_header, Message, ReceivedInfo, Reply, Session};
use magicmx_proto::SourceBlock;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::checks::{Checks, DnsBudget, Findings, Origin};
use crate::clock::Millis;
use crate::deliver::Job;
use crate::disk::{Claim, Disk};
use crate::queue::{
    Arrival, Body, Envelope, Queue, QueueId, RecipientState, RecipientStatus, Source, SpoolFile, Unanswered,
};
use crate::replies::{self, Refusal};
use crate::resend;
use crate::stats::Stats;

/// What the queue stage uses.
pub(crate) struct Intake {
    pub queue: Queue,
    /// Room on the disk, and the bodies in flight.
    pub disk: Arc<Disk>,
    /// Messages whose 250 may not have reached the client (`resend`).
    pub unanswered: Arc<resend::UnansweredMessages>,
    /// For DKIM and DMARC.
    pub checks: Arc<Checks>,
    /// This node's name, for `Received:` and `Authentication-Results:`.
    pub hostname: String,
    /// IPv4 and IPv6 prefixes of a source block, for the log.
    pub prefixes: (u8, u8),
    pub stats: Arc<Stats>,
    /// Wakes delivery for a message just queued.
    pub delivery: mpsc::UnboundedSender<Job>,
}

/// Work that waits until the reply is written: noting the message answered
/// (or not), waking delivery and the log line. Keeping it out of the way
/// shortens the gap between a durable commit and the 250. Call
/// [`AfterReply::written`]; when dropped it runs as if the write failed, so
/// no path can skip the delivery wake-up.
pub(crate) struct AfterReply(Option<Box<dyn FnOnce(bool) + Send>>);

impl AfterReply {
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
/// `now_s`: the message's arrival, in Unix seconds.
fn settler(
    intake: &Intake,
    id: QueueId,
    fingerprint: Option<[u8; 32]>,
    now_s: u64,
) -> impl FnOnce(bool) + Send {
    let (queue, unanswered) = (intake.queue.clone(), intake.unanswered.clone());
    move |written| match (written, fingerprint) {
        (true, Some(_)) => queue.answered(id),
        (false, Some(fingerprint)) => unanswered.remember(&queue, fingerprint, id, now_s),
        (_, None) => {}
    }
}

/// The body of the message being read. Most mail comes in one piece (the
/// session hands content out in pieces of 64 KiB): that piece is kept, goes
/// into the queue's own commit (one fsync for a group of messages), and
/// delivery reads it from memory. From a second piece on, the body goes to a
/// spool file piece by piece as it arrives. Every piece is first held
/// against the disk's bounds (`crate::disk`).
#[derive(Default)]
pub(crate) struct Receiving {
    first: Option<Vec<u8>>,
    spool: Option<SpoolFile>,
    /// The octets this message holds of the bodies in flight.
    claim: Option<Claim>,
    /// The message is refused at its end: writing failed (`451 4.3.0`), or
    /// the disk has no room for it (`452 4.3.1`). What was written is gone.
    refused: Option<Refusal>,
}

/// A message's body at the end of DATA.
pub(crate) enum Incoming {
    /// In memory, not yet written.
    Whole(Vec<u8>),
    /// Written to its spool file, not yet fsync'd.
    Spooled(SpoolFile),
}

impl Receiving {
    /// Takes the next piece of a message from `block` (`None`: a trusted
    /// client) at `now`.
    pub(crate) async fn piece(
        &mut self,
        intake: &Intake,
        block: Option<SourceBlock>,
        piece: Vec<u8>,
        now: Millis,
    ) {
        if self.refused.is_some() {
            return;
        }
        let claim = self.claim.get_or_insert_with(|| intake.disk.claim(block));
        if let Err(refusal) = intake.disk.room_for_piece(claim, piece.len() as u64, now) {
            return self.refuse(refusal);
        }
        if self.spool.is_none() && self.first.is_none() {
            self.first = Some(piece);
            return;
        }
        let queue = &intake.queue;
        if self.spool.is_none() {
            match queue.spool().create(queue.next_id()).await {
                Ok(file) => self.spool = Some(file),
                Err(error) => return self.fail(&error),
            }
        }
        let Some(spool) = &mut self.spool else { return };
        for piece in self.first.take().into_iter().chain(Some(piece)) {
            if let Err(error) = spool.append(&piece).await {
                return self.fail(&error);
            }
        }
    }

    fn fail(&mut self, error: &std::io::Error) {
        tracing::error!(%error, "cannot write a message to the spool");
        self.refuse(Refusal::QueueError);
    }

    /// What was written goes now (the spool file with it); the message is
    /// refused at its end.
    fn refuse(&mut self, refusal: Refusal) {
        *self = Receiving { refused: Some(refusal), ..Receiving::default() };
    }

    /// The message was refused: what was written goes.
    pub(crate) fn discard(&mut self) {
        *self = Receiving::default();
    }

    /// The message has ended: its body, or why it is refused; and its claim
    /// on the bodies in flight, to be held until the message is queued.
    pub(crate) fn take(&mut self) -> (Result<Incoming, Refusal>, Option<Claim>) {
        let taken = std::mem::take(self);
        let body = match (taken.refused, taken.spool) {
            (Some(refusal), _) => Err(refusal),
            (None, Some(spool)) => Ok(Incoming::Spooled(spool)),
            (None, None) => Ok(Incoming::Whole(taken.first.unwrap_or_default())),
        };
        (body, taken.claim)
    }
}

impl Incoming {
    /// SHA-256 of the content.
    fn digest(&self) -> [u8; 32] {
        match self {
            Incoming::Whole(content) => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
                digest.as_ref().try_into().expect("SHA-256 is 32 octets")
            }
            Incoming::Spooled(spool) => spool.digest(),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Incoming::Whole(content) => content.len() as u64,
            Incoming::Spooled(spool) => spool.size(),
        }
    }

    /// Makes a spooled body durable (fdatasync); where the body is kept
    /// (a small one in memory, to go into the queue's commit).
    async fn store(self, queue: &Queue, id: QueueId) -> std::io::Result<Source> {
        match self {
            Incoming::Whole(content) => Ok(Source::InMemory(Arc::new(content))),
            Incoming::Spooled(mut spool) => {
                spool.finish().await?;
                Ok(Source::Spooled { path: queue.spool().path(id), size: spool.size() })
            }
        }
    }
}

/// Queues a message at `now_ms` and answers it; with `verify` (the DNS
/// budget the message has left), after DKIM and DMARC (not for trusted
/// senders, like the other checks). A refusal is logged here and counted by
/// the caller.
pub(crate) async fn accept(
    intake: &Intake,
    session: &Session,
    message: Message,
    incoming: Incoming,
    findings: &Findings,
    verify: Option<&mut DnsBudget>,
    now_ms: Millis,
) -> Result<(Reply, AfterReply), Refusal> {
    let client_ip = session.client_ip();
    let block = SourceBlock::of(client_ip, intake.prefixes.0, intake.prefixes.1);
    let fingerprint =
        message.has_message_id.then(|| resend::fingerprint(&message, &incoming.digest())).flatten();
    let claimed = fingerprint.and_then(|f| intake.unanswered.claim(&f).map(|original| (f, original)));
    if let Some((fingerprint, original)) = claimed {
        // A spool file goes with `incoming`: nothing is queued twice.
        return Ok(second_try(intake, client_ip, &message, original, fingerprint, now_ms));
    }
    let id = match &incoming {
        Incoming::Spooled(spool) => spool.id(),
        Incoming::Whole(_) => intake.queue.next_id(),
    };
    let size = incoming.size();
    let protocol = message.protocol();
    let sender = message.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let rcpts = message.recipients.len();
    let failed = |error: crate::Error| {
        // Written but never queued: not to be delivered. (A commit reported
        // failed whose header reached the file anyway is in the queue once
        // it is reopened: its body stays, to be delivered.)
        let landed =
            matches!(error, crate::Error::Commit(_)) && matches!(intake.queue.envelope(id), Ok(Some(_)));
        if landed {
            tracing::warn!(queue_id = %id, "a commit reported failed is in the queue after all: it will be delivered");
        } else {
            intake.queue.spool().remove(id);
        }
        tracing::error!(queue_id = %id, client = %client_ip, %block, sender = %format!("<{sender}>"), rcpts, verdict = "tempfail", %error, "transaction");
        Err(Refusal::QueueError)
    };
    let source = match incoming.store(&intake.queue, id).await {
        Ok(source) => source,
        Err(error) => return failed(crate::Error::Io { path: intake.queue.spool().path(id), error }),
    };
    let origin = Origin { ip: client_ip, helo: &message.helo, sender: message.sender.as_ref() };
    let authenticity = match verify {
        Some(budget) => intake.checks.authenticity(&source, origin, findings, budget).await,
        None => None,
    };
    let authenticity = authenticity.unwrap_or_default();
    if let Some(refusal) = &authenticity.refusal {
        intake.queue.spool().remove(id);
        let reply = refusal.reply().to_string();
        tracing::info!(client = %client_ip, %block, sender = %format!("<{sender}>"), rcpts, authenticity = %authenticity.summary, verdict = "rejected", reply = %reply.trim_end(), "transaction");
        return Err(refusal.clone());
    }
    let info = ReceivedInfo {
        helo: message.helo.clone(),
        client_ip,
        client_name: None,
        server: intake.hostname.clone(),
        protocol,
        queue_id: id.to_string(),
        single_recipient: match message.recipients.as_slice() {
            [only] => Some(only.to_string()),
            _ => None,
        },
    };
    let received_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let mut headers = received_header(&info, received_at);
    let server = &intake.hostname;
    if let Some(results) = findings.header(server, client_ip, message.sender.as_ref(), &authenticity.results)
    {
        headers.push_str(&results);
    }
    let now = now_ms / 1000;
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
        size: headers.len() as u64 + size,
        dsn_for: None,
        spf: findings.spf.as_ref().map(|s| s.as_str().to_string()),
    };
    let client_name = findings.iprev.as_ref().filter(|i| i.result == "pass").and_then(|i| i.name.clone());
    let arrival = Arrival {
        headers: headers.into_bytes(),
        eight_bit: message.eight_bit,
        client_name,
        protocol: protocol.to_string(),
    };
    let unanswered = fingerprint.map(|fingerprint| Unanswered { fingerprint, arrived: now });
    let inline = match &source {
        Source::InMemory(content) => Some(content.clone()),
        Source::Spooled { .. } => None,
    };
    if let Err(error) = intake.queue.insert(id, &envelope, &arrival, inline, unanswered).await {
        return failed(error);
    }
    Stats::add(&intake.stats.accepted);
    let settle = settler(intake, id, fingerprint, now);
    let delivery = intake.delivery.clone();
    let checks = format!("{} {}", findings.summary(), authenticity.summary);
    let size = envelope.size;
    let body = Body::new(arrival, source);
    let after = move |written| {
        settle(written);
        let _ = delivery.send(Job { id, loaded: Some((envelope, body)) });
        tracing::info!(queue_id = %id, client = %client_ip, %block, sender = %format!("<{sender}>"), rcpts, size, checks = %checks.trim_end(), verdict = "accepted", "transaction");
    };
    Ok((replies::queued(id), AfterReply::new(after)))
}

/// The client sends again a message already queued as `original` whose 250
/// it never heard: it hears that 250 now, and nothing is queued twice.
fn second_try(
    intake: &Intake,
    client_ip: IpAddr,
    message: &Message,
    original: QueueId,
    fingerprint: [u8; 32],
    now_ms: Millis,
) -> (Reply, AfterReply) {
    Stats::add(&intake.stats.resent);
    let sender = message.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let rcpts = message.recipients.len();
    let settle = settler(intake, original, Some(fingerprint), now_ms / 1000);
    let after = move |written| {
        settle(written);
        tracing::info!(queue_id = %original, client = %client_ip, sender = %format!("<{sender}>"), rcpts, verdict = "sent_again", "transaction: a second try of a message whose 250 was lost; not queued twice");
    };
    (replies::queued(original), AfterReply::new(after))
}
