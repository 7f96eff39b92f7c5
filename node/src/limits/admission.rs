//! The hold's verdict on one transaction: every node decides the
//! transactions of a block in the same order — the time their DATA ended,
//! then the origin's fingerprint, then the origin's id — and takes each one
//! that still fits. Once every peer has reported past a transaction's seal
//! time (the barrier), every node knows all that came before it and reaches
//! the same verdict, so a block spraying many nodes at once gets its limit
//! once, not once per node and not zero.

use magicmx_gossip::counts::{BlockView, Fingerprint};

use super::{within, Limits, Verdict};

/// A transaction: its origin's fingerprint and the origin's id for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId {
    pub origin: Fingerprint,
    pub id: u32,
}

impl Limits {
    /// Is transaction `mine` (sealed, in `view`) taken? Transactions sealed
    /// before it are replayed first; those still in their RCPT phase come
    /// after it and do not count. A transaction missing from the view is not
    /// taken (the sender keeps the message).
    pub fn admit(&self, view: &BlockView, share: f64, mine: TxnId) -> Verdict {
        let limit = self.recipients(share);
        let cap = self.caps().recipients;
        let part = |origin: usize, value: f64| {
            let origin = &view.origins[origin];
            if origin.is_self {
                value
            } else {
                value.min(cap * origin.weight)
            }
        };
        let mut running: Vec<f64> = view.origins.iter().map(|o| o.taken.recipients).collect();
        let mut total: f64 = running.iter().enumerate().map(|(o, &v)| part(o, v)).sum();
        let mut sealed: Vec<(u64, TxnId, usize, f64)> = view
            .origins
            .iter()
            .enumerate()
            .flat_map(|(o, origin)| {
                origin.open.iter().filter_map(move |t| {
                    let txn = TxnId { origin: origin.fingerprint, id: t.id };
                    Some((t.sealed_ms?, txn, o, f64::from(t.recipients)))
                })
            })
            .collect();
        sealed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, txn, o, recipients) in sealed {
            let after = total - part(o, running[o]) + part(o, running[o] + recipients);
            let verdict = within(after, limit);
            if txn == mine {
                return verdict;
            }
            if verdict == Verdict::Within {
                running[o] += recipients;
                total = after;
            }
        }
        Verdict::Over
    }
}
