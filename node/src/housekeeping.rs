//! Background chores of a node: forget decayed counts and finished
//! penalties, save penalties to disk whenever they change (so they survive
//! a restart), sample the counters for the status page's chart, forget
//! unanswered messages too old to be sent again, compact the queue's
//! database once a backlog has drained, and ask the served domains' next
//! hops how large a message they take.

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
                for hop in shared.sizes.due(now) {
                    tokio::spawn(learn_size(shared.clone(), hop));
                }
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

/// Asks `hop` the SIZE it takes; the node advertises the smallest.
async fn learn_size(shared: Arc<Shared>, hop: crate::route::outbound::NextHop) {
    let Some(limit) = shared.outbound.size_of(&hop).await else {
        return tracing::debug!(?hop, "cannot ask the next hop its SIZE; asked again in 15 s");
    };
    if let Some(take) = shared.sizes.learned(&hop, limit, shared.clock.now()) {
        tracing::info!(?hop, ?limit, take, "the node now takes messages up to this size (SIZE in its EHLO)");
    }
}
