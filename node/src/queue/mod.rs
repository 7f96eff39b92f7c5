//! The durable queue: what an accepted message is made of, and the redb
//! store that keeps it until every recipient is delivered or given up.

mod envelope;
mod state;
mod store;

pub use envelope::{Envelope, QueueId, RecipientState, RecipientStatus};
pub use state::TrustRecord;
pub use store::{Queue, Unanswered};
