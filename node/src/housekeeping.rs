//! Background chores of a node: forget decayed counts and finished
//! penalties, save penalties to disk whenever they change (so they survive
//! a restart), sample the counters for the status page's chart, forget
//! unanswered messages too old to be sent again, and compact the queue's
//! database once a backlog has drained.

use std::sync::Arc;
use std::time::Duration;

use crate::Shared;

const SWEEP: Duration = Duration::from_secs(5);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut sweep = tokio::time::interval(SWEEP);
    let mut sample = tokio::time::interval(crate::stats::HISTORY_EVERY);
    loop {
        tokio::select! {
            _ = shared.throttle.penalised.notified() => {}
            _ = sample.tick() => {
                shared.stats.sample(shared.clock.now() / 1000);
                continue;
            }
            _ = sweep.tick() => {
                let now = shared.clock.now();
                shared.throttle.tally().sweep(now);
                shared.gate.sweep(now);
                shared.trust.sweep(now);
                shared.checks.callouts.sweep(now);
                shared.intake.unanswered.forget_old(&shared.queue, now / 1000);
                let queue = shared.queue.clone();
                if let Ok(Err(error)) = tokio::task::spawn_blocking(move || queue.compact_if_drained()).await {
                    tracing::warn!(%error, "cannot compact the queue database");
                }
            }
        }
        // Penalties learnt from peers change the tally too: check each time.
        if let Some(penalties) = shared.throttle.tally().penalties_to_save(shared.clock.now()) {
            let queue = shared.queue.clone();
            let saved = tokio::task::spawn_blocking(move || queue.save_penalties(&penalties)).await;
            if let Ok(Err(error)) | Err(error) = saved.map_err(crate::Error::from) {
                tracing::error!(%error, "cannot save penalties");
            }
        }
    }
}
