//! The hold at the end of DATA: the transaction is sealed (its recipients
//! stay reserved) and the block's home is asked whether it is taken. The
//! home has every node's transactions for the block and answers one
//! question after another, so a block spraying many nodes at once gets its
//! limit once. Over the limit, the sender hears `451 4.7.1` and keeps the
//! message.

use magicmx_gossip::tally::now_ms;
use magicmx_gossip::Question;
use magicmx_proto::smtp::Reply;

use crate::reservation::Reservation;
use crate::throttle::Throttle;

/// Holds `transaction` for its home's verdict; `None` when it is taken (the
/// caller then queues the message and settles the reservation), or the refusal.
pub(crate) async fn hold(throttle: &Throttle, transaction: &mut Reservation) -> Option<Reply> {
    let id = transaction.id();
    transaction.seal(now_ms());
    let answer = throttle.ask(transaction.block(), Question::Sealed { id }, now_ms()).await;
    (!answer.yes).then(|| throttle.refusal(transaction.block(), answer, now_ms()))
}
