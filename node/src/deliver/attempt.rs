//! One delivery attempt of one message: its pending recipients grouped by
//! next hop, each group handed to its route, the outcomes recorded durably,
//! and a DSN queued for recipients that failed for good when the sender is
//! believable. Returns when the message is next due, if it is still queued.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use magicmx_proto::Address;
use time::OffsetDateTime;

use super::{backoff, Job};
use crate::dsn;
use crate::queue::{Arrival, Body, Envelope, QueueId, RecipientState, RecipientStatus};
use crate::route::outbound::NextHop;
use crate::route::smtp::{ClientForwarding, OriginalClient};
use crate::route::{maildir, Outcome, Route};
use crate::settings::OutboundTls;
use crate::stats::Stats;
use crate::Shared;

/// Recipients that leave by the same way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    Maildir(PathBuf),
    Smtp(NextHop, TlsMode, ClientForwarding),
}

/// `OutboundTls` with an order, for grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsMode {
    Opportunistic,
    Require,
}

pub(super) async fn run(shared: &Arc<Shared>, job: Job) -> Option<u64> {
    let id = job.id;
    let loaded = match job.loaded {
        Some((envelope, body)) => (Ok(Some(envelope)), Ok(Some(body))),
        None => (shared.queue.envelope(id), shared.queue.body(id)),
    };
    let (mut envelope, body) = match loaded {
        (Ok(Some(envelope)), Ok(Some(body))) => (envelope, body),
        (Ok(None), _) | (_, Ok(None)) => return None,
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(queue_id = %id, %error, "cannot read the queued message");
            return Some(shared.clock.now() + 60_000);
        }
    };
    let original = original_client(&envelope, &body);
    let mut ways: BTreeMap<Way, Vec<(usize, Address)>> = BTreeMap::new();
    for (index, rcpt) in envelope.recipients.iter().enumerate() {
        if matches!(rcpt.status, RecipientStatus::Pending { .. }) {
            let (way, address) = way_for(shared, &rcpt.address);
            ways.entry(way).or_default().push((index, address));
        }
    }
    let mut newly_failed = Vec::new();
    // Held until the queue has the outcomes: until then the journal speaks
    // for the recipients the next hop took.
    let mut journaled = Vec::new();
    for (way, recipients) in ways {
        let addresses: Vec<Address> = recipients.iter().map(|(_, a)| a.clone()).collect();
        let outcomes = match &way {
            Way::Maildir(root) => write_maildir(shared, id, &envelope, &body, root, recipients.clone()).await,
            Way::Smtp(hop, mode, forwarding) => {
                let tls = match mode {
                    TlsMode::Opportunistic => OutboundTls::Opportunistic,
                    TlsMode::Require => OutboundTls::Require,
                };
                let client = original.as_ref().map(|client| (client, *forwarding));
                shared.outbound.deliver(hop, tls, envelope.sender.as_ref(), &addresses, &body, client).await
            }
        };
        for ((index, _), outcome) in recipients.into_iter().zip(outcomes) {
            if matches!(outcome, Outcome::Delivered(_)) {
                journaled.push(shared.journal.delivered(id, index));
            }
            if record(shared, id, &mut envelope.recipients[index], envelope.arrived, outcome) {
                newly_failed.push(index);
            }
        }
    }
    if !newly_failed.is_empty() {
        send_dsn(shared, id, &envelope, &body, &newly_failed).await;
    }
    let saved = if envelope.is_finished() {
        shared.queue.remove(id).await
    } else {
        shared.queue.update(id, &envelope).await
    };
    if let Err(error) = saved {
        tracing::error!(queue_id = %id, %error, "cannot record delivery results; they will be repeated");
    }
    drop(journaled);
    envelope.next_due_ms()
}

