//! The delivery worker: takes queued messages as they arrive (and, at start
//! and on a timer, whatever is due), hands each recipient to its route, and
//! records the outcome durably. A message leaves the queue only once no
//! recipient is pending.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magicmx_proto::Address;
use tokio::sync::{mpsc, Semaphore};

use crate::intake::unix_now;
use crate::queue::{Envelope, QueueId, RecipientStatus};
use crate::route::{maildir, Route};
use crate::Shared;

/// How often the queue is scanned for messages whose retry time has come.
const RESCAN: Duration = Duration::from_secs(5);
/// Messages delivered at once.
const CONCURRENCY: usize = 64;

/// Back-off before attempt `attempts + 1`: 1 min, doubling, at most 1 hour.
pub(crate) fn backoff(attempts: u32) -> u64 {
    (60u64 << attempts.min(6)).min(3600)
}

pub(crate) async fn run(shared: Arc<Shared>, mut wake: mpsc::UnboundedReceiver<QueueId>) {
    let in_flight = Arc::new(Mutex::new(HashSet::new()));
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut rescan = tokio::time::interval(RESCAN);
    // The first scan, at start, tries every pending recipient whatever its
    // retry time: a restart usually follows a fix.
    let mut started = false;
    loop {
        let due: Vec<QueueId> = tokio::select! {
            Some(id) = wake.recv() => vec![id],
            _ = rescan.tick() => due_messages(&shared, std::mem::replace(&mut started, true)),
            else => return,
        };
        for id in due {
            if !in_flight.lock().unwrap().insert(id) {
                continue;
            }
            let permit = permits.clone().acquire_owned().await.expect("semaphore never closes");
            let (shared, in_flight) = (shared.clone(), in_flight.clone());
            tokio::spawn(async move {
                attempt(&shared, id).await;
                in_flight.lock().unwrap().remove(&id);
                drop(permit);
            });
        }
    }
}

/// Messages with a recipient whose retry time has come (`all`: any pending).
fn due_messages(shared: &Shared, started: bool) -> Vec<QueueId> {
    let now = if started { unix_now() } else { u64::MAX };
    match shared.queue.list() {
        Ok(all) => all
            .into_iter()
            .filter(|(_, envelope)| {
                envelope.recipients.iter().any(
                    |r| matches!(r.status, RecipientStatus::Pending { next_attempt, .. } if next_attempt <= now),
                )
            })
            .map(|(id, _)| id)
            .collect(),
        Err(error) => {
            tracing::error!(%error, "cannot read the queue");
            vec![]
        }
    }
}

/// One maildir write waiting to be done.
struct MaildirJob {
    index: usize,
    root: PathBuf,
    address: Address,
}

async fn attempt(shared: &Arc<Shared>, id: QueueId) {
    let (envelope, content) = match (shared.queue.envelope(id), shared.queue.content(id)) {
        (Ok(Some(envelope)), Ok(Some(content))) => (envelope, content),
        (Ok(None), _) | (_, Ok(None)) => return,
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(queue_id = %id, %error, "cannot read the queued message");
            return;
        }
    };
    let now = unix_now();
    let mut envelope = envelope;
    let mut jobs = Vec::new();
    for (index, rcpt) in envelope.recipients.iter_mut().enumerate() {
        let RecipientStatus::Pending { attempts, next_attempt, .. } = rcpt.status else {
            continue;
        };
        if next_attempt > now {
            continue;
        }
        match shared.domains.route_for(&rcpt.address) {
            Some((Route::Maildir(root), address)) => {
                jobs.push(MaildirJob { index, root: root.clone(), address })
            }
            Some((route, _)) => {
                let error = format!("route {route}: outbound SMTP delivery is not available in this version");
                rcpt.status = deferred(attempts, now, error);
            }
            None => rcpt.status = deferred(attempts, now, "domain is no longer served".into()),
        }
    }
    if !jobs.is_empty() {
        let results = write_maildirs(shared, id, &envelope, content, jobs).await;
        for (index, result) in results {
            let rcpt = &mut envelope.recipients[index];
            let attempts = match rcpt.status {
                RecipientStatus::Pending { attempts, .. } => attempts,
                _ => 0,
            };
            match result {
                Ok(path) => {
                    tracing::info!(queue_id = %id, rcpt = %rcpt.address, to = %path.display(), result = "delivered", "delivery");
                    rcpt.status = RecipientStatus::Delivered;
                }
                Err(error) => {
                    tracing::warn!(queue_id = %id, rcpt = %rcpt.address, %error, result = "deferred", "delivery");
                    rcpt.status = deferred(attempts, now, error.to_string());
                }
            }
        }
    }
    let saved = if envelope.is_finished() {
        shared.queue.remove(id).await
    } else {
        shared.queue.update(id, &envelope).await
    };
    if let Err(error) = saved {
        tracing::error!(queue_id = %id, %error, "cannot record delivery results; they will be repeated");
    }
}

fn deferred(attempts: u32, now: u64, error: String) -> RecipientStatus {
    RecipientStatus::Pending {
        attempts: attempts + 1,
        next_attempt: now + backoff(attempts),
        last_error: Some(error),
    }
}

async fn write_maildirs(
    shared: &Shared,
    id: QueueId,
    envelope: &Envelope,
    content: Vec<u8>,
    jobs: Vec<MaildirJob>,
) -> Vec<(usize, std::io::Result<PathBuf>)> {
    let sender = envelope.sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let host = shared.settings.smtp.session.hostname.clone();
    let arrived = envelope.arrived;
    let work = move || {
        jobs.into_iter()
            .map(|job| {
                let unique = format!("{arrived}.M{id}R{}.{host}", job.index);
                let header = format!("Return-Path: <{sender}>\r\nDelivered-To: {}\r\n", job.address);
                let result = maildir::deliver(&job.root, &job.address, &unique, header.as_bytes(), &content);
                (job.index, result)
            })
            .collect()
    };
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(0), 60);
        assert_eq!(backoff(1), 120);
        assert_eq!(backoff(5), 1920);
        assert_eq!(backoff(6), 3600);
        assert_eq!(backoff(40), 3600);
    }
}
