//! The hold at the end of DATA: the transaction is sealed (its recipients
//! stay reserved, now in the mesh-wide order of seal times), the node waits
//! until every live peer has reported past the seal (one gossip round,
//! bounded by `throttle.hold`), and `limits` replays the block's sealed
//! transactions in order to say whether this one is taken. Over the limit,
//! the sender hears `451 4.7.1` and keeps the message.

use magicmx_gossip::tally::now_ms;
use magicmx_proto::smtp::Reply;

use crate::limits::{TxnId, Verdict};
use crate::reservation::Reservation;
use crate::throttle::Throttle;

/// Holds `transaction` for one round; `None` when it is taken (the caller
/// then queues the message and settles the reservation), or the refusal.
pub(crate) async fn hold(throttle: &Throttle, transaction: &mut Reservation) -> Option<Reply> {
    let sealed_ms = transaction.seal(now_ms());
    if let Some(mesh) = throttle.mesh() {
        mesh.wait_round(sealed_ms, throttle.hold_timeout()).await;
    }
    let now = now_ms();
    let block = transaction.block();
    let mine = TxnId { origin: throttle.own_fingerprint(), id: transaction.id() };
    match throttle.limits().admit(&throttle.view(block, now), throttle.share(), mine) {
        Verdict::Within => None,
        Verdict::Over => Some(throttle.over_limit(block, now, "after the hold")),
    }
}