/// The client a message came from, to be handed to the next hop; none for a
/// message this node made itself.
fn original_client(envelope: &Envelope, body: &Body) -> Option<OriginalClient> {
    let protocol = &body.info.protocol;
    (!protocol.is_empty()).then(|| OriginalClient {
        addr: envelope.client_ip,
        name: body.info.client_name.clone(),
        helo: envelope.helo.clone(),
        esmtp: protocol.contains("ESMTP") || protocol.starts_with("UTF8"),
    })
}

/// Where a recipient goes: a served domain by its route; anyone else (the
/// senders this node returns DSNs to) by MX.
fn way_for(shared: &Shared, recipient: &Address) -> (Way, Address) {
    match shared.domains.route_for(recipient) {
        Some((route, address)) => {
            let tls = match shared.domains.tls_for(&address) {
                OutboundTls::Opportunistic => TlsMode::Opportunistic,
                OutboundTls::Require => TlsMode::Require,
            };
            let forwarding = shared.domains.forwarding_for(&address);
            let way = match route {
                Route::Maildir(root) => Way::Maildir(root.clone()),
                Route::Smtp { host, port } => {
                    Way::Smtp(NextHop::Fixed { host: host.clone(), port: *port }, tls, forwarding)
                }
                Route::Mx => Way::Smtp(NextHop::Mx(address.domain.to_string()), tls, forwarding),
            };
            (way, address)
        }
        None => {
            let way = Way::Smtp(
                NextHop::Mx(recipient.domain.to_string()),
                TlsMode::Opportunistic,
                ClientForwarding::default(),
            );
            (way, recipient.clone())
        }
    }
}

/// Applies one outcome to a recipient; true if it failed for good just now.
fn record(shared: &Shared, id: QueueId, rcpt: &mut RecipientState, arrived: u64, outcome: Outcome) -> bool {
    let delivery = &shared.settings.delivery;
    let attempts = match rcpt.status {
        RecipientStatus::Pending { attempts, .. } => attempts,
        _ => 0,
    };
    match outcome {
        Outcome::Delivered(detail) => {
            Stats::add(&shared.stats.delivered);
            tracing::info!(queue_id = %id, rcpt = %rcpt.address, status = "sent", %detail, "delivery");
            rcpt.status = RecipientStatus::Delivered;
            false
        }
        Outcome::Transient(why) => {
            let age = Duration::from_secs((shared.clock.now() / 1000).saturating_sub(arrived));
            if age >= delivery.expire {
                Stats::add(&shared.stats.bounced);
                let why = format!("gave up after {}: {why}", humanize(delivery.expire));
                tracing::info!(queue_id = %id, rcpt = %rcpt.address, status = "bounced", reason = %why, "delivery");
                rcpt.status = RecipientStatus::Failed(why);
                return true;
            }
            Stats::add(&shared.stats.deferred);
            let delay = backoff(delivery.retry_first, delivery.retry_max, attempts);
            tracing::info!(queue_id = %id, rcpt = %rcpt.address, status = "deferred", reason = %why, retry_in = %humanize(delay), "delivery");
            rcpt.status = RecipientStatus::Pending {
                attempts: attempts + 1,
                next_attempt_ms: shared.clock.now() + delay.as_millis() as u64,
                last_error: Some(why),
            };
            false
        }
        Outcome::Permanent(why) => {
            Stats::add(&shared.stats.bounced);
            tracing::info!(queue_id = %id, rcpt = %rcpt.address, status = "bounced", reason = %why, "delivery");
            rcpt.status = RecipientStatus::Failed(why);
            true
        }
    }
}

