//! Adding up a block's registers: this node's own in full, each peer's at
//! most its cap times the weight of its word (its standing), open
//! transactions counted as if taken.

use magicmx_gossip::counts::{BlockView, Caps, OriginView, Periods, Rates};

/// A block's use of its limits as one node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Recipients taken (decaying over an hour) plus those reserved by open transactions.
    pub recipients: f64,
    /// Connections (decaying over a minute).
    pub connections: f64,
}

impl Usage {
    /// The usage at the view's moment.
    pub fn of(view: &BlockView, caps: Caps) -> Usage {
        Usage::sum(view, caps, |origin| Rates {
            recipients: origin.taken.recipients + reserved(origin),
            connections: origin.taken.connections,
        })
    }

    /// The usage `elapsed_ms` after the view's moment if nothing more comes:
    /// what is open is taken at once, and everything decays from there.
    pub fn after(view: &BlockView, caps: Caps, periods: &Periods, elapsed_ms: u64) -> Usage {
        Usage::sum(view, caps, |origin| {
            let now = Rates {
                recipients: origin.taken.recipients + reserved(origin),
                connections: origin.taken.connections,
            };
            periods.decay(now, elapsed_ms)
        })
    }

    fn sum(view: &BlockView, caps: Caps, rates: impl Fn(&OriginView) -> Rates) -> Usage {
        let mut usage = Usage::default();
        for origin in &view.origins {
            let r = rates(origin);
            if origin.is_self {
                usage.recipients += r.recipients;
                usage.connections += r.connections;
            } else {
                usage.recipients += r.recipients.min(caps.recipients * origin.weight);
                usage.connections += r.connections.min(caps.connections * origin.weight);
            }
        }
        usage
    }
}

fn reserved(origin: &OriginView) -> f64 {
    origin.open.iter().map(|t| f64::from(t.recipients)).sum()
}
