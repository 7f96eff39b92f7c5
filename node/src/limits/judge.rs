//! The limits as the mesh's judge: a block's home applies them to every
//! node's register for the block (`magicmx_gossip::engine`), the asker's
//! own in full and each other's at most its cap.

use magicmx_gossip::counts::{BlockView, Fingerprint};
use magicmx_gossip::{Judge, Penalty};

use super::{came_through_the_mesh, within, Limits, TxnId, Verdict};

impl Judge for Limits {
    fn recipient(&self, view: &BlockView, share: f64) -> bool {
        within(self.usage(view).recipients, self.recipients(share)) == Verdict::Within
    }

    fn connection(&self, view: &BlockView, share: f64) -> bool {
        Limits::connection(self, view, share) == Verdict::Within
    }

    fn sealed(&self, view: &BlockView, share: f64, origin: Fingerprint, id: u32) -> bool {
        self.admit(view, share, TxnId { origin, id }) == Verdict::Within
    }

    fn seen(&self, view: &BlockView) -> bool {
        came_through_the_mesh(view)
    }

    fn penalty(&self, last: Option<Penalty>, view: &BlockView, share: f64, now_ms: u64) -> Penalty {
        self.next_penalty(last, view, share, now_ms)
    }

    fn penalty_borne_out(&self, view: &BlockView, share: f64) -> Option<bool> {
        self.bears_out_penalty(view, share)
    }
}
