//! The durable queue: what an accepted message is made of, the redb store
//! that keeps envelopes until every recipient is delivered or given up (its
//! handle replaced after a failed commit, `handle.rs`), and the spool beside
//! it that keeps the bodies.

mod body;
mod envelope;
mod handle;
mod spool;
mod state;
mod store;

pub use body::{Arrival, Body, Pieces, Source, PIECE};
pub use envelope::{Envelope, QueueId, RecipientState, RecipientStatus};
pub use spool::{Spool, SpoolFile};
pub use state::TrustRecord;
pub use store::{Queue, Unanswered};