/// `5d`, `1h`, `5m`, `30s`.
fn humanize(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 && s > 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Queues a DSN to the sender for the recipients at `failed`, when the sender
/// is believable: not the null sender, and its domain takes mail (served
/// here, or with MX or address records). Never one about a DSN.
async fn send_dsn(shared: &Arc<Shared>, id: QueueId, envelope: &Envelope, body: &Body, failed: &[usize]) {
    let Some(sender) = &envelope.sender else { return };
    // Where SPF was checked, only a sender that passed is believed; without
    // SPF, one whose domain takes mail.
    let believable = match envelope.spf.as_deref() {
        Some(result) => result == "pass",
        None => {
            shared.domains.route_for(sender).is_some()
                || shared.dns.accepts_mail(sender.domain.as_str()).await
        }
    };
    if !believable {
        tracing::info!(queue_id = %id, %sender, spf = ?envelope.spf, "no DSN: the sender is not believable (SPF did not pass, or its domain takes no mail)");
        return;
    }
    let reasons: Vec<(Address, String)> = failed
        .iter()
        .map(|&i| {
            let r = &envelope.recipients[i];
            let why = match &r.status {
                RecipientStatus::Failed(why) => why.clone(),
                _ => String::new(),
            };
            (r.address.clone(), why)
        })
        .collect();
    let failed: Vec<dsn::Failed<'_>> =
        reasons.iter().map(|(recipient, reason)| dsn::Failed { recipient, reason }).collect();
    let hostname = &shared.session_config.hostname;
    let arrived =
        OffsetDateTime::from_unix_timestamp(envelope.arrived as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    // The original's header section is all a DSN returns.
    let head = {
        let body = body.clone();
        tokio::task::spawn_blocking(move || body.head(dsn::RETURNED_HEAD)).await
    };
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => {
            return tracing::error!(queue_id = %id, %error, "cannot read the message for its DSN")
        }
        Err(error) => return tracing::error!(queue_id = %id, %error, "cannot read the message for its DSN"),
    };
    let report = dsn::build(hostname, id, arrived, sender, &failed, &head, OffsetDateTime::now_utc());
    let dsn_id = shared.queue.next_id();
    let now = shared.clock.now();
    let dsn_envelope = Envelope {
        sender: None,
        recipients: vec![RecipientState {
            address: sender.clone(),
            status: RecipientStatus::Pending { attempts: 0, next_attempt_ms: now, last_error: None },
        }],
        arrived: now / 1000,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        block: "local".into(),
        helo: hostname.clone(),
        tls: false,
        size: report.len() as u64,
        dsn_for: Some(id),
        spf: None,
    };
    let info = Arrival::local(vec![], !report.is_ascii());
    let report = Arc::new(report);
    match shared.queue.insert(dsn_id, &dsn_envelope, &info, Some(report.clone()), None).await {
        Ok(()) => {
            tracing::info!(queue_id = %dsn_id, dsn_for = %id, to = %sender, "DSN queued");
            let body = Body::at_hand(info, report);
            let _ = shared.delivery.send(Job { id: dsn_id, loaded: Some((dsn_envelope, body)) });
        }
        Err(error) => tracing::error!(queue_id = %id, %error, "cannot queue the DSN"),
    }
}

async fn write_maildir(
    shared: &Shared,
    id: QueueId,
    envelope: &Envelope,
    body: &Body,
    root: &std::path::Path,
    recipients: Vec<(usize, Address)>,
) -> Vec<Outcome> {
    let sender = envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let host = shared.session_config.hostname.clone();
    let (arrived, root, body) = (envelope.arrived, root.to_path_buf(), body.clone());
    let count = recipients.len();
    let work = move || {
        recipients
            .into_iter()
            .map(|(index, address)| {
                let unique = format!("{arrived}.M{id}R{index}.{host}");
                let header = format!("Return-Path: <{sender}>\r\nDelivered-To: {address}\r\n");
                match maildir::deliver(&root, &address, &unique, header.as_bytes(), &body) {
                    Ok(path) => Outcome::Delivered(path.display().to_string()),
                    Err(e) => Outcome::Transient(format!("maildir {}: {e}", root.display())),
                }
            })
            .collect::<Vec<_>>()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(outcomes) => outcomes,
        Err(e) => vec![Outcome::Transient(format!("maildir writer failed: {e}")); count],
    }
}
