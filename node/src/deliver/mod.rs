//! The delivery worker. It keeps the queue's schedule in memory (loaded at
//! start, when every pending recipient is tried at once: a restart usually
//! follows a fix), starts an attempt for each message as it arrives or its
//! retry time comes, at most `max_concurrent` at a time, and sleeps until the
//! next retry is due. Messages that arrive while every slot is busy wait in
//! the schedule by id, without their content.

mod attempt;
pub(crate) mod journal;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::queue::{Body, Envelope, QueueId};
use crate::Shared;

/// A message to try now, with its envelope and body when the caller has
/// them at hand (fresh from intake), saving a read of the queue. A large
/// body is read from the spool while it is sent.
pub(crate) struct Job {
    pub id: QueueId,
    pub loaded: Option<(Envelope, Body)>,
}

/// How often idle outbound connections are swept.
const SWEEP: Duration = Duration::from_secs(1);

/// Back-off before attempt `attempts + 1`: the first delay, doubled each time, capped.
pub(crate) fn backoff(first: Duration, max: Duration, attempts: u32) -> Duration {
    first.saturating_mul(1u32 << attempts.min(20)).min(max)
}

pub(crate) async fn run(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut schedule: BTreeSet<(u64, QueueId)> = BTreeSet::new();
    match shared.queue.list() {
        Ok(queued) => schedule.extend(queued.into_iter().map(|(id, _)| (0, id))),
        Err(error) => tracing::error!(%error, "cannot read the queue at start"),
    }
    let mut in_flight: HashSet<QueueId> = HashSet::new();
    let permits = Arc::new(Semaphore::new(shared.settings.delivery.max_concurrent));
    let (done, mut finished) = mpsc::unbounded_channel::<(QueueId, Option<u64>)>();
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        let now = shared.clock.now();
        while permits.available_permits() > 0 {
            match schedule.first() {
                Some(&(due, id)) if due <= now => {
                    schedule.pop_first();
                    start(&shared, &permits, &done, &mut in_flight, &mut schedule, Job { id, loaded: None });
                }
                _ => break,
            }
        }
        // With every slot busy, only a finished attempt can start the next.
        let next_due = match permits.available_permits() {
            0 => None,
            _ => schedule.first().map(|&(due, _)| due),
        };
        let sleep =
            tokio::time::sleep(Duration::from_millis(next_due.map_or(60_000, |d| d.saturating_sub(now))));
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) if permits.available_permits() > 0 => {
                    start(&shared, &permits, &done, &mut in_flight, &mut schedule, job)
                }
                // Every slot is busy (a next hop that does not answer, say):
                // the message waits its turn as an id, its content on disk
                // only, so a backlog costs no memory.
                Some(job) => {
                    schedule.insert((0, job.id));
                }
                None => return,
            },
            Some((id, next)) = finished.recv() => {
                in_flight.remove(&id);
                if let Some(due) = next {
                    schedule.insert((due, id));
                }
            }
            _ = sleep => {}
            _ = sweep.tick() => shared.outbound.pool().sweep(),
        }
    }
}

/// Starts an attempt in a free slot (the caller has checked there is one).
fn start(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    done: &mpsc::UnboundedSender<(QueueId, Option<u64>)>,
    in_flight: &mut HashSet<QueueId>,
    schedule: &mut BTreeSet<(u64, QueueId)>,
    job: Job,
) {
    // A message already being tried is rescheduled by that attempt.
    if !in_flight.insert(job.id) {
        return;
    }
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        // Not expected: this loop is the only one taking slots.
        in_flight.remove(&job.id);
        schedule.insert((0, job.id));
        return;
    };
    let (shared, done) = (shared.clone(), done.clone());
    tokio::spawn(async move {
        let id = job.id;
        let next = attempt::run(&shared, job).await;
        // The slot is free before the loop hears of it.
        drop(permit);
        let _ = done.send((id, next));
    });
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (first, max) = (Duration::from_secs(300), Duration::from_secs(3600));
        let secs: Vec<u64> = (0..6).map(|n| backoff(first, max, n).as_secs()).collect();
        assert_eq!(secs, vec![300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(backoff(first, max, 1000), max);
    }
}
