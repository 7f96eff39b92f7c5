//! The end of DATA: the hold decides for the recipients the throttle
//! counted (`hold.rs`: the block's home is asked once more, with every
//! node's waiting transactions), then the queue takes the message
//! (`intake.rs`: on disk before the 250). The reservation is settled by
//! the outcome: taken, or given back.

use std::time::Instant;

use magicmx_proto::smtp::{Message, Reply, Session};

use super::Transaction;
use crate::clock::Millis;
use crate::hold::hold;
use crate::intake::{self, AfterReply, Intake};
use crate::replies::Refusal;
use crate::stats::Stats;
use crate::throttle::Throttle;

/// A message taken: its `250`, and what runs once the 250 is written.
pub(crate) type Taken = (Reply, AfterReply);

/// What the end of DATA uses: the throttle for the hold, the queue stage,
/// and the hold's latency histogram.
pub(crate) struct Data<'a> {
    pub throttle: &'a Throttle,
    pub intake: &'a Intake,
    pub stats: &'a Stats,
}

/// The verdict on `message`, the end of `transaction`'s DATA at `now_ms`.
pub(crate) async fn end_of_data(
    stage: Data<'_>,
    session: &Session,
    message: Message,
    transaction: &mut Transaction,
    now_ms: Millis,
) -> Result<Taken, Refusal> {
    // Its body (dropped unqueued, a spool file goes with it), and its
    // octets in flight, held until it is queued or refused.
    let (body, _in_flight) = transaction.body.take();
    // Only recipients the throttle counted are held: none for a trusted
    // client, nor for mail to postmaster alone.
    let mut reserved = transaction.reserved.take().filter(|r| r.recipients() > 0);
    // Refused already (no room on the disk, a failed write): no hold. The
    // disk's own log line says so, once a minute.
    let body = match body {
        Ok(body) => body,
        Err(refusal) => {
            if let Some(reserved) = reserved {
                reserved.settle(false, now_ms);
            }
            return Err(refusal);
        }
    };
    if let Some(reserved) = &mut reserved {
        let started = Instant::now();
        let held = hold(stage.throttle, reserved, now_ms).await;
        stage.stats.hold(started.elapsed());
        if let Err(refusal) = held {
            let block = stage.throttle.block_of(session.client_ip()).to_string();
            let reply = refusal.reply().to_string();
            tracing::info!(client = %session.client_ip(), %block, verdict = "rejected", reply = %reply.trim_end(), "transaction");
            return Err(refusal);
        }
    }
    // The checks of DATA, but not for a trusted client.
    let verify = (!transaction.trusted).then_some(&mut transaction.dns_budget);
    let verdict =
        intake::accept(stage.intake, session, message, body, &transaction.findings, verify, now_ms).await;
    if let Some(reserved) = reserved {
        reserved.settle(verdict.is_ok(), now_ms);
    }
    verdict
}
