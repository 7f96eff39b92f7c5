//! The hold at the end of DATA: the transaction is sealed (its recipients
//! stay reserved) and the block's home is asked whether it is taken. The
//! home has every node's transactions for the block and answers one
//! question after another, so a block spraying many nodes at once gets its
//! limit once. Over the limit, the sender hears `451 4.7.1` and keeps the
//! message.

use magicmx_gossip::Question;

use crate::clock::Millis;
use crate::replies::Refusal;
use crate::reservation::Reservation;
use crate::throttle::Throttle;

/// Holds `transaction` for its home's verdict: taken (the caller then
/// queues the message and settles the reservation), or the refusal.
pub(crate) async fn hold(
    throttle: &Throttle,
    transaction: &mut Reservation,
    now_ms: Millis,
) -> Result<(), Refusal> {
    let id = transaction.id();
    transaction.seal(now_ms);
    let answer = throttle.ask(transaction.block(), Question::Sealed { id }, now_ms).await;
    if answer.yes {
        return Ok(());
    }
    let (limit, until_ms) = throttle.over_limit(answer, now_ms);
    Err(Refusal::OverLimitAfterHold { block: transaction.block(), limit, until_ms })
}
